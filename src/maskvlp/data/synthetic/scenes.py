"""Scene graphs and how they are sampled: objects, scenes, held-out colour-shape pairs, placement.

A scene is the ground truth everything else is derived from; sampling is kept here so the order of
random draws that defines a world version lives in one place (with ``SyntheticWorld.scene``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from maskvlp.data.synthetic.vocabulary import (
    _HALF_EXTENTS,
    _STREAM_HELDOUT,
    ATTRIBUTES,
    COLOURS,
    EDGE_GAP,
    LARGE_RADIUS,
    PLACEMENT_GAP,
    SHAPES,
    SMALL_RADIUS,
)


@dataclass(frozen=True)
class SceneObject:
    """One object; centre ``(x, y)`` and ``radius`` (half the box side) are normalised to [0, 1].

    ``vx``/``vy`` (normalised units per frame) are unused by still images; they are here so video
    clips of moving objects can reuse the same scene graph.
    """

    shape: str
    colour: str
    size: str
    material: str
    x: float
    y: float
    radius: float
    vx: float = 0.0
    vy: float = 0.0

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose from {values}")
        for name in ("x", "y", "radius", "vx", "vy"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight box ``(x0, y0, x1, y1)`` of the drawn shape, normalised (for referring expressions)."""
        hx, hy = _HALF_EXTENTS[self.shape]
        return (self.x - hx * self.radius, self.y - hy * self.radius, self.x + hx * self.radius, self.y + hy * self.radius)


@dataclass(frozen=True)
class Scene:
    """A picture's content; ``split`` is one of :data:`SPLITS` (or anything for hand-built scenes)."""

    scene_id: str
    split: str
    objects: tuple[SceneObject, ...]


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]



def choose_heldout_pairs(num: int, seed: int) -> frozenset[tuple[str, str]]:
    """``num`` (colour, shape) pairs, spread so every colour and shape keeps a training partner.

    Pairs with a fresh colour and a fresh shape are taken first, so each held-out pair's colour
    and shape are both seen in training (with other partners): a test of composition.
    """
    colours, shapes = list(COLOURS), list(SHAPES)
    if not 0 <= num <= len(colours) * (len(shapes) - 1):
        raise ValueError(f"heldout_pairs must be in [0, {len(colours) * (len(shapes) - 1)}], got {num}")
    rng = np.random.default_rng([seed, _STREAM_HELDOUT])
    pool = [(colours[c], shapes[s]) for c in rng.permutation(len(colours)) for s in rng.permutation(len(shapes))]
    pool = [pool[int(k)] for k in rng.permutation(len(pool))]
    chosen: list[tuple[str, str]] = []
    for fresh in (True, False):
        for pair in pool:
            if len(chosen) < num and pair not in chosen and _can_hold_out(pair, chosen, fresh):
                chosen.append(pair)
    return frozenset(chosen)


def _can_hold_out(pair: tuple[str, str], chosen: list[tuple[str, str]], fresh: bool) -> bool:
    colour, shape = pair
    if fresh:
        return all(colour != c and shape != s for c, s in chosen)
    shapes_left = len(SHAPES) - 1 - sum(c == colour for c, _ in chosen)
    colours_left = len(COLOURS) - 1 - sum(s == shape for _, s in chosen)
    return shapes_left >= 1 and colours_left >= 1


def _place(objs: list[dict], rng: np.random.Generator, tries: int = 300,
           fixed: Sequence[SceneObject] = ()) -> list[dict]:
    """Rejection-sample centres so boxes stay inside the image and apart; large objects first.

    An object that cannot be placed is shrunk to small, then dropped (never happens at <= 4).
    ``fixed`` objects are obstacles only (e.g. every position of a moving object), never returned.
    """
    placed: list[SceneObject] = list(fixed)
    out: list[dict] = []
    for spec in sorted(objs, key=lambda o: -o["radius"]):
        obj = _try_place(spec, placed, rng, tries)
        if obj is None and spec["size"] == "large":
            spec = dict(spec, size="small", radius=spec["radius"] * SMALL_RADIUS / LARGE_RADIUS)
            obj = _try_place(spec, placed, rng, tries)
        if obj is not None:
            placed.append(obj)
            out.append(dict(spec, obj=obj))
    return sorted(out, key=lambda o: o["order"])


def _try_place(spec: dict, placed: list[SceneObject], rng: np.random.Generator, tries: int) -> SceneObject | None:
    hx, hy = _HALF_EXTENTS[spec["shape"]]
    r = spec["radius"]
    lo_x, lo_y = hx * r + EDGE_GAP, hy * r + EDGE_GAP
    for _ in range(tries):
        x, y = float(rng.uniform(lo_x, 1 - lo_x)), float(rng.uniform(lo_y, 1 - lo_y))
        obj = SceneObject(**{name: spec[name] for name in ATTRIBUTES}, x=x, y=y, radius=r)
        if all(_apart(obj, other) for other in placed):
            return obj
    return None


def _apart(a: SceneObject, b: SceneObject) -> bool:
    """Boxes separated by at least PLACEMENT_GAP along x or along y."""
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax0 >= bx1 + PLACEMENT_GAP or bx0 >= ax1 + PLACEMENT_GAP or ay0 >= by1 + PLACEMENT_GAP or by0 >= ay1 + PLACEMENT_GAP

