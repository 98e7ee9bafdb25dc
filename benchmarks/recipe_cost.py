"""Training-step cost of each recipe as a ratio to ``albef``, on the same batch, in one run.

    .venv/bin/python benchmarks/recipe_cost.py --recipes clip,albef,mlim,mamo,simla,scl,semmim,composite

Precision: what ``train.precision=auto`` trains in (bf16 on a CPU with AMX, fp32 elsewhere).
Time: every recipe is built once in this process; rounds then time one optimizer step
(forward, backward, AdamW, EMA update) of each recipe in turn, so a slow moment of a shared
machine hits every recipe alike; the median over rounds is reported. Memory: each recipe runs
a few steps in a fresh subprocess, and the peak resident memory (VmHWM, reset after the first
step) above the resident memory before the timed steps is the step's working memory: activations
and gradients (CPU PyTorch has no allocator statistics; on a GPU this would be
``torch.cuda.max_memory_allocated``).
Do not run anything else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from maskvlp.engine.precision import autocast, resolve_precision

CPU = torch.device("cpu")
PRECISION = resolve_precision("auto", CPU)  # what training runs in: bf16 on a CPU with AMX, fp32 elsewhere
SIZE_OVERRIDES = ["data.world.train_scenes=64", "model.text.init=scratch"]  # cost does not depend on the init


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def build(recipe: str, size: str, batch_size: int, extra: list[str]):
    """A Pretrainer, its optimizer and one fixed batch for ``recipe``."""
    from maskvlp.config import load_config
    from maskvlp.data.datasets import collate_pretrain
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.optim import make_optimizer
    from maskvlp.engine.pretrainer import Pretrainer
    from maskvlp.engine.trainer import _to_batch, build_pretrain_dataset, text_specials

    cfg = load_config(recipe, size, [*SIZE_OVERRIDES, f"train.batch_size={batch_size}", *extra])
    tokenizer = load_tokenizer()
    specials = text_specials(tokenizer)
    dataset = build_pretrain_dataset(cfg)
    raw = collate_pretrain([dataset[i] for i in range(batch_size)], tokenizer, cfg.model.text.max_len)
    batch = _to_batch(raw, torch.device("cpu"), batch_size, specials.pad_id)
    torch.manual_seed(0)
    module = Pretrainer(cfg, specials, load_pretrained=False)
    optimizer = make_optimizer(module, module.model, cfg.train)
    return module, optimizer, batch


def step(module, optimizer, batch, index: int) -> float:
    """One full training step; returns its wall time in seconds."""
    t0 = time.perf_counter()
    with autocast(PRECISION, CPU):
        loss, _ = module(batch, 1000 + index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    module.after_step()
    return time.perf_counter() - t0


def _peak_rss_mib() -> float:
    """VmHWM, the peak resident memory since the last reset (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(recipe: str, size: str, batch_size: int, steps: int, extra: list[str]) -> None:
    module, optimizer, batch = build(recipe, size, batch_size, extra)
    step(module, optimizer, batch, 0)  # optimizer state exists from here on, as in training
    before = _rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: building the world peaks far higher
    for i in range(steps):
        step(module, optimizer, batch, 1 + i)
    print(json.dumps({"step_mib": _peak_rss_mib() - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="clip,albef,mlim,mamo,simla,scl,semmim,composite")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default="runs/bench/recipe_cost.json")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides for every recipe (key=value)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.size, args.batch_size, args.warmup + 1, args.overrides)
        return

    recipes = [r for r in args.recipes.split(",") if r]
    if "albef" not in recipes:
        recipes.insert(0, "albef")
    built = {r: build(r, args.size, args.batch_size, args.overrides) for r in recipes}
    times: dict[str, list[float]] = {r: [] for r in recipes}
    for i in range(args.warmup):
        for r in recipes:
            step(*built[r], i)
    for i in range(args.rounds):
        for r in recipes:
            times[r].append(step(*built[r], args.warmup + i))
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{r} {times[r][-1]:.2f}s" for r in recipes), flush=True)
    del built

    memory: dict[str, float] = {}
    for r in recipes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", r, "--size", args.size, "--batch-size",
                              str(args.batch_size), "--warmup", str(args.warmup), "--threads", str(args.threads),
                              *args.overrides], capture_output=True, text=True, check=True)
        memory[r] = json.loads(out.stdout.strip().splitlines()[-1])["step_mib"]

    base_t, base_m = statistics.median(times["albef"]), memory["albef"]
    rows = []
    for r in recipes:
        t = statistics.median(times[r])
        rows.append({"recipe": r, "step_s": t, "time_ratio": t / base_t, "step_mib": memory[r],
                     "memory_ratio": memory[r] / base_m if base_m > 0 else float("nan")})
    lines = [f"Step cost, size {args.size}, batch {args.batch_size}, {args.threads} threads, {PRECISION}, median of "
             f"{args.rounds} interleaved rounds; ratios to albef measured in this run.", "",
             "| recipe | step (s) | time / albef | step memory (MiB) | memory / albef |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {x['recipe']} | {x['step_s']:.2f} | {x['time_ratio']:.2f} | {x['step_mib']:.0f} | {x['memory_ratio']:.2f} |"
              for x in rows]
    print("\n".join(lines))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
