"""Binding probes: a true caption and a minimally altered false twin in the same wording.

A model that scores the true text above the false one has bound colours to the right shapes
(``colour_swap``) or read the relation's direction (``relation``). A probe is kept only when the
truth function calls one text true and the other false.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from maskvlp.data.tabletop.captions import sample_wording
from maskvlp.data.tabletop.layout import Scene
from maskvlp.data.tabletop.mentions import identifying_mention, rich_mention
from maskvlp.data.tabletop.relations import converse, relations_between
from maskvlp.data.tabletop.truth import Claim, is_true
from maskvlp.data.tabletop.wording import Wording, say


@dataclass(frozen=True)
class Probe:
    kind: str  # "colour_swap" or "relation"
    true: str
    false: str
    true_claim: Claim
    false_claim: Claim
    wording: Wording

    def named_pairs(self) -> set[tuple[str, str]]:
        return self.true_claim.named_pairs() | self.false_claim.named_pairs()


def _make(kind: str, scene: Scene, true: Claim, false: Claim, wording: Wording) -> Probe | None:
    if not is_true(true, scene) or is_true(false, scene):
        return None
    return Probe(kind, say(true, wording), say(false, wording), true, false, wording)


def colour_swap_probe(scene: Scene, rng: np.random.Generator) -> Probe | None:
    """"a teal ring and a crimson heart" vs "a crimson ring and a teal heart"."""
    n = len(scene.items)
    pairs = [(i, j) for i in range(n) for j in range(n) if i < j and scene.items[i].colour != scene.items[j].colour]
    for k in rng.permutation(len(pairs)):
        i, j = pairs[int(k)]
        a, b = rich_mention(scene.items[i], rng), rich_mention(scene.items[j], rng)
        true = Claim("pair", (a, b))
        false = Claim("pair", (a.with_colour(b.colour), b.with_colour(a.colour)))
        probe = _make("colour_swap", scene, true, false, sample_wording(rng))
        if probe is not None:
            return probe
    return None


def relation_probe(scene: Scene, rng: np.random.Generator) -> Probe | None:
    """"a teal ring to the left of a crimson heart" vs "... to the right of ..."."""
    n = len(scene.items)
    options = [(i, j, rel) for i in range(n) for j in range(n) if i != j
               for rel in relations_between(scene.items[i], scene.items[j])]
    for k in rng.permutation(len(options)):
        i, j, rel = options[int(k)]
        a, b = identifying_mention(scene, i, rng), identifying_mention(scene, j, rng)
        if a is None or b is None:
            continue
        true = Claim("relation", (a, b), relation=rel)
        probe = _make("relation", scene, true, replace(true, relation=converse(rel)), sample_wording(rng))
        if probe is not None:
            return probe
    return None


def write_probes(scene: Scene, rng: np.random.Generator) -> list[Probe]:
    """Up to one probe of each kind, for scenes with two or more objects."""
    if len(scene.items) < 2:
        return []
    found = [colour_swap_probe(scene, rng), relation_probe(scene, rng)]
    return [p for p in found if p is not None]
