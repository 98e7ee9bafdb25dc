"""VQA files: the official VQA v2 question/annotation pairs and ALBEF's VQA lists, read into
:class:`VqaExample` records; the answer vocabulary and the soft training targets.

The answer normalisation and the per-question accuracy of the official evaluation script live
here, in the data layer, because the training targets need them as much as the metric does
(:mod:`maskvlp.eval.vqa_metric` uses and re-exports them). docs/tasks.md lists what was checked
against the official script.

Malformed files fail at read time with a one-line :class:`DataFormatError` naming the file, the
entry and the field; image files are only located here (cheap ``os.path.exists`` calls), never
opened, so a missing image is kept and counted later by the dataset layer.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from maskvlp.data.datasets import DataFormatError, load_json_file
from maskvlp.data.tasks.examples import VqaExample

# --------------------------------------------------------------------------------------------
# The official answer normalisation (VQA evaluation script, vqaEval.py)
# --------------------------------------------------------------------------------------------
# Number words mapped to digits ("none" counts as zero), applied per word before articles go.
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Word -> contraction, the script's table (sorted here). Applied per word after lower-casing, so the
# capitalised keys ("Im", "Ive", "Id've", "I'dve") can never match; kept so the table is the same.
_CONTRACTIONS = {
    "'ow'sat": "'ow's'at", "'ows'at": "'ow's'at", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "aint": "ain't", "arent": "aren't", "cant": "can't", "couldn'tve": "couldn't've",
    "couldnt": "couldn't", "couldnt've": "couldn't've", "couldve": "could've", "didnt": "didn't",
    "doesnt": "doesn't", "dont": "don't", "hadn'tve": "hadn't've", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hasnt": "hasn't", "havent": "haven't", "he'dve": "he'd've", "hed": "he'd",
    "hed've": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "isnt": "isn't", "it'dve": "it'd've", "itd": "it'd", "itd've": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightn'tve": "mightn't've", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "shant": "shan't", "she'dve": "she'd've", "she's": "she's",
    "shed've": "she'd've", "shouldn'tve": "shouldn't've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldve": "should've", "somebody'd": "somebodyd",
    "somebody'dve": "somebody'd've", "somebodyd've": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someone'dve": "someone'd've", "someoned": "someone'd",
    "someoned've": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "something'dve": "something'd've", "somethingd": "something'd", "somethingd've": "something'd've",
    "somethingll": "something'll", "thats": "that's", "there'dve": "there'd've", "thered": "there'd",
    "thered've": "there'd've", "therere": "there're", "theres": "there's", "they'dve": "they'd've",
    "theyd": "they'd", "theyd've": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "we'dve": "we'd've", "wed've": "we'd've",
    "werent": "weren't", "weve": "we've", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "who'dve": "who'd've", "whod": "who'd", "whod've": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldn'tve": "wouldn't've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldve": "would've", "y'all'dve": "y'all'd've",
    "y'alld've": "y'all'd've", "y'allll": "y'all'll", "yall": "y'all", "yall'd've": "y'all'd've",
    "yall'll": "y'all'll", "you'dve": "you'd've", "youd": "you'd", "youd've": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
# Removed or turned into a space (see _strip_punctuation). Not in the list: the period (own rule),
# the apostrophe, ':', '*', '#', '$', '%', '&', '^', '|', '~'.
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The script's period pattern is written as if it had a look-behind for a digit, but the construct
# is a negative look-ahead for the text "<=" + digit, which can never match at a period. What it
# does: remove every period that is not followed by a digit ("3.5" keeps it, "5." and "e.g." lose it).
_PERIOD = re.compile(r"\.(?!\d)")
# The script passes re.UNICODE (= 32) where Pattern.sub takes its count, so at most 32 periods go.
_PERIOD_MAX_REMOVED = 32


def _clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip: applied to every answer before anything else."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _strip_punctuation(text: str) -> str:
    """The script's punctuation step. Each mark is deleted when it touches a space in the *input*
    (or the input holds digit,digit anywhere, e.g. "1,000"), else replaced by a space."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_REMOVED)


