"""Relations between two objects, each decided from geometry with a margin.

Every relation has a converse (``a R b`` exactly when ``b converse(R) a``), which relation-reversal
probes need. Inside the margin neither a relation nor its converse holds, so a pair that is nearly
level, nearly the same size or nearly as central is never described.
"""
from __future__ import annotations

import math

from maskvlp.data.tabletop.layout import Item

SIDE_MARGIN = 0.12  # centres must differ by this (fraction of the image side) for left/right
LEVEL_MARGIN = 0.12  # ... and by this for over/beneath
SIZE_RATIO = 1.2  # radii must differ by this factor for bigger/smaller
CENTRE_MARGIN = 0.1  # distances to the picture's centre must differ by this for nearer/farther

# relation -> (converse, family). The family groups a relation with its converse.
RELATIONS: dict[str, tuple[str, str]] = {
    "left of": ("right of", "side"),
    "right of": ("left of", "side"),
    "over": ("beneath", "level"),
    "beneath": ("over", "level"),
    "bigger than": ("smaller than", "size"),
    "smaller than": ("bigger than", "size"),
    "nearer the centre than": ("farther from the centre than", "centre"),
    "farther from the centre than": ("nearer the centre than", "centre"),
}


def converse(relation: str) -> str:
    """The relation that holds of (b, a) exactly when ``relation`` holds of (a, b)."""
    return RELATIONS[relation][0]


def family(relation: str) -> str:
    return RELATIONS[relation][1]


def _off_centre(item: Item) -> float:
    return math.hypot(item.x - 0.5, item.y - 0.5)


def relation_holds(relation: str, a: Item, b: Item) -> bool:
    """Whether ``a relation b`` is clearly true (y grows downwards, so "over" means smaller y)."""
    if relation == "left of":
        return b.x - a.x > SIDE_MARGIN
    if relation == "right of":
        return a.x - b.x > SIDE_MARGIN
    if relation == "over":
        return b.y - a.y > LEVEL_MARGIN
    if relation == "beneath":
        return a.y - b.y > LEVEL_MARGIN
    if relation == "bigger than":
        return a.r > SIZE_RATIO * b.r
    if relation == "smaller than":
        return b.r > SIZE_RATIO * a.r
    if relation == "nearer the centre than":
        return _off_centre(b) - _off_centre(a) > CENTRE_MARGIN
    if relation == "farther from the centre than":
        return _off_centre(a) - _off_centre(b) > CENTRE_MARGIN
    raise ValueError(f"unknown relation {relation!r}")


def relations_between(a: Item, b: Item) -> list[str]:
    """Every relation that clearly holds of (a, b), in RELATIONS order."""
    return [rel for rel in RELATIONS if relation_holds(rel, a, b)]
