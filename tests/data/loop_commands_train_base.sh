#!/usr/bin/env bash
# Every command of the SICOG loop, in order (run from the repository root).
set -euo pipefail

# data
$PYTHON tools/make_synthetic_data.py --output-dir $OUT/data --seed 1234 --image-size 64 --max-objects 3 --num-align 2000 --num-seed 300 --num-unlabelled 1000 --num-eval 300 --unlabelled-questions-per-image 1 --seed-colours red,green,blue,yellow

# tokenizer
$PYTHON tools/train_tokenizer.py --input $OUT/data/align.jsonl $OUT/data/seed.jsonl --output-prefix $OUT/tokenizer/sp --vocab-size 1000

# benchmark_exports
$PYTHON tools/make_benchmark_exports.py --eval $OUT/data/eval.jsonl --image-root $OUT/data --output-dir $OUT/data/benchmarks --num-images 40 --seed 1234

# preprocess_align
$PYTHON tools/preprocess_data.py --input $OUT/data/align.jsonl --image-root $OUT/data --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-prefix $OUT/idx/align --seq-length 256 --image-seq-length 16 --overlong drop --workers 0 --no-progress --overwrite

# preprocess_seed
$PYTHON tools/preprocess_data.py --input $OUT/data/seed.jsonl --image-root $OUT/data --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-prefix $OUT/idx/seed --seq-length 256 --image-seq-length 16 --overlong drop --workers 0 --no-progress --overwrite

# train_base
$PYTHON pretrain_sicog.py --stage pretrain --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0005 --min-lr 5e-05 --lr-decay-style cosine --lr-warmup-iters 20 --train-iters 800 --weight-decay 0.0 --clip-grad 1.0 --seed 1234 --data-path $OUT/idx/align --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --image-root $OUT/data --save $OUT/ckpt/base --load $OUT/ckpt/base --save-interval 400 --log-interval 80 --log-json $OUT/logs/base.jsonl --pack-sequences

# train_stage1
$PYTHON pretrain_sicog.py --stage sft --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0005 --min-lr 5e-05 --lr-decay-style cosine --lr-warmup-iters 30 --train-iters 300 --weight-decay 0.0 --clip-grad 1.0 --seed 1234 --data-path 0.75 $OUT/idx/seed 0.25 $OUT/idx/align --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --image-root $OUT/data --save $OUT/ckpt/stage1 --load $OUT/ckpt/stage1 --save-interval 150 --log-interval 30 --log-json $OUT/logs/stage1.jsonl --pretrained-checkpoint $OUT/ckpt/base --freeze-vision --pack-sequences

# generate_cod
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/stage1 --input $OUT/data/unlabelled_images.jsonl --image-root $OUT/data --mode cod --num-candidates 6 --temperature 0.7 --top-p 0.9 --max-new-tokens 170 --micro-batch-size 16 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/cod.jsonl --resume --no-progress

# generate_cot
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/stage1 --input $OUT/data/unlabelled_questions.jsonl --image-root $OUT/data --mode cot --num-candidates 6 --temperature 0.7 --top-p 0.9 --max-new-tokens 100 --micro-batch-size 16 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/cot.jsonl --resume --no-progress

# curate
$PYTHON tools/curate.py --input $OUT/gen/cod.jsonl $OUT/gen/cot.jsonl --output $OUT/gen/curated.jsonl --preference-output $OUT/gen/pairs.jsonl --report-dir $OUT/curation --scorer scene-facts --caption-threshold 0.9 --reasoning-threshold 1.0 --seed 1234 --overwrite --exclude $OUT/data/eval.jsonl --image-root $OUT/data --exclude-match image

# preprocess_curated
$PYTHON tools/preprocess_data.py --input $OUT/gen/curated.jsonl --image-root $OUT/data --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-prefix $OUT/idx/curated --seq-length 256 --image-seq-length 16 --overlong drop --workers 0 --no-progress --overwrite

