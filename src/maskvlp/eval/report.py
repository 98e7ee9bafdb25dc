"""Evaluation reports: results.json + a markdown table, a rich terminal table, and loss curves.

Files are written atomically (temp file in the same folder + ``os.replace``) so an interrupted run
never leaves a half-written report that a later comparison would read as valid. Plotting uses the
Agg canvas directly, not pyplot, so it touches no global backend state and works headless.
"""
from __future__ import annotations

import sys

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maskvlp.engine.logging import read_metrics

Results = Mapping[str, Mapping[str, float]]

COLUMNS: tuple[str, ...] = (
    "img_r1", "img_r5", "img_r10",
    "txt_r1", "txt_r5", "txt_r10",
    "sem_img_r1", "sem_txt_r1",
    "ceiling_img_r1",
    "binding_colour", "binding_relation",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temp file next to ``path``, then move it into place in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _atomic_write_text(path: Path, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def write_report(results: Results, out_dir: Path, title: str, notes: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; return their paths.

    results.json is ``{"title": str, "notes": [str], "results": {row: {metric: float | null}}}``
    (non-finite numbers become null). results.md has the title, the markdown table and the notes
    as a bullet list. Metrics outside :data:`COLUMNS` (e.g. ``r_mean``) are in the JSON only.
    """
    out_dir = Path(out_dir)
    notes = list(notes or [])
    payload = {"title": title, "notes": notes, "results": _json_safe(results)}
    json_path = _atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    md = f"# {title}\n\n{markdown_table(results)}"
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    md_path = _atomic_write_text(out_dir / "results.md", md)
    return json_path, md_path


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    """A finite int/float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) where ``key`` holds a finite number."""
    pts = [(float(r["step"]), float(r[key])) for r in records if _is_number(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def smooth(values: Sequence[float], weight: float | None = None) -> list[float]:
    """Debiased exponential moving average (TensorBoard's); weight grows with the series length."""
    if weight is None:
        weight = min(0.95, max(0.0, 1.0 - 10.0 / max(len(values), 1)))
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i) if weight < 1 else v)
    return out


def _loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """``loss`` first, then the ``loss_*`` keys in sorted order."""
    found = {k for r in records for k in r if k == "loss" or k.startswith("loss_")}
    return sorted(found, key=lambda k: (k != "loss", k))


def plot_curves(jsonl_path: Path, out_png: Path, keys: list[str] | None = None) -> Path:
    """Plot losses over step (smoothed line over faint raw line) and lr in a small second axis.

    ``keys`` picks the curves for the main axis (default: ``loss`` and every ``loss_*``); keys
    absent from the log are skipped. An empty or missing log gives a figure saying "no data".
    Returns ``out_png``, written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(jsonl_path)
    keys = [k for k in (keys if keys is not None else _loss_keys(records)) if k != "lr"]
    curves = {k: s for k in keys if (s := _series(records, k))[0]}
    lr = _series(records, "lr")

    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    if not curves and not lr[0]:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_axis_off()
    else:
        _draw(fig, curves, lr)
    return _atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, format="png"))


def _draw(fig: Any, curves: dict[str, tuple[list[float], list[float]]], lr: tuple[list[float], list[float]]) -> None:
    """Loss axis on top (3/4 of the height), lr axis below when the log has lr."""
    if lr[0]:
        grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
        ax, ax_lr = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
        ax.sharex(ax_lr)
        ax.tick_params(labelbottom=False)
        ax_lr.plot(*lr, color="tab:gray", linewidth=1)
        ax_lr.set_ylabel("lr")
        ax_lr.set_xlabel("step")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    else:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_xlabel("step")
    for i, (key, (steps, values)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(values), color=color, linewidth=1.6, label=key)
    if curves:
        ax.legend(loc="upper right", fontsize="small")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
