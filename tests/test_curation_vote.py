"""Majority vote over real-looking structured CoT candidates."""
import itertools
import random

import pytest

from megatron_sicog.curation.pipeline import CurationConfig, Curator, Item
from megatron_sicog.curation.scorers import LexicalScorer
from megatron_sicog.curation.answers import extract_answer, same_answer
from megatron_sicog.curation.vote import candidate_answer, candidate_answers, merge_bare_numbers, parse_options, vote
from megatron_sicog.prompts import build_prompt, format_cot

UMBRELLA_Q = build_prompt("cot", "What colour is the umbrella? (A) blue (B) green (C) red (D) black")
APPLES_Q = build_prompt("cot", "How many apples are on the table?")
DOG_Q = build_prompt("cot", "Is the dog to the left of the cat?")
WEIGHT_Q = build_prompt("cot", "What is the total weight shown on the scale display?")
LANDMARK_Q = build_prompt("cot", "Which landmark is in the background?")
PET_Q = build_prompt("cot", "Which animal is on the sofa?\nA. cat\nB. dog\nC. rabbit")

RED_SEEN = "A woman holds an umbrella; its canopy is bright red with a black handle."
RED_WHY = "The canopy colour is red, which matches option (C)."


def umbrella(concl, seen=RED_SEEN, why=RED_WHY):
    return format_cot("Identify the colour of the umbrella canopy.", seen, why, "x").replace("The answer is x.", concl)


def apples(concl, seen="Three red apples lie on a wooden table next to a knife."):
    return format_cot("Count the apples on the table.", seen, "Counting them one by one gives three.", "x").replace(
        "The answer is x.", concl)


def pets(concl, seen="A brown dog with floppy ears lies on the sofa."):
    return format_cot("Identify the animal on the sofa.", seen, "Floppy ears and a long snout mean a dog.", "x").replace(
        "The answer is x.", concl)


# (name, prompt, candidates, expected answer, expected score, expected kept index)
# The kept candidate is a full CoT answering the winner and closest to the others;
# each case has one duplicated winning candidate (sampling at temperature 0.7
# often repeats itself), which is then the closest, and the lower index is kept.
TABLE = [
    (
        # four phrasings of (C), one (B), one abstention; candidates 1 and 3 are
        # identical texts (a common sampling duplicate), so they are the closest
        # of the C supporters and the lower index is kept
        "mc_letter_forms", UMBRELLA_Q,
        [umbrella("The answer is (C) red."),
         umbrella("The answer is C."),
         umbrella("Therefore, the correct option is **C**."),
         umbrella("The answer is C."),
         umbrella("The answer is (B).", seen="The umbrella looks green in the shade.", why="Green matches (B)."),
         umbrella("I cannot determine the colour from the image.", seen="The image is dark.", why="Unclear.")],
        "c", 4 / 6, 1,
    ),
    (
        # option text ("red") and a bare answer count for the letter; the bare
        # answer is not kept although it agrees, a full CoT is (2 = 5, duplicates)
        "mc_option_text", UMBRELLA_Q,
        ["C",
         umbrella("So the answer is red."),
         umbrella("Answer: c"),
         umbrella("The answer is (A) blue.", seen="The canopy is blue.", why="Blue is option (A)."),
         umbrella("The answer is (A).", seen="The canopy is blue.", why="Blue is option (A)."),
         umbrella("Answer: c")],
        "c", 4 / 6, 2,
    ),
    (
        # one option per line in the prompt ("A. cat"); "dog" maps to b
        "mc_line_options", PET_Q,
        [pets("The answer is dog.", seen="A dog rests its head on a cushion of the sofa."),
         pets("B. Dog"),
         pets("The answer is (B).", seen="There is a sleeping puppy on the couch."),
         pets("The answer is A.", seen="A grey cat sits on the sofa."),
         "dog",
         pets("B. Dog")],
        "b", 5 / 6, 1,
    ),
    (
        "count_phrasings", APPLES_Q,
        [apples("The answer is 3.", seen="In a ceramic bowl at the centre I can make out three green apples."),
         apples("There are three apples, so the answer is three.", seen="I see three apples near a knife."),
         apples("The answer is 3 apples."),
         apples("The final answer is \\boxed{3}.", seen="There are 3 apples in a row."),
         apples("The answer is 4.", seen="Four apples are on the table."),
         apples("The answer is 3 apples.")],
        "3", 5 / 6, 2,
    ),
    (
        "yes_no", DOG_Q,
        [format_cot("Decide the relative position.", "On the left side is a dog; a cat sits to its right.",
                    "Being left of the cat answers the question positively.", "yes"),
         format_cot("Decide the relative position.", "The dog is on the left, the cat on the right.",
                    "The dog is left of the cat.", "x").replace("The answer is x.", "Yes, the dog is on the left."),
         format_cot("Decide the relative position.", "The dog seems to be on the right.",
                    "So it is not on the left.", "no"),
         "Yes",
         format_cot("Decide the relative position.", "Too dark to see.", "Unclear.", "x").replace(
             "The answer is x.", "I cannot tell from this image."),
         format_cot("Decide the relative position.", "The dog is on the left, the cat on the right.",
                    "The dog is left of the cat.", "x").replace("The answer is x.", "Yes, the dog is on the left.")],
        "yes", 4 / 6, 1,
    ),
    (
        "numbers_with_units_and_commas", WEIGHT_Q,
        [format_cot("Read the display.", "The display reads 1,250 kg.", "The total is shown directly.", "1,250 kg"),
         format_cot("Read the display.", "The display reads 1250 kg.", "The total is shown directly.", "1250"),
         format_cot("Read the display.", "The display reads 1,520 kg.", "The total is shown directly.", "1,520 kg"),
         format_cot("Read the display.", "The display reads 1250.0 kg.", "The total is shown directly.", "1250.0"),
         format_cot("Read the display.", "The display reads 1250 kg.", "The total is shown directly.", "1250")],
        "1250 kg", 4 / 5, 1,
    ),
    (
        "free_text_articles_case", LANDMARK_Q,
        [format_cot("Name the landmark.", "A wrought-iron lattice tower.", "That is the Eiffel Tower.", "the Eiffel Tower"),
         format_cot("Name the landmark.", "A tall iron lattice tower.", "That shape is the Eiffel Tower.", "Eiffel Tower"),
         format_cot("Name the landmark.", "A glass pyramid.", "That is the Louvre.", "The Louvre"),
         format_cot("Name the landmark.", "A tall iron lattice tower.", "That shape is the Eiffel Tower.", "Eiffel Tower"),
         format_cot("Name the landmark.", "An iron lattice tower in Paris.", "It is the Eiffel tower.", "eiffel tower")],
        "eiffel tower", 4 / 5, 1,
    ),
]


