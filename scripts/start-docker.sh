#!/usr/bin/env bash
# Start a private Docker engine for the test suite (idempotent).
#
# Our machines run no engine and reach no container registry, so the
# project brings its own: Debian's docker.io, started directly as root (no
# systemd here) on a private socket.  Tests may only send traffic to
# loopback, so the engine has no bridge and touches no iptables; test
# containers run with network_mode=host.
#
# Usage:   eval "$(scripts/start-docker.sh)"
# stdout:  exactly one line, `export DOCKER_HOST=unix://...` (also written
#          to $JOBSUB_DOCKER_ENVFILE); all progress goes to stderr.
# Env:     JOBSUB_DOCKER_SOCK, _DATA, _EXEC, _PIDFILE, _LOG, _ENVFILE
#          (see scripts/docker/common.sh), JOBSUB_DOCKER_TIMEOUT (s, 30).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=docker/common.sh
source "$here/docker/common.sh"

timeout_s="${JOBSUB_DOCKER_TIMEOUT:-30}"

finish() {
    local line="export DOCKER_HOST=unix://${JOBSUB_DOCKER_SOCK}"
    echo "$line" >"$JOBSUB_DOCKER_ENVFILE"
    echo "$line"
}

# Fast path: an engine (ours from an earlier run, or one the caller points
# us at via JOBSUB_DOCKER_SOCK) already answers.
if engine_up; then
    log "engine already running on $JOBSUB_DOCKER_SOCK"
    finish
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (dockerd needs it)"

# Two CI steps may call us at once: let one start the daemon, then the
# other sees it answering.
exec 8>"$JOBSUB_DOCKER_SOCK.lock"
flock -w 120 8 || die "another start-docker.sh holds $JOBSUB_DOCKER_SOCK.lock"
if engine_up; then
    log "engine already running on $JOBSUB_DOCKER_SOCK"
    finish
    exit 0
fi

# --- install ---------------------------------------------------------------
# Only dockerd is needed from the package: a docker CLI may already exist
# (e.g. a newer client in /usr/local/bin), and it talks to 20.10 fine.
if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io (no dockerd on this machine)"
    # --no-install-recommends: skip e.g. git, xz-utils, cgroupfs-mount,
    # apparmor helpers.  The package lists are refreshed first (a fresh
    # machine may have none or stale ones).
    apt_install docker.io
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but no dockerd"
fi
command -v docker >/dev/null 2>&1 || die "no docker CLI on PATH"

# --- start -----------------------------------------------------------------
pid="$(dockerd_pid)"
if [ -n "$pid" ]; then
    # Our daemon is alive but not answering yet (another caller may have
    # just started it): wait for it below instead of starting a second one.
    log "dockerd (pid $pid) is running but not ready yet; waiting"
else
    # A daemon that died leaves its socket and pid file behind; dockerd
    # refuses to start over a stale pid file.
    rm -f "$JOBSUB_DOCKER_PIDFILE" "$JOBSUB_DOCKER_SOCK"
    # Same for the containerd that dockerd manages: after a crash its pid
    # file may name a zombie, which dockerd takes for a running containerd
    # and then times out (15 s) connecting to it.  A live one is reused.
    ctrd_pidfile="$JOBSUB_DOCKER_EXEC/containerd/containerd.pid"
    if [ -f "$ctrd_pidfile" ] && ! proc_alive "$(cat "$ctrd_pidfile")" containerd; then
        rm -f "$ctrd_pidfile"
    fi
    mkdir -p "$JOBSUB_DOCKER_DATA" "$JOBSUB_DOCKER_EXEC" \
        "$(dirname "$JOBSUB_DOCKER_LOG")" "$(dirname "$JOBSUB_DOCKER_SOCK")"
    log "starting dockerd (log: $JOBSUB_DOCKER_LOG)"
    echo "=== $(date -Is) start-docker.sh" >>"$JOBSUB_DOCKER_LOG"
    # --bridge=none, --iptables/--ip-masq/--ip6tables=false: no docker0 and
    #   no NAT rules, so containers cannot reach private ranges; tests use
    #   host networking and reach services on 127.0.0.1.
    # --host-gateway-ip: "host-gateway" (host.docker.internal) would default
    #   to the absent bridge's address; map it to loopback instead.
    # --data-root/--exec-root/--pidfile/-H: private paths so we never clash
    #   with a system engine and a kept machine keeps its images.
    # setsid + nohup + </dev/null: detach from the CI step's session so the
    #   daemon outlives this script and never blocks on the caller's pipes;
    #   8>&- so the daemon does not inherit (and hold) our start lock.
    setsid nohup dockerd \
        --bridge=none \
        --iptables=false \
        --ip-masq=false \
        --ip6tables=false \
        --host-gateway-ip=127.0.0.1 \
        --data-root "$JOBSUB_DOCKER_DATA" \
        --exec-root "$JOBSUB_DOCKER_EXEC" \
        --pidfile "$JOBSUB_DOCKER_PIDFILE" \
        -H "unix://$JOBSUB_DOCKER_SOCK" \
        </dev/null >>"$JOBSUB_DOCKER_LOG" 2>&1 8>&- &
    pid=$!
fi

# --- wait until the API answers ----------------------------------------------
deadline=$((SECONDS + timeout_s))
until engine_up; do
    if ! dockerd_alive "$pid"; then
        log "dockerd exited during startup; last log lines:"
        tail -n 40 "$JOBSUB_DOCKER_LOG" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "dockerd not ready after ${timeout_s}s; last log lines:"
        tail -n 40 "$JOBSUB_DOCKER_LOG" >&2
        exit 1
    fi
    sleep 0.2
done

log "engine ready: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null)"
finish
