"""Held-out colour-shape pairs: combinations kept out of training to test composition."""
from __future__ import annotations

import numpy as np

from maskvlp.data.tabletop.vocab import COLOURS, SHAPES

HELDOUT_STREAM = 7001  # keeps this draw apart from every per-scene generator


def choose_heldout_pairs(seed: int, count: int) -> tuple[tuple[str, str], ...]:
    """``count`` (colour, shape) pairs from the seed, no colour or shape used twice.

    Distinct colours and shapes mean every held-out colour and shape still occurs in training
    with other partners, so only the combination is new.
    """
    limit = min(len(COLOURS), len(SHAPES))
    if not 1 <= count <= limit:
        raise ValueError(f"heldout_pairs must be between 1 and {limit}, got {count}")
    rng = np.random.default_rng([seed, HELDOUT_STREAM])
    colours = rng.permutation(len(COLOURS))[:count]
    shapes = rng.permutation(len(SHAPES))[:count]
    names = list(COLOURS)
    return tuple(sorted((names[int(c)], SHAPES[int(s)]) for c, s in zip(colours, shapes)))
