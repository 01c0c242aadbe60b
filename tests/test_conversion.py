"""Hugging Face LLaVA <-> this project's checkpoints at TP=1 (single process), and conversion errors.

Tiny random LLaVA models (Qwen2: QKV bias + GQA, untied; Llama: GQA, tied
embeddings) are built from configs and saved locally. Converted to a TP=1
checkpoint, this project's model gives `transformers`' logits on a text+image
input (eager attention, fp32); converted back, every tensor of the HF state
dict is identical. TP=2 and PP=2 are in tests/test_conversion_parallel.py.
"""
import json
import runpy
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conversion_helpers import (IMAGE_TOKEN, VOCAB, hf_logits, make_hf_llava, megatron_logits,
                                      sample_inputs, write_tokenizer)
from tests.helpers import REPO


def _tool():
    """tools/convert_checkpoint.py's namespace (run in this process: no second megatron import)."""
    return SimpleNamespace(**runpy.run_path(str(REPO / "tools" / "convert_checkpoint.py"), run_name="convert_tool"))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """family -> (HF dir, HF model, reference logits) built once per module."""
    out = {}
    ids, images = sample_inputs()
    for fam in ("qwen2", "llama", "llama3", "siglip"):
        d = tmp_path_factory.mktemp(f"hf_{fam}")
        model = make_hf_llava(fam, d)
        out[fam] = (d, model, hf_logits(model, ids, images))
    return out


