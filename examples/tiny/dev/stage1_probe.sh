#!/usr/bin/env bash
# Stage 1 alone (development only): the demo's data for a seed, the seed SFT from the shipped base, greedy CoD
# captions and CoT answers on the held-out split, scored, with CoD step consistency. A few minutes instead of a
# whole loop, for variants of the world's texts or of stage 1. One line per run goes to stage1_probe_results.jsonl.
#
#   SEED=777 [START=CKPT (default: the shipped base)] [SFT_ITERS=300] [SFT_LR=5e-4] [SFT_BLEND="0.75 SEED_IDX 0.25 OTHER"] [EXTRA_SFT="..."] examples/tiny/dev/stage1_probe.sh NAME
set -euo pipefail
: "${SEED:?SEED=<a development seed>}"
REPO=$(cd "$(dirname "$0")/../../.." && pwd); V=$1
PY=${PYTHON:-$REPO/.venv/bin/python}; export PYTHONPATH=$REPO; cd "$REPO"
W=${RUNS:-$REPO/runs/dev}/stage1_$V; mkdir -p "$W/eval"
TOK="--tokenizer-type SentencePieceTokenizer --tokenizer-model $REPO/examples/tiny/base/tokenizer.model"
t0=$(date +%s)
$PY tools/make_synthetic_data.py --output-dir $W/data --seed $SEED --image-size 64 --max-objects 3 --num-align 2000 \
  --num-seed 300 --num-unlabelled 10 --num-eval 300 --unlabelled-questions-per-image 1 \
  --seed-colours red,green,blue,yellow --exclude-scenes $REPO/examples/tiny/base/scene_keys.txt.gz > $W/data.log 2>&1
$PY tools/preprocess_data.py --input $W/data/seed.jsonl --image-root $W/data $TOK --chat-template qwen2 \
  --output-prefix $W/idx/seed --seq-length 256 --image-seq-length 16 --overlong drop --workers 0 --no-progress \
  --overwrite > $W/pre.log 2>&1
$PY pretrain_sicog.py --stage sft --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 \
  --lr ${SFT_LR:-5e-4} --min-lr 5e-05 --lr-decay-style cosine --lr-warmup-iters 30 --train-iters ${SFT_ITERS:-300} \
  --weight-decay 0.0 --clip-grad 1.0 --seed $SEED --data-path ${SFT_BLEND:-$W/idx/seed} --split 100,0,0 $TOK --chat-template qwen2 \
  --image-root $W/data --save $W/stage1 --save-interval 100000 --log-interval 50 --log-json $W/stage1.jsonl \
  --pretrained-checkpoint ${START:-$REPO/examples/tiny/base} --freeze-vision --pack-sequences ${EXTRA_SFT:-} > $W/stage1.log 2>&1
t1=$(date +%s)
$PY -c "from megatron_sicog.loop import write_eval_inputs as w; w('$W/data/eval.jsonl', '$W/eval/inputs_caption.jsonl', '$W/eval/inputs_reasoning.jsonl')"
for mode in cod cot; do
  if [ $mode = cod ]; then IN=$W/eval/inputs_caption.jsonl NT=170; else IN=$W/eval/inputs_reasoning.jsonl NT=100; fi
  $PY tools/generate_candidates.py --load $W/stage1 --input $IN --image-root $W/data --mode $mode --num-candidates 1 \
    --temperature 0.0 --max-new-tokens $NT --micro-batch-size 32 --seed $SEED $TOK --chat-template qwen2 \
    --output $W/eval_$mode.jsonl --no-progress --overwrite > $W/gen_$mode.log 2>&1
done
$PY -c "from megatron_sicog.loop import write_predictions as w; w('$W/eval_cod.jsonl', '$W/eval_cot.jsonl', '$W/pred.jsonl')"
$PY tools/evaluate.py --predictions $W/pred.jsonl --ground-truth $W/data/eval.jsonl --output $W/metrics.json > $W/score.log 2>&1
t2=$(date +%s)
$PY - "$V" "$SEED" "$W" $((t1-t0)) $((t2-t1)) <<'PYEOF'
import json, sys
from pathlib import Path
name, seed, w, t_train, t_eval = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
m = json.loads((w / "metrics.json").read_text())
line = {"variant": name, "seed": seed, "seconds_train": t_train, "seconds_eval": t_eval,
        "caption": {k: m["caption"][k] for k in ("f1", "precision", "recall", "recall_by_kind", "format_rate")},
        "reasoning": {k: m["reasoning"][k] for k in ("accuracy", "by_type", "format_rate")}}
from megatron_sicog.evaluation.consistency import mean_step_consistency
rows = [json.loads(l) for l in (w / "eval_cod.jsonl").read_text().splitlines() if l.strip()]
line["step_consistency"] = mean_step_consistency((r.get("candidates") or [""])[0] for r in rows)
with open("examples/tiny/dev/stage1_probe_results.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")
print(json.dumps(line, indent=1))
PYEOF
