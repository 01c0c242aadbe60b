"""The round's settings are declared once (recipe/settings.py) for the demo's LoopConfig and the cluster's
RoundConfig; the demo changes only the defaults it names."""
import dataclasses

import pytest

from megatron_sicog.loop import LoopConfig
from megatron_sicog.recipe.round import RoundConfig
from megatron_sicog.recipe.settings import RoundSettings, with_defaults
from megatron_sicog.recipe.stages import TrainPhase

SHARED = {f.name for f in dataclasses.fields(RoundSettings)}


def _defaults(cls) -> dict:
    obj = cls()
    return {name: getattr(obj, name) for name in SHARED}


def test_both_configs_take_the_shared_settings_from_one_declaration():
    loop_fields = {f.name for f in dataclasses.fields(LoopConfig)}
    round_fields = {f.name for f in dataclasses.fields(RoundConfig)}
    assert loop_fields & round_fields == SHARED  # nothing else is declared by both
    assert _defaults(RoundConfig) == _defaults(RoundSettings)  # the cluster round: the declared defaults
    demo, declared = _defaults(LoopConfig), _defaults(RoundSettings)
    assert {k for k in SHARED if demo[k] != declared[k]} == {
        "output_dir", "seq_length", "pack_sequences", "repretrain_from", "repretrain_curated_mix", "repretrain",
        "max_new_tokens_cod", "max_new_tokens_cot", "generation_micro_batch", "scorer", "caption_threshold"}
    # the declared types and comments stay the base's: the demo's class redeclares no field of its own
    for f in dataclasses.fields(LoopConfig):
        if f.name in SHARED:
            assert f.type == RoundSettings.__dataclass_fields__[f.name].type


def test_both_configs_refuse_the_same_bad_values_in_the_same_words(tmp_path):
    with pytest.raises(ValueError, match="repretrain_from must be 'base' or 'stage1', not 'middle'"):
        LoopConfig(repretrain_from="middle")
    cfg = RoundConfig(output_dir=str(tmp_path), base_checkpoint="b", seed_data=["s"], caption_input="c",
                      image_root="i", tokenizer_model="t", repretrain_from="middle")
    with pytest.raises(ValueError, match="repretrain_from must be 'base' or 'stage1', not 'middle'"):
        cfg.check()
    with pytest.raises(ValueError, match=r"repretrain_curated_mix must be in \(0, 1\], not 1.5"):
        dataclasses.replace(cfg, repretrain_from="base", repretrain_curated_mix=1.5).check()


def test_the_settings_make_the_builders_arguments(tmp_path):
    c = LoopConfig(seq_length=128, top_p=0.8, scorer="lexical", caption_threshold=0.5)
    t = c.tools(tmp_path, "images", "tok.model", nproc=2)
    assert (t.seq_length, t.top_p, t.pack_sequences, t.nproc, t.image_root) == (128, 0.8, True, 2, "images")
    cur = c.curation(exclude=[tmp_path / "eval.jsonl"])
    assert (cur.scorer, cur.caption_threshold, cur.exclude) == ("lexical", 0.5, (str(tmp_path / "eval.jsonl"),))


def test_with_defaults_copies_mutable_values_and_refuses_unknown_names():
    Small = with_defaults(RoundSettings, repretrain=TrainPhase(iters=3, lr=1.0), seq_length=64)
    a, b = Small(), Small()
    assert a.repretrain == TrainPhase(iters=3, lr=1.0) and a.seq_length == 64 and a.seed == RoundSettings().seed
    a.repretrain.iters = 9
    assert b.repretrain.iters == 3  # each instance its own phase
    with pytest.raises(TypeError, match="no settings"):
        with_defaults(RoundSettings, seq_len=64)
