#!/usr/bin/env bash
# Install Slurm from Debian's packages and start a real one-node Slurm cluster
# with accounting (slurmdbd on MariaDB), for jobsub's tests.
#
#   scripts/start-slurm.sh      # install if needed, start what is not running
#   scripts/stop-slurm.sh       # stop every daemon started here
#
# Idempotent: a second run only checks the cluster and returns in about a
# second. Works without systemd (CI containers, sandboxes): every daemon is
# started directly, detached from this script, and outlives it.
#
# Environment:
#   JOBSUB_SLURM_DIR      state, spool, pid and log files (/var/lib/jobsub-slurm)
#   JOBSUB_SLURM_TIMEOUT  seconds to wait for each daemon (60)
#   JOBSUB_SLURM_CGROUP   auto (default): enforce --mem with cgroup v1 when the
#                         machine allows it (jobs over --mem end OUT_OF_MEMORY),
#                         else poll RSS (they end FAILED); "no": always poll.
#   JOBSUB_SLURM_TAKEOVER 1: stop Slurm daemons this script did not start (another
#                         configuration: they would serve the node with it) and
#                         start its own; default: refuse, naming them.
#
# Ownership: a daemon is this script's when its pid file under $JOBSUB_SLURM_DIR/run
# names it (as an earlier run of this script, of any version, left it). Any other
# slurmctld, slurmd or slurmdbd is foreign: with its own slurm.conf, a foreign slurmd
# drains the node on the first job ("cgroup namespace 'freezer' not mounted").
# A node of ours found DOWN or DRAINED is resumed. The database user's password is
# (re)set to this cluster's own, whoever created the user.
#
# The configuration goes to /etc/slurm (Debian's built-in SLURM_CONF path),
# so sbatch, squeue, sacct... work for any caller without environment
# variables. Templates: scripts/slurm/ (*.conf.in, memory-*.conf).
set -Eeuo pipefail  # -E: the ERR trap (logs on failure) also fires inside functions

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${JOBSUB_SLURM_DIR:-/var/lib/jobsub-slurm}
TIMEOUT=${JOBSUB_SLURM_TIMEOUT:-60}
CLUSTER=jobsub            # slurmdbd wants lower-case cluster names
HOST=$(hostname -s)
CONF_DIR=/etc/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=jobsub-slurm      # local socket only, test cluster
MUNGE_LOG=/var/log/munge/munged.log
MARIADB_LOG=$DIR/log/mariadb.log
LOGS=("$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$DIR/log/slurmdbd.log"
      "$DIR/log/daemons.out" "$MARIADB_LOG" "$MUNGE_LOG")

if [[ $EUID -ne 0 ]]; then
    # Daemons, /etc/slurm and apt all need root.
    command -v sudo >/dev/null || { echo "start-slurm.sh: run as root" >&2; exit 1; }
    exec sudo -E "$0" "$@"
fi

# /usr/sbin holds the daemons; a developer's PATH may lack it.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

log() { printf '[start-slurm %s] %s\n' "$(date +%T)" "$*"; }

show_logs() {
    local f
    for f in "${LOGS[@]}"; do
        [[ -s $f ]] || continue
        echo "----- tail -n 25 $f -----" >&2
        tail -n 25 "$f" >&2
    done
}

die() {
    echo "start-slurm.sh: ERROR: $*" >&2
    show_logs
    echo "start-slurm.sh: logs are in $DIR/log/ and $MUNGE_LOG" >&2
    exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# wait_for WHAT [--pid PIDFILE] CMD...: poll CMD every 0.5 s until it
# succeeds; fail after TIMEOUT, or at once if the daemon in PIDFILE died.
wait_for() {
    local what=$1 pidfile=
    shift
    if [[ $1 == --pid ]]; then pidfile=$2; shift 2; fi
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $pidfile ]] && ! pid_alive "$pidfile"; then
            die "$what exited during startup"
        fi
        ((SECONDS < deadline)) || die "$what not up after ${TIMEOUT}s"
        sleep 0.5
    done
}

