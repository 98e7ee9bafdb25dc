"""RefCOCO+ as ALBEF's ``Grounding.py`` reads it, into :class:`GroundingExample` records.

ALBEF's files [code]: ``refcoco+_train.json`` lists ``{"image", "text"}`` (read for training by the
pre-training reader with ``text_key="text"``); ``refcoco+_val.json`` / ``refcoco+_test.json`` list
``{"image", "text", "ref_id"}``. The rest comes from the folder ALBEF's ``refcoco_data`` points at, in
the REFER API's layout (lichengunc/refer): ``refcoco+/refs(unc).p`` (a pickle of refs: ``ref_id``,
``ann_id``, ``image_id``, ``split``), ``refcoco+/instances.json`` (COCO annotations: the referred
object's ``bbox``) and ALBEF's ``refcoco+/dets.json`` (``{image_id: [[x, y, w, h, ...], ...]}``, the
detector's candidate boxes). A test entry may instead carry its own ``"bbox"`` and ``"candidates"``
(and ``"split"``) [ours], so a user's data needs no REFER folder.

Errors are one line naming the file, the entry and the field. The refs pickle is read with an
unpickler that builds plain lists and dicts only (a pickle can name any code to run; this one may not).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Sequence

from maskvlp.data.datasets import DataFormatError, _join, _read_json_list, load_json_file
from maskvlp.data.tasks.examples import Box, GroundingExample

REFS_FILE = "refs(unc).p"
INSTANCES_FILE = "instances.json"
DETS_FILE = "dets.json"


class _PlainUnpickler(pickle.Unpickler):
    """Lists, dicts, strings and numbers only: no class or function may be looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: a refs file holds plain data only")


def read_refs(file: str | Path) -> dict[int, dict]:
    """``ref_id -> ref`` from the REFER API's ``refs(unc).p``."""
    path = Path(file)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found (the REFER refs pickle; set task.refer_dir)")
    try:
        refs = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataFormatError(f"{path}: not a REFER refs pickle ({err})") from None
    if not isinstance(refs, list):
        raise DataFormatError(f"{path}: expected a pickled list of refs, got a {type(refs).__name__}")
    out = {}
    for i, ref in enumerate(refs):
        for key in ("ref_id", "ann_id", "image_id", "split"):
            if not isinstance(ref, dict) or key not in ref:
                raise DataFormatError(f"{path}: ref {i} has no \"{key}\"")
        out[int(ref["ref_id"])] = ref
    return out


def _box(value: Any, where: str, field: str) -> Box:
    if not (isinstance(value, (list, tuple)) and len(value) >= 4 and all(isinstance(v, (int, float)) for v in value[:4])):
        raise DataFormatError(f"{where}: \"{field}\" must be [x, y, w, h] numbers, got {value!r}"[:300])
    x, y, w, h = (float(v) for v in value[:4])
    if w <= 0 or h <= 0:
        raise DataFormatError(f"{where}: \"{field}\" has a width or height <= 0: {value!r}")
    return (x, y, w, h)


def read_annotation_boxes(file: str | Path) -> dict[int, Box]:
    """``ann_id -> bbox`` from COCO's ``instances.json``."""
    path = Path(file)
    data = load_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataFormatError(f"{path}: expected COCO instances with an \"annotations\" list")
    boxes = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann or "bbox" not in ann:
            raise DataFormatError(f"{path}: annotation {i} needs \"id\" and \"bbox\"")
        boxes[int(ann["id"])] = _box(ann["bbox"], f"{path}: annotation {i}", "bbox")
    return boxes


def read_dets(file: str | Path) -> dict[str, tuple[Box, ...]]:
    """``str(image_id) -> candidate boxes`` from ALBEF's ``dets.json`` (extra numbers after the box, such as
    a detector's score, are ignored)."""
    path = Path(file)
    data = load_json_file(path)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected {{image_id: [[x, y, w, h], ...]}}, got a {type(data).__name__}")
    out = {}
    for image_id, dets in data.items():
        if not isinstance(dets, list) or not dets:
            raise DataFormatError(f"{path}: image {image_id}: expected a non-empty list of boxes")
        out[str(image_id)] = tuple(_box(d, f"{path}: image {image_id}, box {k}", "box") for k, d in enumerate(dets))
    return out


class ReferFolder:
    """ALBEF's ``refcoco_data`` folder, read once: refs, the annotations' boxes and the detections."""

    def __init__(self, folder: str | Path, dets_file: str | Path | None = None):
        folder = Path(folder)
        sub = folder / "refcoco+" if (folder / "refcoco+" / REFS_FILE).is_file() else folder
        self.refs = read_refs(sub / REFS_FILE)
        self.boxes = read_annotation_boxes(sub / INSTANCES_FILE)
        self.dets = read_dets(dets_file or sub / DETS_FILE)


def _entry_ref(ref_id: int, where: str, refer: ReferFolder | None) -> tuple[dict, Box]:
    if refer is None:
        raise DataFormatError(f"{where}: no \"bbox\" in the entry and no REFER folder to look ref_id up in "
                              f"(set task.refer_dir=<folder with refcoco+/refs(unc).p>)")
    if ref_id not in refer.refs:
        raise DataFormatError(f"{where}: \"ref_id\" {ref_id!r} is not in the refs file")
    ref = refer.refs[ref_id]
    if int(ref["ann_id"]) not in refer.boxes:
        raise DataFormatError(f"{where}: ref {ref_id}'s ann_id {ref['ann_id']} has no box in {INSTANCES_FILE}")
    return ref, refer.boxes[int(ref["ann_id"])]


def read_grounding_test(files: Sequence[str | Path], image_root: str | Path,
                        refer: ReferFolder | None = None) -> list[GroundingExample]:
    """Test entries of ALBEF's ``refcoco+_val.json`` / ``refcoco+_test.json`` layout (or entries that carry
    their own ``bbox`` / ``candidates`` / ``split``)."""
    examples: list[GroundingExample] = []
    for file in files:
        path = Path(file)
        for i, item in enumerate(_read_json_list(path, '{"image": ..., "text": ..., "ref_id": ...}')):
            where = f"{path}: entry {i}"
            if not isinstance(item, dict):
                raise DataFormatError(f"{where} is a {type(item).__name__}, expected an object")
            for key in ("image", "text"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    raise DataFormatError(f"{where}: \"{key}\" must be a non-empty string")
            ref_id = item.get("ref_id", len(examples))
            if isinstance(ref_id, bool) or not isinstance(ref_id, int):
                raise DataFormatError(f"{where}: \"ref_id\" must be an integer, got {ref_id!r}"[:300])
            if "bbox" in item:
                box = _box(item["bbox"], where, "bbox")
                split = str(item.get("split", path.stem))
                if "candidates" in item:
                    candidates = item["candidates"]
                    if not isinstance(candidates, list) or not candidates:
                        raise DataFormatError(f"{where}: \"candidates\" must be a non-empty list of [x, y, w, h] boxes")
                    cands = tuple(_box(c, f"{where}, candidate {k}", "candidates") for k, c in enumerate(candidates))
                else:
                    cands = refer.dets.get(str(item.get("image_id"))) if refer is not None else None
            else:
                ref, box = _entry_ref(ref_id, where, refer)
                split, cands = str(ref["split"]), refer.dets.get(str(ref["image_id"])) if refer is not None else None
            if not cands:
                raise DataFormatError(f"{where}: no candidate boxes for this image (dets file or \"candidates\")")
            examples.append(GroundingExample(int(ref_id), _join(image_root, item["image"].strip()), item["text"].strip(),
                                             box, tuple(cands), split))
    return examples

