#!/usr/bin/env bash
# Submit one whole SICOG round as a chain of SLURM jobs, each starting only
# when the one before it succeeded (--dependency=afterok, and
# --kill-on-invalid-dep=yes so a failure cancels the rest of the chain):
#
#   1 train.sbatch       stage 1: STAGE1 (sft|dpo) on the seed set, from BASE_CKPT
#   2 generate.sbatch    stage 2: CoD candidates on CAPTION_INPUT and/or CoT on QA_INPUT (arrays)
#   3 curate.sbatch      stage 2: self-consistency curation of all candidate shards
#   4 preprocess.sbatch  stage 3: curated records -> indexed-dataset shards (array)
#   5 merge.sbatch       stage 3: shards -> RUN_DIR/data/merged
#   6 train.sbatch       stage 3: STAGE=pretrain on the merged data, from PRETRAIN_INIT
#   7 train.sbatch       FINAL_STAGE (sft|dpo) of the re-pretrained model on FINAL_DATA_PATH
#
# Each training job resumes from its own SAVE_DIR (--load) and starts from the
# previous model (--pretrained-checkpoint). Prints "<step>=<job id>" per job and a final "jobs: ..." line; run from anywhere.
#
#   BASE_CKPT=ckpt/base SEED_DATA_PATH=data/seed_text_document CAPTION_INPUT=data/images.jsonl \
#     examples/slurm/run_sicog_loop.sh
#
# Environment (default). Relative paths are relative to SICOG_ROOT (the jobs cd there).
#   RUN_DIR          where every stage writes; logs in RUN_DIR/logs      (runs/sicog)
#   BASE_CKPT        checkpoint stage 1 starts from (required)
#   SEED_DATA_PATH   stage-1 --data-path (required unless MOCK_DATA=1)
#   STAGE1           sft | dpo                                           (sft)
#   CAPTION_INPUT    images for CoD generation (LLaVA JSONL)  } at least one
#   QA_INPUT         image-question pairs for CoT generation   } of the two
#   GEN_ARRAY        --array of each generation job                      (0-3)
#   PREP_ARRAY       --array of the preprocessing job                    (0-3)
#   TRAIN_NODES      --nodes of each training job                        (the recipe's: 2)
#   PRETRAIN_INIT    checkpoint re-pretraining starts from               (BASE_CKPT)
#   PRETRAIN_DATA_PATH  re-pretraining --data-path (may blend: "0.7 RUN_DIR/data/merged 0.3 other")
#                                                                        (RUN_DIR/data/merged)
#   FINAL_STAGE      sft | dpo | none                                    (sft)
#   FINAL_DATA_PATH  --data-path of the final stage                      (SEED_DATA_PATH)
#   SBATCH_ARGS      extra sbatch options for every job (e.g. "--partition=gpu --account=x")
#   STAGE1_EXTRA_ARGS, PRETRAIN_EXTRA_ARGS, FINAL_EXTRA_ARGS: EXTRA_ARGS of those training jobs
# Everything else in the environment reaches the jobs (sbatch --export=ALL): the
# recipes' own variables (MODEL_PRESET, TP, PP, TOKENIZER_TYPE, SCORER, THRESHOLD,
# DRY_RUN, ...) apply to every job that reads them.
set -euo pipefail

SICOG_ROOT=${SICOG_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export SICOG_ROOT
RECIPES="$SICOG_ROOT/examples/slurm"
die() { echo "run_sicog_loop.sh: error: $*" >&2; exit 1; }

RUN_DIR=${RUN_DIR:-runs/sicog}
BASE_CKPT=${BASE_CKPT:-}
SEED_DATA_PATH=${SEED_DATA_PATH:-}
STAGE1=${STAGE1:-sft}
CAPTION_INPUT=${CAPTION_INPUT:-}
QA_INPUT=${QA_INPUT:-}
GEN_ARRAY=${GEN_ARRAY:-0-3}
PREP_ARRAY=${PREP_ARRAY:-0-3}
TRAIN_NODES=${TRAIN_NODES:-}
PRETRAIN_INIT=${PRETRAIN_INIT:-$BASE_CKPT}
FINAL_STAGE=${FINAL_STAGE:-sft}
FINAL_DATA_PATH=${FINAL_DATA_PATH:-$SEED_DATA_PATH}
SBATCH_ARGS=${SBATCH_ARGS:-}
STAGE1_EXTRA_ARGS=${STAGE1_EXTRA_ARGS:-}
PRETRAIN_EXTRA_ARGS=${PRETRAIN_EXTRA_ARGS:-}
FINAL_EXTRA_ARGS=${FINAL_EXTRA_ARGS:-}

command -v sbatch >/dev/null 2>&1 || die "sbatch not found (is SLURM installed and SLURM_CONF set?)"
[ -n "$BASE_CKPT" ] || die "BASE_CKPT is not set"
[ -n "$SEED_DATA_PATH" ] || [ "${MOCK_DATA:-0}" = 1 ] || die "SEED_DATA_PATH is not set (or set MOCK_DATA=1)"
[ -n "$CAPTION_INPUT$QA_INPUT" ] || die "set CAPTION_INPUT (CoD) and/or QA_INPUT (CoT)"
case "$STAGE1" in sft|dpo) ;; *) die "STAGE1 must be sft or dpo (got '$STAGE1')" ;; esac
case "$FINAL_STAGE" in sft|dpo|none) ;; *) die "FINAL_STAGE must be sft, dpo or none (got '$FINAL_STAGE')" ;; esac

