"""The record formats of megatron_sicog.records are what the tools write and read: curation takes a record
with only the candidate keys and writes curated records and preference pairs with every listed key."""
from megatron_sicog.curation import curate
from megatron_sicog.curation.synthetic import synthetic_records
from megatron_sicog.io import iter_records, write_jsonl_atomic
from megatron_sicog.records import CANDIDATE_KEYS, CURATED_KEYS, PREFERENCE_KEYS


def test_curation_reads_candidates_and_writes_curated_records_and_pairs_as_listed(tmp_path):
    recs = [{k: r[k] for k in CANDIDATE_KEYS} for r in synthetic_records(60, 6, seed=3)]  # the listed keys only
    write_jsonl_atomic(tmp_path / "cand.jsonl", recs)
    curate(tmp_path / "cand.jsonl", tmp_path / "curated.jsonl", preference_output=tmp_path / "pairs.jsonl",
           scorer="lexical", progress=False, seed=1)
    curated = [r for _, r in iter_records(tmp_path / "curated.jsonl")]
    pairs = [r for _, r in iter_records(tmp_path / "pairs.jsonl")]
    assert curated and pairs
    assert not [r["id"] for r in curated if set(CURATED_KEYS) - set(r)]
    assert not [r["id"] for r in pairs if set(PREFERENCE_KEYS) - set(r)]
    assert {r["task"] for r in curated} == {"caption", "reasoning"}
    for r in curated:  # the conversation: the prompt, then the kept candidate
        assert [t["from"] for t in r["conversations"]] == ["human", "gpt"]
        assert r["conversations"][1]["value"] == r["candidates"][r["kept_index"]]
    for p in pairs:
        assert (p["chosen"], p["rejected"]) == (p["candidates"][p["kept_index"]], p["candidates"][p["rejected_index"]])
