"""What each shared pass saves in a training step, as ratios measured in one run.

    .venv/bin/python benchmarks/shared_passes.py --recipe albef --rounds 6

Three ways a step avoids repeating work (docs/design.md, "Speed of a step"):
  stem   - the frozen pretrained stem trunk runs once for the student's and the teacher's clean images;
  index  - ITM's fusion projects each image's keys and values once, not once per (caption, image) pair;
  group  - the text passes the objectives declare (captions, twins, masked captions) run as one batch per tower.
Each variant switches one of them off (``all off`` switches all three off) on the same module and batch; rounds
step every variant in turn, so a slow moment of a shared machine hits each alike, and the median per variant is
reported with its ratio to ``all on``. Precision follows ``train.precision`` (auto: bf16 on AMX CPUs).
Do not run anything else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time

import torch

VARIANTS = ("all on", "stem off", "index off", "group off", "all off")


@contextlib.contextmanager
def switched_off(module, parts: set[str]):
    """Run steps with the named sharing switched off (restored on exit)."""
    from maskvlp.models.fusion import FusionEncoder
    from maskvlp.models.vision import VisionTransformer

    saved_stem, saved_fuse = VisionTransformer.frozen_stem_features, FusionEncoder.forward
    saved_reads = {key: objective.reads for key, objective in module.objectives.items()}
    if "stem" in parts:
        VisionTransformer.frozen_stem_features = lambda self, images: None
    if "index" in parts:
        def per_pair(self, text, text_mask, image, image_mask=None, *args, image_index=None, **kwargs):
            if image_index is not None:  # what the fusion did before: one copy of the image per pair
                image = image.index_select(0, image_index)
                image_mask = None if image_mask is None else image_mask.index_select(0, image_index)
            return saved_fuse(self, text, text_mask, image, image_mask, *args, **kwargs)
        FusionEncoder.forward = per_pair
    if "group" in parts:
        for objective in module.objectives.values():  # no declared text passes: each pass runs alone
            objective.reads = lambda r=objective.reads(): dataclasses.replace(r, text_passes=frozenset())
    try:
        yield
    finally:
        VisionTransformer.frozen_stem_features, FusionEncoder.forward = saved_stem, saved_fuse
        for key, objective in module.objectives.items():
            objective.reads = saved_reads[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="albef")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (auto: bf16 on a CPU with AMX)")
    ap.add_argument("--step", type=int, default=1000, help="training step index (after every objective has started)")
    ap.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from recipe_cost import build  # this folder is on sys.path when the script runs
    from maskvlp.engine.precision import autocast, resolve_precision

    module, optimizer, batch = build(args.recipe, "tiny", args.batch_size, args.overrides)
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    parts = {"all on": set(), "stem off": {"stem"}, "index off": {"index"}, "group off": {"group"},
             "all off": {"stem", "index", "group"}}

    def step(variant: str, i: int) -> float:
        with switched_off(module, parts[variant]):
            t0 = time.perf_counter()
            with autocast(precision, device):
                loss, _ = module(batch, args.step + i)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            module.after_step()
            return time.perf_counter() - t0

    for v in VARIANTS:  # warm-up
        step(v, 0)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS:
            times[v].append(step(v, 1 + r))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {times[v][-1]:.3f}s" for v in VARIANTS), flush=True)
    base = statistics.median(times["all on"])
    print(f"\n{args.recipe}, tiny, batch {args.batch_size}, {args.threads} threads, {precision}; median of "
          f"{args.rounds} interleaved rounds\n\n| variant | step (s) | time / all on |\n|---|---:|---:|")
    for v in VARIANTS:
        t = statistics.median(times[v])
        print(f"| {v} | {t:.3f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
