"""The tabletop world's words and what they mean in pixels.

Chosen to share nothing with the embedded synthetic world (its shapes, colour names, sizes and
materials), so a model cannot carry a word-to-pixel shortcut from one world to the other.
"""
from __future__ import annotations

# Shapes: outlines that stay apart at 64 px (drawn in ``outlines.py``).
SHAPES: tuple[str, ...] = ("ring", "heart", "diamond", "crescent", "arrow", "hexagon", "hourglass")

PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES} | {"hourglass": "hourglasses"}

# Colours with their RGB; saturated enough to read on a light table, far apart in mean value.
COLOURS: dict[str, tuple[int, int, int]] = {
    "crimson": (196, 18, 48),
    "teal": (0, 128, 128),
    "amber": (255, 170, 0),
    "violet": (128, 60, 210),
    "olive": (110, 120, 20),
    "pink": (250, 110, 180),
    "navy": (20, 30, 110),
}

# Size word -> radius of the shape's bounding circle, as a fraction of the image side. Adjacent
# sizes differ by more than 1.35x, so "bigger than" (margin 1.2x) holds exactly between sizes.
SIZES: dict[str, float] = {"little": 0.085, "medium": 0.12, "big": 0.165}
RADIUS_JITTER = 0.05  # each object's radius is its size's radius times 1 +- this

# Surface patterns (instead of a material).
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted")

# Attribute name -> its values; the truth function and the caption writer iterate over this.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": tuple(SIZES),
    "pattern": PATTERNS,
    "colour": tuple(COLOURS),
    "shape": SHAPES,
}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")

MIN_OBJECTS, MAX_OBJECTS = 1, 4
