"""Check user JSON data before a run: what training and evaluation would skip, repair or fail to read.

Training drops unreadable images silently, batch by batch, and stops only when too many are bad;
this decodes every image once, up front, with the same :func:`load_image`, and names the bad ones.
Malformed files raise :class:`DataFormatError` (one line naming the file and the entry), as at load.
"""
from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from maskvlp.data import datasets
from maskvlp.data.datasets import JsonEntry, Progress, _parse_entries, load_image

MISSING = "missing"
UNREADABLE = "cannot decode"
MAX_EXAMPLES = 5  # bad paths listed per file
WORKERS = 4  # decoding threads: PIL releases the GIL while it decodes
CHUNK = 1024  # paths handed to the threads at a time


@dataclass(frozen=True)
class BadImage:
    path: str
    reason: str  # MISSING | UNREADABLE


@dataclass
class FileCheck:
    """One JSON file. ``empty``: entries with no non-empty caption (training drops them);
    ``images``: distinct images named by the other entries, the ones a run reads."""

    file: str
    kind: str  # "train" (ALBEF list, data.train_json) | "test" (Karpathy, eval.test_json)
    entries: int
    empty: int
    repaired_text: int
    images: int
    missing: int
    unreadable: int
    examples: list[BadImage] = field(default_factory=list)  # the first MAX_EXAMPLES bad images

    @property
    def bad_images(self) -> int:
        return self.missing + self.unreadable


@dataclass
class DataCheckReport:
    files: list[FileCheck]
    images: int  # distinct images over all files (one named in two files counts once)
    bad_images: int  # of those, missing or unreadable

    @property
    def ok(self) -> bool:
        return self.bad_images == 0


@contextlib.contextmanager
def _quiet_loader() -> Iterator[None]:
    """``load_image`` warns once per bad image; here the report lists them instead."""
    logger = datasets.log
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _status(path: str) -> Optional[str]:
    """None for a readable image, else why not."""
    if not os.path.isfile(path):
        return MISSING
    return None if load_image(path) is not None else UNREADABLE


def _decode_all(paths: list[str], progress: Progress | None, workers: int) -> dict[str, Optional[str]]:
    """Path -> reason (None: readable), in chunks so millions of paths do not queue millions of futures."""
    status: dict[str, Optional[str]] = {}
    with _quiet_loader(), ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start:start + CHUNK]
            for path, reason in zip(chunk, pool.map(_status, chunk)):
                status[path] = reason
                if progress is not None:
                    progress(len(status), len(paths))
    return status


def _file_check(file: str, kind: str, entries: list[JsonEntry], status: dict[str, Optional[str]]) -> FileCheck:
    images = list(dict.fromkeys(e.image for e in entries if e.captions))
    bad = [BadImage(p, reason) for p in images if (reason := status[p]) is not None]
    return FileCheck(
        file=file, kind=kind, entries=len(entries), empty=sum(not e.captions for e in entries),
        repaired_text=sum(e.repaired for e in entries), images=len(images),
        missing=sum(b.reason == MISSING for b in bad), unreadable=sum(b.reason == UNREADABLE for b in bad),
        examples=bad[:MAX_EXAMPLES],
    )


def check_data(
    train_json: Sequence[str | Path],
    image_root: str | Path,
    test_json: str | Path | None = None,
    test_image_root: str | Path = "",
    *,
    progress: Progress | None = None,
    workers: int = WORKERS,
) -> DataCheckReport:
    """Parse every file (failing fast on a malformed one), then decode each distinct image once."""
    parsed = [(str(f), "train", _parse_entries(f, image_root)) for f in train_json]
    if test_json:
        parsed.append((str(test_json), "test", _parse_entries(test_json, test_image_root)))
    paths = list(dict.fromkeys(e.image for _, _, entries in parsed for e in entries if e.captions))
    status = _decode_all(paths, progress, workers)
    files = [_file_check(file, kind, entries, status) for file, kind, entries in parsed]
    return DataCheckReport(files, len(paths), sum(reason is not None for reason in status.values()))


def format_report(report: DataCheckReport) -> str:
    """A plain-text table, one row per file, then the first bad images of each file and a summary."""
    head = ("file", "kind", "entries", "empty", "repaired", "images", "missing", "unreadable")
    rows = [head] + [(f.file, f.kind, *map(str, (f.entries, f.empty, f.repaired_text, f.images, f.missing,
                                                    f.unreadable))) for f in report.files]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    for f in report.files:
        if f.examples:
            more = f" (first {len(f.examples)} of {f.bad_images})" if f.bad_images > len(f.examples) else ""
            lines += [f"bad images in {f.file}{more}:"] + [f"  {b.path}: {b.reason}" for b in f.examples]
    if report.ok:
        lines.append(f"all {report.images} images readable")
    else:
        lines.append(f"{report.bad_images} of {report.images} images missing or unreadable: "
                     "training skips them (up to data.max_bad_fraction), evaluation leaves them out")
    return "\n".join(lines)
