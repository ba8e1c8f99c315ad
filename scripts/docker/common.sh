# shellcheck shell=bash
# Shared settings for scripts/start-docker.sh, stop-docker.sh and
# build-test-image.sh.  Sourced, not executed.
#
# Everything lives at fixed, root-owned paths so that a second run (or a
# second script) finds the engine and the cached image that an earlier run
# left behind.  Each path can be overridden from the environment.

# Client socket of our private dockerd.  Not /var/run/docker.sock: we never
# want to collide with (or silently reuse) a system engine.
JOBSUB_DOCKER_SOCK="${JOBSUB_DOCKER_SOCK:-/run/jobsub-docker.sock}"
# The other paths default to names derived from the socket, so that
# JOBSUB_DOCKER_SOCK=/run/other.sock gives a second, independent engine
# (two daemons must never share a data root or pid file).
_jd_name="$(basename "$JOBSUB_DOCKER_SOCK" .sock)"
# Images and layers; on disk under /var/lib so that a kept machine reuses
# the built test image across CI runs.
JOBSUB_DOCKER_DATA="${JOBSUB_DOCKER_DATA:-/var/lib/$_jd_name}"
# Runtime state (containerd sockets, shims).  Kept short: unix socket paths
# below it must stay under 108 bytes.
JOBSUB_DOCKER_EXEC="${JOBSUB_DOCKER_EXEC:-/run/$_jd_name}"
JOBSUB_DOCKER_PIDFILE="${JOBSUB_DOCKER_PIDFILE:-/run/$_jd_name.pid}"
JOBSUB_DOCKER_LOG="${JOBSUB_DOCKER_LOG:-/var/log/$_jd_name.log}"
# File holding the `export DOCKER_HOST=...` line, for callers that start the
# engine in one step and use it in another.
JOBSUB_DOCKER_ENVFILE="${JOBSUB_DOCKER_ENVFILE:-/run/$_jd_name.env}"
# Build cache of the test image (debootstrap rootfs tarball, wheels).  Kept
# apart from the daemon's data root, which dockerd owns; shared by all
# engines (it holds no daemon state).
JOBSUB_DOCKER_CACHE="${JOBSUB_DOCKER_CACHE:-/var/lib/jobsub-docker-cache}"

export DOCKER_HOST="unix://${JOBSUB_DOCKER_SOCK}"

# All chatter goes to stderr: stdout is reserved for the one line callers
# eval or grep (the export line, or the image name).
log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True when an engine answers on our socket.  `timeout` guards against a
# half-started daemon that accepts connections but never replies.
engine_up() {
    [ -S "$JOBSUB_DOCKER_SOCK" ] &&
        timeout 5 docker version >/dev/null 2>&1
}

# True if PID is a live process named NAME.  `kill -0` is not enough: a
# killed daemon stays a zombie until init reaps it (the init of our VMs does
# so lazily), and after a reboot the pid in a stale pid file may belong to
# anything.
proc_alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    # Field 2 is "(comm)", field 3 the state; comm may contain spaces, so
    # cut after the last ") ".
    stat="${stat##*) }"
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] && [ "${stat%% *}" != Z ]
}
dockerd_alive() { proc_alive "$1" dockerd; }

# Pid of our dockerd if the pid file names a live one, else nothing.
dockerd_pid() {
    local pid
    [ -f "$JOBSUB_DOCKER_PIDFILE" ] || return 0
    pid="$(cat "$JOBSUB_DOCKER_PIDFILE" 2>/dev/null || true)"
    if [ -n "$pid" ] && dockerd_alive "$pid"; then
        echo "$pid"
    fi
}

# apt-get install PACKAGES..., quietly (to stderr), tolerant of other apt
# runs: CI steps (or other setup scripts) may hold the dpkg/lists locks at
# the same time.  DPkg::Lock::Timeout makes apt wait for the dpkg lock; the
# lists lock of `apt-get update` has no such option, hence the retry loop.
apt_install() {
    local try
    export DEBIAN_FRONTEND=noninteractive
    for try in 1 2 3 4 5 6 7 8 9 10; do
        if apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 &&
            apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
                --no-install-recommends "$@" >&2; then
            return 0
        fi
        log "apt-get failed (attempt $try); retrying in 10 s"
        sleep 10
    done
    die "could not install: $*"
}
