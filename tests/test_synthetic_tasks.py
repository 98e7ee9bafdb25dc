"""The world's VQA questions and NLVR2 statements: exact answers, balance against blind guessing,
held-out pairs, determinism, and the official file layouts the exporters write."""
from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvlp.config import WorldConfig
from maskvlp.data.synthetic import (
    ATTRIBUTES,
    STATEMENT_KINDS,
    CaptionSpec,
    ObjectDescription,
    Query,
    Scene,
    SceneObject,
    SyntheticWorld,
    answer_query,
    export_albef_nlvr2,
    export_albef_vqa,
    export_karpathy_train,
    export_nlvr2,
    export_vqa_v2,
    holds,
    nlvr2_image_names,
    pair_label,
    relation_holds,
    write_questions,
    write_statement,
)
from maskvlp.data.synthetic.statements import _family, _labels
from maskvlp.data.synthetic.text import _words
from maskvlp.data.tasks.examples import Nlvr2Example, VqaExample
from maskvlp.data.tasks.vqa_files import normalize_answer, question_accuracy

NUMBER_WORDS = ("zero", "one", "two", "three", "four")


def small_cfg(**kw) -> WorldConfig:
    base = dict(train_scenes=40, val_scenes=10, test_scenes=40, image_size=32)
    base.update(kw)
    return WorldConfig(**base)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(small_cfg(train_scenes=2000, test_scenes=600))


@pytest.fixture(scope="module")
def train_questions(world):
    """(scene, question) for 2,000 train scenes, 6 questions each (~12,000)."""
    return [(scene, q) for scene in world.scenes("train") for q in world.questions(scene)]


@pytest.fixture(scope="module")
def statements(world):
    """(left, right, statement) for 7,000 random pairs of train scenes."""
    scenes = world.scenes("train")
    out = []
    for i in range(7000):
        rng = np.random.default_rng([7, i])
        left, right = (scenes[int(k)] for k in rng.choice(len(scenes), size=2, replace=False))
        out.append((left, right, write_statement(left, right, rng, world.heldout_pairs)))
    return out


# --------------------------------------------------------------------------------------------
# Questions: exact answers
# --------------------------------------------------------------------------------------------
def _with(desc: ObjectDescription, attribute: str, value: str) -> ObjectDescription:
    return dataclasses.replace(desc, **{attribute: value})


def _answer_is_true(q: Query, answer: str, scene: Scene) -> bool:
    """The answer checked with ``holds`` (and brute force where a spec cannot say "the only one")."""
    unique = lambda d: holds(CaptionSpec((d,), count=1), scene)  # noqa: E731
    if q.op == "attribute":
        return unique(q.subject) and unique(_with(q.subject, q.attribute, answer))
    if q.op == "count":
        return holds(CaptionSpec((q.subject,), count=int(answer)), scene)
    if q.op == "exist":
        return holds(CaptionSpec((q.subject,)), scene) == (answer == "yes")
    if q.op == "relate":
        spec = CaptionSpec((q.subject, q.ground), relation=(0, q.relation, 1))
        return unique(q.subject) and unique(q.ground) and holds(spec, scene) == (answer == "yes")
    assert q.op == "related_attribute"
    ground = [o for o in scene.objects if q.ground.matches(o)]
    related = [o for o in scene.objects if ground and o is not ground[0] and relation_holds(q.relation, o, ground[0])]
    spec = CaptionSpec((_with(q.subject, q.attribute, answer), q.ground), relation=(0, q.relation, 1))
    return len(ground) == 1 and len(related) == 1 and holds(spec, scene)


def test_every_answer_is_true_of_its_scene_and_the_text_names_the_query(train_questions):
    assert len(train_questions) > 11000
    for scene, q in train_questions:
        assert _answer_is_true(q.query, q.answer, scene), (scene.scene_id, q)
        assert answer_query(q.query, scene) == q.answer
        for desc in (q.query.subject, q.query.ground):
            if desc is not None and desc != ObjectDescription():
                assert _words(desc) in q.text, q
    assert {q.question_type for _, q in train_questions} == {
        "colour", "shape", "size", "material", "count", "exist", "relation", "compositional"}


