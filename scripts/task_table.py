"""One markdown table of fine-tuning runs: task x start (pre-trained recipe, none, question only), mean and
spread over seeds, read from each run folder's config.yaml and eval/results.json.

    .venv/bin/python scripts/task_table.py runs/tasks [runs/table ...]
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

# (task, results row suffix, metric, column title)
COLUMNS = (
    ("vqa", "test", "overall", "VQA acc"),
    ("vqa", "test", "qtype/colour", "VQA colour"),
    ("vqa", "test", "qtype/shape", "VQA shape"),
    ("vqa", "heldout", "heldout", "VQA held-out pairs"),
    ("nlvr2", "test", "accuracy", "NLVR2 acc"),
    ("nlvr2", "heldout", "heldout", "NLVR2 held-out pairs"),
    ("retrieval", "itm k=8", "img_r1", "R@1 t->i (ITM)"),
    ("retrieval", "itc", "img_r1", "R@1 t->i (ITC)"),
)


def start_of(cfg: dict) -> str:
    task = cfg["task"]
    start = task.get("init_recipe") or "none"
    return f"{start} (question only)" if task.get("blind") else start


def collect(*roots: Path) -> dict[tuple[str, str], dict[str, list[float]]]:
    """{(start, column title): {"values": [...]}} over every finished run under the ``roots``."""
    cells: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for results in sorted(r for root in roots for r in root.glob("*/eval/results.json")):
        run = results.parent.parent
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        rows = json.loads(results.read_text())["results"]
        for task, suffix, metric, title in COLUMNS:
            if cfg["task"]["name"] != task:
                continue
            for name, row in rows.items():
                if not name.endswith(suffix):
                    continue
                key = (f"{start_of(cfg)} zero-shot" if name.startswith("zero-shot") else start_of(cfg), title)
                if row.get(metric) is not None:
                    cells[key]["values"].append(float(row[metric]))
    return cells


def table(cells: dict) -> str:
    starts = sorted({start for start, _ in cells})
    titles = [title for *_, title in COLUMNS]
    lines = ["| start | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    for start in starts:
        out = []
        for title in titles:
            values = cells.get((start, title), {}).get("values", [])
            if not values:
                out.append("-")
            elif len(values) == 1:
                out.append(f"{values[0]:.1f}")
            else:
                out.append(f"{statistics.mean(values):.1f} ± {(max(values) - min(values)) / 2:.1f} (n={len(values)})")
        lines.append(f"| {start} | " + " | ".join(out) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(collect(*(Path(a) for a in (sys.argv[1:] or ["runs/tasks"])))))