@pytest.mark.parametrize("name,prompt,cands,answer,score,kept", TABLE, ids=[t[0] for t in TABLE])
def test_vote_table(name, prompt, cands, answer, score, kept):
    out = Curator(CurationConfig()).process([Item(name, "reasoning", prompt, list(cands), "img.jpg")])[0]
    rec = out.record
    assert rec is not None, out.dropped
    assert rec["answer_key"] == answer
    # the kept answer is spelled as a supporter wrote it
    assert rec["answer"] in {extract_answer(c) for c, a in zip(cands, rec["answers"]) if a == answer}
    assert rec["score"] == pytest.approx(score, abs=1e-6)
    assert rec["kept_index"] == kept
    assert rec["conversations"][1]["value"] == cands[kept]
    assert rec["answers"][kept] == answer
    assert same_answer(candidate_answer(rec["conversations"][1]["value"], parse_options(prompt)), answer)
    # per-candidate scores: the share agreeing with each candidate, 0 for abstentions
    for a, s in zip(rec["answers"], rec["scores"]):
        assert s == pytest.approx(0.0 if a is None else rec["answers"].count(a) / len(cands), abs=1e-6)


@pytest.mark.parametrize("name,prompt,cands,answer,score,kept", TABLE, ids=[t[0] for t in TABLE])
def test_vote_is_order_independent(name, prompt, cands, answer, score, kept):
    curator = Curator(CurationConfig())
    rng = random.Random(0)
    for _ in range(5):
        perm = list(range(len(cands)))
        rng.shuffle(perm)
        rec = curator.process([Item(name, "reasoning", prompt, [cands[i] for i in perm])])[0].record
        assert rec["answer_key"] == answer
        assert rec["score"] == pytest.approx(score, abs=1e-6)


def test_abstentions_are_no_answer_but_count_in_the_share():
    v = vote(["b", None, None, None, None, None])
    assert v.answer == "b" and v.score == pytest.approx(1 / 6) and v.abstentions == 5
    assert v.counts == {"b": 1}
    assert vote([None, None]).answer is None and vote([None, None]).kept_index is None
    out = Curator(CurationConfig()).process(
        [Item("x", "reasoning", APPLES_Q, ["I cannot tell.", "No idea, the image is unclear because it is dark."])])[0]
    assert out.record is None and out.dropped == "no_answer"


def test_ties_are_deterministic():
    # 2 x "a" vs 2 x "b": the answer whose supporters are closer to the group wins
    v = vote(["a", "b", "a", "b"], closeness=[0.1, 0.5, 0.2, 0.4])
    assert v.answer == "b" and v.kept_index == 1 and v.score == 0.5
    # full tie: the smaller key, whatever the order
    for perm in itertools.permutations(["a", "b", "b", "a"]):
        assert vote(list(perm)).answer == "a"
    # kept: well-formed first, then closeness, then the lower index
    v = vote(["a", "a", "a"], closeness=[0.9, 0.3, 0.3], well_formed=[False, True, True])
    assert v.kept_index == 1


