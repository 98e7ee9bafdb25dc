"""Shared fixtures: a model and world small enough that a training step takes milliseconds."""
from __future__ import annotations

import os

import pytest
import torch

from maskvlp.config import RunConfig, load_config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = [
    "model.vision.image_size=32", "model.vision.patch_size=8", "model.vision.width=32", "model.vision.depth=1",
    "model.vision.heads=2", "model.text.init=scratch", "model.text.width=32", "model.text.depth=1",
    "model.text.heads=2", "model.text.intermediate=64", "model.text.max_len=24", "model.fusion.depth=1",
    "model.embed_dim=16", "model.queue_size=40", "data.world.train_scenes=48", "data.world.test_scenes=12",
    "data.world.val_scenes=4", "train.batch_size=8", "train.time_budget=0", "train.max_steps=6",
    "train.warmup_steps=2", "train.log_every=1", "train.ckpt_every=1000", "train.lr=1e-3", "train.text_lr=1e-3",
    "eval.num_images=12", "eval.itm_k=3", "eval.batch_size=5",
]


def tiny_config(tmp_path, recipe: str = "albef", *extra: str) -> RunConfig:
    """A run config for tests: tiny sizes, a 48-scene world, output under tmp_path."""
    if recipe == "clip":
        extra = ("model.text.depth=2", "model.fusion.depth=0", *extra)
    return load_config(recipe, "tiny", [*TINY, f"output_dir={tmp_path / recipe}", *extra])


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield
