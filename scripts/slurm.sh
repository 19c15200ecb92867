#!/usr/bin/env bash
# A single-node Slurm cluster (Debian's Slurm 22.05, with accounting) for the Slurm tests.
#
#   scripts/slurm.sh up      install (if needed) and start munged, mariadbd, slurmdbd,
#                            slurmctld and slurmd inside a private network namespace
#                            holding only loopback; print the environment to use it
#   scripts/slurm.sh down    stop them all (by PID) and the namespace
#   scripts/slurm.sh env     print the environment (PATH, SLURM_CONF) for clients
#
# Clients (sbatch, sacct, scancel, ...) reach the daemons through wrappers in
# $STATE/bin that enter the namespace with `nsenter --net=` (`ip netns exec` remounts
# /sys, which breaks slurmd). Everything stays on 127.0.0.0/8; 127.0.0.2 is added to lo
# because glibc's address check ignores 127.0.0.1 and slurmctld must resolve itself.
set -euo pipefail

STATE=${ABLATION_SLURM_STATE:-/tmp/ablation-slurm}
HOST=$(hostname -s)
ADDR=127.0.0.2
NS_PID_FILE=$STATE/netns.pid
# Slurm's clients look for munge at its default socket, whatever AuthInfo says.
MUNGE_SOCKET=/run/munge/munge.socket.2

log() { echo "slurm.sh: $*" >&2; }

ns() { nsenter --net="/proc/$(cat "$NS_PID_FILE")/ns/net" "$@"; }

install_packages() {
  local missing=()
  for bin in slurmctld slurmd slurmdbd munged mariadbd sbatch; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing slurm-wlm munge slurmdbd mariadb-server (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
  fi
}

write_env() {
  cat > "$STATE/env" <<ENV
export SLURM_CONF=$STATE/etc/slurm.conf
export PATH=$STATE/bin:\$PATH
ENV
}

write_configs() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))  # half of RAM, in MB
  mkdir -p "$STATE"/{etc,bin,log,ctld,spool,mysql,run}
  cat > "$STATE/etc/slurm.conf" <<CONF
ClusterName=ablation
SlurmctldHost=$HOST($ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$ADDR
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
KillWait=5
NodeName=$HOST NodeAddr=$ADDR CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat > "$STATE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=$ADDR
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
  chmod 600 "$STATE/etc/slurmdbd.conf"
  for cmd in sbatch squeue sacct scancel sinfo scontrol sacctmgr; do
    printf '#!/bin/sh\nSLURM_CONF=%s exec nsenter --net=/proc/%s/ns/net %s "$@"\n' \
      "$STATE/etc/slurm.conf" "$(cat "$NS_PID_FILE")" "$(command -v "$cmd")" > "$STATE/bin/$cmd"
    chmod +x "$STATE/bin/$cmd"
  done
  write_env
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local n=$1 what=$2; shift 2
  local end=$((SECONDS + n))
  while [ $SECONDS -lt $end ]; do timeout 5 "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timed out waiting for $what; logs in $STATE/log"; return 1
}

start_bg() {  # start_bg NAME COMMAND... : run in the namespace, remember the PID
  local name=$1; shift
  # nsenter execs the daemon, so $! is the daemon's own PID
  SLURM_CONF=$STATE/etc/slurm.conf nsenter --net="/proc/$(cat "$NS_PID_FILE")/ns/net" "$@" \
    > "$STATE/log/$name.out" 2>&1 &
  echo $! > "$STATE/run/$name.bgpid"
}

up() {
  if [ -f "$NS_PID_FILE" ] && kill -0 "$(cat "$NS_PID_FILE")" 2>/dev/null; then
    log "already up (state in $STATE)"; write_env; cat "$STATE/env"; return 0
  fi
  install_packages
  rm -rf "$STATE"; mkdir -p "$STATE/run" "$STATE/log" "$(dirname "$MUNGE_SOCKET")"
  unshare --net sleep infinity & echo $! > "$NS_PID_FILE"  # holds the namespace open
  sleep 0.2
  ns ip link set lo up
  ns ip addr add "$ADDR/8" dev lo
  write_configs
  dd if=/dev/urandom of="$STATE/etc/munge.key" bs=1024 count=1 status=none
  chmod 400 "$STATE/etc/munge.key"
  start_bg munged /usr/sbin/munged --foreground --force --key-file="$STATE/etc/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$STATE/run/munged.pid" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/run/munge.seed"
  wait_for 10 munged test -S "$MUNGE_SOCKET"
  mariadb-install-db --datadir="$STATE/mysql" --user=root --auth-root-authentication-method=normal \
    > "$STATE/log/mariadb-install.log" 2>&1
  start_bg mariadbd /usr/sbin/mariadbd --no-defaults --datadir="$STATE/mysql" --user=root \
    --socket="$STATE/run/mysql.sock" --port=3306 --bind-address=127.0.0.1 --skip-grant-tables \
    --pid-file="$STATE/run/mariadbd.pid" --log-error="$STATE/log/mariadbd.log"
  wait_for 30 mariadbd test -S "$STATE/run/mysql.sock"
  start_bg slurmdbd /usr/sbin/slurmdbd -D
  wait_for 60 slurmdbd "$STATE/bin/sacctmgr" -n list cluster
  "$STATE/bin/sacctmgr" -i add cluster ablation >/dev/null
  start_bg slurmctld /usr/sbin/slurmctld -D -i
  wait_for 30 slurmctld sh -c "$STATE/bin/scontrol ping | grep -q UP"
  start_bg slurmd /usr/sbin/slurmd -D -N "$HOST"
  wait_for 30 "an idle node" sh -c "$STATE/bin/sinfo -h -o %t | grep -q idle"
  log "up: $("$STATE/bin/sinfo" -h -o '%P %D %t %c CPUs %m MB')"
  cat "$STATE/env"
}

down() {
  local f
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    f=$STATE/run/$name.bgpid
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    f=$STATE/run/$name.bgpid
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  [ -f "$NS_PID_FILE" ] && kill "$(cat "$NS_PID_FILE")" 2>/dev/null || true
  rm -f "$NS_PID_FILE"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) cat "$STATE/env" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
