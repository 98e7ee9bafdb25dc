"""One markdown table of fine-tuning runs: task x start (pre-trained recipe, none, question only), mean and
spread over seeds, read from each run folder's config.yaml and eval/results.json.

    .venv/bin/python scripts/task_table.py runs/tasks [runs/table ...] [--starts RUN_OR_FOLDER ...]
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
    ("grounding", "· test", "accuracy", "grounding acc"),
    ("grounding", "· heldout", "accuracy", "grounding held-out pairs"),
    ("video_retrieval", "T=4 · test · itc", "img_r1", "video R@1 (ITC)"),
    ("video_retrieval", "T=4 · test · itc", "twins", "motion twins (ITC)"),
    ("video_retrieval", "T=1 · test · itc", "twins", "motion twins, 1 frame (ITC)"),
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
            if cfg.get("task", {}).get("name") != task:
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


# the pre-trained starts' own zero-shot figures: (results row, metric, column title)
PRETRAIN_COLUMNS = (
    ("itc", "img_r1", "R@1 t->i (ITC)"), ("itm k=8", "img_r1", "R@1 t->i (ITM)"),
    ("itm k=8", "binding_colour", "colour binding (ITM)"), ("itm k=8", "binding_relation", "relation binding (ITM)"),
    ("mlm", "binding_colour", "colour binding (MLM)"),
)


def pretrain_table(runs: list[Path]) -> str:
    """One row per pre-training run folder (or every pre-training run inside a folder given)."""
    lines = ["| start | steps | " + " | ".join(t for *_, t in PRETRAIN_COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(PRETRAIN_COLUMNS)]
    for root in runs:
        found = [root / "eval" / "results.json"] if (root / "eval" / "results.json").is_file() else \
            sorted(root.glob("*/eval/results.json"))
        for results in found:
            cfg = yaml.safe_load((results.parent.parent / "config.yaml").read_text())
            if cfg.get("task", {}).get("name"):
                continue
            rows = {name.split(" · ", 1)[1]: row for name, row in json.loads(results.read_text())["results"].items()
                    if name.startswith("trained")}
            metrics = [json.loads(line) for line in (results.parent.parent / "metrics.jsonl").read_text().splitlines()
                       if line.strip()]
            cells = [f"{rows[r][m]:.1f}" if rows.get(r, {}).get(m) is not None else "-" for r, m, _ in PRETRAIN_COLUMNS]
            name = f"{cfg['recipe']} (seed {cfg['train']['seed']})"
            lines.append(f"| {name} | {metrics[-1]['step'] if metrics else '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:] or ["runs/tasks"]
    split = args.index("--starts") if "--starts" in args else len(args)
    print(table(collect(*(Path(a) for a in args[:split]))))
    if args[split + 1:]:
        print()
        print(pretrain_table([Path(a) for a in args[split + 1:]]))
