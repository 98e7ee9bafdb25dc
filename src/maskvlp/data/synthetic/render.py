"""Drawing a scene to pixels: background, matte and metal objects, anti-aliasing and noise.

Rendering draws from its own generator, so pictures can be recomputed anywhere without touching
scene or caption sampling.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from maskvlp.data.synthetic.scenes import Scene, SceneObject
from maskvlp.data.synthetic.vocabulary import _UNIT_OUTLINES, COLOURS


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _supersample(image_size: int) -> int:
    """4x for small images, less for large ones (same anti-aliasing, bounded cost)."""
    return max(2, min(4, 512 // max(1, image_size)))


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A dark neutral background with a gentle vertical gradient that differs per scene."""
    base = np.array([58, 60, 68], dtype=np.float32) + rng.uniform(-8, 8, size=3).astype(np.float32)
    slope = float(rng.uniform(-10, 10))
    ramp = np.linspace(-slope, slope, size, dtype=np.float32)
    column = np.clip(base[None, :] + ramp[:, None], 0, 255).astype(np.uint8)  # [size, 3]
    return Image.fromarray(column[:, None, :]).resize((size, size), Image.Resampling.NEAREST)


def _draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, scale: float, offset: tuple[int, int], fill: Any) -> None:
    """Draw the object's outline filled with ``fill``; ``offset`` is the target's top-left pixel."""
    cx, cy, r = obj.x * scale - offset[0], obj.y * scale - offset[1], obj.radius * scale
    outline = _UNIT_OUTLINES[obj.shape]
    if outline is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx + u * r, cy + v * r) for u, v in outline], fill=fill)


def _metal_surface(obj: SceneObject, scale: float, box: tuple[int, int, int, int], rgb: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3]: body shaded darker downwards plus a white highlight at the upper left."""
    x0, y0, x1, y1 = box
    r = obj.radius * scale
    ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - obj.y * scale) / r
    xs = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - obj.x * scale) / r
    shade = 0.95 - 0.3 * np.clip((ys + 1) / 2, 0, 1)
    spot = (np.clip(1 - np.hypot(xs + 0.35, ys + 0.4) / 0.7, 0, 1) ** 2 * 0.85)[..., None]
    body = rgb[None, None, :] * shade[..., None]
    return np.clip(body * (1 - spot) + 255.0 * spot, 0, 255).astype(np.uint8)


def _pixel_box(obj: SceneObject, size: int) -> tuple[int, int, int, int]:
    """The object's box in canvas pixels, padded by 2 and clipped to the canvas."""
    bx0, by0, bx1, by1 = obj.bbox
    return (max(0, int(bx0 * size) - 2), max(0, int(by0 * size) - 2),
            min(size, int(math.ceil(bx1 * size)) + 2), min(size, int(math.ceil(by1 * size)) + 2))


def _draw_object(canvas: Image.Image, obj: SceneObject, rng: np.random.Generator) -> None:
    """Paint one object onto the supersampled canvas: matte flat, metal shaded with a highlight."""
    size = canvas.size[0]
    rgb = np.clip(np.array(COLOURS[obj.colour], dtype=np.float32) + rng.uniform(-10, 10, size=3), 0, 255)
    if obj.material == "matte":
        _draw_shape(ImageDraw.Draw(canvas), obj, float(size), (0, 0), tuple(int(round(c)) for c in rgb))
        return
    box = _pixel_box(obj, size)
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    mask = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
    _draw_shape(ImageDraw.Draw(mask), obj, float(size), (box[0], box[1]), 255)
    surface = Image.fromarray(_metal_surface(obj, float(size), box, rgb.astype(np.float32)))
    canvas.paste(surface, box[:2], mask)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3]: supersampled drawing, box-downsampled (anti-aliased), light pixel noise."""
    factor = _supersample(image_size)
    canvas = _background(image_size * factor, rng)
    for obj in scene.objects:
        _draw_object(canvas, obj, rng)
    small = np.asarray(canvas.reduce(factor), dtype=np.int16)
    noise = rng.integers(-2, 3, size=small.shape, dtype=np.int16)
    return np.clip(small + noise, 0, 255).astype(np.uint8)