def _digits_articles(text: str) -> str:
    """The script's word step: lower-case, split on whitespace, number words to digits, drop
    articles, then expand contractions word by word."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """An answer after the official full normalisation (whitespace, punctuation, digits, articles,
    contractions). The metric applies it only to questions whose human answers differ (see
    :func:`question_accuracy`); the vocabulary always uses it."""
    return _digits_articles(_strip_punctuation(_clean_whitespace(text)))


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official accuracy of one prediction, as a fraction in [0, 1] (not rounded).

    As the official script (since its 2021 fix) does: all answers and the prediction are
    whitespace-cleaned; only when the cleaned human answers are not all identical are they and the
    prediction fully normalised. Then, for each human answer left out in turn, the prediction scores
    min(1, #other answers equal to it / 3); the result is the mean over the leave-one-out subsets.
    """
    if not answers:
        raise ValueError("a prediction cannot be scored against no human answers")
    gts = [_clean_whitespace(a) for a in answers]
    pred = _clean_whitespace(prediction)
    if len(set(gts)) > 1:
        gts = [_digits_articles(_strip_punctuation(a)) for a in gts]
        pred = _digits_articles(_strip_punctuation(pred))
    matching = sum(g == pred for g in gts)
    # Summed subset by subset in answer order, as the script does, so the floats are the same.
    per_subset = [min(1.0, (matching - (g == pred)) / 3) for g in gts]
    return sum(per_subset) / len(per_subset)


# --------------------------------------------------------------------------------------------
# Answer vocabulary and soft targets
# --------------------------------------------------------------------------------------------
def build_answer_vocab(examples: Iterable[VqaExample], size: int) -> list[str]:
    """The ``size`` most frequent normalised answers, every human answer counted (an answer given
    by 7 of 10 people counts 7 times); ties alphabetical so the vocabulary is deterministic.
    Answers that normalise to nothing (e.g. "the") are left out."""
    if size <= 0:
        raise ValueError(f"the answer vocabulary size must be positive, got {size}")
    counts = Counter(n for ex in examples for n in map(normalize_answer, ex.answers) if n)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [answer for answer, _ in ranked[:size]]


SINGLE_ANSWER_TARGET = 0.5  # ALBEF's vqa_dataset.py weight for its one-answer Visual Genome questions


def soft_targets(answers: Sequence[str], vocab_index: dict[str, int]) -> dict[int, float]:
    """Vocabulary index -> the official accuracy (fraction) that answer would get against these
    human answers: 0.3, 0.6, 0.9, 1.0 for 1, 2, 3, >=4 of 10 matching.

    Computed from the leave-one-out definition, so it holds for any number of answers. A single
    answer would score 0 there (no left-out subset contains it); such entries (ALBEF's Visual Genome
    lines) get ALBEF's fixed weight, SINGLE_ANSWER_TARGET, on their answer instead [code]. Zero scores
    and answers outside the vocabulary are left out; an empty dict means the example has nothing to
    learn from (the trainer skips and counts it).
    """
    if not answers:
        return {}
    if len(answers) == 1:
        index = vocab_index.get(normalize_answer(answers[0]), vocab_index.get(_clean_whitespace(answers[0])))
        return {} if index is None else {index: SINGLE_ANSWER_TARGET}
    candidates = {normalize_answer(a) for a in answers} | {_clean_whitespace(a) for a in answers}
    targets: dict[int, float] = {}
    for candidate in sorted(candidates):
        index = vocab_index.get(candidate)
        if index is None or index in targets:
            continue
        score = question_accuracy(candidate, answers)
        if score > 0:
            targets[index] = score
    return targets


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(file: Path, i: int, item: Any, key: str, kind: str, required: bool = True) -> Any:
    """``item[key]`` checked to be of ``kind`` ("int" | "str" | "any"), or None when optional and absent."""
    if not isinstance(item, dict):
        raise DataFormatError(f"{file}: entry {i} is a {type(item).__name__}, expected an object")
    if key not in item:
        if not required:
            return None
        raise DataFormatError(f"{file}: entry {i} has no \"{key}\" key (keys: {sorted(item)})")
    value = item[key]
    if kind == "int" and not _is_int(value):
        raise DataFormatError(f"{file}: entry {i}: \"{key}\" must be an integer, got {value!r:.60}")
    if kind == "str" and not isinstance(value, str):
        raise DataFormatError(f"{file}: entry {i}: \"{key}\" must be a string, got {value!r:.60}")
    return value


def _join(image_root: str | Path, image: str) -> str:
    """Relative paths are joined to image_root, absolute ones kept; normalised so keys match."""
    return os.path.normpath(image if os.path.isabs(image) else os.path.join(str(image_root), image))


def _coco_image_subtype(data_subtype: str) -> str:
    """The COCO split whose images a question file uses: test-dev questions are asked about
    test2015 images (COCO_test2015_...), every other subtype names its own images."""
    return "test" + data_subtype[len("test-dev"):] if data_subtype.startswith("test-dev") else data_subtype


