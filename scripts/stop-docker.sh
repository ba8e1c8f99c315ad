#!/usr/bin/env bash
# Stop the dockerd started by scripts/start-docker.sh (via its pid file).
# Idempotent: does nothing if that daemon is not running.  Images stay in
# the data root, so the next start-docker.sh finds the cached test image.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=docker/common.sh
source "$here/docker/common.sh"

pid="$(dockerd_pid)"
if [ -z "$pid" ]; then
    log "no dockerd running from $JOBSUB_DOCKER_PIDFILE"
    rm -f "$JOBSUB_DOCKER_ENVFILE"
    exit 0
fi

# SIGTERM lets dockerd stop its containers and its managed containerd
# cleanly (it waits up to 15 s per container before killing them).
log "stopping dockerd (pid $pid)"
kill -TERM "$pid"
for _ in $(seq 1 150); do
    dockerd_alive "$pid" || break
    sleep 0.2
done
if dockerd_alive "$pid"; then
    log "dockerd still alive after 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
fi
# dockerd removes these itself on a clean exit; clean up after a kill.
rm -f "$JOBSUB_DOCKER_PIDFILE" "$JOBSUB_DOCKER_SOCK" "$JOBSUB_DOCKER_ENVFILE"
log "stopped"
