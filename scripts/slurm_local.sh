#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1, so CI (and a laptop) can run the workflow through the real executor
# plugin. Debian 12 packages: apt-get install -y --no-install-recommends munge slurmctld slurmd slurm-client
#
#   sudo scripts/slurm_local.sh start     write the config, start munged, slurmctld, slurmd; wait until idle
#   sudo scripts/slurm_local.sh status    exit 0 and show the node when up, exit 3 when down
#   sudo scripts/slurm_local.sh stop      stop the daemons this script started, by their PIDs
#
# Why it looks like this (../shared/notes/slurm-loopback.md has the facts found by trying):
# - the config must be /etc/slurm/slurm.conf: the jobstep plugin strips SLURM_CONF before its in-job srun,
#   so we symlink our generated file there (and refuse to replace a real one);
# - no systemd: daemons are started directly and stopped by the PIDs they write;
# - fake GPUs (gres gpu:N, each backed by a harmless character device; without File= the node is INVAL) so
#   rules with `gpu=1` (sbatch --gpus=1) schedule on a CPU machine, and two at once get CUDA_VISIBLE_DEVICES
#   0 and 1 from SLURM, as on a multi-GPU node; N is $SLURM_LOCAL_GPUS (default 2, at most 4);
# - EnforcePartLimits=ALL rejects a job larger than the node at once (else it pends, and Snakemake with it);
#   DefMemPerCPU stops a job without --mem from taking the whole node; MinJobAge=300 keeps finished jobs
#   visible to squeue, the plugin's status command when there is no accounting.
# Every wait is bounded. State, logs and spool live in $SLURM_LOCAL_DIR (default /tmp/slimbench-slurm).
set -euo pipefail

STATE="${SLURM_LOCAL_DIR:-/tmp/slimbench-slurm}"
ETC=/etc/slurm
MUNGE_RUN=/run/munge
WAIT_S="${SLURM_LOCAL_WAIT_S:-30}"
GPUS="${SLURM_LOCAL_GPUS:-2}"
FAKE_GPU_FILES=(/dev/null /dev/zero /dev/full /dev/urandom)

die() { echo "slurm_local: $*" >&2; exit 1; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Wait up to $1 seconds for the command that follows to succeed.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.3
  done
}

node_idle() { [ "$(timeout 5 sinfo -h -o %T 2>/dev/null)" = idle ]; }

write_config() {
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  [ -n "$memory" ] || die "could not read RealMemory from 'slurmd -C'"
  [ "$GPUS" -ge 1 ] && [ "$GPUS" -le ${#FAKE_GPU_FILES[@]} ] || die "SLURM_LOCAL_GPUS must be 1 to ${#FAKE_GPU_FILES[@]}"
  cat >"$STATE/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a one-node loopback cluster (no accounting, fake GPU).
ClusterName=loopback
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
EnforcePartLimits=ALL
DefMemPerCPU=1000
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  local file
  for file in "${FAKE_GPU_FILES[@]:0:$GPUS}"; do echo "NodeName=$host Name=gpu File=$file"; done >"$STATE/gres.conf"
}

# Our files in /etc/slurm are symlinks into $STATE; a real file there belongs to someone else.
link_config() {
  local name
  for name in slurm.conf gres.conf; do
    if [ -e "$ETC/$name" ] && [ "$(readlink "$ETC/$name")" != "$STATE/$name" ]; then
      die "$ETC/$name exists and is not ours; this script will not replace a real cluster's config."
    fi
  done
  mkdir -p "$ETC"
  for name in slurm.conf gres.conf; do ln -sfn "$STATE/$name" "$ETC/$name"; done
}

start_munge() {
  if timeout 5 bash -c 'munge -n | unmunge' >/dev/null 2>&1; then
    return  # a munged is already serving: use it, and leave it running on stop
  fi
  mkdir -p "$MUNGE_RUN"
  chown munge:munge "$MUNGE_RUN"
  chmod 0755 "$MUNGE_RUN"
  mkdir -p "$STATE/munge"
  chown munge:munge "$STATE/munge"  # munged runs as munge and writes its log there
  runuser -u munge -- munged --force --pid-file="$MUNGE_RUN/munged.pid" --log-file="$STATE/munge/munged.log"
  wait_for "$WAIT_S" bash -c 'munge -n | unmunge' || die "munged did not answer within ${WAIT_S}s"
  cp "$MUNGE_RUN/munged.pid" "$STATE/run/munged.pid"  # the marker that we started it
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it starts daemons and writes $ETC)"
  for tool in munged slurmctld slurmd sinfo srun; do
    command -v "$tool" >/dev/null || die "'$tool' missing: apt-get install -y --no-install-recommends munge slurmctld slurmd slurm-client"
  done
  if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid"; then
    echo "slurm_local: already running"
    return
  fi
  rm -rf "$STATE/spool"
  mkdir -p "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log" "$STATE/run"
  write_config
  link_config
  start_munge
  slurmctld -c || { tail -20 "$STATE/log/slurmctld.log" >&2; stop; die "slurmctld failed to start"; }
  slurmd || { tail -20 "$STATE/log/slurmd.log" >&2; stop; die "slurmd failed to start"; }
  if ! wait_for "$WAIT_S" node_idle; then
    timeout 5 sinfo -N -l >&2 || true
    tail -20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    stop
    die "the node was not idle within ${WAIT_S}s"
  fi
  timeout "$WAIT_S" srun -N1 -n1 true || { stop; die "a test job (srun true) failed"; }
  echo "slurm_local: up ($(hostname -s), $(nproc) CPUs, gres gpu:$GPUS; logs in $STATE/log)"
}

stop_pid() {
  local file=$1 pid
  alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  wait_for 10 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  stop_pid "$STATE/run/slurmd.pid"
  stop_pid "$STATE/run/slurmctld.pid"
  stop_pid "$STATE/run/munged.pid"
  local name
  for name in slurm.conf gres.conf; do
    [ "$(readlink "$ETC/$name" 2>/dev/null)" = "$STATE/$name" ] && rm -f "$ETC/$name"
  done
  echo "slurm_local: stopped"
}

status() {
  if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid"; then
    timeout 5 sinfo -N -o "%N %T %c %m %G" || true
    return 0
  fi
  echo "slurm_local: not running"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
