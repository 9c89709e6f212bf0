#!/usr/bin/env bash
# The services the SLURM tests use, on this machine only: a one-node SLURM cluster (munge,
# slurmctld, slurmd) and a PostgreSQL server on loopback, each with its own configuration and
# state under $RNN_RESEARCH_SERVICES (default /tmp/rnn_research_services); nothing in /etc is
# changed. Every command is idempotent.
#
#   bash scripts/services.sh install   # as root: apt-get install slurm-wlm munge postgresql
#   bash scripts/services.sh start     # installs what is missing, starts what is not running,
#                                      # then prints KEY=VALUE lines: SLURM_CONF, the partition,
#                                      # the database URL, and STARTED=<what this call started>
#   bash scripts/services.sh status    # exit status 0 when all of them run
#   bash scripts/services.sh stop [NAMES]  # stops them (or those of NAMES, e.g. the STARTED
#                                      # value) by the process ids in their pid files
#
# Tests read the KEY=VALUE lines (tests/test_slurm.py); a shell can `eval` them. Needs root
# (slurmd runs jobs as any user; the daemons read root-owned state).
set -euo pipefail

STATE="${RNN_RESEARCH_SERVICES:-/tmp/rnn_research_services}"
SLURM_PORT="${RNN_RESEARCH_SLURM_PORT:-16817}"  # slurmctld; slurmd uses the next port
PG_PORT="${RNN_RESEARCH_PG_PORT:-15432}"
PARTITION=debug
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"

fail() { echo "services.sh: $*" >&2; exit 1; }

installed() {
  command -v munged >/dev/null && command -v slurmctld >/dev/null && [ -x "$PG_BIN/postgres" ]
}

install() {
  if installed; then return; fi
  [ "$(id -u)" = 0 ] || fail "not root: cannot apt-get install slurm-wlm munge postgresql"
  command -v apt-get >/dev/null || fail "no apt-get: install slurm-wlm, munge and postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || fail "apt-get update failed (no network?)"
  apt-get install -y -qq slurm-wlm munge postgresql >&2 || fail "apt-get install failed"
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
}

running() {  # pid file (the pid on its first line) -> exit status 0 when that process lives
  [ -f "$1" ] && kill -0 "$(head -n 1 "$1")" 2>/dev/null
}

wait_for() {  # seconds, description, command...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  fail "$what did not come up within ${seconds}s (logs in $STATE)"
}

STARTED=()  # what this call started

start_munge() {
  local dir="$STATE/munge"
  if running "$dir/munged.pid"; then return; fi
  STARTED+=(munge)
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/munge.key" ]; then
    head -c 1024 /dev/urandom >"$dir/munge.key"
    chmod 400 "$dir/munge.key"
  fi
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
  wait_for 10 munge bash -c "munge -n -S '$dir/munge.socket' | unmunge -S '$dir/munge.socket'"
}

write_slurm_conf() {
  local dir="$STATE/slurm" cpus memory
  cpus="$(nproc)"
  memory="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
  mkdir -p "$dir/spool" "$dir/state"
  cat >"$dir/slurm.conf" <<EOF
# Written by rnn_research scripts/services.sh: a one-node cluster on localhost for tests.
ClusterName=rnn-research-test
SlurmctldHost=localhost
SlurmctldPort=$SLURM_PORT
SlurmdPort=$((SLURM_PORT + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this + 1 s before it starts again (default 120)
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=2
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus \
  RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_slurm() {
  local dir="$STATE/slurm"
  export SLURM_CONF="$dir/slurm.conf"
  if ! running "$dir/slurmctld.pid"; then
    STARTED+=(slurmctld)
    write_slurm_conf
    slurmctld -f "$SLURM_CONF"
  fi
  wait_for 20 slurmctld scontrol ping
  if ! running "$dir/slurmd.pid"; then
    STARTED+=(slurmd)
    slurmd -f "$SLURM_CONF" -N localhost
  fi
  wait_for 30 "the slurm node" bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
}

start_postgres() {
  local dir="$STATE/postgres"
  if running "$dir/data/postmaster.pid"; then return; fi
  STARTED+=(postgres)
  mkdir -p "$dir"
  chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log"
  fi
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
    -o "-p $PG_PORT -h 127.0.0.1 -k $dir" start >/dev/null
}

postgres_url() {
  echo "postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

start() {
  [ "$(id -u)" = 0 ] || fail "not root: the test cluster's daemons run as root"
  install
  mkdir -p "$STATE"
  start_munge
  start_slurm
  start_postgres
  echo "SLURM_CONF=$STATE/slurm/slurm.conf"
  echo "RNN_RESEARCH_PARTITION=$PARTITION"
  echo "RNN_RESEARCH_DATABASE=$(postgres_url)"
  echo "STARTED=$(IFS=,; echo "${STARTED[*]}")"
}

pid_file() {  # service name -> its pid file
  case "$1" in
    slurmd|slurmctld) echo "$STATE/slurm/$1.pid" ;;
    postgres) echo "$STATE/postgres/data/postmaster.pid" ;;
    munge) echo "$STATE/munge/munged.pid" ;;
  esac
}

stop() {  # [comma-separated names]: signals them all, then waits for them to exit
  local names="${1:-slurmd,slurmctld,postgres,munge}" pids=() name pid alive
  for name in ${names//,/ }; do
    if running "$(pid_file "$name")"; then
      pid="$(head -n 1 "$(pid_file "$name")")"
      # SIGINT is PostgreSQL's fast shutdown (it does not wait for clients to leave).
      if [ "$name" = postgres ]; then kill -INT "$pid"; else kill "$pid"; fi
      pids+=("$pid")
    fi
  done
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    if [ "$alive" = 0 ]; then return 0; fi
    sleep 0.1
  done
  fail "some of ${pids[*]} did not stop within 10s"
}

status() {
  local name
  for name in munge slurmctld slurmd postgres; do running "$(pid_file "$name")" || return 1; done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  *) fail "usage: services.sh install|start|status|stop" ;;
esac
