"""Readers for the official VQA v2 / NLVR2 files and ALBEF's lists, on small files written here;
every layout error names the file, the entry (or line) and the field."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from maskvlp.data.datasets import DataFormatError
from maskvlp.data.tasks.examples import Nlvr2Example, VqaExample
from maskvlp.data.tasks.nlvr2_files import read_albef_nlvr2, read_nlvr2, read_nlvr2_jsonl
from maskvlp.data.tasks.vqa_files import read_albef_vqa, read_vqa, read_vqa_v2


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _ann(qid: int, image_id: int, answers: list[str], answer_type: str = "other", question_type: str = "what") -> dict:
    return {
        "question_id": qid, "image_id": image_id, "question_type": question_type, "answer_type": answer_type,
        "multiple_choice_answer": answers[0],
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)],
    }


@pytest.fixture
def vqa_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An official val2014 pair; image 42 as .png at the root, image 7 as .jpg one folder down,
    image 9 missing."""
    root = tmp_path / "images"
    (root / "val2014").mkdir(parents=True)
    (root / "COCO_val2014_000000000042.png").write_bytes(b"")
    (root / "val2014" / "COCO_val2014_000000000007.jpg").write_bytes(b"")
    questions = _write(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", {
        "data_subtype": "val2014", "task_type": "Open-Ended",
        "questions": [
            {"image_id": 42, "question": "What is it?", "question_id": 42000},
            {"image_id": 7, "question": "How many?", "question_id": 7001},
            {"image_id": 9, "question": "Is it?", "question_id": 9002},
        ],
    })
    annotations = _write(tmp_path / "v2_mscoco_val2014_annotations.json", {
        "data_subtype": "val2014",
        "annotations": [
            _ann(7001, 7, ["2"] * 10, "number", "how many"),
            _ann(42000, 42, ["cat"] * 6 + ["kitten"] * 4),
            _ann(9002, 9, ["yes"] * 10, "yes/no", "is it"),
        ],
    })
    return questions, annotations, root


# --------------------------------------------------------------------------------------------
# VQA v2 (official)
# --------------------------------------------------------------------------------------------
def test_read_vqa_v2(vqa_pair) -> None:
    questions, annotations, root = vqa_pair
    examples = read_vqa_v2(questions, annotations, root)
    assert [e.question_id for e in examples] == [42000, 7001, 9002]
    cat, count, missing = examples
    assert cat == VqaExample(
        42000, os.path.normpath(str(root / "COCO_val2014_000000000042.png")), "What is it?",
        ("cat",) * 6 + ("kitten",) * 4, "other", "what",
    )
    assert count.image == os.path.normpath(str(root / "val2014" / "COCO_val2014_000000000007.jpg"))
    assert count.answers == ("2",) * 10 and count.answer_type == "number" and count.question_type == "how many"
    assert missing.image == os.path.normpath(str(root / "COCO_val2014_000000000009.jpg"))  # kept; skipped later
    assert missing.answer_type == "yes/no"


def test_read_vqa_v2_without_annotations_and_test_dev(tmp_path: Path) -> None:
    questions = _write(tmp_path / "q.json", {
        "data_subtype": "test-dev2015", "questions": [{"image_id": 1, "question": "Why?", "question_id": 10}],
    })
    (ex,) = read_vqa_v2(questions, None, tmp_path)
    assert ex.answers == () and ex.answer_type == ""
    # test-dev questions are about test2015 images
    assert ex.image == os.path.normpath(str(tmp_path / "COCO_test2015_000000000001.jpg"))


def test_read_vqa_v2_question_without_annotation(vqa_pair, tmp_path: Path) -> None:
    questions, _, root = vqa_pair
    partial = _write(tmp_path / "partial.json", {"data_subtype": "val2014", "annotations": [_ann(7001, 7, ["2"] * 10)]})
    with pytest.raises(DataFormatError) as err:
        read_vqa_v2(questions, partial, root)
    msg = str(err.value)
    assert "\n" not in msg and str(questions) in msg and str(partial) in msg and "42000" in msg


@pytest.mark.parametrize(
    "question, needle",
    [
        ({"image_id": 1, "question": 5, "question_id": 3}, 'entry 1: "question" must be a string'),
        ({"image_id": 1, "question": "q"}, 'entry 1 has no "question_id" key'),
        ({"image_id": "1", "question": "q", "question_id": 3}, 'entry 1: "image_id" must be an integer'),
        ("not an object", "entry 1 is a str"),
    ],
)
def test_read_vqa_v2_question_errors(tmp_path: Path, question, needle: str) -> None:
    qfile = _write(tmp_path / "q.json", {
        "data_subtype": "val2014", "questions": [{"image_id": 1, "question": "ok", "question_id": 2}, question],
    })
    with pytest.raises(DataFormatError) as err:
        read_vqa_v2(qfile, None, tmp_path)
    assert str(err.value).startswith(f"{qfile}: ") and needle in str(err.value)


