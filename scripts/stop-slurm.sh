#!/usr/bin/env bash
# Stop the one-node Slurm cluster started by scripts/start-slurm.sh:
# slurmd, slurmctld, slurmdbd, MariaDB, munged (in that order), each through
# its pid file, SIGTERM first and SIGKILL after 15 s.
#
# Jobs still running are not cancelled: slurmctld saves them and picks them up
# again at the next start (use `scancel -u root` first for a clean slate).
set -euo pipefail

DIR=${JOBSUB_SLURM_DIR:-/var/lib/jobsub-slurm}

if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "stop-slurm.sh: run as root" >&2; exit 1; }
    exec sudo -E "$0" "$@"
fi
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

log() { printf '[stop-slurm %s] %s\n' "$(date +%T)" "$*"; }

# proc_running PID: the process runs (a zombie, dead but not reaped yet, does not count).
proc_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# stop NAME PIDFILE COMMAND: SIGTERM the process, wait for it, SIGKILL after
# 15 s. Only if its command is COMMAND: a pid file left by a daemon that died
# with its machine may name a recycled pid of an unrelated process.
stop() {
    local name=$1 pidfile=$2 command=$3 pid i
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [[ -z $pid ]] || ! proc_running "$pid" \
        || [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$command" ]]; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    log "$name: stopping (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        proc_running "$pid" || { rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    log "$name: still running after 15 s, sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop slurmd "$DIR/run/slurmd.pid" slurmd
stop slurmctld "$DIR/run/slurmctld.pid" slurmctld
stop slurmdbd "$DIR/run/slurmdbd.pid" slurmdbd

# MariaDB: a clean shutdown through the server itself (mysqld_safe then
# exits on its own instead of restarting it).
if mysqladmin ping >/dev/null 2>&1; then
    log "MariaDB: stopping"
    mysqladmin shutdown || stop MariaDB /run/mysqld/mysqld.pid mariadbd
else
    log "MariaDB: not running"
fi

stop munged /run/munge/munged.pid munged
log "done"
