"""Hugging Face LLaVA -> checkpoints at TP=2 and PP=2: logits equal transformers', and the way back is exact.

The families (Qwen2: QKV bias + GQA, untied; Llama: GQA, tied embeddings,
which at PP=2 puts a copy of the embedding on the last stage; Llama-3.1 RoPE;
SigLIP + tied Qwen2: no class token, ``full`` features) are converted
at TP=2 and at PP=2. One torchrun launch (2 gloo processes,
tests/dist_conversion_worker.py) computes this project's logits for all four
checkpoints; each is compared with `transformers`' fp32 eager logits. Every
checkpoint is then converted back (merging TP shards / PP stages) and every
tensor of the HF state dict must be identical to the original.
"""
import torch

from tests.conversion_helpers import hf_logits, make_hf_llava, sample_inputs
from tests.helpers import REPO, torchrun

WORKER = REPO / "tests" / "dist_conversion_worker.py"


def test_tp2_and_pp2_logits_match_transformers_and_round_trip_is_exact(mcore, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf

    ids, images = sample_inputs()
    torch.save({"ids": ids, "images": images}, tmp_path / "inputs.pt")
    refs, models, cases = {}, {}, []
    for fam in ("qwen2", "llama", "llama3", "siglip"):
        models[fam] = make_hf_llava(fam, tmp_path / f"hf_{fam}")
        refs[fam] = hf_logits(models[fam], ids, images)
        for tp, pp in ((2, 1), (1, 2)):
            name = f"{fam}_tp{tp}_pp{pp}"
            ckpt = import_hf(tmp_path / name, tp, pp, hf_path=tmp_path / f"hf_{fam}", progress=False)
            n_rank_dirs = len(list((ckpt / "iter_0000000").glob("mp_rank_*")))
            assert n_rank_dirs == tp * pp
            cases.append((fam, name, ckpt, tp, pp))
    (tmp_path / "logits").mkdir()
    torchrun(WORKER, "--inputs", str(tmp_path / "inputs.pt"), "--out-dir", str(tmp_path / "logits"),
             *[f"{name}={ckpt}:{tp}:{pp}" for _, name, ckpt, tp, pp in cases])
    for fam, name, ckpt, tp, pp in cases:
        out = torch.load(tmp_path / "logits" / f"{name}.pt")
        diff = (out - refs[fam]).abs().max().item()
        print(f"{name}: max |logit diff| = {diff:.2e}")
        assert diff < 1e-4, f"{name}: {diff}"

        back_dir = export_hf(ckpt, tmp_path / f"back_{name}", progress=False)
        back, info = LlavaForConditionalGeneration.from_pretrained(str(back_dir), output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        sd0, sd1 = models[fam].state_dict(), back.state_dict()
        assert sd0.keys() == sd1.keys()
        different = [k for k in sd0 if not torch.equal(sd0[k], sd1[k])]
        assert not different, f"{name}: {len(different)} tensors differ: {different[:5]}"
