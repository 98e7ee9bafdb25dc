"""The world's fixed vocabulary: attribute values, relations, layout constants and shape outlines.

Every other module reads these tables (matching, truth tables, captions and drawing all iterate
over :data:`ATTRIBUTES`), so adding a value here is the one place to extend the world.
"""
from __future__ import annotations

import math

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 215, 45),
    "purple": (145, 65, 200),
    "cyan": (45, 205, 215),
    "orange": (245, 140, 30),
    "gray": (140, 140, 140),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
MATERIALS = ("matte", "metal")
RELATIONS = ("left of", "right of", "above", "below")

# Attribute name -> values, in the word order of a noun phrase ("a large red metal circle");
# the last one is the head noun. Matching, truth tables and captions iterate over this table.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": SIZES,
    "colour": tuple(COLOURS),
    "material": MATERIALS,
    "shape": SHAPES,
}
CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

RELATION_MARGIN = 0.1  # centres must differ by more than this (normalised) for a relation to hold
SMALL_RADIUS = 0.08  # normalised half-width of a small object's box
LARGE_RADIUS = 0.144  # 1.8 x small, so size is readable across shapes
RADIUS_JITTER = 0.04  # relative
PLACEMENT_GAP = 0.04  # minimum gap between two objects' boxes
EDGE_GAP = 0.02  # minimum gap between an object's box and the image border
MAX_OBJECTS = 8  # more does not pack reliably at the large size
SPLITS = ("train", "val", "test", "heldout")
_SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
_STREAM_CAPTIONS, _STREAM_RENDER, _STREAM_PROBES, _STREAM_HELDOUT = 101, 102, 103, 104
_STREAM_QUESTIONS, _STREAM_STATEMENTS, _STREAM_GROUNDING = 105, 106, 107
_STREAM_MOTION = 108


# --------------------------------------------------------------------------------------------
# Shape geometry (unit box [-1, 1]^2, y down)
# --------------------------------------------------------------------------------------------
def _centred(points: list[tuple[float, float]], fill: bool) -> tuple[tuple[float, float], ...]:
    """Move a polygon so its box is centred; with ``fill`` scale it so the box touches +-1."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    scale = 1.0 / max(max(xs) - cx, max(ys) - cy) if fill else 1.0
    return tuple(((x - cx) * scale, (y - cy) * scale) for x, y in points)


def _star(points: int = 5, inner: float = 0.5) -> list[tuple[float, float]]:
    """Vertices of a star pointing up."""
    out = []
    for k in range(2 * points):
        rad = 1.0 if k % 2 == 0 else inner
        ang = -math.pi / 2 + k * math.pi / points
        out.append((rad * math.cos(ang), rad * math.sin(ang)))
    return out


def _cross(arm: float = 0.36) -> list[tuple[float, float]]:
    """A plus sign whose arms are ``2 * arm`` wide (a hexagon reads as a circle at 64 px; this does not)."""
    a = arm
    return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]


# None = circle (drawn as an ellipse). Sizes chosen so the five areas are comparable.
_UNIT_OUTLINES: dict[str, tuple[tuple[float, float], ...] | None] = {
    "circle": None,
    "square": _centred([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)], fill=False),
    "triangle": _centred([(0.0, -0.95), (1.0, 0.95), (-1.0, 0.95)], fill=False),
    "star": _centred(_star(), fill=True),
    "cross": _centred(_cross(), fill=False),
}


def _half_extent(shape: str) -> tuple[float, float]:
    """Half width and half height of a shape's tight box, in units of its radius."""
    outline = _UNIT_OUTLINES[shape]
    if outline is None:
        return 1.0, 1.0
    return max(abs(p[0]) for p in outline), max(abs(p[1]) for p in outline)


_HALF_EXTENTS = {shape: _half_extent(shape) for shape in SHAPES}
