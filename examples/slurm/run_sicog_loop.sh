#!/usr/bin/env bash
# Submit one whole SICOG round as a chain of SLURM jobs: a thin wrapper over the stage graph's sbatch
# runner (python -m megatron_sicog.recipe.sbatch; the round: megatron_sicog/recipe/round.py). It writes
# RUN_DIR/submit.sh (one sbatch per stage, each waiting for the jobs that wrote its inputs with
# --dependency=afterok and --kill-on-invalid-dep=yes) and runs it:
#
#   train_stage1          train.sbatch   stage 1: STAGE1 (sft|dpo) on SEED_DATA_PATH, from BASE_CKPT
#   generate_cod / _cot   stage.sbatch   stage 2: candidates on CAPTION_INPUT / QA_INPUT (arrays of GEN_SHARDS,
#                                        each followed by a _gather job joining the shards)
#   curate                stage.sbatch   stage 2: self-consistency curation
#   preprocess_curated    stage.sbatch   stage 3: curated records -> RUN_DIR/idx/curated (array of PREP_SHARDS
#                                        + a _gather job, tools/merge_datasets.py)
#   train_sicog_pretrain  train.sbatch   stage 3: re-pretraining, curated data only unless ALIGN_DATA_PATH
#   train_sicog           train.sbatch   FINAL_STAGE (sft|dpo) on FINAL_DATA_PATH
#
# Every job runs the command the local runner would run for the same settings (the tool and its
# arguments; only the launcher differs: srun + torchrun in train.sbatch). Prints "<job>=<id>" per job,
# then "jobs: ..." and "logs: ...". Run from anywhere.
#
#   BASE_CKPT=ckpt/base SEED_DATA_PATH=data/seed_text_document CAPTION_INPUT=data/images.jsonl \
#     IMAGE_ROOT=data/images TOKENIZER_MODEL=tok/ examples/slurm/run_sicog_loop.sh
#
# Environment (default). Relative paths are relative to SICOG_ROOT (the jobs cd there).
#   RUN_DIR          where every stage writes (ckpt/, gen/, idx/, logs/)       (runs/sicog)
#   ROUND_CONFIG     JSON file of round settings (megatron_sicog/recipe/round.py); the variables
#                    below override it                                          (none: the defaults)
#   ROUND_SETTINGS   more settings, space-separated KEY=VALUE (e.g. "stage1.iters=200 seq_length=4096")
#   BASE_CKPT        checkpoint stage 1 starts from (required)
#   SEED_DATA_PATH   stage-1 --data-path, weights allowed (required)
#   STAGE1           sft | dpo                                                  (sft)
#   CAPTION_INPUT    images for CoD generation (LLaVA JSONL)  } at least one
#   QA_INPUT         image-question pairs for CoT generation   } of the two
#   IMAGE_ROOT       folder the records' image paths are relative to (required)
#   TOKENIZER_TYPE   --tokenizer-type                                           (HuggingFaceTokenizer)
#   TOKENIZER_MODEL  --tokenizer-model (required)
#   CHAT_TEMPLATE    --chat-template                                            (qwen2)
#   MODEL_PRESET     --model-preset                                             (tiny)
#   GEN_SHARDS       array size of each generation job                          (4)
#   PREP_SHARDS      array size of the preprocessing job                        (4)
#   TRAIN_NODES      --nodes of each training job                               (the recipe's: 2)
#   REPRETRAIN_FROM  base (BASE_CKPT) | stage1: where re-pretraining starts     (base)
#   ALIGN_DATA_PATH  alignment data blended into re-pretraining                 (none)
#   REPRETRAIN_CURATED_MIX  share of the curated data in that blend (1 = curated only; the tiny
#                    demo's default is 0.5)                                     (0.5 with ALIGN_DATA_PATH, else 1)
#   FINAL_STAGE      sft | dpo | none                                           (sft)
#   FINAL_DATA_PATH  --data-path of the final stage                             (SEED_DATA_PATH)
#   TRAIN_EXTRA_ARGS extra trainer flags of every training job (e.g. "--tensor-model-parallel-size 2")
#   SBATCH_ARGS      extra sbatch options for every job (e.g. "--partition=gpu --account=x")
#   SICOG_PYTHON     (alias PYTHON) the interpreter that writes the chain     (.venv/bin/python, else python3)
# Everything else in the environment reaches the jobs (sbatch exports it), SICOG_PYTHON too; DRY_RUN=1 (each
# job prints its command, "SICOG_CMD: ...", and exits 0), GPUS_PER_NODE, PRECISION, ... (see the recipes).
set -euo pipefail

SICOG_ROOT=${SICOG_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export SICOG_ROOT
die() { echo "run_sicog_loop.sh: error: $*" >&2; exit 1; }
command -v sbatch >/dev/null 2>&1 || die "sbatch not found (is SLURM installed and SLURM_CONF set?)"
cd "$SICOG_ROOT"
PY=${SICOG_PYTHON:-${PYTHON:-}}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

RUN_DIR=${RUN_DIR:-runs/sicog}
sets=(output_dir="$RUN_DIR")
setting() {  # setting KEY VALUE: a round setting when VALUE is non-empty
  [ -z "$2" ] || sets+=("$1=$2")
}
setting base_checkpoint "${BASE_CKPT:-}"
setting seed_data "${SEED_DATA_PATH:-}"
setting stage1_stage "${STAGE1:-}"
setting caption_input "${CAPTION_INPUT:-}"
setting qa_input "${QA_INPUT:-}"
setting image_root "${IMAGE_ROOT:-}"
setting tokenizer_type "${TOKENIZER_TYPE:-}"
setting tokenizer_model "${TOKENIZER_MODEL:-}"
setting chat_template "${CHAT_TEMPLATE:-}"
setting model_preset "${MODEL_PRESET:-}"
setting repretrain_from "${REPRETRAIN_FROM:-}"
setting align_data "${ALIGN_DATA_PATH:-}"
if [ -n "${ALIGN_DATA_PATH:-}" ]; then setting repretrain_curated_mix "${REPRETRAIN_CURATED_MIX:-0.5}"
else setting repretrain_curated_mix "${REPRETRAIN_CURATED_MIX:-}"; fi
setting final_stage "${FINAL_STAGE:-}"
setting final_data "${FINAL_DATA_PATH:-}"
setting train_extra_args "${TRAIN_EXTRA_ARGS:-}"
read -r -a more <<<"${ROUND_SETTINGS:-}"
sets+=("${more[@]}")

args=(--gen-shards "${GEN_SHARDS:-4}" --prep-shards "${PREP_SHARDS:-4}")
[ -z "${ROUND_CONFIG:-}" ] || args+=(--round-config "$ROUND_CONFIG")
[ -z "${TRAIN_NODES:-}" ] || args+=(--train-nodes "$TRAIN_NODES")
for s in "${sets[@]}"; do args+=(--set "$s"); done
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$SICOG_ROOT/$RUN_DIR" ;; esac
mkdir -p "$RUN_DIR"
PYTHONPATH="$SICOG_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m megatron_sicog.recipe.sbatch "${args[@]}" \
  --write "$RUN_DIR/submit.sh" || die "the round's settings were refused (see above)"
bash "$RUN_DIR/submit.sh"
