#!/usr/bin/env bash
# A real two-node Slurm cluster on loopback, for cluster-train's tests.
#
# Two slurmd daemons on this one machine (Debian's Slurm is built with multiple-slurmd) play
# the nodes n1 and n2: both NodeAddr=127.0.0.1, each its own Port=, 2 fake GPUs each
# (character devices, so Slurm sets CUDA_VISIBLE_DEVICES as on a real GPU node). The node
# names do not resolve and every task sees the same hostname: code under test must tell
# nodes apart by SLURMD_NODENAME / SLURM_NODEID, never by hostname.
#
#   tests/slurm/cluster.sh up [--no-accounting]   install what is missing, start or reconfigure
#   tests/slurm/cluster.sh down [--purge]         stop every daemon (--purge: also delete the state dir)
#   tests/slurm/cluster.sh status                 daemons, mode, sinfo
#   tests/slurm/cluster.sh env                    export lines: eval "$(tests/slurm/cluster.sh env)"
#
# Everything (configs, spool, state, logs, pid files, the MariaDB data dir, the munge key)
# lives under ONE directory: ${CLUSTER_TEST_STATE:-/tmp/cluster-train-slurm}.
# The one exception: munged's socket is the default /run/munge/munge.socket.2 (Slurm 22.05's
# connections to slurmdbd ignore AuthInfo=socket=).
# Clients find the cluster through SLURM_CONF only (printed by `env`); nothing is written to
# /etc/slurm. Batch jobs get SLURM_CONF from slurmd even with --export=NONE.
#
# Modes: accounting (default: MariaDB on 127.0.0.1 + slurmdbd; sacct works) and --no-accounting
# (AccountingStorageType=accounting_storage/none; sacct says storage is disabled).
# Switching mode restarts slurmctld only (job state is kept); slurmdbd is left running.
#
# Knobs (environment):
#   CLUSTER_TEST_STATE    state dir (/tmp/cluster-train-slurm)
#   CLUSTER_TEST_NAME     ClusterName (ctrain)
#   CLUSTER_TEST_CPUS     CPUs declared on each node (default max(nproc, 4): a little
#                         oversubscription so several small test jobs run at once on 2 cores)
#   CLUSTER_TEST_MEM_MB   RealMemory of each node (half of MemTotal minus min(2 GiB, 25%):
#                         both nodes share this machine's memory)
#   CLUSTER_TEST_DB_PORT  MariaDB's TCP port on 127.0.0.1 (13306)
#   CLUSTER_TEST_PORT     first of the cluster's TCP ports (6817): slurmctld on it, slurmdbd
#                         on +2, node n1's slurmd on +4, n2's on +5. A second instance (other
#                         state dir, name and ports) can run beside the first; it reuses the
#                         munged already answering on the default socket.
#   CLUSTER_TEST_FIRST_JOB_ID  FirstJobId (unset: Slurm's 1). A second instance starts its job
#                         ids far from the first's (.ci/run's serial lane: 500000), so that
#                         a test that finds a job's processes by its id never finds the other's.
#   CLUSTER_TEST_WAIT     seconds to wait for each readiness check (60)
#   CLUSTER_TEST_MAX_ARRAY_SIZE  MaxArraySize (unset: Slurm's default, 1001). A test lowers it
#                         with `CLUSTER_TEST_MAX_ARRAY_SIZE=4 cluster.sh up`, then restores it
#                         with a plain `up` (slurmctld restarts; the nodes' slurmd do not).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
S="${CLUSTER_TEST_STATE:-/tmp/cluster-train-slurm}"
NAME="${CLUSTER_TEST_NAME:-ctrain}"
HOST="$(hostname -s)"
NODES=(n1 n2)
PORT0="${CLUSTER_TEST_PORT:-6817}"
CTLD_PORT=$PORT0
DBD_PORT=$((PORT0 + 2))
DB_PORT="${CLUSTER_TEST_DB_PORT:-13306}"
WAIT="${CLUSTER_TEST_WAIT:-60}"
ETC="$S/etc"
CONF="$ETC/slurm.conf"
LOG="$S/log"
RUN="$S/run"
MODULES_HOME=/usr/share/modules
# munged listens on its default socket: Slurm's connections to slurmdbd (sacctmgr, slurmctld)
# ignore AuthInfo=socket= in 22.05 and always use the default one.
MUNGE_SOCKET=/run/munge/munge.socket.2
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server slurm-wlm-torque environment-modules)

