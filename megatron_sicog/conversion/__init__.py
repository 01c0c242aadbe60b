"""Checkpoint conversion between this project and Hugging Face LLaVA.

* `hf_mapping`: canonical (TP1/PP1) tensor names <-> Hugging Face names and
  the transforms between them (grouped QKV, gated MLP, tied embeddings), and
  ModelArgs <-> Hugging Face configs.
* `safetensors_io`: streaming readers and a size-capped shard writer.
* `hf_import`: Hugging Face directory -> this project's checkpoint at any TP/PP.
* `hf_export`: any TP/PP checkpoint -> ``LlavaForConditionalGeneration`` directory.
* `bench_memory`: peak memory / wall time of one conversion (README figures).

``tools/convert_checkpoint.py`` is the command line.
"""