# proc_running PID: the process runs. `kill -0` is not enough: a killed daemon stays a
# zombie until init reaps it, which the init of our VMs does lazily.
proc_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# pid_alive PIDFILE: the daemon named in PIDFILE runs. The pid must belong to
# the daemon the file is named after (slurmctld.pid -> slurmctld): after a
# machine or sandbox restart, a stale pid file may name a recycled pid that
# now belongs to some other process, and trusting it would skip the start.
pid_alive() {
    local pid name
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    name=$(basename "$1" .pid)
    proc_running "$pid" || return 1
    # "setsid": the instant between our fork and its exec of the daemon.
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ ^($name|setsid)$ ]]
}

# stop_pid PIDFILE: SIGTERM, then SIGKILL after 15 s.
stop_pid() {
    local pid i
    pid_alive "$1" || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        proc_running "$pid" || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

# detach CMD...: run CMD in a new session (setsid -f: forked, not waited for),
# stdio to a log file, so that it survives this script and a CI step's
# process group, and holds nothing the CI step waits for.
detach() { setsid -f "$@" </dev/null >>"$DIR/log/daemons.out" 2>&1; }

# ---------------------------------------------------------------- install --
install_packages() {
    local pkgs=(slurm-wlm slurmdbd munge mariadb-server)
    local missing=0 b
    for b in sbatch sacct slurmctld slurmd slurmdbd munged mysqld_safe; do
        command -v "$b" >/dev/null || missing=1
    done
    ((missing)) || return 0
    log "installing ${pkgs[*]} (15-40 s)"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only if the package lists do not know slurm-wlm yet.
    apt-cache show slurm-wlm >/dev/null 2>&1 || apt-get update -q
    # If the lists are stale (a version gone from the mirror), update and retry.
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${pkgs[@]}"; }
}

# ----------------------------------------------------------------- config --
# render TEMPLATE DEST MODE: fill in @NAME@ placeholders; returns 0 if DEST
# changed (so the daemons reading it must be restarted), 1 otherwise.
render() {
    local tmp
    tmp=$(mktemp)
    sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$DIR|g" \
        -e "s|@CONF_DIR@|$CONF_DIR|g" \
        -e "s|@DB_NAME@|$DB_NAME|g" -e "s|@DB_USER@|$DB_USER|g" \
        -e "s|@DB_PASS@|$DB_PASS|g" "$1" >"$tmp"
    if [[ -f $2 ]] && cmp -s "$tmp" "$2"; then
        rm -f "$tmp"
        return 1
    fi
    # Keep a configuration that someone else wrote.
    if [[ -f $2 ]] && ! grep -q 'Managed by jobsub' "$2"; then
        cp -p "$2" "$2.before-jobsub"
        log "saved the existing $2 as $2.before-jobsub"
    fi
    install -m "$3" "$tmp" "$2"
    rm -f "$tmp"
}

# cgroup_v1_usable: the memory and freezer controllers are mounted as cgroup
# v1 and we can create a group with a memory limit (Slurm 22.05 can only use
# cgroup v2 through systemd, which we do not have).
cgroup_v1_usable() {
    [[ ${JOBSUB_SLURM_CGROUP:-auto} != no ]] || return 1
    local c probe=/sys/fs/cgroup/memory/jobsub-probe.$$
    for c in memory freezer; do
        grep -qE "^[^ ]+ /sys/fs/cgroup/$c cgroup .*\b$c\b" /proc/mounts || return 1
    done
    mkdir "$probe" 2>/dev/null || return 1
    local ok=0
    echo $((64 << 20)) >"$probe/memory.limit_in_bytes" 2>/dev/null || ok=1
    rmdir "$probe"
    return $ok
}

# ---------------------------------------------------------------- daemons --
start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    log "starting munged"
    # The munge package creates the key; make one if it is missing.
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey -c -k /etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    # /run is a tmpfs that systemd-tmpfiles would populate; do it ourselves.
    install -d -o munge -g munge -m 755 /run/munge
    # --force: remove a stale socket left by a killed munged.
    runuser -u munge -- setsid -f munged --force \
        </dev/null >>"$DIR/log/daemons.out" 2>&1
    wait_for munged sh -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
    if ! mysqladmin ping >/dev/null 2>&1; then
        log "starting MariaDB"
        install -d -o mysql -g mysql -m 755 /run/mysqld
        # The package initialises /var/lib/mysql; do it if that did not happen.
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$DIR/log/daemons.out" 2>&1
        fi
        touch "$MARIADB_LOG"
        chown mysql:mysql "$MARIADB_LOG"
        # innodb_lock_wait_timeout=900: what slurmdbd asks for (it warns otherwise).
        detach mysqld_safe --log-error="$MARIADB_LOG" --innodb-lock-wait-timeout=900
        wait_for MariaDB mysqladmin ping
    fi
    # Debian's root@localhost logs in through the unix socket, no password.
    # ALTER: a user created by another setup (another password) would lock our slurmdbd out
    mysql -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
              CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
              ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';"
}

