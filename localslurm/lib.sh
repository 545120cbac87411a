# shellcheck shell=bash
# shellcheck disable=SC2034  # the names below are used by the scripts that source this file
# Shared by localslurm/up, down, status and ctl: names, paths and small helpers.
# The cluster belongs to the machine, not to a checkout: its state (pids, logs, spool,
# keys) lives in $RUN (/var/lib/biomero-localslurm), so every clone on this machine (CI's
# fresh clone, a second worktree) finds and shares the same running cluster. What a
# checkout's tests and demo read is written into that checkout: $OUT (localslurm/run/,
# git-ignored). Besides these, up writes /etc/slurm/{slurm,slurmdbd}.conf (marked as
# ours), the service account and the managed block in ~/.ssh/config.

LS_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=${LOCALSLURM_HOME:-/var/lib/biomero-localslurm}
OUT=$LS_HOME/run
PIDS=$RUN/pids
LOGS=$RUN/log
STATE=$RUN/state
SSHDIR=$RUN/ssh

CLUSTER=localslurm
SVC_USER=${LOCALSLURM_USER:-hpcuser}
SSH_PORT=${LOCALSLURM_SSH_PORT:-2222}
SSH_ALIAS=localslurm
NODE=$(hostname -s)
MARK="# written by biomeroworker localslurm/up"
SLURM_ETC=/etc/slurm
DB_NAME=localslurm_acct
DB_USER=localslurm
DB_PASS=localslurm-only-on-loopback
# JWT signing key for AuthAltTypes=auth/jwt (slurmctld, slurmdbd); slurmrestd on loopback.
JWT_KEY=$STATE/jwt_hs256.key
REST_PORT=${LOCALSLURM_REST_PORT:-6820}
REST_USER=nobody

# Daemons in start order.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd sshd slurmrestd)
# Started only by `localslurm/up --rest` (localslurm/rest-up); "off" is not a failure.
OPTIONAL_DAEMONS=(slurmrestd)

log() { printf '%s localslurm: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '%s localslurm: ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

pidfile() { echo "$PIDS/$1.pid"; }

# The pid we recorded for a daemon, if that process still runs the daemon.
our_pid() {
    local f pid
    f=$(pidfile "$1")
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
    echo "$pid"
}

# One up/down at a time on this machine (every checkout's tests call them; two at once
# could both start a daemon, and the loser, exiting, removes the winner's pid file).
# Held on descriptor 9 until the script exits; daemons (and apt-get, whose package
# scripts may start some) run with 9>&- so none keeps it.
machine_lock() {
    mkdir -p "$RUN"
    exec 9>"$RUN/up.lock"
    flock -w 900 9 || die "$RUN/up.lock still held after 15 minutes (a daemon started with descriptor 9 open?)"
}

# Forget a stopped daemon's pid file, unless it already names a newer process: another
# checkout's `up` may have started the daemon again meanwhile (the cluster is shared).
forget_pid() {
    local f
    f=$(pidfile "$1")
    [[ -s $f && $(<"$f") != "$2" ]] || rm -f "$f"
}

logfile() {
    case $1 in
        munged) echo "$LOGS/munged.log" ;;
        mariadbd) echo "$LOGS/mariadbd.log" ;;
        *) echo "$LOGS/$1.log" ;;
    esac
}

# Health checks: exit 0 when the daemon answers, whoever started it.
healthy() {
    case $1 in
        munged) munge -n 2>/dev/null | unmunge >/dev/null 2>&1 ;;
        mariadbd) mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1 ;;
        slurmdbd) timeout 10 sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1 ;;
        slurmctld) timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' ;;
        slurmd) timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)' ;;
        sshd) timeout 10 ssh -F "$SSHDIR/config" -o BatchMode=yes "$SSH_ALIAS" true >/dev/null 2>&1 ;;
        # Any HTTP answer (401 without a token) means slurmrestd is serving.
        slurmrestd) [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$REST_PORT/openapi/v3") != 000 ]] ;;
        *) return 1 ;;
    esac
}

# Wait (bounded) for a daemon to answer; on failure name it and its log.
wait_healthy() {
    local name=$1 limit=${2:-30} i
    for ((i = 0; i < limit * 4; i++)); do
        healthy "$name" && return 0
        sleep 0.25
    done
    echo "---- last lines of $(logfile "$name") ----" >&2
    tail -n 20 "$(logfile "$name")" >&2 2>/dev/null || true
    die "$name did not become ready within ${limit}s; its log is $(logfile "$name")"
}
