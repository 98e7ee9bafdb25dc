"""The official VQA accuracy and NLVR2 accuracy/consistency, with values worked out by hand from the
official scripts' definitions (not by running this code)."""
from __future__ import annotations

import json

import pytest

from maskvlp.data.tasks.examples import Nlvr2Example, VqaExample
from maskvlp.data.tasks.nlvr2_files import read_nlvr2_jsonl
from maskvlp.data.tasks.vqa_files import build_answer_vocab, soft_targets
from maskvlp.eval.nlvr2_metric import nlvr2_report, sentence_group
from maskvlp.eval.vqa_metric import _round2, normalize_answer, vqa_accuracy, vqa_report


# --------------------------------------------------------------------------------------------
# Normalisation: expected outputs read off the official script's rules
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("yes.", "yes"),  # a period not followed by a digit goes
        ("a dog", "dog"),  # articles go
        ("The Cat", "cat"),  # lower-cased before articles are dropped
        ("two", "2"),  # number words to digits
        ("None", "0"),  # "none" counts as zero
        ("one two three", "1 2 3"),
        ("dont", "don't"),  # contractions
        ("Ive", "ive"),  # the table's "Ive" key is capitalised and words are lower-cased first: no match
        ("1,000", "1000"),  # digit,digit anywhere: every listed mark is deleted, not spaced
        ("1,2-3", "123"),  # ... including the hyphen
        ("3.5", "3.5"),  # a period followed by a digit stays
        (".5", ".5"),
        ("5.", "5"),  # the look-behind is really a look-ahead: a period after a digit still goes
        ("e.g.", "eg"),
        ("left-right", "left right"),  # a mark touching no space becomes a space
        ("t - shirt", "t shirt"),  # a mark touching a space is deleted; split/join squeezes the spaces
        ("red,white", "red white"),
        ("yes, sir", "yes sir"),
        ("(yes)", "yes"),
        ("what's up?", "what's up"),  # the apostrophe is not in the list
        ("$5", "$5"),  # neither is the dollar sign
        ("33 1/3", "33 1 3"),
        ("it's  an\tapple\n", "it's apple"),  # tabs/newlines to spaces, strip, articles go
        ("a", ""),
        ("." * 40, "." * 8),  # re.UNICODE (32) lands in sub's count: at most 32 periods are removed
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------
# With c of 10 answers equal to the prediction, leaving out a matching answer leaves c-1 matches,
# leaving out another one leaves c; each subset scores min(1, matches/3):
#   c=0:  0
#   c=1:  (1*0 + 9*(1/3)) / 10             = 3/10 -> 30
#   c=2:  (2*(1/3) + 8*(2/3)) / 10         = (2/3 + 16/3)/10 = 6/10 -> 60
#   c=3:  (3*(2/3) + 7*1) / 10             = (2 + 7)/10 = 9/10 -> 90
#   c=4:  (4*1 + 6*1) / 10                 = 1 -> 100
#   c=10: all identical, not normalised; each subset has 9 matches -> 100
@pytest.mark.parametrize("c, expected", [(0, 0.0), (1, 30.0), (2, 60.0), (3, 90.0), (4, 100.0), (10, 100.0)])
def test_vqa_accuracy_leave_one_out(c: int, expected: float) -> None:
    answers = ["cat"] * c + ["dog"] * (10 - c)
    prediction = "cat" if c else "bird"
    assert vqa_accuracy(prediction, answers) == expected


def test_vqa_accuracy_normalises_when_answers_differ() -> None:
    # Answers differ ("yes" vs "yes.") so both sides are normalised: 10 of 10 match "yes".
    assert vqa_accuracy("Yes!", ["yes"] * 9 + ["yes."]) == 100.0
    # "two" -> "2", "a dog" -> "dog": 3 of 10 match -> 90
    assert vqa_accuracy("two", ["2", "2", "two"] + ["3"] * 7) == 90.0
    assert vqa_accuracy("the dog", ["a dog"] + ["cat"] * 9) == 30.0


def test_vqa_accuracy_identical_answers_are_not_normalised() -> None:
    # Official script since its 2021 fix: with identical human answers neither side is normalised.
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    # ... but surrounding whitespace, tabs and newlines are always cleaned.
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 100.0


