"""Evaluation reports: results.json + a markdown table, and a rich terminal table.

Files are written atomically (:mod:`maskvlp.files`) so an interrupted run never leaves a
half-written report that a later comparison would read as valid. Loss curves are the engine's
(:mod:`maskvlp.engine.curves`).
"""
from __future__ import annotations

import json
import sys
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maskvlp.files import atomic_write_text

Results = Mapping[str, Mapping[str, float]]

COLUMNS: tuple[str, ...] = (
    "img_r1", "img_r5", "img_r10",
    "txt_r1", "txt_r5", "txt_r10",
    "sem_img_r1", "sem_txt_r1",
    "ceiling_img_r1",
    "binding_colour", "binding_relation", "binding_colour_heldout", "binding_relation_heldout",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _present_columns(results: Results, columns: Sequence[str]) -> list[str]:
    """The columns, in order, that at least one row has."""
    return [c for c in columns if any(c in row for row in results.values())]


def _fmt(value: Any) -> str:
    """One decimal for numbers, '-' for a missing value."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.1f}"


def markdown_table(results: Results, columns: Sequence[str] = COLUMNS) -> str:
    """GitHub markdown table: one row per entry, the present ``columns`` in their fixed order."""
    cols = _present_columns(results, columns)
    lines = ["| " + " | ".join(["model", *cols]) + " |", "|" + "---|" + "---:|" * len(cols)]
    for name, row in results.items():
        cells = [name.replace("|", "\\|"), *(_fmt(row.get(c)) for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_table(results: Results, title: str, columns: Sequence[str] = COLUMNS, console: Any = None) -> None:
    """Show the same table as :func:`markdown_table` in the terminal with rich."""
    from rich.console import Console
    from rich.table import Table

    cols = _present_columns(results, columns)
    table = Table(title=title)
    table.add_column("model", style="bold")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in results.items():
        table.add_row(name, *(_fmt(row.get(c)) for c in cols))
    (console or Console(width=None if sys.stdout.isatty() else 200)).print(table)


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats with None: NaN/Infinity are not valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(results: Results, out_dir: Path, title: str, notes: list[str] | None = None,
                 columns: Sequence[str] = COLUMNS) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; return their paths.

    results.json is ``{"title": str, "notes": [str], "results": {row: {metric: float | null}}}``
    (non-finite numbers become null). results.md has the title, the markdown table and the notes
    as a bullet list. Metrics outside ``columns`` (e.g. ``r_mean``) are in the JSON only.
    """
    out_dir = Path(out_dir)
    notes = list(notes or [])
    payload = {"title": title, "notes": notes, "results": _json_safe(results)}
    json_path = atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    md = f"# {title}\n\n{markdown_table(results, columns)}"
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    md_path = atomic_write_text(out_dir / "results.md", md)
    return json_path, md_path