def test_read_vqa_v2_annotation_errors(tmp_path: Path) -> None:
    qfile = _write(tmp_path / "q.json", {"data_subtype": "val2014", "questions": [{"image_id": 1, "question": "q", "question_id": 2}]})
    bad = _ann(2, 1, ["a", "b", "c", "d"])
    del bad["answers"][3]["answer"]
    afile = _write(tmp_path / "a.json", {"data_subtype": "val2014", "annotations": [bad]})
    with pytest.raises(DataFormatError, match=r'a\.json: entry 0: "answers"\[3\] has no "answer" key'):
        read_vqa_v2(qfile, afile, tmp_path)
    afile = _write(tmp_path / "a.json", {"data_subtype": "val2014", "annotations": [{**_ann(2, 1, ["a"]), "answer_type": 3}]})
    with pytest.raises(DataFormatError, match=r'a\.json: entry 0: "answer_type" must be a string'):
        read_vqa_v2(qfile, afile, tmp_path)
    no_subtype = _write(tmp_path / "nosub.json", {"questions": []})
    with pytest.raises(DataFormatError, match=r'nosub\.json: "data_subtype"'):
        read_vqa_v2(no_subtype, None, tmp_path)


# --------------------------------------------------------------------------------------------
# VQA (ALBEF lists) and dispatch
# --------------------------------------------------------------------------------------------
def test_read_albef_vqa(tmp_path: Path) -> None:
    file = _write(tmp_path / "vqa_train.json", [
        {"question_id": 262148000, "question": "Where is he?", "answer": ["down", "down", "skateboard"],
         "image": "train2014/COCO_train2014_000000262148.jpg", "dataset": "vqa"},
        {"question": "What color?", "answer": "red", "image": "image/2345.jpg", "dataset": "vg"},
        {"question_id": 5, "question": "Test?", "image": "/abs/img.jpg", "dataset": "vqa"},
    ])
    a, vg, test = read_albef_vqa(file, tmp_path / "coco", vg_root=tmp_path / "vg")
    assert a == VqaExample(
        262148000, os.path.normpath(str(tmp_path / "coco/train2014/COCO_train2014_000000262148.jpg")),
        "Where is he?", ("down", "down", "skateboard"),
    )
    assert vg.question_id == -2 and vg.answers == ("red",)
    assert vg.image == os.path.normpath(str(tmp_path / "vg/image/2345.jpg"))
    assert test.answers == () and test.image == os.path.normpath("/abs/img.jpg")
    # without vg_root every entry uses image_root
    assert read_albef_vqa(file, tmp_path)[1].image == os.path.normpath(str(tmp_path / "image/2345.jpg"))


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"question_id": 1, "question": 7, "image": "x.jpg"}, 'entry 1: "question" must be a string'),
        ({"question_id": 1, "question": "q"}, 'entry 1 has no "image" key'),
        ({"question_id": 1, "question": "q", "image": "x.jpg", "answer": [1, 2]}, 'entry 1: "answer" must be'),
        ({"question_id": 1, "question": "q", "image": "x.jpg", "dataset": "gqa"}, 'entry 1: "dataset" must be'),
        ({"question": "q", "image": "x.jpg", "dataset": "vqa"}, 'entry 1 has no "question_id" key'),
        ({"question_id": True, "question": "q", "image": "x.jpg"}, 'entry 1: "question_id" must be an integer'),
    ],
)
def test_read_albef_vqa_errors(tmp_path: Path, entry, needle: str) -> None:
    file = _write(tmp_path / "vqa.json", [{"question_id": 0, "question": "ok", "image": "a.jpg"}, entry])
    with pytest.raises(DataFormatError) as err:
        read_albef_vqa(file, tmp_path)
    assert str(err.value).startswith(f"{file}: ") and needle in str(err.value)


def test_read_vqa_dispatch(vqa_pair, tmp_path: Path) -> None:
    questions, annotations, root = vqa_pair
    albef = _write(tmp_path / "vqa_val.json", [{"question_id": 1, "question": "q", "answer": ["a"], "image": "x.jpg"}])
    test_q = _write(tmp_path / "test_q.json", {"data_subtype": "test2015", "questions": [
        {"image_id": 3, "question": "q", "question_id": 30}]})
    examples = read_vqa([annotations, questions, albef, test_q], root)  # annotations first: paired by subtype
    assert [e.question_id for e in examples] == [42000, 7001, 9002, 1, 30]
    assert examples[0].answers[0] == "cat" and examples[3].answers == ("a",) and examples[4].answers == ()


def test_read_vqa_dispatch_errors(vqa_pair, tmp_path: Path) -> None:
    questions, annotations, root = vqa_pair
    with pytest.raises(DataFormatError, match="annotations for val2014 but no questions file"):
        read_vqa([annotations], root)
    other = _write(tmp_path / "other.json", {"images": []})
    with pytest.raises(DataFormatError, match=r"other\.json: not a VQA file"):
        read_vqa([other], root)
    with pytest.raises(DataFormatError, match="second annotations file for val2014"):
        read_vqa([questions, annotations, annotations], root)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(DataFormatError, match=r"broken\.json: not valid JSON"):
        read_vqa([broken], root)