def test_a_wrong_answer_is_false_of_its_scene(train_questions):
    """The check above is not vacuous: every other value of the asked attribute fails it."""
    for scene, q in train_questions[:600]:
        if q.answer_type == "other":
            others = [v for v in ATTRIBUTES[q.query.attribute] if v != q.answer]
        elif q.answer_type == "number":
            others = [str(int(q.answer) + 1)]
        else:
            others = ["no" if q.answer == "yes" else "yes"]
        assert not any(_answer_is_true(q.query, v, scene) for v in others), q


def test_small_and_hand_built_scenes():
    lone = Scene("lone", "train", (SceneObject("circle", "red", "small", "matte", 0.5, 0.5, 0.08),))
    qs = write_questions(lone, 12, np.random.default_rng(0), frozenset())
    assert qs and {q.question_type for q in qs} <= {"colour", "shape", "size", "material", "count", "exist"}
    assert write_questions(Scene("empty", "train", ()), 6, np.random.default_rng(0), frozenset()) == []
    twins = Scene("twins", "train", lone.objects * 2)
    assert answer_query(Query("attribute", ObjectDescription(shape="circle"), "colour"), twins) is None


# --------------------------------------------------------------------------------------------
# Questions: balance (measured on this world: 50.9% "yes" for existence, 50.7% for relations; a
# blind predictor's accuracy out of sample: colour 15%, shape 19%, count 32%, compositional 10%,
# relation 22%, size 49%, material 50%, existence 50%)
# --------------------------------------------------------------------------------------------
def test_yes_no_answers_are_balanced_per_kind(train_questions):
    for kind in ("exist", "relation"):
        answers = [q.answer for _, q in train_questions if q.question_type == kind and q.answer_type == "yes/no"]
        assert len(answers) > 500
        assert 0.45 < answers.count("yes") / len(answers) < 0.55, kind


@dataclasses.dataclass(frozen=True)
class _Labelled:
    """A statement as the blind predictor sees it: words and the answer to guess."""

    text: str
    answer: bool


def _blind_accuracy(fit, evaluate) -> float:
    """Answer each question with the most frequent answer its exact text had in ``fit`` (the kind's
    most frequent answer for unseen texts): what a model that never looks at the image can reach."""
    by_text: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for q in fit:
        by_text[q.text][q.answer] += 1
    fallback = collections.Counter(q.answer for q in fit).most_common(1)[0][0]
    guesses = [by_text[q.text].most_common(1)[0][0] if q.text in by_text else fallback for q in evaluate]
    return float(np.mean([g == q.answer for g, q in zip(guesses, evaluate)]))


def test_the_words_alone_do_not_give_the_answer(train_questions):
    half = len(train_questions) // 2
    bounds = {"colour": 0.25, "shape": 0.30, "count": 0.40, "compositional": 0.25,
              "size": 0.56, "material": 0.56, "exist": 0.56, "relation": 0.40}
    for kind, bound in bounds.items():
        fit = [q for _, q in train_questions[:half] if q.question_type == kind]
        evaluate = [q for _, q in train_questions[half:] if q.question_type == kind]
        assert _blind_accuracy(fit, evaluate) < bound, kind


def test_counts_0_to_3_are_comparably_frequent(train_questions):
    counts = collections.Counter(q.answer for _, q in train_questions if q.question_type == "count")
    total = sum(counts.values())
    shares = [counts[str(n)] / total for n in range(4)]  # measured 0.26, 0.31, 0.27, 0.11 (and 0.05 for 4)
    assert min(shares) > 0.08 and max(shares) < 0.4, shares


