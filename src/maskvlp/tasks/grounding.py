"""Weakly-supervised grounding as a recipe (ALBEF's RefCOCO+ protocol): fine-tune pre-training's ITC + ITM
on (image, expression) pairs, then pick, for each test expression, the candidate box where the Grad-CAM
map of the ITM score is densest (:mod:`maskvlp.eval.grounding_metric`).

The module is pre-training's own (as for fine-tuned retrieval): only the data and the evaluation are the
task's. Rows per split (the world's test and held-out scenes, or the REFER splits a file names: val,
testA, testB), each beside the floors of a random, the largest and the centre-most candidate box.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from maskvlp.config import ConfigError, RunConfig
from maskvlp.data.datasets import AlbefJsonDataset, _render_all
from maskvlp.data.tasks.examples import Box, GroundingExample
from maskvlp.data.tasks.grounding_data import GroundingTrainSet, SizedImages
from maskvlp.data.tasks.refcoco_files import ReferFolder, read_grounding_test
from maskvlp.data.tokenizer import Tokenizer
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.eval.gradcam import has_gradcam, itm_gradcam
from maskvlp.eval.heatmap import save_grounding_grid
from maskvlp.eval.grounding_metric import FLOORS, choose_box, floor_hits, hit, map_at_image_size
from maskvlp.tasks.common import EvalSet, batched, evaluate_sets, load_rows, status, synthetic_test_splits, world_for


def training_set(cfg: RunConfig, show_progress: bool = False):
    """The world's grounding scenes with every expression that picks one of their objects, or ALBEF's
    ``refcoco+_train.json`` files (``{"image", "text"}``) read as pre-training reads its lists."""
    if cfg.task.source == "synthetic":
        world = world_for(cfg)
        with status(show_progress, f"writing and rendering {cfg.task.train_scenes:,} grounding scenes"):
            texts = world.grounding_training_texts(cfg.task.train_scenes)
            scenes = [world.grounding_scene("train", i) for i in range(len(texts))]
            images = _render_all(world, scenes, None, None)
        return GroundingTrainSet(texts, images, seed=cfg.train.seed)
    if not cfg.task.train_files:
        raise ConfigError("fine-tuning grounding on files needs task.train_files=[refcoco+_train.json] and "
                          "task.train_image_root=...")
    return AlbefJsonDataset(cfg.task.train_files, cfg.task.train_image_root, cfg.model.vision.image_size,
                            cfg.data.crop_scale_min, cfg.data.hflip, seed=cfg.train.seed, text_key="text")


def evaluation_sets(cfg: RunConfig, show_progress: bool = False) -> list[EvalSet]:
    """One expression about each of the world's first ``eval.num_images`` test (and held-out) grounding
    scenes, or ``task.test_files`` split by the split each reference names."""
    if cfg.task.source == "synthetic":
        world = world_for(cfg, test_scenes=cfg.eval.num_images)
        sets = []
        for split, num in synthetic_test_splits(world, cfg.eval.num_images):
            with status(show_progress, f"writing and rendering {num:,} {split} grounding scenes"):
                examples = world.grounding_examples(split, num)
                images = _render_all(world, [world.grounding_scene(split, i) for i in range(num)], None, None)
            sets.append(EvalSet(split, examples, SizedImages(cfg.model.vision.image_size, images)))
        return sets
    if not cfg.task.test_files:
        raise ConfigError("evaluating grounding on files needs task.test_files=[refcoco+_test.json] and "
                          "task.test_image_root=... (and task.refer_dir=... unless the entries carry their boxes)")
    refer = ReferFolder(cfg.task.refer_dir, cfg.task.dets_file or None) if cfg.task.refer_dir else None
    examples = read_grounding_test(cfg.task.test_files, cfg.task.test_image_root, refer)
    by_split: dict[str, list[GroundingExample]] = defaultdict(list)
    for example in examples:
        by_split[example.split].append(example)
    images = SizedImages(cfg.model.vision.image_size)
    return [EvalSet(split, by_split[split], images) for split in sorted(by_split)]


def cam_layer(cfg: RunConfig) -> int | None:
    return None if cfg.task.cam_layer < 0 else cfg.task.cam_layer


def has_maps(module: Pretrainer) -> bool:
    """Whether the model has what Grad-CAM reads: an ITM head over a fusion whose text reads the image
    (a pre-trained ``mlim`` has none: its recipe trains no ITM)."""
    return has_gradcam(module.model)


Prediction = tuple[Box, tuple[int, int]]  # the chosen box and the image's own (width, height)


def _maps(model, examples: Sequence[GroundingExample], pixels: torch.Tensor, tokenizer: Tokenizer,
          cfg: RunConfig) -> torch.Tensor:
    """(B, g, g) Grad-CAM maps of the ITM score, one per (image, expression) row, on the CPU."""
    device = next(model.parameters()).device
    tokens = tokenizer.encode([e.text for e in examples], cfg.model.text.max_len)
    return itm_gradcam(model, pixels.to(device), tokens.input_ids.to(device), tokens.attention_mask.to(device),
                       layer=cam_layer(cfg)).text_map.cpu()


def predict(module: Pretrainer, examples: Sequence[GroundingExample], images: SizedImages, tokenizer: Tokenizer,
            cfg: RunConfig) -> tuple[dict[int, Prediction], int]:
    """The chosen box of every expression whose image reads (with the image's size), and how many were
    skipped as unreadable. A row's map is resized to its image's own size before the boxes are scored, as
    ALBEF does."""
    chosen: dict[int, Prediction] = {}
    skipped = 0
    for chunk in batched(examples, cfg.eval.batch_size):
        kept, loaded, bad = load_rows(chunk, lambda e: images(e.image))
        skipped += bad
        if not kept:
            continue
        cams = _maps(module.model, kept, torch.stack([image for image, _ in loaded]), tokenizer, cfg)
        for example, cam, (_, (width, height)) in zip(kept, cams, loaded):
            heat = map_at_image_size(cam, height, width)
            box = example.candidates[choose_box(heat, example.candidates, cfg.task.box_alpha)]
            chosen[example.ref_id] = (box, (width, height))
    return chosen, skipped


def save_examples(module: Pretrainer, sets: Sequence[EvalSet], tokenizer: Tokenizer, cfg: RunConfig, path: Path,
                  title: str, per_split: int = 4) -> Path | None:
    """A PNG of the first readable expressions of each split: map, candidates, true and chosen box."""
    rows = []
    for eval_set in sets:
        kept, loaded, _ = load_rows(eval_set.examples[: per_split * 2], lambda e: eval_set.images(e.image))
        kept, loaded = kept[:per_split], loaded[:per_split]
        if not kept:
            continue
        cams = _maps(module.model, kept, torch.stack([image for image, _ in loaded]), tokenizer, cfg)
        for example, cam, (_, (width, height)) in zip(kept, cams, loaded):
            chosen = example.candidates[choose_box(map_at_image_size(cam, height, width), example.candidates,
                                                   cfg.task.box_alpha)]
            rows.append({"image": eval_set.images.picture(example.image), "cam": cam, "truth": example.box,
                         "chosen": chosen, "candidates": example.candidates, "hit": hit(chosen, example.box),
                         "text": f"{eval_set.name}: {example.text}"})
    return save_grounding_grid(rows, title, path) if rows else None


def report(predictions: dict[int, Prediction], examples: Sequence[GroundingExample]) -> dict[str, float]:
    """Accuracy at IoU >= 0.5 (percent), the three floors, and accuracy per kind of expression where the
    examples say (the world's "attributes" / "relation"; "confused": another object shares the target's
    shape or colour, reported when only some targets have one)."""
    if not examples:
        return {"accuracy": float("nan"), "n": 0.0}
    hits = np.array([hit(predictions[e.ref_id][0], e.box) for e in examples], dtype=float)
    row = {"accuracy": 100 * float(hits.mean())}
    floors = [floor_hits(e.box, e.candidates, *predictions[e.ref_id][1]) for e in examples]
    for name in FLOORS:
        row[name] = 100 * float(np.mean([f[name] for f in floors]))
    for kind in sorted({e.kind for e in examples if e.kind}):
        row[kind] = 100 * float(np.mean([h for h, e in zip(hits, examples) if e.kind == kind]))
    confused = [h for h, e in zip(hits, examples) if e.confused]
    if confused and len(confused) < len(examples):
        row["confused"] = 100 * float(np.mean(confused))
    row["n"] = float(len(examples))
    return row


def evaluate(module: Pretrainer, sets: Sequence[EvalSet], tokenizer: Tokenizer, cfg: RunConfig,
             label: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    if not has_maps(module):
        raise ConfigError(f"grounding reads Grad-CAM maps of an ITM head: this {cfg.recipe} model has none, or a fusion "
                          f"({cfg.model.fusion.mode}) whose text does not read the image; fine-tune it first "
                          "(maskvlp finetune grounding)")
    return evaluate_sets(sets, lambda s: predict(module, s.examples, s.images, tokenizer, cfg), lambda e: e.ref_id,
                         report, label, "expressions")
