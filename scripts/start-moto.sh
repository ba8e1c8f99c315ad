#!/usr/bin/env bash
# Start a moto server, AWS's APIs emulated over real HTTP, for the test suite (idempotent).
#
# Tests of the S3 store (and later the AWS Batch backend) talk to it with
# the real boto3 client, only the endpoint changed.  It listens on loopback
# only.  moto runs an AWS Batch job as a real container of the engine named
# by DOCKER_HOST (scripts/start-docker.sh), on the host's network: tests may
# only send traffic to loopback.
#
# Usage:   eval "$(scripts/start-moto.sh)"
# stdout:  `export` lines only: the endpoint, a region, and dummy credentials
#          (moto accepts any; boto3 refuses to sign without some).  They are
#          for tests against this server, never for a real account.
# Env:     PYTHON (python) gets moto installed; JOBSUB_MOTO_PORT (5055);
#          JOBSUB_MOTO_TIMEOUT (s, 30); JOBSUB_EMULATOR_DIR (pid/log/lock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=emulators/common.sh
source "$here/emulators/common.sh"

port="${JOBSUB_MOTO_PORT:-5055}"
url="http://127.0.0.1:$port"
probe="$url/"  # S3 ListBuckets, unsigned: moto answers it, not just any HTTP server
needle=ListAllMyBucketsResult
emu_state moto "$port"

finish() {
    echo "export AWS_ENDPOINT_URL=$url"
    echo "export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}"
    echo "export AWS_ACCESS_KEY_ID=testing"
    echo "export AWS_SECRET_ACCESS_KEY=testing"
}

if answers "$probe" "$needle"; then
    log "moto already answers on $url"
    finish
    exit 0
fi

# Two callers at once: one starts the server, the other then finds it answering.
exec 9>"$lockfile"
flock -w 120 9 || die "another start-moto.sh holds $lockfile"
if answers "$probe" "$needle"; then
    log "moto already answers on $url"
    finish
    exit 0
fi

pid="$(cat "$pidfile" 2>/dev/null || true)"
if [ -n "$pid" ] && pid_alive "$pid" && grep -q moto "/proc/$pid/cmdline" 2>/dev/null; then
    log "moto (pid $pid) is running but not answering yet; waiting"
    if ! answers_within "$probe" "$needle" 15; then
        # e.g. the virtualenv it ran from was made anew by a later CI run: it answers 500s
        log "moto (pid $pid) does not answer: stopping it, starting a new one"
        stop_pid "$pid"
        pid=""
    fi
fi
if [ -z "$pid" ] || ! pid_alive "$pid" || ! grep -q moto "/proc/$pid/cmdline" 2>/dev/null; then
    # One pip run for moto and the bound botocore needs: another package (the
    # kubernetes client) may have pulled python-dateutil 4, which botocore
    # cannot use.  The same bounds as the test extra of pyproject.toml.
    log "installing moto into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install -q 'moto[server,s3,batch,logs]>=5.1,<6' 'python-dateutil>=2.8,<3' >&2
    log "starting moto on $url (log: $logfile)"
    echo "=== $(date -Is) start-moto.sh" >"$logfile"  # a fresh log: it has a line per request
    # MOTO_DOCKER_NETWORK_MODE=host: Batch job containers share the host's
    #   network and so reach this server and other loopback services.
    # setsid + nohup + </dev/null: the server outlives this script and never
    #   holds the caller's pipes; 9>&- so it does not keep our start lock.
    MOTO_DOCKER_NETWORK_MODE=host setsid nohup "$PYTHON" -m moto.server -H 127.0.0.1 -p "$port" \
        </dev/null >>"$logfile" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$pidfile"
fi
wait_until_up "$pid" "$probe" "$needle" "${JOBSUB_MOTO_TIMEOUT:-30}"
log "moto ready on $url (pid $pid)"
finish
