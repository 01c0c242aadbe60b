# shellcheck shell=bash
# Helpers shared by the SICOG sbatch recipes; sourced, never run. The recipes
# find it through SICOG_ROOT (default: the directory sbatch was called from,
# $SLURM_SUBMIT_DIR), so submit from the repository root or export SICOG_ROOT.
#
# Environment read here (every recipe accepts these):
#   SICOG_ROOT  megatron-sicog checkout; the recipes cd into it (default: $SLURM_SUBMIT_DIR)
#   SICOG_PYTHON  interpreter the tasks run (alias: PYTHON). Default: python3 on PATH when it
#               imports torch with CUDA (a container's or conda env's own Python, with TE and
#               apex), else $SICOG_ROOT/.venv/bin/python (the CPU demo venv) if present, else
#               python3. The choice is logged at the start of every job.
#   DRY_RUN     1 = print the command each task would run (lines starting "SICOG_CMD:",
#               arguments shell-quoted) and exit 0 without running it (default: 0)
#   EXTRA_ARGS  extra flags appended to the program's command line (word-split)

SICOG_SCRIPT=${SICOG_SCRIPT:-${SLURM_JOB_NAME:-$(basename "$0")}}
DRY_RUN=${DRY_RUN:-0}
EXTRA_ARGS=${EXTRA_ARGS:-}

sicog_log() { echo "[${SICOG_SCRIPT} $(date -u +%H:%M:%S)] $*" >&2; }
sicog_die() { echo "[${SICOG_SCRIPT}] error: $*" >&2; exit 1; }

cd "$SICOG_ROOT" || sicog_die "cannot cd to SICOG_ROOT=$SICOG_ROOT"
PYTHON=${SICOG_PYTHON:-${PYTHON:-}}
if [ -z "$PYTHON" ]; then
  # The demo .venv is built without system site-packages: on a GPU node it has no
  # Transformer Engine or apex, so prefer a PATH Python whose torch sees CUDA.
  if command -v python3 >/dev/null 2>&1 \
     && python3 -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' >/dev/null 2>&1; then
    PYTHON=python3
  elif [ -x "$SICOG_ROOT/.venv/bin/python" ]; then PYTHON="$SICOG_ROOT/.venv/bin/python"
  else PYTHON=python3; fi
fi
sicog_log "python: $PYTHON (set SICOG_PYTHON to choose another)"

# sicog_torchrun: sets the array TORCHRUN_CMD from TORCHRUN (word-split), else
# torchrun next to PYTHON, else torchrun on PATH, else "PYTHON -m torch.distributed.run".
sicog_torchrun() {
  if [ -z "${TORCHRUN:-}" ]; then
    if [ -x "$(dirname "$PYTHON")/torchrun" ]; then TORCHRUN="$(dirname "$PYTHON")/torchrun"
    elif command -v torchrun >/dev/null 2>&1; then TORCHRUN=torchrun
    else TORCHRUN="$PYTHON -m torch.distributed.run"; fi
  fi
  # shellcheck disable=SC2034  # used by the recipe that calls this
  read -r -a TORCHRUN_CMD <<<"$TORCHRUN"
}

# sicog_show_cmd ARGS...: one "SICOG_CMD:" line, arguments quoted so that the
# line can be pasted back into a shell.
sicog_show_cmd() {
  local line="SICOG_CMD:"
  local a
  for a in "$@"; do line+=" $(printf '%q' "$a")"; done
  echo "$line"
}

# sicog_run ARGS...: print the command, then run it unless DRY_RUN=1.
sicog_run() {
  sicog_show_cmd "$@"
  [ "$DRY_RUN" = 1 ] && return 0
  "$@"
}

# sicog_require_program PATH: the program a recipe runs must exist (skipped in DRY_RUN).
sicog_require_program() {
  [ "$DRY_RUN" = 1 ] && return 0
  [ -f "$1" ] || sicog_die "$1 not found under SICOG_ROOT=$SICOG_ROOT (submit from the repository root or export SICOG_ROOT)"
}

# sicog_require_set NAME...: each variable must be non-empty.
sicog_require_set() {
  local v
  for v in "$@"; do
    [ -n "${!v:-}" ] || sicog_die "$v is not set (see the header of $SICOG_SCRIPT for the variables)"
  done
}

# sicog_shard: SHARD_INDEX / NUM_SHARDS from the array task, overridable.
# Resubmitting only some tasks (e.g. --array=2) needs NUM_SHARDS set to the
# original array size, or the shard boundaries change.
sicog_shard() {
  SHARD_INDEX=${SHARD_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}
  NUM_SHARDS=${NUM_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-1}}
  [[ "$SHARD_INDEX" =~ ^[0-9]+$ && "$NUM_SHARDS" =~ ^[0-9]+$ ]] \
    || sicog_die "shard index '$SHARD_INDEX' and number of shards '$NUM_SHARDS' must be integers"
  [ "$SHARD_INDEX" -lt "$NUM_SHARDS" ] \
    || sicog_die "shard index $SHARD_INDEX >= number of shards $NUM_SHARDS; when resubmitting part of an array, set NUM_SHARDS to the original array size"
}

# sicog_opt FLAG VALUE: append "FLAG VALUE" to the array CMD when VALUE is non-empty.
sicog_opt() {
  [ -n "$2" ] && CMD+=("$1" "$2")
  return 0
}

# sicog_extra: append the words of EXTRA_ARGS to CMD.
sicog_extra() {
  local extra
  read -r -a extra <<<"$EXTRA_ARGS"
  CMD+=("${extra[@]}")
}

# sicog_arg_value FLAG ARGS...: print the word after FLAG in ARGS (nothing when absent).
sicog_arg_value() {
  local flag=$1
  shift
  while [ "$#" -gt 0 ]; do
    if [ "$1" = "$flag" ]; then echo "${2:-}"; return 0; fi
    shift
  done
}
