# shellcheck shell=bash
# Shared by scripts/start-moto.sh and scripts/start-fake-gcs.sh.  Sourced, not executed.
#
# Both start an emulator of a cloud API as a plain process of the caller (no
# root needed) on a fixed loopback port, so that every test run of this
# machine, and a later step of the same CI run, finds the same server.  State
# (pid, log, start lock) lives in a per-user, per-port directory.

PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# All chatter goes to stderr: stdout carries only the `export` lines callers eval.
log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# emu_state NAME PORT: set $state_dir, $pidfile, $logfile, $lockfile.
emu_state() {
    state_dir="${JOBSUB_EMULATOR_DIR:-${TMPDIR:-/tmp}/jobsub-emulators-$(id -u)}"
    mkdir -p "$state_dir"
    chmod 700 "$state_dir"
    pidfile="$state_dir/$1-$2.pid"
    logfile="$state_dir/$1-$2.log"
    lockfile="$state_dir/$1-$2.lock"
}

# answers URL NEEDLE: true when GET URL succeeds within 5 s and its body contains
# NEEDLE (so that another program on our port is not taken for the emulator).
answers() {
    timeout 5 "$PYTHON" - "$1" "$2" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=4) as response:
        sys.exit(0 if sys.argv[2].encode() in response.read() else 1)
except Exception:
    sys.exit(1)
PY
}

# pid_alive PID: the process exists and is not a zombie (a killed server stays a
# zombie until init reaps it, and `kill -0` would still succeed).
pid_alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

# wait_until_up PID URL NEEDLE TIMEOUT_S: wait for the server we just started;
# on failure show the end of its log.
wait_until_up() {
    local deadline=$((SECONDS + $4))
    until answers "$2" "$3"; do
        if ! pid_alive "$1"; then
            log "the server exited during startup; last log lines:"
            tail -n 30 "$logfile" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "no answer on $2 after $4 s; last log lines:"
            tail -n 30 "$logfile" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# stop_pid PID: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
    local i
    kill "$1" 2>/dev/null || return 0
    for i in $(seq 25); do
        pid_alive "$1" || return 0
        sleep 0.2
    done
    kill -9 "$1" 2>/dev/null || true
}

# answers_within URL NEEDLE SECONDS: true if the server answers within SECONDS.
answers_within() {
    local deadline=$((SECONDS + $3))
    until answers "$1" "$2"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