# --------------------------------------------------------------------------------------------
# Questions: human answers
# --------------------------------------------------------------------------------------------
def test_ten_human_answers_whose_majority_is_the_answer(train_questions):
    soft_scores = set()
    for _, q in train_questions:
        assert len(q.answers) == 10
        raw = collections.Counter(q.answers).most_common(2)
        assert raw[0][0] == q.answer and (len(raw) == 1 or raw[1][1] < raw[0][1])
        normalised = [normalize_answer(a) for a in q.answers]
        assert normalised.count(q.answer) >= 7  # variants normalise to the answer; at most 3 dissent
        assert question_accuracy(q.answer, q.answers) == 1.0
        soft_scores.update(question_accuracy(a, q.answers) for a in set(normalised) - {q.answer})
    assert {round(s, 1) for s in soft_scores} >= {0.3, 0.6, 0.9}  # one, two, three dissenters
    variants = {a for _, q in train_questions for a in q.answers if a != q.answer and normalize_answer(a) == q.answer}
    assert {"Yes", "two", "a circle"} <= variants and "grey" not in variants


# --------------------------------------------------------------------------------------------
# Held-out pairs
# --------------------------------------------------------------------------------------------
def _names_a_pair(text: str, pairs) -> bool:
    return any(re.search(rf"\b{c}( (matte|metal))? {s}", text) for c, s in pairs)


def test_heldout_pairs_stay_out_of_train_and_test_questions_and_statements(world, train_questions, statements):
    pairs = world.heldout_pairs
    assert pairs
    test_questions = [q for s in world.scenes("test")[:200] for q in world.questions(s)]
    for q in [q for _, q in train_questions] + test_questions:
        assert not q.heldout and not _names_a_pair(q.text, pairs)
    for left, right, st in statements:
        assert not st.heldout and not _names_a_pair(st.text, pairs)


def test_heldout_split_questions_are_about_heldout_pairs(world):
    questions = [(s, q) for s in world.scenes("heldout")[:300] for q in world.questions(s)]
    flagged = [(s, q) for s, q in questions if q.heldout]
    assert 0.3 < len(flagged) / len(questions) < 0.9
    for scene, q in flagged:
        named = _names_a_pair(q.text, world.heldout_pairs)
        involved = any((o.colour, o.shape) in world.heldout_pairs for o in scene.objects
                       if q.query.subject.matches(o) or (q.query.ground is not None and q.query.ground.matches(o)))
        assert named or involved, q
    assert any(_names_a_pair(q.text, world.heldout_pairs) for _, q in questions)
    examples = world.nlvr2_examples("heldout", 200)
    assert 0.2 < np.mean([e.heldout for e in examples]) < 0.9


# --------------------------------------------------------------------------------------------
# Statements
# --------------------------------------------------------------------------------------------
def _brute_label(claim, left: Scene, right: Scene) -> bool:
    """The label by enumerating objects (no ``holds``)."""
    this, other = (left, right) if claim.side == "left" else (right, left)

    def value(scene: Scene) -> int:
        descs, objs = claim.about.objects, scene.objects
        if claim.about.relation is None:
            found = sum(descs[0].matches(o) for o in objs)
            return found if claim.op in ("more", "fewer", "same", "total") else int(found > 0)
        predicate = claim.about.relation[1]
        return int(any(descs[0].matches(a) and descs[1].matches(b) and relation_holds(predicate, a, b)
                       for i, a in enumerate(objs) for j, b in enumerate(objs) if i != j))

    a, b = value(this), value(other)
    return {"both": a and b, "exactly_one": bool(a) != bool(b), "only": a and not b, "in": a, "more": a > b,
            "fewer": a < b, "same": a == b, "total": a + b == claim.number}[claim.op] != 0


def test_statement_labels_are_true_by_brute_force_and_the_text_says_the_claim(statements):
    for left, right, st in statements:
        assert st.label == _brute_label(st.claim, left, right) == pair_label(st.claim, left, right), st
        for desc in st.claim.about.objects:
            assert _words(desc) in st.text, st
        if st.claim.op == "total":
            assert NUMBER_WORDS[st.claim.number] in st.text
        if st.claim.op in ("only", "in", "more", "fewer"):
            assert st.claim.side in st.text


