#!/usr/bin/env bash
# Stop the control plane scripts/start-kube.sh started (its state directory is kept;
# JOBSUB_KUBE_WIPE=1 removes it, etcd's data with it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=emulators/common.sh
source "$here/emulators/common.sh"

dir="${JOBSUB_KUBE_DIR:-${TMPDIR:-/tmp}/jobsub-kube-$(id -u)}"
for name in kube-controller-manager kube-proxy-http kube-apiserver etcd; do
    pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && pid_alive "$pid"; then
        log "stopping $name (pid $pid)"
        stop_pid "$pid"
    fi
    rm -f "$dir/$name.pid"
done
if [ -n "${JOBSUB_KUBE_WIPE:-}" ]; then
    rm -rf "$dir"
fi
