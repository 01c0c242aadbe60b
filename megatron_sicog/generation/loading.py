"""Build a model and tokenizer for inference from a checkpoint of this project or a Hugging Face directory.

`load_model_and_tokenizer(a, tmp_dir)` reads the flags of the inference tools
(`tools/generate_candidates.py`, `tools/evaluate_benchmarks.py`, the lmms-eval
model): ``load`` (a checkpoint of any TP/PP, loaded into the current TP
size), ``hf_path`` (a LlavaForConditionalGeneration directory, converted into
`tmp_dir` first), ``random_init``, ``iteration``, ``tensor_model_parallel_size``,
``tokenizer_type`` / ``tokenizer_model`` / ``chat_template`` (default: the
checkpoint's, see `training.checkpointing.checkpoint_chat_template`) and the
model-shape flags of `model.presets.add_model_args` (used when the checkpoint
names no shape; a checkpoint's tiling, ``vision.image_grid_pinpoints``, is read from it, and
``--use-tiling``/``--max-num-tiles``/``--use-thumbnail`` that disagree with it are refused). Returns ``(model, tokenizer,
chat_template)``; the model is in eval mode.
"""
from __future__ import annotations

from pathlib import Path

from megatron_sicog.guards import UsageError


def load_model_and_tokenizer(a, tmp_dir: Path):
    import torch  # noqa: F401

    from megatron_sicog.data.tokenizer import build_tokenizer
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import model_args_from_flags, tiling_flag_conflicts
    from megatron_sicog.training import checkpointing as ckpt

    load, meta = a.load, {}
    if a.hf_path:
        from megatron_sicog.conversion.hf_import import import_hf

        load = tmp_dir / "imported"
        import_hf(load, a.tensor_model_parallel_size, 1, hf_path=a.hf_path, progress=False)
    if load:
        meta = ckpt.read_meta(load, a.iteration)
    tok_type, tok_model = a.tokenizer_type or meta.get("tokenizer_type"), a.tokenizer_model or meta.get("tokenizer_model")
    if tok_model is None and meta.get("tokenizer_dir"):
        tok_type, tok_model = tok_type or "HuggingFaceTokenizer", str(Path(load) / meta["tokenizer_dir"])
    if not tok_type or not tok_model:
        raise UsageError("no tokenizer: pass --tokenizer-type and --tokenizer-model (the checkpoint names none)")
    tokenizer = build_tokenizer(tok_type, tok_model)
    if "model_args" in meta:
        margs = ckpt.model_args_from_dict(meta["model_args"])
        conflicts = tiling_flag_conflicts(a, margs)
        if conflicts:
            raise UsageError(f"the checkpoint {load} fixes how images are tiled; these flags disagree with it: "
                             + "; ".join(conflicts))
    else:
        margs = model_args_from_flags(a, vocab_size=tokenizer.vocab_size, image_token_id=tokenizer.image_token_id)
    if tokenizer.image_token_id != margs.image_token_id:
        raise UsageError(f"tokenizer's <image> id {tokenizer.image_token_id} != the model's image token id "
                         f"{margs.image_token_id}: wrong --tokenizer-model for this checkpoint?")
    if tokenizer.vocab_size > margs.language.vocab_size:
        raise UsageError(f"tokenizer has {tokenizer.vocab_size} tokens, the model's vocabulary "
                         f"{margs.language.vocab_size}")
    model = build_model(margs).eval()
    if load:
        ckpt.load_model_weights(model, load, a.iteration)
    return model, tokenizer, ckpt.checkpoint_chat_template(a.chat_template, meta, a.hf_path or load)
