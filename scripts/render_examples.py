"""Render a grid of test scenes with their first caption to docs/img/synthetic_examples.png.

Usage: python scripts/render_examples.py [--out PATH] [--count 8] [--seed 0]
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from maskvlp.config import WorldConfig
from maskvlp.data.synthetic import SyntheticWorld

TILE = 192  # pixels per picture in the grid
TEXT_H = 54  # pixels of caption under each picture
COLUMNS = 4


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` (falls back to the bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _tile(world: SyntheticWorld, index: int) -> Image.Image:
    """One picture (upscaled without smoothing, so the true pixels show) with its first caption."""
    scene = world.scenes("test")[index]
    tile = Image.new("RGB", (TILE, TILE + TEXT_H), (255, 255, 255))
    tile.paste(Image.fromarray(world.render(scene)).resize((TILE, TILE), Image.Resampling.NEAREST), (0, 0))
    caption = world.captions(scene)[0].text
    draw = ImageDraw.Draw(tile)
    draw.multiline_text((4, TILE + 4), "\n".join(textwrap.wrap(caption, 30)[:3]), fill=(0, 0, 0), font=_font(13))
    return tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/img/synthetic_examples.png")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    world = SyntheticWorld(WorldConfig(seed=args.seed, test_scenes=args.count))
    rows = (args.count + COLUMNS - 1) // COLUMNS
    grid = Image.new("RGB", (COLUMNS * (TILE + 8) + 8, rows * (TILE + TEXT_H + 8) + 8), (255, 255, 255))
    for i in range(args.count):
        r, c = divmod(i, COLUMNS)
        grid.paste(_tile(world, i), (8 + c * (TILE + 8), 8 + r * (TILE + TEXT_H + 8)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