# --------------------------------------------------------------------------------------------
# NLVR2
# --------------------------------------------------------------------------------------------
def _line(identifier: str, label: str = "True", **extra) -> str:
    return json.dumps({
        "identifier": identifier, "sentence": f"sentence of {identifier}", "label": label,
        "left_url": "http://x/l.jpg", "right_url": "http://x/r.jpg", **extra,
    })


def test_read_nlvr2_jsonl_with_and_without_directory(tmp_path: Path) -> None:
    train = tmp_path / "train.json"
    train.write_text(_line("train-10171-0-0", "True", directory=91) + "\n\n" + _line("train-10171-0-1", "False", directory=91) + "\n")
    a, b = read_nlvr2_jsonl(train, tmp_path / "images")
    assert a == Nlvr2Example(
        "train-10171-0-0", "sentence of train-10171-0-0", True,
        os.path.normpath(str(tmp_path / "images/91/train-10171-0-img0.png")),
        os.path.normpath(str(tmp_path / "images/91/train-10171-0-img1.png")),
    )
    assert b.label is False and b.left == a.left  # both sentences are about the same pair
    dev = tmp_path / "dev.json"
    dev.write_text(_line("dev-850-2-0") + "\n")
    (ex,) = read_nlvr2_jsonl(dev, tmp_path / "dev")
    assert ex.left == os.path.normpath(str(tmp_path / "dev/dev-850-2-img0.png"))
    assert ex.right == os.path.normpath(str(tmp_path / "dev/dev-850-2-img1.png"))


@pytest.mark.parametrize(
    "bad, needle",
    [
        (_line("dev-1-0-0", "maybe"), 'line 3: "label" must be "True" or "False"'),
        (json.dumps({"identifier": "dev-1-0-0", "label": "True"}), 'line 3 has no "sentence" key'),
        (_line("nodash"), 'line 3: "identifier" must look like'),
        (_line("dev-1-0-0", directory=[1]), 'line 3: "directory" must be'),
        ("{not json", "line 3: not valid JSON"),
        ("[1, 2]", "line 3 is a list"),
    ],
)
def test_read_nlvr2_jsonl_errors(tmp_path: Path, bad: str, needle: str) -> None:
    file = tmp_path / "dev.json"
    file.write_text(_line("dev-1-0-0") + "\n\n" + bad + "\n")  # line 2 blank: skipped but counted
    with pytest.raises(DataFormatError) as err:
        read_nlvr2_jsonl(file, tmp_path)
    assert str(err.value).startswith(f"{file}: ") and needle in str(err.value)


def test_read_albef_nlvr2(tmp_path: Path) -> None:
    file = _write(tmp_path / "nlvr_dev.json", [
        {"images": ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"], "sentence": "two dogs", "label": "False"},
        {"images": ["a.png", "/abs/b.png"], "sentence": "one cat", "label": "True", "identifier": "dev-9-1-0"},
    ])
    a, b = read_albef_nlvr2(file, tmp_path)
    assert a == Nlvr2Example(
        "nlvr_dev-0", "two dogs", False,
        os.path.normpath(str(tmp_path / "dev/dev-850-0-img0.png")), os.path.normpath(str(tmp_path / "dev/dev-850-0-img1.png")),
    )
    assert b.identifier == "dev-9-1-0" and b.label is True and b.right == os.path.normpath("/abs/b.png")


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"images": ["a.png"], "sentence": "s", "label": "True"}, 'entry 1: "images" must be a list of two'),
        ({"images": ["a.png", "b.png"], "label": "True"}, 'entry 1 has no "sentence" key'),
        ({"images": ["a.png", "b.png"], "sentence": "s", "label": 1}, 'entry 1: "label" must be'),
        ({"images": ["a.png", "b.png"], "sentence": None, "label": "True"}, 'entry 1: "sentence" must be a string'),
    ],
)
def test_read_albef_nlvr2_errors(tmp_path: Path, entry, needle: str) -> None:
    file = _write(tmp_path / "nlvr.json", [{"images": ["a.png", "b.png"], "sentence": "s", "label": "True"}, entry])
    with pytest.raises(DataFormatError) as err:
        read_albef_nlvr2(file, tmp_path)
    assert str(err.value).startswith(f"{file}: ") and needle in str(err.value)


def test_read_nlvr2_dispatch(tmp_path: Path) -> None:
    official = tmp_path / "dev.json"  # the official files are JSON lines named .json
    official.write_text("\n  " + _line("dev-1-0-0") + "\n")
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(_line("dev-2-0-0") + "\n")
    albef = _write(tmp_path / "nlvr_test.json", [{"images": ["a.png", "b.png"], "sentence": "s", "label": "True"}])
    examples = read_nlvr2([official, jsonl, albef], tmp_path)
    assert [e.identifier for e in examples] == ["dev-1-0-0", "dev-2-0-0", "nlvr_test-0"]
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(DataFormatError, match=r"empty\.json: not an NLVR2 file.*empty"):
        read_nlvr2([empty], tmp_path)
    with pytest.raises(DataFormatError, match="file not found"):
        read_nlvr2([tmp_path / "absent.json"], tmp_path)