def _coco_image_path(image_root: str | Path, data_subtype: str, image_id: int) -> str:
    """``{root}/COCO_{subtype}_{id:012d}.jpg``, or the .png of that name (synthetic exports), or
    either one folder down in ``{root}/{subtype}/`` (the official zip unpacks there); the first
    that exists, else the .jpg at the root (the dataset layer counts missing images)."""
    subtype = _coco_image_subtype(data_subtype)
    stem = f"COCO_{subtype}_{image_id:012d}"
    root = str(image_root)
    for folder in (root, os.path.join(root, subtype)):
        for ext in (".jpg", ".png"):
            candidate = os.path.join(folder, stem + ext)
            if os.path.exists(candidate):
                return os.path.normpath(candidate)
    return os.path.normpath(os.path.join(root, stem + ".jpg"))


def _official_questions(file: Path, data: Any) -> tuple[str, list[dict]]:
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise DataFormatError(f"{file}: expected an object with a \"questions\" list (official VQA v2 questions file)")
    subtype = data.get("data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise DataFormatError(f"{file}: \"data_subtype\" must be a non-empty string such as \"train2014\"")
    return subtype, data["questions"]


def _official_annotations(file: Path, data: Any) -> dict[int, tuple[int, tuple[str, ...], str, str]]:
    """question_id -> (image_id, human answers, answer_type, question_type), validated."""
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataFormatError(f"{file}: expected an object with an \"annotations\" list (official VQA v2 annotations file)")
    out: dict[int, tuple[int, tuple[str, ...], str, str]] = {}
    for i, ann in enumerate(data["annotations"]):
        qid = _field(file, i, ann, "question_id", "int")
        image_id = _field(file, i, ann, "image_id", "int")
        answer_type = _field(file, i, ann, "answer_type", "str", required=False) or ""
        question_type = _field(file, i, ann, "question_type", "str", required=False) or ""
        raw = _field(file, i, ann, "answers", "any")
        if not isinstance(raw, list):
            raise DataFormatError(f"{file}: entry {i}: \"answers\" must be a list of {{\"answer\": ...}} objects")
        answers = []
        for j, a in enumerate(raw):
            if not isinstance(a, dict) or "answer" not in a:
                raise DataFormatError(f"{file}: entry {i}: \"answers\"[{j}] has no \"answer\" key")
            if not isinstance(a["answer"], str):
                raise DataFormatError(f"{file}: entry {i}: \"answers\"[{j}].\"answer\" must be a string")
            answers.append(a["answer"])
        if qid in out:
            raise DataFormatError(f"{file}: entry {i}: question_id {qid} is annotated twice")
        out[qid] = (image_id, tuple(answers), answer_type, question_type)
    return out


def _official_examples(
    qfile: Path, qdata: Any, afile: Path | None, adata: Any, image_root: str | Path
) -> list[VqaExample]:
    subtype, questions = _official_questions(qfile, qdata)
    annotations = _official_annotations(afile, adata) if afile is not None else None
    images: dict[int, str] = {}  # ~5 questions per image: locate each image once
    seen: set[int] = set()
    examples: list[VqaExample] = []
    for i, q in enumerate(questions):
        qid = _field(qfile, i, q, "question_id", "int")
        image_id = _field(qfile, i, q, "image_id", "int")
        question = _field(qfile, i, q, "question", "str")
        if qid in seen:
            raise DataFormatError(f"{qfile}: entry {i}: question_id {qid} appears twice")
        seen.add(qid)
        answers: tuple[str, ...] = ()
        answer_type = question_type = ""
        if annotations is not None:
            ann = annotations.get(qid)
            if ann is None:
                raise DataFormatError(f"{qfile}: question_id {qid} (entry {i}) has no annotation in {afile}")
            if ann[0] != image_id:
                raise DataFormatError(
                    f"{qfile}: question_id {qid} (entry {i}) is about image {image_id} but {afile} says image {ann[0]}"
                )
            _, answers, answer_type, question_type = ann
        if image_id not in images:
            images[image_id] = _coco_image_path(image_root, subtype, image_id)
        examples.append(VqaExample(qid, images[image_id], question, answers, answer_type, question_type))
    return examples