def test_vectorised_labels_equal_pair_label_for_every_claim(world):
    scenes = world.scenes("train")
    for k, kind in enumerate(["both", "exactly_one", "only", "compare", "total", "relation"]):
        family = _family(kind)
        for i in range(4 if kind != "relation" else 2):
            left, right = scenes[7 * k + i], scenes[100 + 13 * k + i]
            expected = [pair_label(c, left, right) for c in family.claims]
            assert _labels(family, left, right).tolist() == expected, kind


def test_statement_labels_are_balanced_overall_and_per_kind(statements):
    labels = [st.label for _, _, st in statements]
    assert 0.45 < np.mean(labels) < 0.55
    for kind in STATEMENT_KINDS:
        kind_labels = [st.label for _, _, st in statements if st.kind == kind]
        assert len(kind_labels) > 500, kind
        assert 0.45 < np.mean(kind_labels) < 0.55, kind


def test_the_sentence_alone_does_not_give_the_label(statements):
    half = len(statements) // 2
    for kind in STATEMENT_KINDS:
        fit = [_Labelled(st.text, st.label) for _, _, st in statements[:half] if st.kind == kind]
        evaluate = [_Labelled(st.text, st.label) for _, _, st in statements[half:] if st.kind == kind]
        assert _blind_accuracy(fit, evaluate) < 0.57, kind  # measured 0.46-0.52


# --------------------------------------------------------------------------------------------
# The world's examples
# --------------------------------------------------------------------------------------------
def test_examples_are_deterministic_and_indexed_by_scene():
    a, b = SyntheticWorld(small_cfg(seed=3)), SyntheticWorld(small_cfg(seed=3))
    vqa = a.vqa_examples("train", num_scenes=20)
    assert vqa == b.vqa_examples("train", num_scenes=20)
    assert vqa != SyntheticWorld(small_cfg(seed=4)).vqa_examples("train", num_scenes=20)
    assert all(isinstance(e, VqaExample) and e.question_id == e.image * 100 + e.question_id % 100 for e in vqa)
    assert len({e.question_id for e in vqa}) == len(vqa) == 120
    scene = a.scene("train", 5)
    assert a.questions(scene, 3) == a.questions(scene)[:3]
    nlvr = a.nlvr2_examples("test", 30)
    assert nlvr == b.nlvr2_examples("test", 30) and nlvr[:10] == a.nlvr2_examples("test", 10)
    assert all(isinstance(e, Nlvr2Example) and e.left != e.right and e.identifier == f"test-{p}-0-0"
               for p, e in enumerate(nlvr))
    assert all(max(e.left, e.right) < 8 for e in a.nlvr2_examples("test", 30, num_scenes=8))


# --------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------
def _png(path: Path) -> np.ndarray:
    assert path.suffix == ".png" and path.exists(), path
    return np.asarray(Image.open(path).convert("RGB"))


