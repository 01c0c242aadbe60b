#!/usr/bin/env bash
# Stop the local cluster started by start.sh: cancel every job first (job steps
# outlive the daemons), wait for them to leave the node, then stop slurmd and
# slurmctld by their pid files, and munged too if start.sh started it.
#
# Environment:
#   SLURM_LOCAL_DIR      directory given to start.sh        (default: /tmp/sicog-slurm)
#   SLURM_LOCAL_TIMEOUT  seconds to wait for jobs/daemons   (default: 30)
#   STOP_MUNGE           1 = also stop munged if start.sh started it (default: 1)
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

DIR=${SLURM_LOCAL_DIR:-/tmp/sicog-slurm}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-30}
STOP_MUNGE=${STOP_MUNGE:-1}
export SLURM_CONF="$DIR/slurm.conf"

stop_pidfile() {  # stop_pidfile FILE NAME
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq $((TIMEOUT * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: $name ($pid) ignored SIGTERM for ${TIMEOUT}s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$f"
}

if [ -f "$SLURM_CONF" ] && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one job id per word
    scancel $jobs 2>/dev/null
    for _ in $(seq $((TIMEOUT * 2))); do
      # jobs still pending/running/completing (finished ones stay listed for MinJobAge)
      squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING,REQUEUED,RESIZING,SIGNALING,STAGE_OUT,STOPPED -o '%i' 2>/dev/null | grep -q . || break
      sleep 0.5
    done
  fi
fi
stop_pidfile "$DIR/slurmd.pid" slurmd
stop_pidfile "$DIR/slurmctld.pid" slurmctld
if [ "$STOP_MUNGE" = 1 ] && [ -f /run/munge/.started-by-sicog ]; then
  stop_pidfile /run/munge/munged.pid munged
  rm -f /run/munge/.started-by-sicog
fi
exit 0