export SLURM_CONF="$CONF"

say() { echo "cluster.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}) and not root to install them"
    say "installing: ${missing[*]}"
    # Keep package scripts from starting system-wide daemons (no init system here anyway).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >"/tmp/cluster-train-apt.log" 2>&1 \
        || { tail -n 30 /tmp/cluster-train-apt.log >&2; [ $made_policy -eq 1 ] && rm -f "$policy"; die "apt-get install failed"; }
    [ $made_policy -eq 1 ] && rm -f "$policy"
    return 0
}

# ---------------------------------------------------------------- process helpers
# running NAME PIDFILE -> 0 if the pid in PIDFILE is alive and is NAME
running() {
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

# alive PID -> 0 if the process exists and is not a zombie (killed, not yet reaped)
alive() {
    [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# stop NAME PIDFILE [TIMEOUT]
stop() {
    local name=$1 pidfile=$2 timeout=${3:-20} pid i
    running "$name" "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "$name (pid $pid) did not stop in ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
}

# wait_for SECONDS DESCRIPTION LOGFILE COMMAND... -> polls COMMAND every 0.2 s
wait_for() {
    local secs=$1 what=$2 logfile=$3 deadline
    shift 3
    deadline=$((SECONDS + secs))
    while ! "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            say "timed out after ${secs}s waiting for: $what"
            say "logs are in $LOG/ ; last lines of $logfile:"
            tail -n 25 "$logfile" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- config
mem_mb() {
    if [ -n "${CLUSTER_TEST_MEM_MB:-}" ]; then echo "$CLUSTER_TEST_MEM_MB"; return; fi
    local total head
    total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    head=$((total / 4)); [ $head -gt 2048 ] && head=2048
    echo $(((total - head) / ${#NODES[@]}))
}

# write_slurm_conf MODE(acct|noacct) FILE
write_slurm_conf() {
    local mode=$1 out=$2 cpus mem acct nodes i
    cpus="${CLUSTER_TEST_CPUS:-$(nproc)}"
    [ -n "${CLUSTER_TEST_CPUS:-}" ] || [ "$cpus" -ge 4 ] || cpus=4
    mem=$(mem_mb)
    local limits=""
    [ -z "${CLUSTER_TEST_MAX_ARRAY_SIZE:-}" ] || limits="MaxArraySize=$CLUSTER_TEST_MAX_ARRAY_SIZE
"
    [ -z "${CLUSTER_TEST_FIRST_JOB_ID:-}" ] || limits+="FirstJobId=$CLUSTER_TEST_FIRST_JOB_ID
"
    if [ "$mode" = acct ]; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu"
    else
        acct="AccountingStorageType=accounting_storage/none"
    fi
    nodes=""
    for i in "${!NODES[@]}"; do
        nodes+="NodeName=${NODES[$i]} NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((PORT0 + 4 + i)) CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
"
    done
    cat >"$out" <<EOF
# Generated by tests/slurm/cluster.sh -- do not edit (mode: $mode)
ClusterName=$NAME
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits out the credential lifetime before it may start again (Slurm's
# default 120 s): 10 s here, so a job requeued by a node failure goes on by itself within a
# test's time. Real sites keep 120 s (the README's node-failure section says so).
AuthInfo=cred_expire=10
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
DebugFlags=NO_CONF_HASH
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=2
$acct
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=1
KillWait=5
MinJobAge=600
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_min_interval=0
${limits}${nodes}PartitionName=gpu Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=UNLIMITED State=UP
PartitionName=cpu Nodes=$(IFS=,; echo "${NODES[*]}") Default=NO MaxTime=UNLIMITED State=UP
EOF
}

write_static_confs() {
    local i n g
    mkdir -p "$ETC" "$LOG" "$RUN" "$S/ctld" "$S/munge" "$S/gpu"
    chmod 700 "$S/munge"
    : >"$ETC/gres.conf"
    for i in "${!NODES[@]}"; do
        n=${NODES[$i]}
        mkdir -p "$S/spool/$n"
        # Character devices (/dev/null's numbers), not plain files: with plain files Slurm
        # leaves CUDA_VISIBLE_DEVICES empty on multi-node jobs.
        for g in $((2 * i)) $((2 * i + 1)); do
            [ -c "$S/gpu/fakegpu$g" ] || { rm -f "$S/gpu/fakegpu$g"; mknod "$S/gpu/fakegpu$g" c 1 3; }
        done
        printf 'NodeName=%s Name=gpu File=%s/gpu/fakegpu[%d-%d]\n' "$n" "$S" $((2 * i)) $((2 * i + 1)) >>"$ETC/gres.conf"
    done
    umask 077
    cat >"$ETC/slurmdbd.conf" <<EOF
# Generated by tests/slurm/cluster.sh -- do not edit
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    umask 022
    chmod 600 "$ETC/slurmdbd.conf"
}

# ---------------------------------------------------------------- daemons
munge_answers() { munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
    running munged "$S/munge/munged.pid" && return 0
    # Another instance's munged (same machine, same key source) serves this one too;
    # starting a second with --force would take its socket away.
    munge_answers && return 0
    if [ ! -s "$S/munge/munge.key" ]; then
        if [ -s /etc/munge/munge.key ]; then
            cp /etc/munge/munge.key "$S/munge/munge.key"
        else
            mungekey --create --keyfile="$S/munge/munge.key"
        fi
        chmod 600 "$S/munge/munge.key"
    fi
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$S/munge/munge.key" \
        --pid-file="$S/munge/munged.pid" --log-file="$LOG/munged.log" --seed-file="$S/munge/munged.seed" \
        || { tail -n 20 "$LOG/munged.log" >&2 || true; die "munged failed to start"; }
    wait_for 10 "munged" "$LOG/munged.log" bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"
}

mariadb_cli() { mariadb --no-defaults --socket="$S/mysql/mysqld.sock" -uroot "$@"; }

start_mariadb() {
    running mariadbd "$S/mysql/mariadbd.pid" && return 0
    mkdir -p "$S/mysql"
    if [ ! -d "$S/mysql/data/mysql" ]; then
        rm -rf "$S/mysql/data"
        mariadb-install-db --no-defaults --datadir="$S/mysql/data" --user=root \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
            || { tail -n 20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    setsid mariadbd --no-defaults --datadir="$S/mysql/data" --socket="$S/mysql/mysqld.sock" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --user=root \
        --pid-file="$S/mysql/mariadbd.pid" --log-error="$LOG/mariadb.log" \
        --skip-log-bin --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
        --innodb-flush-log-at-trx-commit=2 --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 &
    wait_for 30 "mariadbd" "$LOG/mariadb.log" mariadb-admin --no-defaults --socket="$S/mysql/mysqld.sock" -uroot ping
    wait_for 10 "mariadbd pid file" "$LOG/mariadb.log" test -s "$S/mysql/mariadbd.pid"
    if [ ! -e "$S/mysql/.slurm-user" ]; then
        mariadb_cli -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
        touch "$S/mysql/.slurm-user"
    fi
}

start_slurmdbd() {
    running slurmdbd "$RUN/slurmdbd.pid" && return 0
    slurmdbd || { tail -n 20 "$LOG/slurmdbd.log" >&2 || true; die "slurmdbd failed to start"; }
}

# sacctmgr always talks to slurmdbd through an accounting-mode config.
sacctmgr_acct() { SLURM_CONF="$ETC/slurm-acct.conf" sacctmgr "$@"; }

register_cluster() {
    write_slurm_conf acct "$ETC/slurm-acct.conf"
    wait_for 30 "slurmdbd to answer" "$LOG/slurmdbd.log" sacctmgr_acct -n -P list cluster
    if ! sacctmgr_acct -n -P list cluster format=cluster | grep -qx "$NAME"; then
        sacctmgr_acct -i add cluster "$NAME" >/dev/null
    fi
}

start_slurmctld() {
    running slurmctld "$RUN/slurmctld.pid" && return 0
    slurmctld -f "$CONF" || { tail -n 20 "$LOG/slurmctld.log" >&2 || true; die "slurmctld failed to start"; }
}

# start_slurmd NODE: one slurmd per node name (-N), each with its own port, spool, log, pid file.
start_slurmd() {
    local n=$1
    running slurmd "$RUN/slurmd-$n.pid" && return 0
    slurmd -f "$CONF" -N "$n" || { tail -n 20 "$LOG/slurmd-$n.log" >&2 || true; die "slurmd $n failed to start"; }
}

stop_slurmds() {
    local n
    for n in "${NODES[@]}"; do stop slurmd "$RUN/slurmd-$n.pid"; done
    stop slurmd "$RUN/slurmd.pid"  # the one-node cluster's slurmd, before the nodes were n1, n2
}

node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n 1; }
node_ready() { case "$(node_state "$1")" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }
sacct_ready() { sacct -n -X -S now-1minutes >/dev/null 2>&1; }

# The config without the lines only slurmctld reads (accounting, MaxArraySize): when nothing
# else changed, slurmd need not restart.
strip_acct() { grep -v -e '^AccountingStorage' -e '^MaxArraySize' -e '^# Generated' "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- commands
cmd_up() {
    local mode=acct
    for a in "$@"; do
        case "$a" in
            --no-accounting) mode=noacct ;;
            --accounting) mode=acct ;;
            *) die "unknown option for up: $a" ;;
        esac
    done
    install_packages
    write_static_confs

    # Decide what to restart: a pure mode switch restarts slurmctld only.
    local new="$ETC/slurm.conf.new" restart_ctld=0 restart_slurmd=0
    write_slurm_conf "$mode" "$new"
    if [ -f "$CONF" ] && ! cmp -s "$new" "$CONF"; then
        restart_ctld=1
        if ! cmp -s <(strip_acct "$new") <(strip_acct "$CONF"); then restart_slurmd=1; fi
    fi

    start_munge
    if [ "$mode" = acct ]; then
        start_mariadb
        start_slurmdbd
        register_cluster
    fi
    if [ $restart_ctld -eq 1 ]; then stop slurmctld "$RUN/slurmctld.pid"; fi
    if [ $restart_slurmd -eq 1 ]; then stop_slurmds; fi
    mv -f "$new" "$CONF"
    echo "$mode" >"$S/mode"
    start_slurmctld
    wait_for "$WAIT" "slurmctld to answer" "$LOG/slurmctld.log" bash -c 'scontrol ping | grep -q "is UP"'
    local n states=""
    for n in "${NODES[@]}"; do
        if [ $restart_ctld -eq 1 ] && running slurmd "$RUN/slurmd-$n.pid"; then
            # A restarted slurmctld shows the node UNKNOWN until slurmd registers again (~4 s);
            # SIGHUP makes slurmd re-read the config and register at once.
            kill -HUP "$(cat "$RUN/slurmd-$n.pid")"
        fi
        start_slurmd "$n"
    done
    for n in "${NODES[@]}"; do
        wait_for "$WAIT" "node $n to register" "$LOG/slurmd-$n.log" bash -c "[ -n \"\$(sinfo -h -N -n '$n' -o %T)\" ]"
        case "$(node_state "$n")" in
            drain*|down*|fail*) scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        wait_for "$WAIT" "node $n to be idle (sinfo)" "$LOG/slurmd-$n.log" node_ready "$n"
        states+=" $n $(node_state "$n")"
    done
    if [ "$mode" = acct ]; then
        wait_for "$WAIT" "sacct to answer" "$LOG/slurmdbd.log" sacct_ready
    fi
    say "up ($([ "$mode" = acct ] && echo accounting || echo no-accounting)); nodes:$states; SLURM_CONF=$CONF"
}

cmd_down() {
    local purge=0
    for a in "$@"; do
        case "$a" in --purge) purge=1 ;; *) die "unknown option for down: $a" ;; esac
    done
    stop_slurmds
    stop slurmctld "$RUN/slurmctld.pid"
    stop slurmdbd "$RUN/slurmdbd.pid"
    stop mariadbd "$S/mysql/mariadbd.pid" 60
    stop munged "$S/munge/munged.pid"
    if [ $purge -eq 1 ]; then
        if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ]; then rm -f /etc/slurm/slurm.conf; fi
        case "$S" in /|"") die "refusing to purge '$S'" ;; esac
        rm -rf "$S"
    fi
    say "down"
}

cmd_status() {
    local d pf label n rc=0 daemons=()
    echo "state dir: $S   mode: $(cat "$S/mode" 2>/dev/null || echo none)   SLURM_CONF=$CONF"
    daemons=(munged:munged:"$S/munge/munged.pid" mariadbd:mariadbd:"$S/mysql/mariadbd.pid"
             slurmdbd:slurmdbd:"$RUN/slurmdbd.pid" slurmctld:slurmctld:"$RUN/slurmctld.pid")
    for n in "${NODES[@]}"; do daemons+=("slurmd:slurmd($n):$RUN/slurmd-$n.pid"); done
    for d in "${daemons[@]}"; do
        pf=${d#*:*:}; label=${d#*:}; label=${label%%:*}; d=${d%%:*}
        if running "$d" "$pf"; then printf '  %-14s running (pid %s)\n' "$label" "$(cat "$pf")"
        else printf '  %-14s stopped\n' "$label"; fi
    done
    if ! running munged "$S/munge/munged.pid" && munge_answers; then
        echo "  (munged: another instance's, on $MUNGE_SOCKET)"
    fi
    if [ -f "$CONF" ] && sinfo >/dev/null 2>&1; then
        sinfo
        sinfo -N -o '%N %T %c %m %G %E' | uniq  # one line per node (sinfo -N repeats it per partition)
    else
        echo "sinfo: no answer"; rc=1
    fi
    return $rc
}

cmd_env() {
    printf "export CLUSTER_TEST_STATE='%s'\n" "$S"
    # The knobs that make a second instance: a test that runs cluster.sh again (accounting off,
    # a lower MaxArraySize) must reach the same instance.
    local knob
    for knob in CLUSTER_TEST_NAME CLUSTER_TEST_PORT CLUSTER_TEST_DB_PORT CLUSTER_TEST_FIRST_JOB_ID; do
        [ -z "${!knob:-}" ] || printf "export %s='%s'\n" "$knob" "${!knob}"
    done
    printf "export SLURM_CONF='%s'\n" "$CONF"
    printf "export MODULESHOME='%s'\n" "$MODULES_HOME"
    # Prepends tests/slurm/modulefiles to MODULEPATH once (eval-ing twice adds nothing).
    local mp="$HERE/modulefiles"
    # shellcheck disable=SC2016
    printf 'case ":${MODULEPATH:-}:" in *":%s:"*) ;; *) export MODULEPATH='"'%s'"'"${MODULEPATH:+:$MODULEPATH}" ;; esac\n' "$mp" "$mp"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    status) shift; cmd_status "$@" ;;
    env) shift; cmd_env "$@" ;;
    *) echo "usage: $0 up [--no-accounting] | down [--purge] | status | env" >&2; exit 2 ;;
esac