case "$RUN_DIR" in /*) ;; *) RUN_DIR="$SICOG_ROOT/$RUN_DIR" ;; esac
mkdir -p "$RUN_DIR/logs"
read -r -a common_args <<<"$SBATCH_ARGS"
train_nodes=()
[ -z "$TRAIN_NODES" ] || train_nodes=(--nodes "$TRAIN_NODES")

# submit NAME DEPENDENCY VAR=VALUE... -- SBATCH-ARGS...: prints NAME=<id>, sets JOB_ID.
JOB_IDS=()
submit() {
  local name=$1 dep=$2
  shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local args=(--parsable --chdir "$SICOG_ROOT" "${common_args[@]}")
  [ -z "$dep" ] || args+=(--dependency "afterok:$dep" --kill-on-invalid-dep=yes)
  local out
  out=$(env "${envs[@]}" sbatch "${args[@]}" "$@") || die "sbatch for $name failed"
  JOB_ID=${out%%;*}
  JOB_IDS+=("$name=$JOB_ID")
  echo "$name=$JOB_ID"
}

log_one="$RUN_DIR/logs/%x-%j.out"
log_array="$RUN_DIR/logs/%x-%A_%a.out"

submit stage1 "" STAGE="$STAGE1" PRETRAINED_CKPT="$BASE_CKPT" SAVE_DIR="$RUN_DIR/stage1" LOAD_DIR="$RUN_DIR/stage1" \
  DATA_PATH="$SEED_DATA_PATH" LOG_JSON="$RUN_DIR/stage1/log.jsonl" EXTRA_ARGS="$STAGE1_EXTRA_ARGS" -- \
  "${train_nodes[@]}" --output "$log_one" "$RECIPES/train.sbatch"
stage1=$JOB_ID

gen_jobs=()
input_dirs=()
if [ -n "$CAPTION_INPUT" ]; then
  submit generate_cod "$stage1" MODE=cod CKPT="$RUN_DIR/stage1" INPUT="$CAPTION_INPUT" \
    OUT_DIR="$RUN_DIR/generate/cod" -- --array "$GEN_ARRAY" --output "$log_array" "$RECIPES/generate.sbatch"
  gen_jobs+=("$JOB_ID"); input_dirs+=("$RUN_DIR/generate/cod")
fi
if [ -n "$QA_INPUT" ]; then
  submit generate_cot "$stage1" MODE=cot CKPT="$RUN_DIR/stage1" INPUT="$QA_INPUT" \
    OUT_DIR="$RUN_DIR/generate/cot" -- --array "$GEN_ARRAY" --output "$log_array" "$RECIPES/generate.sbatch"
  gen_jobs+=("$JOB_ID"); input_dirs+=("$RUN_DIR/generate/cot")
fi
gen_dep=$(IFS=:; echo "${gen_jobs[*]}")

submit curate "$gen_dep" INPUT_DIRS="${input_dirs[*]}" OUT_DIR="$RUN_DIR/curate" -- \
  --output "$log_one" "$RECIPES/curate.sbatch"
submit preprocess "$JOB_ID" INPUT="$RUN_DIR/curate/curated.jsonl" OUT_DIR="$RUN_DIR/data" -- \
  --array "$PREP_ARRAY" --output "$log_array" "$RECIPES/preprocess.sbatch"
submit merge "$JOB_ID" OUT_DIR="$RUN_DIR/data" OUTPUT_PREFIX="$RUN_DIR/data/merged" -- \
  --output "$log_one" "$RECIPES/merge.sbatch"
submit pretrain "$JOB_ID" STAGE=pretrain PRETRAINED_CKPT="$PRETRAIN_INIT" SAVE_DIR="$RUN_DIR/pretrain" LOAD_DIR="$RUN_DIR/pretrain" \
  DATA_PATH="${PRETRAIN_DATA_PATH:-$RUN_DIR/data/merged}" LOG_JSON="$RUN_DIR/pretrain/log.jsonl" \
  EXTRA_ARGS="$PRETRAIN_EXTRA_ARGS" -- "${train_nodes[@]}" --output "$log_one" "$RECIPES/train.sbatch"
if [ "$FINAL_STAGE" != none ]; then
  submit final "$JOB_ID" STAGE="$FINAL_STAGE" PRETRAINED_CKPT="$RUN_DIR/pretrain" SAVE_DIR="$RUN_DIR/final" LOAD_DIR="$RUN_DIR/final" \
    DATA_PATH="$FINAL_DATA_PATH" LOG_JSON="$RUN_DIR/final/log.jsonl" EXTRA_ARGS="$FINAL_EXTRA_ARGS" -- \
    "${train_nodes[@]}" --output "$log_one" "$RECIPES/train.sbatch"
fi
echo "jobs: ${JOB_IDS[*]}"
echo "logs: $RUN_DIR/logs"
