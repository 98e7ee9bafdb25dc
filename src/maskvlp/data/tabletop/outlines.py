"""Shape outlines as filled polygons in unit coordinates (radius 1 around the centre, y down).

A shape is a list of (polygon, value) layers painted in order onto a mask: value 1 adds area,
value 0 cuts it away (the ring's hole, the crescent's bite). Outlines fill most of the unit circle
so that size words mean the same for every shape.
"""
from __future__ import annotations

import math

import numpy as np

Polygon = list[tuple[float, float]]


def _circle(cx: float, cy: float, r: float, points: int = 48) -> Polygon:
    return [(cx + r * math.cos(2 * math.pi * k / points), cy + r * math.sin(2 * math.pi * k / points))
            for k in range(points)]


def _regular(sides: int, r: float, turn: float = 0.0) -> Polygon:
    return [(r * math.cos(turn + 2 * math.pi * k / sides), r * math.sin(turn + 2 * math.pi * k / sides))
            for k in range(sides)]


def _heart() -> Polygon:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # y down: lobes on top
    x, y = x - (x.max() + x.min()) / 2, y - (y.max() + y.min()) / 2
    scale = 0.97 / max(np.abs(x).max(), np.abs(y).max())
    return [(float(a * scale), float(b * scale)) for a, b in zip(x, y)]


LAYERS: dict[str, list[tuple[Polygon, int]]] = {
    "ring": [(_circle(0, 0, 1.0), 1), (_circle(0, 0, 0.5), 0)],
    "heart": [(_heart(), 1)],
    "diamond": [([(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)], 1)],
    "crescent": [(_circle(0, 0, 1.0), 1), (_circle(0.45, -0.2, 0.82), 0)],
    "arrow": [([(-1.0, -0.27), (0.12, -0.27), (0.12, -0.72), (1.0, 0.0), (0.12, 0.72), (0.12, 0.27),
                (-1.0, 0.27)], 1)],
    "hexagon": [(_regular(6, 0.97), 1)],
    "hourglass": [([(-0.72, -0.95), (0.72, -0.95), (0.13, 0.0), (0.72, 0.95), (-0.72, 0.95), (-0.13, 0.0)], 1)],
}