def test_vqa_accuracy_fewer_answers() -> None:
    # 3 answers, 2 match: leave a "cat" out -> 1 match -> 1/3 (twice); leave "dog" out -> 2 -> 2/3.
    # (1/3 + 1/3 + 2/3) / 3 = 4/9 = 0.4444 -> 44.44
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == 44.44
    # One answer: the only left-out subset is empty -> 0
    assert vqa_accuracy("cat", ["cat"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("cat", [])


def test_round2_is_half_away_from_zero() -> None:
    # 12.125 is exact in binary; Python 2's round (the script's) gives 12.13, Python 3's 12.12.
    assert _round2(12.125) == 12.13
    assert _round2(100 / 3) == 33.33


def test_vqa_report() -> None:
    examples = [
        VqaExample(1, "a.jpg", "is it?", ("yes",) * 10, "yes/no", "is the"),
        VqaExample(2, "b.jpg", "how many?", ("2",) * 3 + ("3",) * 7, "number", "how many", heldout=True),
        VqaExample(3, "c.jpg", "what color?", ("red",) + ("blue",) * 9, "other", "what color"),
        VqaExample(4, "d.jpg", "test question", ()),
    ]
    predictions = {1: "yes", 2: "two", 99: "ignored"}  # 3 has no prediction
    report = vqa_report(predictions, examples)
    # scores 1.0, 0.9 ("two" -> "2", 3 of 10), 0.0 (missing): mean 1.9/3 = 0.63333 -> 63.33
    assert report["overall"] == 63.33
    assert report["n"] == 3 and report["unscored"] == 1 and report["missing"] == 1
    assert report["type/yes/no"] == 100.0 and report["type/number"] == 90.0 and report["type/other"] == 0.0
    assert report["qtype/how many"] == 90.0 and report["qtype/is the"] == 100.0
    assert report["heldout"] == 90.0 and report["seen"] == 50.0  # (1.0 + 0.0) / 2


def test_vqa_report_no_heldout_keys_without_heldout() -> None:
    report = vqa_report({1: "x"}, [VqaExample(1, "a.jpg", "q", ("x", "y"))])
    # 2 answers, 1 match: leave "x" out -> 0; leave "y" out -> 1/3: mean 1/6 -> 16.67
    assert report["overall"] == 16.67
    assert "heldout" not in report and not any(k.startswith("type/") for k in report)


# --------------------------------------------------------------------------------------------
# Soft targets and the answer vocabulary
# --------------------------------------------------------------------------------------------
def test_soft_targets_ten_answers() -> None:
    answers = ["cat"] * 4 + ["a cat"] + ["dog"] * 2 + ["kitten"] * 3
    vocab = {"cat": 0, "dog": 1, "kitten": 2, "bird": 3}
    # answers differ -> normalised: cat x5 (-> 1.0), dog x2 (-> 0.6), kitten x3 (-> 0.9), bird x0
    assert soft_targets(answers, vocab) == pytest.approx({0: 1.0, 1: 0.6, 2: 0.9})
    one = ["cat"] + ["dog"] * 9
    assert soft_targets(one, {"cat": 5}) == pytest.approx({5: 0.3})


def test_soft_targets_fewer_answers_and_empty() -> None:
    # ALBEF-style 5 answers: "yes" x4 -> every subset keeps >= 3 -> 1.0;
    # "no" x1 -> leave "no" out: 0, leave a "yes" out: 1/3 (x4) -> (4/3)/5 = 0.26667
    answers = ["yes", "yes", "no", "yes", "yes"]
    assert soft_targets(answers, {"yes": 0, "no": 1}) == pytest.approx({0: 1.0, 1: 4 / 15})
    # one answer would score 0 by the definition; ALBEF gives its one-answer VG questions weight 0.5
    assert soft_targets(["Yes."], {"yes": 0}) == {0: 0.5}
    assert soft_targets(["maybe"], {"yes": 0}) == {}
    assert soft_targets(["maybe"] * 3 + ["perhaps"], {"yes": 0}) == {}  # nothing in the vocabulary
    assert soft_targets([], {"yes": 0}) == {}
    # identical answers are not normalised by the metric, so "yes" earns nothing against "Yes" x10
    assert soft_targets(["Yes"] * 10, {"yes": 0}) == {}


def test_build_answer_vocab_counts_every_answer_and_breaks_ties_alphabetically() -> None:
    examples = [
        VqaExample(1, "a.jpg", "q", ("y", "y", "x", "x", "z")),
        VqaExample(2, "b.jpg", "q", ("The Z", "w", "the", "a")),  # "the z" -> "z"; "the", "a" -> "" (left out)
        VqaExample(3, "c.jpg", "q", ("v", "v", "v")),
    ]
    # counts: v 3, x 2, y 2, z 2, w 1
    assert build_answer_vocab(examples, 3) == ["v", "x", "y"]
    assert build_answer_vocab(examples, 4) == ["v", "x", "y", "z"]
    assert build_answer_vocab(examples, 10) == ["v", "x", "y", "z", "w"]
    with pytest.raises(ValueError):
        build_answer_vocab(examples, 0)


# --------------------------------------------------------------------------------------------
# NLVR2
# --------------------------------------------------------------------------------------------
def test_nlvr2_accuracy_and_consistency_differ(tmp_path) -> None:
    rows = [
        ("dev-1-0-0", "A", "True"), ("dev-1-1-0", "A", "False"), ("dev-1-2-0", "A", "True"), ("dev-1-3-0", "A", "False"),
        ("dev-1-0-1", "B", "True"), ("dev-1-2-1", "B", "False"),
        ("dev-2-0-0", "C", "True"),
    ]
    file = tmp_path / "dev.json"
    file.write_text("\n".join(json.dumps({"identifier": i, "sentence": s, "label": lab}) for i, s, lab in rows) + "\n")
    examples = read_nlvr2_jsonl(file, tmp_path)
    predictions = {
        "dev-1-0-0": True, "dev-1-1-0": False, "dev-1-2-0": True, "dev-1-3-0": False,  # sentence A: all right
        "dev-1-0-1": True, "dev-1-2-1": True,  # sentence B: one wrong
    }  # dev-2-0-0 missing: wrong
    report = nlvr2_report(predictions, examples)
    # groups (pair blanked): dev-1--0 (4 ex), dev-1--1 (2 ex), dev-2--0 (1 ex)
    assert report["accuracy"] == pytest.approx(100 * 5 / 7)
    assert report["consistency"] == pytest.approx(100 / 3)
    assert report["n"] == 7 and report["sentences"] == 3 and report["missing"] == 1
    assert "heldout" not in report


def test_nlvr2_groups() -> None:
    ex = lambda ident, sentence="s": Nlvr2Example(ident, sentence, True, "l", "r")  # noqa: E731
    assert sentence_group(ex("test1-88-3-1")) == "test1-88--1"
    assert sentence_group(ex("test1-88-0-1")) == sentence_group(ex("test1-88-3-1"))
    assert sentence_group(ex("test1-88-0-0")) != sentence_group(ex("test1-88-0-1"))
    # not the official form (ALBEF lists): grouped by sentence text
    assert sentence_group(ex("nlvr-dev-3", "x")) == sentence_group(ex("nlvr-dev-7", "x"))
    assert sentence_group(ex("nlvr-dev-3", "x")) != sentence_group(ex("nlvr-dev-4", "y"))


def test_nlvr2_heldout_split() -> None:
    examples = [
        Nlvr2Example("dev-1-0-0", "A", True, "l", "r", heldout=True),
        Nlvr2Example("dev-1-1-0", "A", False, "l", "r", heldout=True),
        Nlvr2Example("dev-2-0-0", "B", True, "l", "r"),
    ]
    report = nlvr2_report({"dev-1-0-0": True, "dev-1-1-0": True, "dev-2-0-0": True}, examples)
    assert report["heldout"] == pytest.approx(50.0) and report["seen"] == pytest.approx(100.0)
    assert report["accuracy"] == pytest.approx(200 / 3) and report["consistency"] == pytest.approx(50.0)
