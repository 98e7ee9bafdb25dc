"""NLVR2 files: the official JSON-lines files and ALBEF's NLVR2 lists, read into
:class:`Nlvr2Example` records.

Malformed files fail at read time with a one-line :class:`DataFormatError` naming the file, the
line (JSON lines) or entry (ALBEF lists) and the field. Images are only named here, never opened:
the dataset layer counts and skips unreadable ones.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskvlp.data.datasets import DataFormatError, _read_json_list
from maskvlp.data.tasks.examples import Nlvr2Example


def _label(value: Any) -> bool | None:
    """True/False from the files' "True"/"False" strings (any case, as the official metric
    compares lower-cased) or a JSON boolean; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _join(image_root: str | Path, image: str) -> str:
    """Relative paths are joined to image_root, absolute ones kept; normalised so keys match."""
    return os.path.normpath(image if os.path.isabs(image) else os.path.join(str(image_root), image))


def _pair_names(identifier: str) -> tuple[str, str] | None:
    """``split-set-pair-sentence`` -> the pair's image names ``split-set-pair-img0.png`` and
    ``-img1.png`` (the NLVR2 README's naming; the files are not all PNGs despite the suffix)."""
    base, sep, _ = identifier.rpartition("-")
    if not sep or not base:
        return None
    return f"{base}-img0.png", f"{base}-img1.png"


def read_nlvr2_jsonl(file: str | Path, image_root: str | Path) -> list[Nlvr2Example]:
    """The official ``train.json`` / ``dev.json`` / ``test1.json`` (JSON lines despite the suffix).

    Images are ``{image_root}/{directory}/{name}`` when the line has a ``directory`` (train: 100
    buckets), else ``{image_root}/{name}``. Blank lines are skipped; line numbers count from 1.
    """
    path = Path(file)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    examples: list[Nlvr2Example] = []
    try:
        with path.open("r", encoding="utf-8") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}: line {n}: not valid JSON ({err})") from None
        if not isinstance(item, dict):
            raise DataFormatError(f"{path}: line {n} is a {type(item).__name__}, expected an object")
        for key in ("identifier", "sentence", "label"):
            if key not in item:
                raise DataFormatError(f"{path}: line {n} has no \"{key}\" key (keys: {sorted(item)})")
        identifier, sentence = item["identifier"], item["sentence"]
        if not isinstance(identifier, str) or not identifier.strip():
            raise DataFormatError(f"{path}: line {n}: \"identifier\" must be a non-empty string")
        if not isinstance(sentence, str):
            raise DataFormatError(f"{path}: line {n}: \"sentence\" must be a string")
        label = _label(item["label"])
        if label is None:
            raise DataFormatError(f"{path}: line {n}: \"label\" must be \"True\" or \"False\", got {item['label']!r:.40}")
        names = _pair_names(identifier.strip())
        if names is None:
            raise DataFormatError(
                f"{path}: line {n}: \"identifier\" must look like split-set-pair-sentence, got {identifier!r:.60}"
            )
        folder = str(image_root)
        if "directory" in item:
            directory = item["directory"]
            if isinstance(directory, bool) or not isinstance(directory, (int, str)) or not str(directory).strip():
                raise DataFormatError(f"{path}: line {n}: \"directory\" must be an integer or a folder name")
            folder = os.path.join(folder, str(directory).strip())
        left, right = (os.path.normpath(os.path.join(folder, name)) for name in names)
        examples.append(Nlvr2Example(identifier.strip(), sentence, label, left, right))
    return examples


def read_albef_nlvr2(file: str | Path, image_root: str | Path) -> list[Nlvr2Example]:
    """ALBEF's ``nlvr_train.json`` / ``nlvr_dev.json`` / ``nlvr_test.json``: a JSON list of
    ``{"images": [left, right], "sentence": ..., "label": "True" | "False"}``, image paths relative
    to ``image_root``. The identifier is the entry's own when it has one, else ``<file stem>-<index>``.
    """
    path = Path(file)
    data = _read_json_list(path, '{"images": [left, right], "sentence": ..., "label": ...}')
    examples: list[Nlvr2Example] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataFormatError(f"{path}: entry {i} is a {type(item).__name__}, expected an object")
        for key in ("images", "sentence", "label"):
            if key not in item:
                raise DataFormatError(f"{path}: entry {i} has no \"{key}\" key (keys: {sorted(item)})")
        images = item["images"]
        if (
            not isinstance(images, list)
            or len(images) != 2
            or not all(isinstance(im, str) and im.strip() for im in images)
        ):
            raise DataFormatError(f"{path}: entry {i}: \"images\" must be a list of two path strings")
        if not isinstance(item["sentence"], str):
            raise DataFormatError(f"{path}: entry {i}: \"sentence\" must be a string")
        label = _label(item["label"])
        if label is None:
            raise DataFormatError(f"{path}: entry {i}: \"label\" must be \"True\" or \"False\", got {item['label']!r:.40}")
        identifier = item.get("identifier")
        if not isinstance(identifier, str) or not identifier.strip():
            identifier = f"{path.stem}-{i}"
        left, right = (_join(image_root, im.strip()) for im in images)
        examples.append(Nlvr2Example(identifier.strip(), item["sentence"], label, left, right))
    return examples


def _first_char(path: Path) -> str:
    """The first non-whitespace character of the file ("" when there is none)."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        while chunk := fh.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]
    return ""


def read_nlvr2(files: Sequence[str | Path], image_root: str | Path) -> list[Nlvr2Example]:
    """Examples of every file: ``.jsonl`` files, and files whose first non-blank character is "{",
    are official JSON lines (the official files end in ``.json``); "[" is ALBEF's list."""
    if isinstance(files, (str, Path)):
        files = [files]
    examples: list[Nlvr2Example] = []
    for file in files:
        path = Path(file)
        first = "{" if path.suffix == ".jsonl" else _first_char(path)
        if first == "{":
            examples.extend(read_nlvr2_jsonl(path, image_root))
        elif first == "[":
            examples.extend(read_albef_nlvr2(path, image_root))
        else:
            raise DataFormatError(
                f"{path}: not an NLVR2 file: expected JSON lines (official) or a JSON list (ALBEF)"
                + (", the file is empty" if not first else f", it starts with {first!r}")
            )
    return examples