def test_export_vqa_v2_official_layout(tmp_path):
    world = SyntheticWorld(small_cfg())
    q_path, a_path = export_vqa_v2(world, "val", tmp_path, limit=4)
    assert q_path.name == "v2_OpenEnded_mscoco_val2014_questions.json"
    assert a_path.name == "v2_mscoco_val2014_annotations.json"
    questions, annotations = json.loads(q_path.read_text()), json.loads(a_path.read_text())
    assert set(questions) == {"info", "task_type", "data_type", "data_subtype", "license", "questions"}
    assert (questions["task_type"], questions["data_type"], questions["data_subtype"]) == ("Open-Ended", "mscoco", "val2014")
    assert set(annotations) == {"info", "license", "data_subtype", "annotations"}
    examples = world.vqa_examples("val", num_scenes=4)
    assert [set(q) for q in questions["questions"]] == [{"image_id", "question", "question_id"}] * len(examples)
    for q, ann, ex in zip(questions["questions"], annotations["annotations"], examples):
        assert set(ann) == {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"}
        assert q["question_id"] == ann["question_id"] == ex.question_id and q["image_id"] == ann["image_id"] == ex.image
        assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
        assert all(set(a) == {"answer", "answer_confidence", "answer_id"} for a in ann["answers"])
        assert tuple(a["answer"] for a in ann["answers"]) == ex.answers
        assert ann["multiple_choice_answer"] == collections.Counter(ex.answers).most_common(1)[0][0]
    for image_id in range(4):
        image = _png(tmp_path / "val2014" / f"COCO_val2014_{image_id:012d}.png")
        np.testing.assert_array_equal(image, world.render(world.scene("val", image_id)))
    q2, _ = export_vqa_v2(world, "val", tmp_path / "other", limit=1, subtype="test-dev2015")
    assert q2.name == "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    again, _ = export_vqa_v2(SyntheticWorld(small_cfg()), "val", tmp_path / "again", limit=4)
    assert again.read_bytes() == q_path.read_bytes()  # no dates: the same world gives the same files


def test_export_albef_vqa_and_karpathy_train(tmp_path):
    world = SyntheticWorld(small_cfg())
    entries = json.loads(export_albef_vqa(world, "train", tmp_path, limit=3).read_text())
    assert len(entries) == len(world.vqa_examples("train", num_scenes=3))
    for e in entries:
        assert set(e) == {"question_id", "question", "answer", "image", "dataset"} and e["dataset"] == "vqa"
        assert isinstance(e["answer"], list) and len(e["answer"]) == 10
        np.testing.assert_array_equal(_png(tmp_path / e["image"]), world.render(world.scene("train", e["question_id"] // 100)))
    coco = json.loads(export_karpathy_train(world, "train", tmp_path / "coco", limit=2).read_text())
    assert len(coco) == 2 * world.cfg.captions_per_scene
    for e in coco:
        assert set(e) == {"image", "caption", "image_id"} and isinstance(e["image_id"], str)
        assert (tmp_path / "coco" / e["image"]).exists()


def test_nlvr2_image_names():
    assert nlvr2_image_names("train-12-0-0") == ("train-12-0-img0.png", "train-12-0-img1.png")
    assert nlvr2_image_names("dev-850-1-3") == ("dev-850-1-img0.png", "dev-850-1-img1.png")


@pytest.mark.parametrize("split", ["train", "test"])
def test_export_nlvr2_official_layout(tmp_path, split):
    world = SyntheticWorld(small_cfg())
    path = export_nlvr2(world, split, tmp_path, num_pairs=5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    examples = world.nlvr2_examples(split, 5)
    assert path.name == f"{split}.json" and len(lines) == 5
    for line, ex in zip(lines, examples):
        keys = {"identifier", "sentence", "label", "left_url", "right_url"} | ({"directory"} if split == "train" else set())
        assert set(line) == keys and line["label"] in ("True", "False")
        assert (line["identifier"], line["sentence"], line["label"] == "True") == (ex.identifier, ex.sentence, ex.label)
        folder = tmp_path / "images" / split / (str(line["directory"]) if split == "train" else "")
        assert split != "train" or isinstance(line["directory"], int)
        for name, index in zip(nlvr2_image_names(ex.identifier), (ex.left, ex.right)):
            np.testing.assert_array_equal(_png(folder / name), world.render(world.scene(split, index)))
    albef = json.loads(export_albef_nlvr2(world, split, tmp_path, num_pairs=5).read_text())
    for entry, ex in zip(albef, examples):
        assert set(entry) == {"images", "sentence", "label"} and entry["label"] == str(ex.label)
        assert [Path(p).name for p in entry["images"]] == list(nlvr2_image_names(ex.identifier))
        assert all((tmp_path / p).exists() for p in entry["images"])
