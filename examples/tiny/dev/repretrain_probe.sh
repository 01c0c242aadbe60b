#!/usr/bin/env bash
# Stage 3 alone on a finished demo run: re-pretrain from its stage-1 checkpoint on a given data blend, the final
# seed SFT, greedy evaluation on its held-out split, and paired comparisons with the run's own models
# (development only: it reuses the run's stage 1, candidates and curated set, so variants of stage 3 cost
# minutes instead of a whole loop). One line per variant is appended to repretrain_probe_results.jsonl.
#
#   RUN=runs/tiny SEED=1234 [PT_ITERS=150] [SFT_ITERS=150] examples/tiny/dev/repretrain_probe.sh NAME CURATED.jsonl [BLEND]
#
# BLEND is a --data-path spec in which CUR stands for the preprocessed CURATED.jsonl
# (default "0.5 $RUN/idx/align 0.5 CUR", the demo's; "CUR" alone is curated only; "$RUN/idx/align" the baseline).
# Oracle labels for an upper bound: examples/tiny/dev/oracle_curated.py.
set -euo pipefail
: "${RUN:?RUN=<a finished demo run>}" "${SEED:?SEED=<its seed>}"
REPO=$(cd "$(dirname "$0")/../../.." && pwd); R=$(cd "$RUN" && pwd); V=$1; C=$2
PY=${PYTHON:-$REPO/.venv/bin/python}; export PYTHONPATH=$REPO; cd "$REPO"
TOK="--tokenizer-type SentencePieceTokenizer --tokenizer-model $REPO/examples/tiny/base/tokenizer.model --chat-template qwen2"
COMMON="--model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0003 --min-lr 3e-05
 --lr-decay-style cosine --lr-warmup-iters 15 --weight-decay 0.0 --clip-grad 1.0 --seed $SEED --split 100,0,0 $TOK
 --image-root $R/data --log-interval 50 --pack-sequences"
PT_ITERS=${PT_ITERS:-150}; SFT_ITERS=${SFT_ITERS:-150}; W=$R/var/$V; mkdir -p "$W"
$PY tools/preprocess_data.py --input "$C" --image-root $R/data $TOK --output-prefix $W/cur --seq-length 256 \
  --image-seq-length 16 --overlong drop --workers 0 --no-progress --overwrite > $W/pre.log 2>&1
DP=${3:-"0.5 $R/idx/align 0.5 CUR"}; DP=${DP//CUR/$W/cur}
t0=$(date +%s)
$PY pretrain_sicog.py --stage pretrain $COMMON --train-iters $PT_ITERS --data-path $DP --save $W/pt \
  --save-interval 100000 --log-json $W/pt.jsonl --pretrained-checkpoint $R/ckpt/stage1 > $W/pt.log 2>&1
t1=$(date +%s); M=$W/pt
if [ "$SFT_ITERS" -gt 0 ]; then
  $PY pretrain_sicog.py --stage sft $COMMON --train-iters $SFT_ITERS --data-path $R/idx/seed --save $W/sft \
    --save-interval 100000 --log-json $W/sft.jsonl --pretrained-checkpoint $W/pt --freeze-vision > $W/sft.log 2>&1
  M=$W/sft
fi
t2=$(date +%s)
for mode in cod cot; do
  if [ $mode = cod ]; then IN=$R/eval/inputs_caption.jsonl NT=170; else IN=$R/eval/inputs_reasoning.jsonl NT=100; fi
  $PY tools/generate_candidates.py --load $M --input $IN --image-root $R/data --mode $mode --num-candidates 1 \
    --temperature 0.0 --max-new-tokens $NT --micro-batch-size 32 --seed $SEED $TOK --output $W/eval_$mode.jsonl \
    --no-progress --overwrite > $W/gen_$mode.log 2>&1
done
$PY -c "from megatron_sicog.loop import write_predictions as w; w('$W/eval_cod.jsonl', '$W/eval_cot.jsonl', '$W/pred.jsonl')"
$PY tools/evaluate.py --predictions $W/pred.jsonl --ground-truth $R/data/eval.jsonl --output $W/metrics.json > $W/score.log 2>&1
t3=$(date +%s)
$PY - "$V" "$C" "$DP" "$PT_ITERS" "$SFT_ITERS" "$W" "$R" $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) <<'P'
import json, platform, sys
from pathlib import Path
from megatron_sicog.evaluation.significance import paired_bootstrap
v, c, dp, pt, sft, w, r, *secs = sys.argv[1:]
m = json.loads(Path(w, "metrics.json").read_text())
out = {"variant": v, "run": r, "curated": c, "data_path": dp, "pt_iters": int(pt), "sft_iters": int(sft),
       "accuracy": m["reasoning"]["accuracy"], "caption": m["caption"]["f1"], "machine": platform.machine(),
       "seconds": dict(zip(("pt", "sft", "eval"), map(int, secs)))}
for ref in ("stage1", "baseline", "sicog"):
    p = Path(r, "eval", f"{ref}.metrics.json")
    if p.exists():
        a = json.loads(p.read_text())
        out[f"vs_{ref}"] = {k: {x: round(d[x], 4) for x in ("difference", "ci_low", "ci_high")}
                            for k, d in (("accuracy", paired_bootstrap(a, m, "reasoning", seed=0)),
                                         ("caption", paired_bootstrap(a, m, "caption", seed=0)))}
with open("examples/tiny/dev/repretrain_probe_results.jsonl", "a") as f:  # cwd: the repository
    f.write(json.dumps(out) + "\n")
print(v, "accuracy %.3f caption %.3f" % (out["accuracy"], out["caption"]), out["seconds"])
P