def assert_same_hf_tensors(original, exported_dir):
    from transformers import LlavaForConditionalGeneration

    back, info = LlavaForConditionalGeneration.from_pretrained(str(exported_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    sd0, sd1 = original.state_dict(), back.state_dict()
    assert sd0.keys() == sd1.keys()
    different = [k for k in sd0 if not torch.equal(sd0[k], sd1[k])]
    assert not different, f"{len(different)} tensors differ after the round trip: {different[:5]}"
    return back


@pytest.mark.parametrize("family", ["qwen2", "llama", "llama3", "siglip"])
def test_tp1_logits_match_transformers_and_round_trip_is_exact(mcore, hf_models, tmp_path, family):
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.training.checkpointing import load_model_weights, model_args_from_dict, read_meta

    hf_dir, hf_model, ref = hf_models[family]
    tool = _tool()
    ckpt = tmp_path / "ckpt"
    tool.main(["hf-to-megatron", "--hf-path", str(hf_dir), "--save", str(ckpt), "--tensor-model-parallel-size", "1",
               "--pipeline-model-parallel-size", "1", "--no-progress"])
    meta = read_meta(ckpt)
    assert meta["hf"]["image_token_id"] == IMAGE_TOKEN
    hf_type = hf_model.config.text_config.model_type
    assert meta["hf"]["config"]["text_config"]["model_type"] == hf_type
    args = model_args_from_dict(meta["model_args"])
    assert args.language.family == hf_type and args.language.vocab_size == VOCAB
    assert args.language.untie_embeddings_and_output_weights == (not hf_model.config.tie_word_embeddings)
    assert args.language.rope_type == ("llama3" if family == "llama3" else "default")
    assert args.language.num_query_groups < args.language.num_attention_heads
    if family == "siglip":  # no class token, every patch: 16 image tokens (CLIP: 17 positions, class dropped)
        assert args.vision.family == "siglip" and not args.vision.class_token
        assert args.vision.feature_select == "full" and args.vision.activation == "gelu_pytorch_tanh"
    assert args.vision.num_image_tokens == 16
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (ckpt / "tokenizer" / name).read_bytes() == (hf_dir / name).read_bytes()
    from megatron_sicog.data.tokenizer import build_tokenizer
    tok = build_tokenizer(meta["tokenizer_type"], meta["tokenizer_model"])  # what the trainer reads
    assert tok.image_token_id == IMAGE_TOKEN and tok.vocab_size == VOCAB

    model = build_model(args)
    assert model.padded_vocab_size > VOCAB  # padded rows exist and are ignored
    load_model_weights(model, ckpt)
    ids, images = sample_inputs()
    out = megatron_logits(model, ids, images)
    diff = (out - ref).abs().max().item()
    print(f"{family} TP=1 max |logit diff| = {diff:.2e}")
    assert diff < 1e-4

    back_dir = tmp_path / "hf_back"
    tool.main(["megatron-to-hf", "--load", str(ckpt), "--save", str(back_dir), "--max-shard-size", "30KB",
               "--no-progress"])
    index = json.loads((back_dir / "model.safetensors.index.json").read_text())
    files = sorted({f for f in index["weight_map"].values()})
    assert len(files) > 3 and all((back_dir / f).exists() for f in files)
    cfg = json.loads((back_dir / "config.json").read_text())
    assert cfg["text_config"]["rope_parameters"] == hf_model.config.text_config.rope_parameters
    hf_vision = hf_model.config.vision_config
    assert cfg["text_config"]["model_type"] == hf_type and cfg["vision_config"]["model_type"] == hf_vision.model_type
    assert cfg["vision_feature_select_strategy"] == hf_model.config.vision_feature_select_strategy
    assert cfg["projector_hidden_act"] == "gelu"
    assert cfg["image_token_index"] == IMAGE_TOKEN
    assert cfg["vision_feature_layer"] == hf_model.config.vision_feature_layer
    assert (back_dir / "tokenizer.json").read_bytes() == (hf_dir / "tokenizer.json").read_bytes()
    pre = json.loads((back_dir / "preprocessor_config.json").read_text())  # the tower family's processor
    assert pre["image_processor_type"] == {"clip_vision_model": "CLIPImageProcessor",
                                           "siglip_vision_model": "SiglipImageProcessor"}[hf_vision.model_type]
    back = assert_same_hf_tensors(hf_model, back_dir)
    back.config._attn_implementation = "eager"
    assert torch.equal(hf_logits(back.eval(), ids, images), ref)


def test_qkv_grouping_and_shard_sizes():
    """GQA layout by hand: 4 query heads, 2 groups, head dim 1 -> [q0 q1 k0 v0 | q2 q3 k1 v1]."""
    from megatron_sicog.conversion.hf_mapping import qkv_from_megatron, qkv_to_megatron
    from megatron_sicog.conversion.safetensors_io import parse_size

    q, k, v = torch.tensor([[0.], [1.], [2.], [3.]]), torch.tensor([[10.], [11.]]), torch.tensor([[20.], [21.]])
    fused = qkv_to_megatron(q, k, v, heads=4, groups=2)
    assert fused.flatten().tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert all(torch.equal(a, b) for a, b in zip(qkv_from_megatron(fused, 4, 2), (q, k, v)))
    bias = qkv_to_megatron(q.flatten(), k.flatten(), v.flatten(), 4, 2)
    assert bias.tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("500MB") == 5 * 10**8
    assert parse_size(1234) == 1234
    with pytest.raises(ValueError, match="max shard size"):
        parse_size("lots")


def _copy_with(src, dst, drop=(), add=None, config_edit=None):
    shutil.copytree(src, dst)
    if drop or add:
        sd = load_file(str(dst / "model.safetensors"))
        for k in drop:
            del sd[k]
        sd.update(add or {})
        save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if config_edit:
        cfg = json.loads((dst / "config.json").read_text())
        config_edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _no_output(save):
    assert not save.exists()
    assert not [p for p in save.parent.iterdir() if p.name.startswith(f".{save.name}.tmp")]


def test_errors_name_what_is_missing_unexpected_or_impossible(mcore, hf_models, tmp_path):
    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from megatron_sicog.conversion.hf_mapping import ConversionError

    hf_dir = hf_models["qwen2"][0]
    save = tmp_path / "out"
    broken = _copy_with(hf_dir, tmp_path / "broken",
                        drop=["language_model.model.layers.1.self_attn.k_proj.bias"],
                        add={"language_model.model.layers.0.self_attn.extra.weight": torch.zeros(2)})
    with pytest.raises(ConversionError, match=r"1 missing: .*layers\.1\.self_attn\.k_proj\.bias.*"
                                              r"1 unexpected: .*layers\.0\.self_attn\.extra\.weight"):
        import_hf(save, 1, 1, hf_path=broken, progress=False)
    _no_output(save)

    with pytest.raises(ConversionError, match="query groups 2 not divisible by tensor-model-parallel-size 4"):
        import_hf(save, 4, 1, hf_path=hf_dir, progress=False)
    with pytest.raises(ConversionError, match="num layers 2 not divisible by pipeline-model-parallel-size 3"):
        import_hf(save, 1, 3, hf_path=hf_dir, progress=False)
    _no_output(save)

    def to_mistral(cfg):
        cfg["text_config"]["model_type"] = "mistral"
    with pytest.raises(ConversionError, match="unknown text architecture 'mistral'"):
        import_hf(save, 1, 1, hf_path=_copy_with(hf_dir, tmp_path / "mistral", config_edit=to_mistral),
                  progress=False)

    def llama_with_attention_bias(cfg):
        cfg["text_config"]["attention_bias"] = True
    with pytest.raises(ConversionError, match="attention_bias"):
        import_hf(save, 1, 1, hf_path=_copy_with(hf_models["llama"][0], tmp_path / "llama_bias",
                                                 config_edit=llama_with_attention_bias), progress=False)

    def to_yarn(cfg):
        cfg["text_config"]["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 5000.0, "factor": 4.0}
    with pytest.raises(ConversionError, match=r"rope_parameters\.rope_type 'yarn' is not supported"):
        import_hf(save, 1, 1, hf_path=_copy_with(hf_models["llama"][0], tmp_path / "yarn", config_edit=to_yarn),
                  progress=False)

    def to_siglip(cfg):  # CLIP weights under a SigLIP config: no patch bias, a class token and pre_layrnorm
        cfg["vision_config"].update(model_type="siglip_vision_model", hidden_act="gelu_pytorch_tanh")
    with pytest.raises(ConversionError, match=r"missing: vision_tower\.embeddings\.patch_embedding\.bias.*"
                                              r"unexpected: .*class_embedding"):
        import_hf(save, 1, 1, hf_path=_copy_with(hf_dir, tmp_path / "siglip", config_edit=to_siglip),
                  progress=False)

    def to_dino(cfg):
        cfg["vision_config"]["model_type"] = "dinov2"
    with pytest.raises(ConversionError, match="unknown vision architecture 'dinov2'"):
        import_hf(save, 1, 1, hf_path=_copy_with(hf_dir, tmp_path / "dino", config_edit=to_dino),
                  progress=False)

    def to_siglip_quick_gelu(cfg):
        cfg["vision_config"].update(model_type="siglip_vision_model", hidden_act="quick_gelu")
    with pytest.raises(ConversionError, match=r"SigLIP vision_config\.hidden_act 'quick_gelu' not supported"):
        import_hf(save, 1, 1, hf_path=_copy_with(hf_dir, tmp_path / "sq", config_edit=to_siglip_quick_gelu),
                  progress=False)
    _no_output(save)

    # a checkpoint with a tensor removed from a rank file cannot be exported
    ckpt = import_hf(tmp_path / "ckpt", 1, 1, hf_path=hf_dir, progress=False)
    rank_file = ckpt / "iter_0000000" / "mp_rank_00" / "model_optim_rng.pt"
    state = torch.load(rank_file, weights_only=False)
    del state["model"]["projector.encoder.linear_fc2.bias"]
    torch.save(state, rank_file)
    with pytest.raises(ConversionError, match=r"1 missing: projector\.encoder\.linear_fc2\.bias"):
        export_hf(ckpt, save, progress=False)
    _no_output(save)

    # refusing to overwrite; the command line reports errors with exit status 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SystemExit) as e:
        _tool().main(["hf-to-megatron", "--hf-path", str(hf_dir), "--save", str(tmp_path / "full"), "--no-progress"])
    assert e.value.code == 2


def test_vision_plus_language_plus_fresh_projector(mcore, tmp_path):
    """CLIP vision dir + Qwen2ForCausalLM dir -> checkpoint with a fresh projector, and back to LLaVA."""
    from transformers import CLIPVisionModel, Qwen2ForCausalLM

    from megatron_sicog.conversion.hf_export import CheckpointReader, export_hf
    from megatron_sicog.conversion.hf_import import import_hf
    from tests.conversion_helpers import llava_config, randomize_

    cfg = llava_config("qwen2")
    vision, lm = CLIPVisionModel(cfg.vision_config), Qwen2ForCausalLM(cfg.text_config)
    randomize_(vision, 1)
    randomize_(lm, 2)
    vision.save_pretrained(str(tmp_path / "clip"))
    lm.save_pretrained(str(tmp_path / "lm"))
    write_tokenizer(tmp_path / "lm")  # holds <image> = IMAGE_TOKEN
    ckpt = import_hf(tmp_path / "ckpt", 2, 1, vision_path=tmp_path / "clip", language_path=tmp_path / "lm",
                     progress=False)
    r = CheckpointReader(ckpt)
    assert r.tp == 2 and r.args.image_token_id == IMAGE_TOKEN and r.args.vision.feature_layer == -2
    assert torch.count_nonzero(r.get("projector.encoder.linear_fc1.bias")) == 0
    std = r.get("projector.encoder.linear_fc1.weight").std().item()
    assert 0.015 < std < 0.025  # normal(0, initializer_range=0.02)

    export_hf(ckpt, tmp_path / "llava", progress=False)
    from transformers import LlavaForConditionalGeneration

    back = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "llava"))
    tower = back.model.vision_tower.state_dict()
    assert tower.keys() == vision.state_dict().keys()
    for k, v in vision.state_dict().items():
        assert torch.equal(tower[k], v), k
    for k, v in lm.model.state_dict().items():
        assert torch.equal(back.model.language_model.state_dict()[k], v), k
    assert torch.equal(back.lm_head.weight, lm.lm_head.weight)


def test_native_checkpoint_at_tp2_pp2_exports_to_transformers_with_same_logits(mcore, tmp_path):
    """A checkpoint born here (tiny preset, random weights) at TP=2, PP=2 -> HF: transformers' logits match."""
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.model import sharding
    from megatron_sicog.model.llava import build_model
    from megatron_sicog.model.presets import PRESETS
    from megatron_sicog.training.checkpointing import write_from_canonical
    from tests.conversion_helpers import causal_mask

    args = PRESETS["tiny"].replace(transformer_impl="local")
    args.vision.feature_layer = -2
    model = build_model(args).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # megatron's init has zero biases and unit norms: make every element count
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    full = sharding.gather_full_state_dict(model, args.language.vocab_size)
    ckpt = tmp_path / "ckpt"
    write_tokenizer(tmp_path)  # found through the trainer's meta keys
    write_from_canonical(full, args, ckpt, tp=2, pp=2, meta_extra={"tokenizer_type": "HuggingFaceTokenizer",
                                                                    "tokenizer_model": str(tmp_path)})
    V = args.language.vocab_size
    ids = torch.randint(10, V, (2, 48), generator=g)
    P = args.vision.num_patches
    ids[0, 2:2 + P], ids[1, 20:20 + P] = args.image_token_id, args.image_token_id
    images = torch.randn(2, 3, args.vision.image_size, args.vision.image_size, generator=g)
    with torch.no_grad():
        ref = model(ids, None, causal_mask(*ids.shape), images=images, runtime_gather_output=True)[..., :V]

    export_hf(ckpt, tmp_path / "hf", dtype="fp32", progress=False)
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    assert hf.config.text_config.model_type == "qwen2" and hf.config.vision_feature_layer == -2
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()
    diff = (hf_logits(hf, ids, images) - ref).abs().max().item()
    print(f"native tiny TP=2 PP=2 -> HF: max |logit diff| = {diff:.2e}")
    assert diff < 1e-4


def test_bf16_and_the_in_memory_key_layout(mcore, hf_models, tmp_path):
    """Keys named as in a 5.x model's state_dict (model.vision_tower..., lm_head) import the same; bf16 both ways."""
    from megatron_sicog.conversion.hf_export import CheckpointReader, export_hf
    from megatron_sicog.conversion.hf_import import import_hf

    hf_dir, hf_model, _ = hf_models["qwen2"]
    other = tmp_path / "in_memory_layout"
    shutil.copytree(hf_dir, other)
    (other / "model.safetensors").unlink()
    save_file({k: v.contiguous() for k, v in hf_model.state_dict().items()}, str(other / "model.safetensors"),
              metadata={"format": "pt"})
    a = CheckpointReader(import_hf(tmp_path / "a", 2, 2, hf_path=hf_dir, dtype="bf16", progress=False))
    b = CheckpointReader(import_hf(tmp_path / "b", 2, 2, hf_path=other, dtype="bf16", progress=False))
    assert a.names() == b.names() and len(a.names()) == 62  # vision 5 + 3 x 12, projector 4, LM 3 + 2 x 7
    for n in a.names():
        assert a.get(n).dtype == torch.bfloat16 and torch.equal(a.get(n), b.get(n)), n

    out = export_hf(tmp_path / "b", tmp_path / "hf_bf16", progress=False)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    exported = {}
    for f in sorted(out.glob("model-*.safetensors")):
        exported.update(load_file(str(f)))
    on_disk = load_file(str(hf_dir / "model.safetensors"))
    assert exported.keys() == on_disk.keys()  # the save_pretrained layout
    for k, v in on_disk.items():
        assert torch.equal(exported[k], v.to(torch.bfloat16)), k