# train_sicog_pretrain
$PYTHON pretrain_sicog.py --stage pretrain --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0003 --min-lr 2.9999999999999997e-05 --lr-decay-style cosine --lr-warmup-iters 15 --train-iters 150 --weight-decay 0.0 --clip-grad 1.0 --seed 1234 --data-path 0.5 $OUT/idx/align 0.5 $OUT/idx/curated --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --image-root $OUT/data --save $OUT/ckpt/sicog_pretrain --load $OUT/ckpt/sicog_pretrain --save-interval 75 --log-interval 15 --log-json $OUT/logs/sicog_pretrain.jsonl --pretrained-checkpoint $OUT/ckpt/stage1 --pack-sequences

# train_sicog
$PYTHON pretrain_sicog.py --stage sft --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0003 --min-lr 2.9999999999999997e-05 --lr-decay-style cosine --lr-warmup-iters 15 --train-iters 150 --weight-decay 0.0 --clip-grad 1.0 --seed 1234 --data-path 0.75 $OUT/idx/seed 0.25 $OUT/idx/align --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --image-root $OUT/data --save $OUT/ckpt/sicog --load $OUT/ckpt/sicog --save-interval 75 --log-interval 15 --log-json $OUT/logs/sicog.jsonl --pretrained-checkpoint $OUT/ckpt/sicog_pretrain --freeze-vision --pack-sequences

# train_baseline_pretrain
$PYTHON pretrain_sicog.py --stage pretrain --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0003 --min-lr 2.9999999999999997e-05 --lr-decay-style cosine --lr-warmup-iters 15 --train-iters 150 --weight-decay 0.0 --clip-grad 1.0 --seed 1234 --data-path $OUT/idx/align --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --image-root $OUT/data --save $OUT/ckpt/baseline_pretrain --load $OUT/ckpt/baseline_pretrain --save-interval 75 --log-interval 15 --log-json $OUT/logs/baseline_pretrain.jsonl --pretrained-checkpoint $OUT/ckpt/stage1 --pack-sequences

# train_baseline
$PYTHON pretrain_sicog.py --stage sft --model-preset tiny --micro-batch-size 8 --global-batch-size 8 --seq-length 256 --lr 0.0003 --min-lr 2.9999999999999997e-05 --lr-decay-style cosine --lr-warmup-iters 15 --train-iters 150 --weight-decay 0.0 --clip-grad 1.0 --seed 1234 --data-path 0.75 $OUT/idx/seed 0.25 $OUT/idx/align --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --image-root $OUT/data --save $OUT/ckpt/baseline --load $OUT/ckpt/baseline --save-interval 75 --log-interval 15 --log-json $OUT/logs/baseline.jsonl --pretrained-checkpoint $OUT/ckpt/baseline_pretrain --freeze-vision --pack-sequences

# generate_eval_base_cod
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/base --input $OUT/eval/inputs_caption.jsonl --image-root $OUT/data --mode cod --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 170 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_base_cod.jsonl --resume --no-progress

# generate_eval_base_cot
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/base --input $OUT/eval/inputs_reasoning.jsonl --image-root $OUT/data --mode cot --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 100 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_base_cot.jsonl --resume --no-progress

# score_base
$PYTHON tools/evaluate.py --predictions $OUT/eval/base.predictions.jsonl --ground-truth $OUT/data/eval.jsonl --output $OUT/eval/base.metrics.json

# benchmarks_base
$PYTHON tools/evaluate_benchmarks.py --load $OUT/ckpt/base --benchmark MMBench_tiny=$OUT/data/benchmarks/MMBench_tiny.tsv --benchmark POPE_tiny=$OUT/data/benchmarks/POPE_tiny.jsonl --image-root $OUT/data --mode cot-open --max-new-tokens 100 --micro-batch-size 32 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-dir $OUT/eval/benchmarks_base --overwrite --no-progress

# generate_eval_stage1_cod
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/stage1 --input $OUT/eval/inputs_caption.jsonl --image-root $OUT/data --mode cod --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 170 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_stage1_cod.jsonl --resume --no-progress