def test_real_tie_between_cot_candidates_is_stable():
    cands = [pets("The answer is A.", seen="A grey cat sits on the sofa."), pets("The answer is B."),
             pets("The answer is A.", seen="A grey cat sits on the sofa."), pets("The answer is B.")]
    curator = Curator(CurationConfig())
    answers = {curator.process([Item("t", "reasoning", PET_Q, list(p))])[0].record["answer"]
               for p in itertools.permutations(cands)}
    assert len(answers) == 1


def test_parse_options():
    assert parse_options(UMBRELLA_Q) == {"blue": "a", "green": "b", "red": "c", "black": "d"}
    assert parse_options(PET_Q) == {"cat": "a", "dog": "b", "rabbit": "c"}
    assert parse_options(APPLES_Q) == {}
    assert parse_options("Step (B) only") == {}
    # several options on one line
    assert parse_options(build_prompt("cot", "Which animal? Options: A. cat B. dog C. red fox")) == {
        "cat": "a", "dog": "b", "red fox": "c"}
    assert parse_options("How long is it? A) 2 m, B) 2 cm") == {"2 m": "a", "2 cm": "b"}
    assert parse_options("Is Mr. A. Smith here?") == {}


def test_lexical_closeness_prefers_the_central_candidate():
    # candidate 1 shares words with both 0 and 2, which share none with each other
    scores = LexicalScorer().score([["umbrella canopy red", "umbrella canopy red handle black", "handle black"]])[0]
    assert scores.argmax() == 1


LENGTH_Q = build_prompt("cot", "How long is the pencil?")


def lengths(concl):
    return format_cot("Measure the pencil.", "A pencil lies beside a ruler.", "Read the ruler at its tip.", "x").replace(
        "The answer is x.", concl)


def test_three_three_split_of_units_is_a_tie_not_agreement():
    cands = [lengths(f"The answer is {a}.") for a in ("2 m", "2 cm", "2 metres", "2cm", "2 meters", "2 centimetres")]
    out = Curator(CurationConfig(reasoning_threshold=0.6)).process([Item("p", "reasoning", LENGTH_Q, cands)])[0]
    assert out.score == pytest.approx(0.5) and out.dropped == "below_threshold"
    rec = Curator(CurationConfig()).process([Item("p", "reasoning", LENGTH_Q, cands)])[0].record
    assert sorted(rec["answers"]) == ["2 cm"] * 3 + ["2 m"] * 3 and rec["score"] == pytest.approx(0.5)


def test_kept_answer_keeps_what_the_candidates_wrote():
    cands = [lengths(f"The answer is {a}.") for a in ("2.5 cm", "2.5 cm", "2.5", "25 mm", "2.5 centimetres", "2.5")]
    rec = Curator(CurationConfig()).process([Item("p", "reasoning", LENGTH_Q, cands)])[0].record
    # the bare "2.5"s join "2.5 cm" (the only unit given for 2.5); the surface form keeps the unit
    assert rec["answer_key"] == "2.5 cm" and rec["answer"] == "2.5 cm"
    assert rec["score"] == pytest.approx(5 / 6)


def test_bare_number_rule():
    assert merge_bare_numbers(["2 cm", "2", "2 cm", None]) == ["2 cm", "2 cm", "2 cm", None]
    assert merge_bare_numbers(["2 cm", "2 m", "2"]) == ["2 cm", "2 m", "2"]   # ambiguous: stays bare
    assert merge_bare_numbers(["2", "3 cm", "red"]) == ["2", "3 cm", "red"]
    keys, raws = candidate_answers([lengths("The answer is 2."), lengths("The answer is two centimetres."), "??"])
    assert keys == ["2 cm", "2 cm", None] and raws == ["2", "two centimetres", None]


def test_option_letters_and_option_text_with_units():
    q = build_prompt("cot", "How long is the pencil? (A) 2 m (B) 2 cm (C) 20 cm")
    assert parse_options(q) == {"2 m": "a", "2 cm": "b", "20 cm": "c"}
    texts = [lengths(f"The answer is {a}.") for a in ("(B) 2 cm", "2 centimetres", "B", "20 cm", "two metres")]
    keys, _ = candidate_answers(texts, parse_options(q))
    assert keys == ["b", "b", "b", "c", "a"]
    # a bare number goes to the one option of that value, and stays itself when two share it
    assert candidate_answer(lengths("The answer is 20."), parse_options(q)) == "c"
    assert candidate_answer(lengths("The answer is 2."), parse_options(q)) == "2"
