"""Final-answer extraction and normalisation over real-looking CoT outputs."""
import pytest

from megatron_sicog.curation.answers import extract_answer, normalize_answer
from megatron_sicog.prompts import format_cot


def cot(conclusion: str, reasoning: str = "Comparing the evidence with the question gives the result.") -> str:
    """A structured CoT whose conclusion step is exactly `conclusion`."""
    return (
        "Step 1: Task objective. Determine what the question asks about the image.\n"
        "Step 2: Crucial visual information. A woman holds an umbrella with a bright red canopy.\n"
        f"Step 3: Reasoning. {reasoning}\n"
        f"Step 4: Conclusion. {conclusion}"
    )


# (response, raw answer extracted, normalised key)
CASES = [
    (format_cot("Find the colour.", "A red umbrella.", "It is red.", "(C) red"), "(C) red", "c"),
    (cot("The answer is C."), "C", "c"),
    (cot("Therefore, the correct option is **C**."), "C", "c"),
    (cot("Answer: c"), "c", "c"),
    (cot("C. Red"), "C", "c"),
    (cot("Option (D) is correct."), "D", "d"),
    (cot("The answer is: **B) Dog**"), "B) Dog", "b"),
    (cot("The final answer is option B."), "option B", "b"),
    (cot("The man holds a bat, not a racket (A), so the answer is B."), "B", "b"),
    ("**Step 4: Conclusion.** Therefore, the correct option is **C**.", "C", "c"),
    (cot("There are 3 apples on the table, so the answer is 3."), "3", "3"),
    (cot("The answer is three."), "three", "3"),
    (cot("The answer is 1,250 kg."), "1,250 kg", "1250 kg"),
    (cot("The answer is 1250.0"), "1250.0", "1250"),
    (cot("The answer is $3.50."), "$3.50", "3.5 usd"),
    (cot("The answer is 12 cm."), "12 cm", "12 cm"),
    (cot("The answer is 2.5."), "2.5", "2.5"),
    (cot("The final answer is \\boxed{42}."), "42", "42"),
    (cot("Yes, the dog is to the left of the cat."), "Yes", "yes"),
    (cot("The answer is no."), "no", "no"),
    (cot("The answer is yes, because the street is wet."), "yes", "yes"),
    (cot("The answer is the Eiffel Tower."), "the Eiffel Tower", "eiffel tower"),
    (cot("Red."), "Red", "red"),
    # conclusion without a cue: the cue in the reasoning step counts
    (cot("This matches the visual evidence.", reasoning="The canopy is red, so the answer is B."), "B", "b"),
    # free text, no step structure
    ("So the final answer is \\boxed{12}.", "12", "12"),
    ("The answer is (B) red.", "(B) red", "b"),
    ("**Answer:** D", "D", "d"),
    ("My answer would be: 7 meters.", "7 meters", "7 m"),
    ("No.", "No", "no"),
    ("42", "42", "42"),
    ("Two.", "Two", "2"),
    ("red car", "red car", "red car"),
]

# responses that state no answer (abstentions)
NO_ANSWER = [
    cot("I cannot determine this from the image."),
    cot("It is not possible to tell because the image is blurry."),
    "I cannot tell from the image because it is blurry.",
    "It is red. Really.",
    "",
    "   ",
    None,
    5,
    ["The answer is B."],
]


@pytest.mark.parametrize("text,raw,key", CASES)
def test_extract_and_normalize(text, raw, key):
    assert extract_answer(text) == raw
    assert normalize_answer(extract_answer(text)) == key


@pytest.mark.parametrize("text", NO_ANSWER)
def test_no_answer_is_none(text):
    assert extract_answer(text) is None


@pytest.mark.parametrize(
    "a,b",
    [
        ("(B)", "b"), ("B.", "b"), ("**B**", "B"), ("Option B", "b"), ("b) dog", "B"),
        ("1,200", "1200"), ("1200.00", "1200"), ("$1,200", "1200 dollars"), ("1,200 meters", "1200 m"),
        ("0.50", ".5"), ("three", "3"), ("two dogs", "2"), ("50%", "50 percent"),
        ("Yes.", "yes"), ("Yes, it is.", "YES"), ("No, it isn't", "no"),
        ("The Eiffel Tower.", "eiffel tower"), ("  Eiffel   tower ", "the eiffel tower!"),
        ("\\boxed{7}", "7"), ("`blue`", "Blue"),
    ],
)
def test_equivalent_phrasings_share_a_key(a, b):
    assert normalize_answer(a) == normalize_answer(b)
    assert normalize_answer(a) != ""