# start_slurm_daemon NAME RESTART: (re)start slurmdbd / slurmctld / slurmd.
start_slurm_daemon() {
    local name=$1 restart=$2 pidfile=$DIR/run/$1.pid
    if pid_alive "$pidfile"; then
        ((restart)) || return 0
        log "restarting $name (configuration changed)"
        stop_pid "$pidfile"
    else
        log "starting $name"
    fi
    # -D (foreground) in a new session, in the background: $! is the daemon
    # itself, so a crash at startup is noticed at once; setsid detaches it
    # from this script and from a CI step's process group, and nothing holds
    # on to our stdout (errors before the log file is open land in
    # daemons.out). The daemon rewrites the same pid into its pid file.
    rm -f "$pidfile"
    setsid "$name" -D </dev/null >>"$DIR/log/daemons.out" 2>&1 &
    echo $! >"$pidfile"
}

cluster_registered() {
    [[ -n $(sacctmgr -n -P list cluster format=cluster where cluster="$CLUSTER" 2>/dev/null) ]]
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

# Node state (compact form), without the flag a state may end with ('*': not responding,
# '~': powered off, '#', '!', '%', '$', '@', '^', '-': powering, reserved, rebooting...).
node_state() { local s; s=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -n 1); echo "${s%[*~#!%\$@^-]}"; }
node_ready() { [[ $(node_state) =~ ^(idle|mix|alloc|comp)$ ]]; }

sacct_works() { sacct -n -X -a -S now-1hour -o JobID >/dev/null 2>&1; }

# foreign_daemons: "NAME PID" of each running slurmdbd, slurmctld or slurmd that our pid
# files do not name (nor a child of one: a daemon may fork for a moment).
foreign_daemons() {
    local name p pid ours parent
    for name in slurmdbd slurmctld slurmd; do
        ours=$(cat "$DIR/run/$name.pid" 2>/dev/null || true)
        for p in /proc/[0-9]*; do
            pid=${p##*/}
            [[ $(cat "$p/comm" 2>/dev/null) == "$name" && $pid != "$ours" ]] || continue
            proc_running "$pid" || continue
            parent=$(awk '{print $4}' "$p/stat" 2>/dev/null || true)
            [[ -n $ours && $parent == "$ours" ]] && continue
            echo "$name $pid"
        done
    done
}

# describe PID: its command line and where its configuration comes from.
describe() {
    local cmd conf
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true)
    conf=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n 's/^SLURM_CONF=//p' || true)
    echo "${cmd:-?} (configuration: ${conf:-from its command line or /etc/slurm})"
}

