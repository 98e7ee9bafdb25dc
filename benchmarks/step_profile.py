"""Where a training step's time and FLOPs go, part by part, measured in one run.

    .venv/bin/python benchmarks/step_profile.py --recipe albef --rounds 8

Three tables (docs/design.md, "Speed of a step" has the figures and what each part buys):
  forward parts - wall time of each part of the forward pass (exclusive of the parts it calls), the rows
                  it processed and its forward FLOPs (torch.utils.flop_counter, CPU attention included), then
                  backward, optimizer and EMA update as measured wholes;
  switched off  - the whole step (forward + backward + optimizer) with one part of the recipe switched off,
                  as a ratio to the full step; the difference is what that part costs, backward included;
                  rounds interleave the variants, so a slow moment of a shared machine hits each alike;
Precision follows ``--precision`` (auto: bf16 on AMX CPUs, fp32 elsewhere). Name the CPU with every figure
(``lscpu``) and run nothing else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from flops import flop_counter, matmul_gflops  # this folder is on sys.path when the script runs


ITM_PAIRS = "ITM pairs: fusion + head"


class PartClock:
    """Exclusive wall time, calls and rows per named part of the forward, via wrappers on model methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.rows: dict[str, int] = defaultdict(int)
        self.flops: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [name, start, child seconds, start flops, child flops]
        self.counter: FlopCounterMode | None = None

    def _total_flops(self) -> float:
        return float(self.counter.get_total_flops()) if self.counter is not None else 0.0

    @contextlib.contextmanager
    def part(self, name: str, rows: int = 0):
        self._stack.append([name, time.perf_counter(), 0.0, self._total_flops(), 0.0])
        try:
            yield
        finally:
            name, start, child, f0, child_f = self._stack.pop()
            spent, flops = time.perf_counter() - start, self._total_flops() - f0
            self.seconds[name] += spent - child
            self.flops[name] += flops - child_f
            self.rows[name] += rows
            if self._stack:
                self._stack[-1][2] += spent
                self._stack[-1][4] += flops

    def reset(self) -> None:
        for table in (self.seconds, self.rows, self.flops):
            table.clear()


@contextlib.contextmanager
def instrumented(clock: PartClock):
    """Wrap the model's passes so each reports to ``clock`` (restored on exit)."""
    from maskvlp.models import vlp
    from maskvlp.models.vision import VisionTransformer
    from maskvlp.objectives import context
    from maskvlp.models.heads import MLMHead

    saved = {
        (VisionTransformer, "frozen_stem_features"): VisionTransformer.frozen_stem_features,
        (vlp.VLPModel, "encode_image"): vlp.VLPModel.encode_image,
        (vlp.VLPModel, "encode_text"): vlp.VLPModel.encode_text,
        (vlp.VLPModel, "itm_logits"): vlp.VLPModel.itm_logits,
        (vlp.VLPModel, "fuse"): vlp.VLPModel.fuse,
        (MLMHead, "forward"): MLMHead.forward,
        (context, "perturb_batch"): context.perturb_batch,
        (context, "bert_text_mask"): context.bert_text_mask,
    }

    def wrap(owner, attr, label):
        original = saved[(owner, attr)]

        def wrapper(*args, **kwargs):
            name, rows = label(*args, **kwargs)
            with clock.part(name, rows):
                return original(*args, **kwargs)
        setattr(owner, attr, wrapper)

    def who(kwargs):
        return "teacher" if kwargs.get("teacher") else "student"

    wrap(VisionTransformer, "frozen_stem_features", lambda self, images: ("frozen stem (shared)", images.shape[0]))
    wrap(vlp.VLPModel, "encode_image", lambda self, images, *a, **k: (f"vision tower ({who(k)})", images.shape[0]))
    wrap(vlp.VLPModel, "encode_text", lambda self, ids, mask, *a, **k: (f"text tower ({who(k)})", ids.shape[0]))
    wrap(vlp.VLPModel, "itm_logits", lambda self, text, *a, **k: (ITM_PAIRS, text.shape[0]))
    def fusion_label(self, text, *a, **k):  # inside itm_logits the fusion is part of the ITM pairs
        if clock._stack and clock._stack[-1][0] == ITM_PAIRS:
            return ITM_PAIRS, 0
        return (f"fusion outside ITM: MLM, ... ({who(k)})", text.shape[0])

    wrap(vlp.VLPModel, "fuse", fusion_label)
    wrap(MLMHead, "forward", lambda self, x: ("MLM head (vocabulary)", x.shape[0]))
    wrap(context, "perturb_batch", lambda ids, *a, **k: ("caption twins (rules)", ids.shape[0]))
    wrap(context, "bert_text_mask", lambda ids, *a, **k: ("text masking", ids.shape[0]))
    try:
        yield
    finally:
        for (owner, attr), original in saved.items():
            setattr(owner, attr, original)


def one_step(module, optimizer, batch, step: int, precision, clock: PartClock | None = None) -> dict[str, float]:
    from maskvlp.engine.precision import autocast

    device = torch.device("cpu")
    t0 = time.perf_counter()
    with autocast(precision, device):
        loss, _ = module(batch, step)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    t3 = time.perf_counter()
    module.after_step()
    t4 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "EMA update": t4 - t3, "step": t4 - t0}


# the recipe's parts, each switched off by overrides (the difference to the full step is its cost)
SWITCHES = {
    "full step": [],
    "no MLM": ["objectives.mlm.weight=0"],
    "no caption twins": ["objectives.itc.params.text_negatives=none", "objectives.itm.params.text_negatives=none"],
    "no ITM": ["objectives.itm.weight=0"],
    "no ITC distillation (alpha 0)": ["objectives.itc.params.alpha=0"],
    "no MLM distillation (alpha 0)": ["objectives.mlm.params.alpha=0"],
    "no teacher (ITC and MLM alpha 0)": ["objectives.itc.params.momentum_features=false",
                                         "objectives.mlm.params.alpha=0"],
    "MLM on half the batch": ["objectives.mlm.params.batch_share=0.5"],
    "no teacher + MLM on half the batch": ["objectives.itc.params.momentum_features=false",
                                           "objectives.mlm.params.alpha=0", "objectives.mlm.params.batch_share=0.5"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="albef")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (auto: bf16 on a CPU with AMX)")
    ap.add_argument("--step", type=int, default=1000, help="training step index (after every objective has started)")
    ap.add_argument("--switches", default=",".join(SWITCHES), help="variants of the switched-off table")
    ap.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from recipe_cost import build  # this folder is on sys.path when the script runs
    from maskvlp.engine.precision import resolve_precision

    precision = resolve_precision(args.precision, torch.device("cpu"))
    module, optimizer, batch = build(args.recipe, "tiny", args.batch_size, args.overrides)
    for i in range(2):  # warm-up (optimizer state, allocator)
        one_step(module, optimizer, batch, args.step + i, precision)

    # forward parts: FLOPs from one counted step (counting slows it), times the mean over the rounds after it
    clock = PartClock()
    with instrumented(clock), flop_counter() as counter:
        clock.counter = counter
        one_step(module, optimizer, batch, args.step + 2, precision, clock)
    flops, total_flops = dict(clock.flops), float(counter.get_total_flops())
    clock.counter = None
    clock.reset()
    wholes: dict[str, list[float]] = defaultdict(list)
    with instrumented(clock):
        for r in range(args.rounds):
            for k, v in one_step(module, optimizer, batch, args.step + 3 + r, precision, clock).items():
                wholes[k].append(v)
    step_s = statistics.mean(wholes["step"])
    fwd_s = statistics.mean(wholes["forward"])
    named = sum(clock.seconds.values()) / args.rounds
    peak = matmul_gflops(torch.bfloat16 if precision == "bf16" else torch.float32)
    print(f"\n{args.recipe}, tiny, batch {args.batch_size}, {args.threads} threads, {precision}; "
          f"mean of {args.rounds} steps: {step_s:.3f} s a step, {total_flops / 1e9:.1f} GFLOP forward + backward "
          f"({total_flops / step_s / 1e9:.1f} GFLOP/s, {total_flops / step_s / 1e9 / peak:.0%} of a "
          f"{peak:.0f} GFLOP/s matmul measured now)\n")
    print("| part | rows | ms | share of step | forward GFLOP |\n|---|---:|---:|---:|---:|")
    for name, s in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
        ms = 1000 * s / args.rounds
        print(f"| {name} | {clock.rows[name] // args.rounds} | {ms:.0f} | {ms / 1000 / step_s:.1%} | "
              f"{flops.get(name, 0.0) / 1e9:.2f} |")
    rest = fwd_s - named
    print(f"| forward, the rest (losses, sampling, glue) | | {1000 * rest:.0f} | {rest / step_s:.1%} | |")
    for k in ("backward", "optimizer", "EMA update"):
        ms = 1000 * statistics.mean(wholes[k])
        print(f"| {k} | | {ms:.0f} | {ms / 1000 / step_s:.1%} | |")

    # switched off: each variant is its own module (same seed, same batch), stepped in turn
    variants = [v for v in args.switches.split(",") if v]
    built = {v: build(args.recipe, "tiny", args.batch_size, [*args.overrides, *SWITCHES[v]]) for v in variants}
    for v in variants:
        for i in range(2):
            one_step(*built[v], args.step + i, precision)
    times: dict[str, list[float]] = defaultdict(list)
    for r in range(args.rounds):
        for v in variants:
            times[v].append(one_step(*built[v], args.step + 2 + r, precision)["step"])
    base = statistics.median(times[variants[0]])
    print(f"\nswitched off: median of {args.rounds} interleaved rounds\n\n| variant | step (s) | / full | saves (ms) |"
          "\n|---|---:|---:|---:|")
    for v in variants:
        t = statistics.median(times[v])
        print(f"| {v} | {t:.3f} | {t / base:.2f} | {1000 * (base - t):.0f} |")


if __name__ == "__main__":
    main()
