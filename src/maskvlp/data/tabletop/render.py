"""Drawing a scene: a light textured table, soft shadows, outlined patterned shapes.

Everything is drawn ``supersample`` times larger and box-averaged down for anti-aliasing; then a
per-scene light level and gradient and a little pixel noise are applied, so no two pictures of
the same content are pixel-identical.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskvlp.data.tabletop.layout import Item, Scene
from maskvlp.data.tabletop.outlines import LAYERS
from maskvlp.data.tabletop.vocab import COLOURS

SHADOW_OFFSET = (0.012, 0.018)  # light from the upper left (fraction of the side)
SHADOW_DARKEN = 0.8
OUTLINE_PX = 0.6  # outline width in output pixels
NOISE_LEVELS = 3  # pixel noise is uniform in [-3, 3] grey levels


def pattern_period(image_size: int) -> float:
    """Stripe / dot spacing in output pixels: at least 3 px, so it survives at 64 px and below."""
    return max(3.0, image_size / 16)


def _table(scene: Scene, side: int, rng: np.random.Generator, period: float) -> np.ndarray:
    """The table top, float [side, side, 3]."""
    xx = np.arange(side, dtype=np.float32)[None, :]
    yy = np.arange(side, dtype=np.float32)[:, None]
    phase = rng.uniform(0, 2 * math.pi, size=3)
    if scene.texture == "linen":  # a fine weave
        shade = 0.02 * (np.sin(2 * math.pi * xx / period + phase[0]) + np.sin(2 * math.pi * yy / period + phase[1]))
    elif scene.texture == "wood":  # wavy grain
        wave = yy / (1.6 * period) + 0.8 * np.sin(2 * math.pi * xx / side + phase[0])
        shade = 0.035 * np.sin(2 * math.pi * wave + phase[1])
    else:  # paper: large soft blotches
        blotch_x = np.sin(2 * math.pi * 1.3 * xx / side + phase[0])
        shade = 0.03 * blotch_x * np.sin(2 * math.pi * 1.7 * yy / side + phase[1])
    tone = np.asarray(scene.tone, dtype=np.float32)
    shade = np.broadcast_to(shade, (side, side)).astype(np.float32)
    return tone[None, None, :] * (1.0 + shade[..., None])


def _mask(item: Item, side: int, box: tuple[int, int, int, int], dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Coverage in [0, 1] of the item's shape inside ``box`` (pixels of the large canvas)."""
    x0, y0, x1, y1 = box
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = (item.x + dx) * side - x0, (item.y + dy) * side - y0, item.r * side
    for polygon, value in LAYERS[item.shape]:
        draw.polygon([(cx + r * px, cy + r * py) for px, py in polygon], fill=255 * value)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _pattern(item: Item, side: int, box: tuple[int, int, int, int], period: float) -> np.ndarray:
    """1 where the item's pattern marks its surface, else 0 (float, inside ``box``)."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    xx, yy = xx - item.x * side, yy - item.y * side
    if item.pattern == "striped":  # diagonal bands, half the period wide
        return ((np.mod(xx + yy, period) < period / 2)).astype(np.float32)
    if item.pattern == "dotted":  # sparser than stripes, else the dots merge into a check at 64 px
        step = 1.3 * period
        u, v = np.mod(xx + step / 2, step) - step / 2, np.mod(yy + step / 2, step) - step / 2  # a dot at the centre
        return (u * u + v * v < (0.24 * step) ** 2).astype(np.float32)
    return np.zeros_like(xx)


def _box(item: Item, side: int, dx: float = 0.0, dy: float = 0.0) -> tuple[int, int, int, int]:
    cx, cy, r = (item.x + dx) * side, (item.y + dy) * side, item.r * side + 2
    return (max(0, int(cx - r)), max(0, int(cy - r)),
            min(side, int(math.ceil(cx + r))), min(side, int(math.ceil(cy + r))))


def render_scene(scene: Scene, image_size: int = 64, supersample: int = 4) -> np.ndarray:
    """The scene as uint8 [image_size, image_size, 3]."""
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    side = image_size * supersample
    period = pattern_period(image_size) * supersample
    rng = np.random.default_rng(scene.noise_seed)
    canvas = _table(scene, side, rng, period)
    for item in scene.items:  # shadows first, so no shadow falls on an object
        box = _box(item, side, *SHADOW_OFFSET)
        if box[2] > box[0] and box[3] > box[1]:
            m = _mask(item, side, box, *SHADOW_OFFSET)[..., None]
            canvas[box[1]:box[3], box[0]:box[2]] *= 1.0 - (1.0 - SHADOW_DARKEN) * m
    erode = 2 * max(1, round(OUTLINE_PX * supersample)) + 1
    for item in scene.items:
        box = _box(item, side)
        m = _mask(item, side, box)
        inner = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(erode)),
                           dtype=np.float32) / 255.0
        base = np.asarray(COLOURS[item.colour], dtype=np.float32)
        mark = base + (255.0 - base) * (0.6 if item.pattern == "striped" else 0.8)
        edge = base * 0.5
        p = _pattern(item, side, box, period)[..., None]
        surface = base * (1.0 - p) + mark * p
        colour = surface * inner[..., None] + edge * (1.0 - inner[..., None])
        region = canvas[box[1]:box[3], box[0]:box[2]]
        region[:] = region * (1.0 - m[..., None]) + colour * m[..., None]
    small = canvas.reshape(image_size, supersample, image_size, supersample, 3).mean(axis=(1, 3))
    u = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size - 0.5
    light = scene.brightness * (1.0 + scene.slope[0] * u[None, :] + scene.slope[1] * u[:, None])
    noise = rng.integers(-NOISE_LEVELS, NOISE_LEVELS + 1, size=small.shape).astype(np.float32)
    return np.clip(np.rint(small * light[..., None] + noise), 0, 255).astype(np.uint8)