# generate_eval_stage1_cot
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/stage1 --input $OUT/eval/inputs_reasoning.jsonl --image-root $OUT/data --mode cot --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 100 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_stage1_cot.jsonl --resume --no-progress

# score_stage1
$PYTHON tools/evaluate.py --predictions $OUT/eval/stage1.predictions.jsonl --ground-truth $OUT/data/eval.jsonl --output $OUT/eval/stage1.metrics.json

# benchmarks_stage1
$PYTHON tools/evaluate_benchmarks.py --load $OUT/ckpt/stage1 --benchmark MMBench_tiny=$OUT/data/benchmarks/MMBench_tiny.tsv --benchmark POPE_tiny=$OUT/data/benchmarks/POPE_tiny.jsonl --image-root $OUT/data --mode cot-open --max-new-tokens 100 --micro-batch-size 32 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-dir $OUT/eval/benchmarks_stage1 --overwrite --no-progress

# generate_eval_sicog_cod
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/sicog --input $OUT/eval/inputs_caption.jsonl --image-root $OUT/data --mode cod --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 170 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_sicog_cod.jsonl --resume --no-progress

# generate_eval_sicog_cot
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/sicog --input $OUT/eval/inputs_reasoning.jsonl --image-root $OUT/data --mode cot --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 100 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_sicog_cot.jsonl --resume --no-progress

# score_sicog
$PYTHON tools/evaluate.py --predictions $OUT/eval/sicog.predictions.jsonl --ground-truth $OUT/data/eval.jsonl --output $OUT/eval/sicog.metrics.json

# benchmarks_sicog
$PYTHON tools/evaluate_benchmarks.py --load $OUT/ckpt/sicog --benchmark MMBench_tiny=$OUT/data/benchmarks/MMBench_tiny.tsv --benchmark POPE_tiny=$OUT/data/benchmarks/POPE_tiny.jsonl --image-root $OUT/data --mode cot-open --max-new-tokens 100 --micro-batch-size 32 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-dir $OUT/eval/benchmarks_sicog --overwrite --no-progress

# generate_eval_baseline_cod
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/baseline --input $OUT/eval/inputs_caption.jsonl --image-root $OUT/data --mode cod --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 170 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_baseline_cod.jsonl --resume --no-progress

# generate_eval_baseline_cot
$PYTHON tools/generate_candidates.py --load $OUT/ckpt/baseline --input $OUT/eval/inputs_reasoning.jsonl --image-root $OUT/data --mode cot --num-candidates 1 --temperature 0.0 --top-p 0.9 --max-new-tokens 100 --micro-batch-size 32 --seed 1234 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output $OUT/gen/eval_baseline_cot.jsonl --resume --no-progress

# score_baseline
$PYTHON tools/evaluate.py --predictions $OUT/eval/baseline.predictions.jsonl --ground-truth $OUT/data/eval.jsonl --output $OUT/eval/baseline.metrics.json

# benchmarks_baseline
$PYTHON tools/evaluate_benchmarks.py --load $OUT/ckpt/baseline --benchmark MMBench_tiny=$OUT/data/benchmarks/MMBench_tiny.tsv --benchmark POPE_tiny=$OUT/data/benchmarks/POPE_tiny.jsonl --image-root $OUT/data --mode cot-open --max-new-tokens 100 --micro-batch-size 32 --tokenizer-type SentencePieceTokenizer --tokenizer-model $OUT/tokenizer/sp.model --chat-template qwen2 --output-dir $OUT/eval/benchmarks_baseline --overwrite --no-progress

# curate_audit
$PYTHON tools/curate.py --input $OUT/gen/cod.jsonl $OUT/gen/cot.jsonl --output $OUT/gen/curated_audit.jsonl --preference-output $OUT/gen/pairs_audit.jsonl --report-dir $OUT/curation_audit --scorer scene-facts --caption-threshold 0.9 --reasoning-threshold 1.0 --seed 1234 --overwrite --exclude $OUT/data/eval.jsonl --image-root $OUT/data --exclude-match image --audit $OUT/data/unlabelled_answers.jsonl $OUT/data/scene_graphs.jsonl
