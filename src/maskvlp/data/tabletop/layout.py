"""The scene model: objects on a table, their attributes, places and the scene's light.

A scene is drawn from a generator keyed by (seed, split, index), so scene i never depends on how
many other scenes were made.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskvlp.data.tabletop.vocab import COLOURS, MAX_OBJECTS, MIN_OBJECTS, PATTERNS, RADIUS_JITTER, SHAPES, SIZES

SPLITS: dict[str, int] = {"train": 11, "test": 23, "heldout": 37}  # split -> generator key
SCENE_STREAM = 1  # generator stream for the scene graph (captions and probes use others)
EDGE = 0.03  # free border between a shape and the image edge (fraction of the side)
GAP = 0.035  # free space between two shapes' bounding circles
TABLE_TONES: tuple[tuple[int, int, int], ...] = ((236, 228, 210), (222, 226, 230), (232, 222, 226), (214, 228, 214))
TEXTURES: tuple[str, ...] = ("paper", "linen", "wood")


@dataclass(frozen=True)
class Item:
    """One object: attributes (vocabulary words) and a bounding circle in [0, 1] coords, y down."""

    shape: str
    colour: str
    size: str
    pattern: str
    x: float
    y: float
    r: float

    def attribute(self, name: str) -> str:
        return str(getattr(self, name))


@dataclass(frozen=True)
class Scene:
    """A tabletop picture's content: its items plus the table and light it is drawn with."""

    split: str
    index: int
    items: tuple[Item, ...]
    tone: tuple[int, int, int]  # table colour
    texture: str  # table texture (TEXTURES)
    brightness: float  # overall light level (about 1)
    slope: tuple[float, float]  # light gradient across the picture, per image side, x and y
    noise_seed: int  # seeds the renderer's pixel noise

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:06d}"


def _attributes(rng: np.random.Generator, forbidden: set[tuple[str, str]]) -> tuple[str, str, str, str]:
    """A random (shape, colour, size, pattern) whose (colour, shape) is not forbidden."""
    colours = list(COLOURS)
    while True:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = colours[int(rng.integers(len(colours)))]
        if (colour, shape) not in forbidden:
            break
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    return shape, colour, size, PATTERNS[int(rng.integers(len(PATTERNS)))]


def _place(rng: np.random.Generator, radii: list[float]) -> list[tuple[float, float]] | None:
    """Centres for circles of these radii, none touching another or the edge; None if stuck."""
    centres: list[tuple[float, float]] = []
    for r in radii:
        lo, hi = r + EDGE, 1.0 - r - EDGE
        for _ in range(200):
            x, y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
            if all(np.hypot(x - cx, y - cy) >= r + cr + GAP for (cx, cy), cr in zip(centres, radii)):
                centres.append((x, y))
                break
        else:
            return None
    return centres


def sample_scene(seed: int, split: str, index: int, heldout: tuple[tuple[str, str], ...]) -> Scene:
    """Scene ``index`` of ``split``: 1-4 objects, never overlapping.

    Train and test scenes never hold a held-out (colour, shape) pair; every heldout-split scene
    holds at least one (its first object's).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    rng = np.random.default_rng([seed, SPLITS[split], index, SCENE_STREAM])
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    forbidden = set() if split == "heldout" else set(heldout)
    attrs = [_attributes(rng, forbidden) for _ in range(count)]
    if split == "heldout":
        colour, shape = heldout[int(rng.integers(len(heldout)))]
        _, _, size, pattern = attrs[0]
        attrs[0] = (shape, colour, size, pattern)
    radii = [SIZES[a[2]] * float(rng.uniform(1 - RADIUS_JITTER, 1 + RADIUS_JITTER)) for a in attrs]
    order = sorted(range(count), key=lambda k: -radii[k])  # big ones first: they are hardest to fit
    for _ in range(100):
        centres = _place(rng, [radii[k] for k in order])
        if centres is not None:
            break
    else:  # never seen with four objects; fail loudly rather than overlap
        raise RuntimeError(f"could not place {count} objects in scene {split} {index}")
    where = {k: c for k, c in zip(order, centres)}
    items = tuple(Item(a[0], a[1], a[2], a[3], where[k][0], where[k][1], radii[k]) for k, a in enumerate(attrs))
    tone = TABLE_TONES[int(rng.integers(len(TABLE_TONES)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    brightness = float(rng.uniform(0.92, 1.05))
    slope = (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08)))
    return Scene(split, index, items, tone, texture, brightness, slope, int(rng.integers(2**31)))
