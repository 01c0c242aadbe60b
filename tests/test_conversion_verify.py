"""``tools/convert_checkpoint.py verify``: passes on a faithful conversion, fails on a corrupted one.

A tiny random LLaVA of each family (CLIP + Qwen2, CLIP + tied Llama, CLIP +
Llama-3.1 RoPE scaling, SigLIP + tied Qwen2.5-style) is imported at TP=2/PP=2
(verify loads it in one process, resharded) and exported by the project: every
tensor of the export equals the source's; verify against the export passes
(logits within 1e-4, greedy tokens equal, the export's ``preprocessor_config.json``
gives the checkpoint's pixels). A copy with one weight element perturbed fails on
the logits, a copy whose processor has another mean fails on the pixels; both exit 1.
"""
import json
import runpy
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conversion_helpers import make_hf_llava
from tests.helpers import REPO

PROMPTS = ["--prompt", "w11 w12 w13", "--prompt", "w40 w41", "--prompt", "w7 w8 w9 w10"]


def _tool():
    return SimpleNamespace(**runpy.run_path(str(REPO / "tools" / "convert_checkpoint.py"), run_name="convert_tool"))


@pytest.mark.parametrize("family", ["qwen2", "llama", "llama3", "siglip"])
def test_verify_passes_on_the_export_and_fails_on_corrupted_copies(mcore, tmp_path, capsys, family):
    from transformers import LlavaForConditionalGeneration

    from megatron_sicog.conversion.hf_export import export_hf
    from megatron_sicog.conversion.hf_import import import_hf

    source = make_hf_llava(family, tmp_path / "hf").state_dict()
    ckpt = import_hf(tmp_path / "ckpt", 2, 2, hf_path=tmp_path / "hf", progress=False)
    out = export_hf(ckpt, tmp_path / "exported", progress=False)
    back = LlavaForConditionalGeneration.from_pretrained(str(out)).state_dict()
    assert back.keys() == source.keys()
    assert not [k for k in source if not torch.equal(source[k], back[k])]  # the way back is exact
    tool = _tool()
    verify = ["verify", "--load", str(ckpt), "--max-new-tokens", "4", *PROMPTS]

    report = tool.main(verify + ["--hf-path", str(out)])
    text = capsys.readouterr().out
    assert "OK" in text.splitlines()[-1] and len(report.cases) == 3, text
    assert report.max_logit_diff < 1e-4 and report.max_pixel_diff == 0.0
    assert all(c.greedy_agree and len(c.greedy_ours) == 4 for c in report.cases)

    bad = tmp_path / "perturbed"
    shutil.copytree(out, bad)
    shard, name = next((f, k) for f in sorted(bad.glob("*.safetensors")) for k in sorted(load_file(str(f)))
                       if k.endswith("layers.1.mlp.down_proj.weight"))
    tensors = load_file(str(shard))
    tensors[name][0, 0] += 0.5
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(SystemExit) as e:
        tool.main(verify + ["--hf-path", str(bad)])
    assert e.value.code == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert "FAILED" in last and "max |pixel diff| 0.000e+00" in last, last

    other = tmp_path / "other_processor"
    shutil.copytree(out, other)
    pre = json.loads((other / "preprocessor_config.json").read_text())
    (other / "preprocessor_config.json").write_text(json.dumps({**pre, "image_mean": [0.4, 0.5, 0.5]}))
    with pytest.raises(SystemExit) as e:
        tool.main(verify + ["--hf-path", str(other)])
    assert e.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    assert "FAILED" in lines[-1] and "max |pixel diff| 0.000e+00" not in lines[-1], lines[-1]
