"""Can the tiny ViT learn shapes from scratch, per patch stem? Supervised shape classification.

    .venv/bin/python benchmarks/stem_shape_probe.py --stems patch,conv,overlap,efficientnet_lite0 --steps 400

One-object scenes of the synthetic world (so the label is unambiguous), the ``tiny`` ViT trained
from nothing with AdamW at the recipes' lr for new weights (3e-4), its [CLS] read by a linear head;
test accuracy on held-out scenes is printed every ``--every`` steps for each stem, all stems on the
same data, batches and initial seed. This isolates the vision tower: a contrastive run mixes in
how the text side and the batch composition ask for shapes (docs/baselines.md, "What the towers
learn first"). Chance is 1/5. About 70-80 s per stem for 400 steps on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from maskvlp.config import STEMS, VisionConfig, WorldConfig
from maskvlp.data.synthetic import SHAPES, SyntheticWorld
from maskvlp.data.transforms import to_tensor
from maskvlp.models.vision import VisionTransformer
from maskvlp.models.vlp import init_vision_stem


def one_object_scenes(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    world = SyntheticWorld(WorldConfig(seed=0, train_scenes=count, test_scenes=count, min_objects=1, max_objects=1))
    scenes = world.scenes(split)[:count]
    images = torch.stack([to_tensor(world.render(s)) for s in scenes])
    labels = torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])
    return images, labels


def probe(stem: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
          steps: int, every: int, batch: int, lr: float) -> list[tuple[int, float]]:
    torch.manual_seed(0)
    vit = VisionTransformer(VisionConfig(width=192, heads=3, stem=stem))
    if stem == "efficientnet_lite0":  # its ImageNet weights, frozen, as the tiny size uses it
        init_vision_stem(vit)
    head = torch.nn.Linear(192, len(SHAPES))
    trainable = [p for p in (*vit.parameters(), *head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.02)
    order = torch.Generator().manual_seed(1)
    images, labels = train
    curve = []
    for step in range(1, steps + 1):
        idx = torch.randint(len(images), (batch,), generator=order)
        loss = F.cross_entropy(head(vit(images[idx]).tokens[:, 0]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0:
            with torch.no_grad():
                acc = float((head(vit(test[0]).tokens[:, 0]).argmax(1) == test[1]).float().mean())
            curve.append((step, acc))
            print(f"{stem:8s} step {step:4d}  train loss {loss.item():.3f}  test accuracy {acc:.3f}", flush=True)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stems", default="patch,overlap", help=f"comma-separated, from {', '.join(STEMS)}")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--train-scenes", type=int, default=8000)
    args = ap.parse_args()
    stems = [s for s in args.stems.split(",") if s]
    bad = [s for s in stems if s not in STEMS]
    if bad:
        raise SystemExit(f"error: unknown stem(s) {', '.join(bad)}; valid: {', '.join(STEMS)}")
    train, test = one_object_scenes("train", args.train_scenes), one_object_scenes("test", 500)
    results = {}
    for stem in stems:
        t0 = time.perf_counter()
        results[stem] = probe(stem, train, test, args.steps, args.every, args.batch, args.lr)
        print(f"{stem}: {time.perf_counter() - t0:.0f} s")
    print("\nstep  " + "  ".join(f"{s:>8s}" for s in stems))
    for i, (step, _) in enumerate(results[stems[0]]):
        print(f"{step:4d}  " + "  ".join(f"{results[s][i][1]:8.3f}" for s in stems))


if __name__ == "__main__":
    main()