@pytest.mark.parametrize(
    "a,b",
    [("B", "C"), ("12", "1.2"), ("1,200", "1,210"), ("yes", "no"), ("red car", "blue car"),
     ("none of the above", "0")],
)
def test_different_answers_stay_different(a, b):
    assert normalize_answer(a) != normalize_answer(b)


def test_normalize_odd_input():
    assert normalize_answer("") == ""
    assert normalize_answer(None) == ""
    assert normalize_answer(12) == "12"
    assert normalize_answer("a") == "a"        # a lone option letter is not an article
    assert normalize_answer("a cat") == "cat"  # ... but "a cat" has one


# ------------------------------------------------- quantities keep their unit

# (phrasings of one answer, its key)
PHRASINGS = [
    (["2 cm", "2cm", "2 centimetres", "2 centimeters", "two cm", "2.0 cm", "about 2 cm"], "2 cm"),
    (["2.5 m", "2.5m", "2.5 metres", "two point five meters", "2 1/2 m", "2.50 meter"], "2.5 m"),
    (["2.5 kg", "2.5 kilograms", "2.5kg"], "2.5 kg"),
    (["twelve hundred", "1,200", "1200", "1200.0", "one thousand two hundred"], "1200"),
    (["one hundred and five", "105", "a hundred and five", "one hundred five"], "105"),
    (["twenty-five", "twenty five", "25"], "25"),
    (["3/4", "0.75", "three quarters", ".75"], "0.75"),
    (["1/2", "0.5", "half", "one half", "a half"], "0.5"),
    (["1 1/2", "1.5", "one and a half"], "1.5"),
    (["1/3", "2/6", "one third"], "1/3"),
    (["50%", "50 %", "50 percent", "fifty percent", "50 per cent", "50.0%"], "50%"),
    (["$12", "12 dollars", "12 USD", "$12.00", "twelve dollars"], "12 usd"),
    (["25°C", "25 °C", "25 degrees Celsius", "25 ℃"], "25 °c"),
    (["12 square metres", "12 m²", "12 m2", "12 sq m"], "12 m2"),
    (["minus five", "-5", "negative five"], "-5"),
    (["yes", "Yes.", "Yeah", "yep", "True", "Correct", "Yes, it is.", "Yes it is", "yes there is"], "yes"),
    (["no", "No.", "nope", "False", "Incorrect", "No, it isn't.", "no it is not", "No there isn't"], "no"),
    (["2 kg", "2 kg of apples", "two kilograms of flour"], "2 kg"),
    (["twelve hundred fifty five", "1255", "one thousand two hundred and fifty-five"], "1255"),
    (["3", "three", "3 apples", "three apples"], "3"),
    (["2 m tall", "2 m", "2 metres"], "2 m"),
]


@pytest.mark.parametrize("forms,key", PHRASINGS, ids=[p[1] for p in PHRASINGS])
def test_phrasings_of_one_answer_share_a_key(forms, key):
    assert {f: normalize_answer(f) for f in forms} == {f: key for f in forms}


@pytest.mark.parametrize("a,b", [
    ("2.5 cm", "2.5 m"), ("2.5 cm", "2.5 kg"), ("2.5 m", "2.5 kg"), ("2 cm", "2 m"), ("50%", "0.5"),
    ("$12", "12 euros"), ("12 mph", "12 km/h"), ("twelve hundred", "12"), ("1/3", "0.333"), ("2-3", "2"),
    ("25 °C", "25 °F"), ("2 in the box", "2 in"),
    # words that are not one number stay text
    ("fifty-fifty", "50"), ("fifty-fifty", "100"), ("twenty twelve", "32"), ("one two three", "6"),
    ("no one", "no"), ("2 of them", "2"),
])
def test_different_quantities_stay_different(a, b):
    assert normalize_answer(a) != normalize_answer(b)


def test_same_answer_bare_number_rule():
    from megatron_sicog.curation.answers import same_answer
    # a bare number matches a quantity of the same value in any unit (the unit was left unsaid) ...
    assert same_answer(normalize_answer("2"), normalize_answer("2 cm"))
    assert same_answer(normalize_answer("2 metres"), normalize_answer("2"))
    # ... two stated units never do, nor do different values
    assert not same_answer(normalize_answer("2 cm"), normalize_answer("2 m"))
    assert not same_answer(normalize_answer("2"), normalize_answer("3 cm"))
    assert not same_answer("", "") and not same_answer("red", "") and same_answer("red", "red")


def test_free_text_that_starts_with_a_number_word():
    assert normalize_answer("none of the above") == "none of above"
    assert normalize_answer("the one on the left") == "one on left"
    assert normalize_answer("2 dogs and 3 cats") not in ("2", "3")
