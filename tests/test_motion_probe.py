"""scripts/motion_probe.py: the probe separates what is linearly there and stays at chance where nothing is."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from maskvlp.config import WorldConfig
from maskvlp.data.synthetic import SyntheticWorld
from maskvlp.models.vlp import Encoded

_SPEC = importlib.util.spec_from_file_location("motion_probe", Path(__file__).parents[1] / "scripts" / "motion_probe.py")
probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe)


def test_probe_accuracy_reads_a_linear_signal_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    y = x[:, 3] - 0.5 * x[:, 7] > 0
    fitted, held = probe.probe_accuracy(x, y, 120, 1e-3)
    assert held >= 90 and fitted >= 95
    _, shuffled = probe.probe_accuracy(x, rng.permutation(y), 120, 1e-3)
    assert 30 <= shuffled <= 70


class _CentroidEncoder:
    """Stands in for a clip encoder with a feature that holds the motion: each frame's brightness-weighted
    column and row centroid of the pixels that differ from the first frame (only the mover changes)."""

    def encode_image(self, clips: torch.Tensor) -> Encoded:
        moved = (clips - clips[:, :1]).abs().sum(2)  # (B, T, H, W)
        h, w = moved.shape[-2:]
        mass = moved.sum((-1, -2)).clamp_min(1e-6)
        cols = (moved * torch.arange(w)).sum((-1, -2)) / mass
        rows = (moved * torch.arange(h)[:, None]).sum((-1, -2)) / mass
        frames = torch.stack([cols, rows], -1)  # (B, T, 2)
        tokens = torch.cat([frames.mean(1, keepdim=True), frames], 1)
        return Encoded(tokens, frames.flatten(1))


def test_twin_differences_label_each_pair_by_its_first_clip_and_carry_the_motion() -> None:
    world = SyntheticWorld(WorldConfig(image_size=32, train_scenes=8, test_scenes=8, clip_frames=4))
    diffs, labels = probe.twin_differences(_CentroidEncoder(), world, pairs=12, frames=4)
    assert set(diffs) == {"global token", "ITC embedding", "frame CLS tokens"}
    assert all(d.shape[0] == 12 for d in diffs.values()) and diffs["frame CLS tokens"].shape[1] == 8
    last = diffs["frame CLS tokens"][:, -2:]  # the last frame's (column, row) centroid, A minus B
    for i, label in enumerate(labels):
        a, b = world.motion_twin("test", i)
        assert label == (a.direction in ("left", "up")) and a.direction != b.direction
        # a left (up) clip's mover ends at a smaller column (row) than its twin's
        axis = 0 if a.direction in ("left", "right") else 1
        assert (last[i, axis] < 0) == bool(label)
