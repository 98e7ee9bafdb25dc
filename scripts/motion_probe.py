"""Does a clip encoder see which way the mover goes? A linear probe on the features of motion twins.

    .venv/bin/python scripts/motion_probe.py runs/vid-albef [--pairs 300]            # a video fine-tuned run
    .venv/bin/python scripts/motion_probe.py runs/albef-tiny --image-start           # an image run, zero temporal embedding

The motion-twin test (docs/tasks.md, "Video") asks whether a caption scores its own clip above its twin (same
first frame, opposite motion). When it sits at chance, either the encoder does not represent the direction or
the scores do not use it. This tells the two apart: for each test twin pair (A, B) it takes the difference
feature(A) - feature(B) of three features (the clip's global token, its ITC embedding, the frame CLS tokens side
by side) and fits an L2-regularised logistic regression on the first 60% of the pairs that predicts whether A
is the pair's 'left' or 'up' clip, scored on the rest (chance 50). A probe far above chance means the direction
is in the features, linearly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def twin_differences(model, world, pairs: int, frames: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per test twin pair, feature(A) - feature(B) of each feature kind, and whether A goes left or up. The
    clips and frames are the video evaluation's own (``synthetic_eval_set``: the twin score's inputs)."""
    from maskvlp.tasks.video_retrieval import synthetic_eval_set

    clips = synthetic_eval_set(world, "test", pairs)
    diffs: dict[str, list[np.ndarray]] = {"global token": [], "ITC embedding": [], "frame CLS tokens": []}
    labels = []
    with torch.no_grad():
        for i, (first, second) in enumerate(clips.twins):
            a, _ = world.motion_twin("test", i)
            enc = model.encode_image(torch.stack([clips.load(first, frames), clips.load(second, frames)]))
            for name, feature in (("global token", enc.tokens[:, 0]), ("ITC embedding", enc.embed),
                                  ("frame CLS tokens", enc.tokens[:, 1:1 + frames].flatten(1))):
                diffs[name].append((feature[0] - feature[1]).numpy())
            labels.append(a.direction in ("left", "up"))
    return {name: np.stack(d) for name, d in diffs.items()}, np.array(labels)


def probe_accuracy(x: np.ndarray, y: np.ndarray, train: int, l2: float) -> tuple[float, float]:
    """Logistic regression (LBFGS) on standardised features: train and held-out accuracy in %."""
    x = x / (x[:train].std(0, keepdims=True) + 1e-8)
    xs, ys = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xs[:train] @ w[:-1] + w[-1]
        loss = F.binary_cross_entropy_with_logits(logits, ys[:train]) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    correct = ((xs @ w[:-1] + w[-1]) > 0).numpy() == y
    return 100 * float(correct[:train].mean()), 100 * float(correct[train:].mean())


def main() -> None:
    from maskvlp.data.synthetic import SyntheticWorld
    from maskvlp.finetuning import clip_model_from_image_checkpoint, load_task_module

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder or checkpoint")
    ap.add_argument("--image-start", action="store_true", help="an image checkpoint: frames read with a zero temporal embedding")
    ap.add_argument("--pairs", type=int, default=300, help="test twin pairs (60%% fit the probe, 40%% score it)")
    ap.add_argument("--frames", type=int, default=4)
    args = ap.parse_args()

    module, cfg = load_task_module(args.run)
    if args.image_start:
        module = clip_model_from_image_checkpoint(args.run, cfg, args.frames)
    diffs, labels = twin_differences(module.model.eval(), SyntheticWorld(cfg.data.world), args.pairs, args.frames)
    train = int(0.6 * args.pairs)
    print(f"{args.run}: {args.pairs} twin pairs, probe fitted on {train}, scored on {args.pairs - train} (chance 50)")
    for name, x in diffs.items():
        for l2 in (1e-3, 1e-1):
            fit, held = probe_accuracy(x, labels, train, l2)
            print(f"  {name} (dim {x.shape[1]}), L2 {l2:g}: fitted {fit:.1f}, held out {held:.1f}")


if __name__ == "__main__":
    main()
