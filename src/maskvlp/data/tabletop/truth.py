"""What a caption claims, and the one function that decides whether a claim is true of a scene."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from maskvlp.data.tabletop.layout import Item, Scene
from maskvlp.data.tabletop.relations import relation_holds
from maskvlp.data.tabletop.vocab import ATTRIBUTES


@dataclass(frozen=True)
class Mention:
    """A noun phrase's content: the attributes it names (None: not named)."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    pattern: str | None = None

    def fits(self, item: Item) -> bool:
        return all(getattr(self, a) is None or getattr(self, a) == item.attribute(a) for a in ATTRIBUTES)

    def named_pair(self) -> tuple[str, str] | None:
        """The (colour, shape) pair this mention names, if it names both."""
        return (self.colour, self.shape) if self.colour is not None and self.shape is not None else None

    def with_colour(self, colour: str | None) -> "Mention":
        return replace(self, colour=colour)


@dataclass(frozen=True)
class Claim:
    """A caption's meaning.

    kind: "single" (one mention), "pair" (two mentions, distinct objects), "relation" (mentions[0]
    relation mentions[1], distinct objects), "count" (exactly counts[k] objects fit mentions[k],
    for every k) or "inventory" (the mentions fit distinct objects and the scene has exactly
    ``total`` objects).
    """

    kind: str
    mentions: tuple[Mention, ...]
    relation: str | None = None
    counts: tuple[int, ...] = ()
    total: int | None = None

    def named_pairs(self) -> set[tuple[str, str]]:
        return {p for m in self.mentions if (p := m.named_pair()) is not None}


def is_true(claim: Claim, scene: Scene) -> bool:
    """The world's single definition of truth."""
    items = scene.items
    if claim.kind == "count":
        return all(sum(m.fits(o) for o in items) == n for m, n in zip(claim.mentions, claim.counts, strict=True))
    if claim.total is not None and len(items) != claim.total:
        return False
    for chosen in itertools.permutations(items, len(claim.mentions)):
        if not all(m.fits(o) for m, o in zip(claim.mentions, chosen)):
            continue
        if claim.relation is None or relation_holds(claim.relation, chosen[0], chosen[1]):
            return True
    return False
