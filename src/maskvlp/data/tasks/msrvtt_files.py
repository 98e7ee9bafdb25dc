"""MSR-VTT annotation files read into :class:`VideoCaption` records, for video-text retrieval.

Three layouts, told apart by content (a ``.csv`` suffix, a JSON object or a JSON list):

* the official ``MSRVTT_data.json``: ``{"videos": [{"video_id", "split", ...}], "sentences":
  [{"video_id", "caption", "sen_id"}]}``, videos at ``{video_root}/{video_id}.mp4`` (or .webm,
  .avi, .mkv when that is what exists); ``split`` keeps one split's videos;
* JSFusion's ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``): one caption per
  test video, the 1k-A protocol most papers report;
* an ALBEF/BLIP-style JSON list ``[{"video": path, "caption": str | [str, ...]}]``, paths
  relative to ``video_root``.

The CSV and the lists hold one split each and are returned whole. A wrong layout fails at read
time with a one-line :class:`DataFormatError` naming the file, the entry (CSV: the line) and the
field. Videos are only named here, never opened: the dataset layer counts and skips bad ones.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskvlp.data.datasets import DataFormatError, _entry_captions, _join, _read_json_list, load_json_file
from maskvlp.data.tokenizer import repair_surrogates
from maskvlp.data.tasks.examples import VideoCaption

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")
_JSFUSION_COLUMNS = ("video_id", "sentence")  # of key,vid_key,video_id,sentence, the two read


def video_file(video_root: str | Path, video_id: str) -> str:
    """``{video_root}/{video_id}.mp4``, or the first other suffix whose file exists (the .mp4 name
    when none does, so a missing video is reported where it is read)."""
    names = [_join(video_root, video_id + suffix) for suffix in VIDEO_SUFFIXES]
    return next((n for n in names if Path(n).is_file()), names[0])


def _field(path: Path, where: str, item: Any, key: str, required: bool = True) -> str:
    """A string field of a JSON object, stripped ("" when optional and absent)."""
    if not isinstance(item, dict):
        raise DataFormatError(f"{path}: {where} is a {type(item).__name__}, expected an object")
    if key not in item:
        if not required:
            return ""
        raise DataFormatError(f"{path}: {where} has no \"{key}\" key (keys: {sorted(item)})")
    if not isinstance(item[key], str) or (required and not item[key].strip()):
        raise DataFormatError(f"{path}: {where}: \"{key}\" must be a non-empty string, got {item[key]!r:.40}")
    return item[key].strip()


def _read_official(path: Path, data: dict, video_root: str | Path, split: str | None) -> list[VideoCaption]:
    for key in ("videos", "sentences"):
        if not isinstance(data.get(key), list):
            raise DataFormatError(f"{path}: \"{key}\" must be a list (MSRVTT_data.json layout; keys: {sorted(data)})")
    videos: dict[str, tuple[str, str]] = {}  # video_id -> (split, twin), in file order
    for i, item in enumerate(data["videos"]):
        video_id = _field(path, f"videos entry {i}", item, "video_id")
        if video_id in videos:
            raise DataFormatError(f"{path}: videos entry {i}: \"video_id\" {video_id!r} appears twice")
        videos[video_id] = (_field(path, f"videos entry {i}", item, "split", required=False),
                            _field(path, f"videos entry {i}", item, "twin", required=False))
    captions: dict[str, list[str]] = {video_id: [] for video_id in videos}
    for j, item in enumerate(data["sentences"]):
        video_id = _field(path, f"sentences entry {j}", item, "video_id")
        if video_id not in captions:
            raise DataFormatError(f"{path}: sentences entry {j}: \"video_id\" {video_id!r} is not among the videos")
        captions[video_id].append(repair_surrogates(_field(path, f"sentences entry {j}", item, "caption")))
    return [VideoCaption(video_file(video_root, video_id), caption, video_id, video_split, twin)
            for video_id, (video_split, twin) in videos.items() if split is None or video_split == split
            for caption in captions[video_id]]


def _read_jsfusion(path: Path, video_root: str | Path) -> list[VideoCaption]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err})") from None
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    for column in _JSFUSION_COLUMNS:
        if column not in header:
            raise DataFormatError(f"{path}: line 1: no \"{column}\" column (header {header}; expected key,vid_key,video_id,sentence)")
    out = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataFormatError(f"{path}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}")
        record = dict(zip(header, row))
        for column in _JSFUSION_COLUMNS:
            if not record[column].strip():
                raise DataFormatError(f"{path}: line {reader.line_num}: \"{column}\" is empty")
        video_id = record["video_id"].strip()
        out.append(VideoCaption(video_file(video_root, video_id), repair_surrogates(record["sentence"].strip()), video_id, "test"))
    return out


def _read_list(path: Path, data: list, video_root: str | Path) -> list[VideoCaption]:
    out = []
    for i, item in enumerate(data):
        where = f"entry {i}"
        video = _field(path, where, item, "video")
        if "caption" not in item:
            raise DataFormatError(f"{path}: {where} has no \"caption\" key (keys: {sorted(item)})")
        captions, _ = _entry_captions(path, i, item["caption"])
        video_id = _field(path, where, item, "video_id", required=False) or Path(video).stem
        split, twin = (_field(path, where, item, key, required=False) for key in ("split", "twin"))
        out += [VideoCaption(_join(video_root, video), c, video_id, split, twin) for c in captions]
    return out


def read_msrvtt(files: str | Path | Sequence[str | Path], video_root: str | Path, split: str | None = None) -> list[VideoCaption]:
    """Every caption of the given MSR-VTT files (any of the three layouts), file by file, a video's
    captions together; ``split`` keeps that split's videos of an official ``MSRVTT_data.json``."""
    out: list[VideoCaption] = []
    for file in [files] if isinstance(files, (str, Path)) else files:
        path = Path(file)
        if path.suffix.lower() == ".csv":
            out += _read_jsfusion(path, video_root)
            continue
        data = load_json_file(path)
        if isinstance(data, dict):
            out += _read_official(path, data, video_root, split)
        elif isinstance(data, list):
            out += _read_list(path, data, video_root)
        else:
            raise DataFormatError(f"{path}: expected the MSRVTT_data.json object or a JSON list of "
                                  f"{{\"video\", \"caption\"}} entries, got a {type(data).__name__}")
    return out


def read_twins(file: str | Path) -> list[tuple[str, str]]:
    """``twins.json``: pairs of video ids with the same first frame and opposite motion."""
    path = Path(file)
    out = []
    for i, pair in enumerate(_read_json_list(path, "[video_id_a, video_id_b]")):
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, str) and v.strip() for v in pair):
            raise DataFormatError(f"{path}: entry {i} must be a list of two video ids, got {pair!r:.60}")
        out.append((pair[0].strip(), pair[1].strip()))
    return out
