"""Loss curves of a run: losses over steps (smoothed over raw) with the learning rate beneath.

Drawn after every training run from its metrics.jsonl, with the Agg canvas directly (not pyplot), so
it touches no global backend state and works headless.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskvlp.engine.logging import read_metrics
from maskvlp.files import atomic_write


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
    return atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, format="png"))


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
