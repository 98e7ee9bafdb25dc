"""Choosing which attributes a noun phrase names for a given object."""
from __future__ import annotations

import numpy as np

from maskvlp.data.tabletop.layout import Item, Scene
from maskvlp.data.tabletop.truth import Mention
from maskvlp.data.tabletop.vocab import ATTRIBUTES


def mention_of(item: Item, names: set[str] | list[str] | tuple[str, ...]) -> Mention:
    """The mention of ``item`` naming exactly the attributes in ``names``."""
    return Mention(**{a: item.attribute(a) for a in ATTRIBUTES if a in names})


def identifying_mention(scene: Scene, k: int, rng: np.random.Generator) -> Mention | None:
    """A mention naming colour and shape (plus size, pattern as needed) that fits only item k.

    "the X" wordings need a description that picks out one object; None when no description
    can (two identical objects).
    """
    item = scene.items[k]
    names = ["colour", "shape"]
    extra = [a for a in ATTRIBUTES if a not in names]
    rng.shuffle(extra)
    for add in [None, *extra]:
        if add is not None:
            names.append(add)
        m = mention_of(item, names)
        if sum(m.fits(o) for o in scene.items) == 1:
            return m
    return None


def rich_mention(item: Item, rng: np.random.Generator, p_extra: float = 0.35) -> Mention:
    """Colour and shape, plus size and pattern each with probability ``p_extra``."""
    names = ["colour", "shape"] + [a for a in ("size", "pattern") if rng.random() < p_extra]
    return mention_of(item, names)


def partial_mention(item: Item, rng: np.random.Generator) -> Mention:
    """One to three of the item's attributes (the shape more often than the others)."""
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    weights = np.array([1.0 if a != "shape" else 2.5 for a in ATTRIBUTES])
    picked = rng.choice(list(ATTRIBUTES), size=count, replace=False, p=weights / weights.sum())
    return mention_of(item, {str(a) for a in picked})