def read_vqa_v2(
    questions_json: str | Path, annotations_json: str | Path | None, image_root: str | Path
) -> list[VqaExample]:
    """The official VQA v2 pair (``v2_OpenEnded_mscoco_<subtype>_questions.json`` and
    ``v2_mscoco_<subtype>_annotations.json``); without annotations (test, test-dev) the
    examples carry no answers."""
    qfile = Path(questions_json)
    afile = Path(annotations_json) if annotations_json is not None else None
    adata = load_json_file(afile) if afile is not None else None
    return _official_examples(qfile, load_json_file(qfile), afile, adata, image_root)


def _albef_examples(
    file: Path, data: Any, image_root: str | Path, vg_root: str | Path | None = None
) -> list[VqaExample]:
    if not isinstance(data, list):
        raise DataFormatError(f"{file}: expected a JSON list of {{\"question\": ..., \"image\": ...}} entries (ALBEF layout)")
    examples: list[VqaExample] = []
    for i, item in enumerate(data):
        question = _field(file, i, item, "question", "str")
        image = _field(file, i, item, "image", "str")
        if not image.strip():
            raise DataFormatError(f"{file}: entry {i}: \"image\" must be a non-empty path string")
        source = _field(file, i, item, "dataset", "str", required=False) or "vqa"
        if source not in ("vqa", "vg"):
            raise DataFormatError(f"{file}: entry {i}: \"dataset\" must be \"vqa\" or \"vg\", got {source!r:.40}")
        qid = _field(file, i, item, "question_id", "int", required=False)
        if qid is None:
            if source != "vg":
                raise DataFormatError(f"{file}: entry {i} has no \"question_id\" key (keys: {sorted(item)})")
            qid = -(i + 1)  # ALBEF's Visual Genome lines need no id; negative keeps them apart from VQA ids
        raw = item.get("answer")
        if raw is None:
            answers: tuple[str, ...] = ()
        elif isinstance(raw, str):
            answers = (raw,)
        elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
            answers = tuple(raw)
        else:
            raise DataFormatError(f"{file}: entry {i}: \"answer\" must be a string or a list of strings")
        root = vg_root if (source == "vg" and vg_root is not None) else image_root
        examples.append(VqaExample(qid, _join(root, image.strip()), question, answers))
    return examples


def read_albef_vqa(
    json_file: str | Path, image_root: str | Path, *, vg_root: str | Path | None = None
) -> list[VqaExample]:
    """ALBEF's ``vqa_train.json`` / ``vqa_val.json`` / ``vg_qa.json`` / ``vqa_test.json`` lists.

    ALBEF joins "vg" entries to a separate Visual Genome root; ``vg_root`` does the same (default:
    ``image_root``). Test files carry no "answer"; "vg" entries carry one answer string and may lack
    a question_id (they get ``-(index + 1)``). ALBEF files have no answer or question types.
    """
    path = Path(json_file)
    return _albef_examples(path, load_json_file(path), image_root, vg_root)


def read_vqa(files: Sequence[str | Path], image_root: str | Path) -> list[VqaExample]:
    """Examples of every file, dispatched by layout: an object with "questions" is an official
    questions file, paired with the annotations file of the same ``data_subtype`` in ``files``
    (none: a test file, no answers); a list is ALBEF's layout."""
    if isinstance(files, (str, Path)):
        files = [files]
    loaded = [(Path(f), load_json_file(f)) for f in files]
    annotations: dict[str, tuple[Path, Any]] = {}
    for path, data in loaded:
        if isinstance(data, dict) and "annotations" in data and "questions" not in data:
            subtype = data.get("data_subtype")
            if not isinstance(subtype, str) or not subtype:
                raise DataFormatError(f"{path}: \"data_subtype\" must be a non-empty string to pair it with a questions file")
            if subtype in annotations:
                raise DataFormatError(f"{path}: a second annotations file for {subtype} (the first: {annotations[subtype][0]})")
            annotations[subtype] = (path, data)
    used: set[str] = set()
    examples: list[VqaExample] = []
    for path, data in loaded:
        if isinstance(data, list):
            examples.extend(_albef_examples(path, data, image_root))
        elif isinstance(data, dict) and "questions" in data:
            subtype, _ = _official_questions(path, data)
            afile, adata = annotations.get(subtype, (None, None))
            used.add(subtype)
            examples.extend(_official_examples(path, data, afile, adata, image_root))
        elif not (isinstance(data, dict) and "annotations" in data):
            raise DataFormatError(
                f"{path}: not a VQA file: expected a list (ALBEF layout) or an object with \"questions\" "
                "or \"annotations\" (official VQA v2)"
            )
    for subtype, (path, _) in annotations.items():
        if subtype not in used:
            raise DataFormatError(f"{path}: annotations for {subtype} but no questions file with that data_subtype")
    return examples
