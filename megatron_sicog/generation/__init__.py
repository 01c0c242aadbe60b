"""Inference-time data generation: KV-cache engine, seeded sampling, candidate records.

* `engine.Engine` -- batched prefill-once / sample-N decoding on SicogModel;
* `sampling` -- temperature / top-k / top-p, per-row seeded;
* `candidates` -- LLaVA records -> prompts -> candidate records, `greedy_answer`;
* `loading` -- a model and tokenizer for inference from a checkpoint or a HF directory.
* `inputs` -- the records to generate for, shards of them, and resuming an interrupted output file.
"""