# check_foreign: refuse to start next to Slurm daemons this script did not start, or
# (JOBSUB_SLURM_TAKEOVER=1) stop them first. Nothing is changed before this check.
check_foreign() {
    local found name pid
    found=$(foreign_daemons)
    [[ -n $found ]] || return 0
    if [[ ${JOBSUB_SLURM_TAKEOVER:-0} != 1 ]]; then
        {
            echo "start-slurm.sh: ERROR: Slurm daemons that this script did not start are running:"
            while read -r name pid; do echo "  $name pid $pid: $(describe "$pid")"; done <<<"$found"
            echo "They would serve this machine with their own configuration (a foreign slurmd drains"
            echo "the node on the first job). Stop them, or run again with JOBSUB_SLURM_TAKEOVER=1 to"
            echo "have this script stop them and start its own cluster. Nothing was changed."
        } >&2
        exit 2
    fi
    mkdir -p "$DIR/run/foreign"
    while read -r name pid; do
        log "taking over: stopping the foreign $name (pid $pid: $(describe "$pid"))"
        echo "$pid" >"$DIR/run/foreign/$name.pid"  # stop_pid checks the pid is a NAME still
        stop_pid "$DIR/run/foreign/$name.pid"
        rm -f "$DIR/run/foreign/$name.pid"
    done <<<"$found"
}

# ------------------------------------------------------------------- main --
start=$SECONDS
install_packages
mkdir -p "$DIR"/{state,spool,run,log} "$CONF_DIR"
check_foreign

if cgroup_v1_usable; then memory_mode=cgroup; else memory_mode=rss; fi
slurm_changed=0 dbd_changed=0
render "$HERE/slurm/slurm.conf.in" "$CONF_DIR/slurm.conf" 644 && slurm_changed=1
render "$HERE/slurm/memory-$memory_mode.conf" "$CONF_DIR/jobsub-memory.conf" 644 && slurm_changed=1
render "$HERE/slurm/cgroup.conf.in" "$CONF_DIR/cgroup.conf" 644 && slurm_changed=1
# slurmdbd refuses a slurmdbd.conf readable by others (it holds a password).
render "$HERE/slurm/slurmdbd.conf.in" "$CONF_DIR/slurmdbd.conf" 600 && dbd_changed=1

start_munge
start_mariadb

start_slurm_daemon slurmdbd "$dbd_changed"
wait_for slurmdbd --pid "$DIR/run/slurmdbd.pid" sacctmgr -n list cluster
# The cluster must exist in the database before slurmctld registers with it.
# Adding it also creates the "root" account with an association for root.
if ! cluster_registered; then
    log "registering cluster $CLUSTER in slurmdbd"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

start_slurm_daemon slurmctld "$slurm_changed"
wait_for slurmctld --pid "$DIR/run/slurmctld.pid" ctld_up
start_slurm_daemon slurmd "$slurm_changed"

deadline=$((SECONDS + TIMEOUT))
until node_ready; do
    state=$(node_state)
    # A node of ours left DOWN/DRAINED (by an earlier run, a job's failure): back into service.
    if [[ $state =~ ^(down|drain|drng|drained|draining|fail|failg|inval)$ ]]; then
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    fi
    pid_alive "$DIR/run/slurmd.pid" || die "slurmd exited during startup"
    ((SECONDS < deadline)) || die "node $HOST not ready after ${TIMEOUT}s (state: ${state:-none})"
    sleep 0.5
done
wait_for "sacct (accounting)" sacct_works

log "Slurm cluster '$CLUSTER' is up (node $HOST: $(node_state); $((SECONDS - start)) s)"
log "config: $CONF_DIR/slurm.conf (+ jobsub-memory.conf: $memory_mode mode, cgroup.conf), $CONF_DIR/slurmdbd.conf"
log "logs:   $DIR/log/ (slurmctld.log slurmd.log slurmdbd.log mariadb.log daemons.out), $MUNGE_LOG"
log "stop:   $HERE/stop-slurm.sh"
