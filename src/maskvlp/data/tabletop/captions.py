"""Writing true captions of a scene: a mix of content kinds, each said in a sampled wording.

The first caption lists the whole scene, so most pictures have a caption that fits them alone;
the others describe a relation, a count, one object or two objects. Every caption is checked with
``is_true`` before it is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from maskvlp.data.tabletop.layout import Scene
from maskvlp.data.tabletop.mentions import identifying_mention, partial_mention, rich_mention
from maskvlp.data.tabletop.relations import family, relations_between
from maskvlp.data.tabletop.truth import Claim, Mention, is_true
from maskvlp.data.tabletop.wording import Wording, say

CAPTIONS_PER_SCENE = 5
PLAN = ("inventory", "relation", "count", "single", "pair")  # slot order; a kind that cannot be said is replaced


@dataclass(frozen=True)
class Caption:
    text: str
    claim: Claim
    wording: Wording


def sample_wording(rng: np.random.Generator) -> Wording:
    # 60 is a multiple of every template count, so each template is equally likely
    return Wording(int(rng.integers(60)), int(rng.integers(3)), int(rng.integers(3)), int(rng.integers(2)))


def inventory_claim(scene: Scene, rng: np.random.Generator) -> Claim | None:
    order = rng.permutation(len(scene.items))
    return Claim("inventory", tuple(rich_mention(scene.items[int(k)], rng) for k in order), total=len(scene.items))


def relation_claim(scene: Scene, rng: np.random.Generator) -> Claim | None:
    """A clear relation between two objects that each have an identifying description."""
    options: dict[str, list[tuple[int, int, str]]] = {}
    for i in range(len(scene.items)):
        for j in range(len(scene.items)):
            if i != j:
                for rel in relations_between(scene.items[i], scene.items[j]):
                    options.setdefault(family(rel), []).append((i, j, rel))
    if not options:
        return None
    fam = sorted(options)[int(rng.integers(len(options)))]  # families equally likely, whatever their counts
    i, j, rel = options[fam][int(rng.integers(len(options[fam])))]
    a, b = identifying_mention(scene, i, rng), identifying_mention(scene, j, rng)
    if a is None or b is None:
        return None
    return Claim("relation", (a, b), relation=rel)


def pair_claim(scene: Scene, rng: np.random.Generator) -> Claim | None:
    if len(scene.items) < 2:
        return None
    i, j = rng.choice(len(scene.items), size=2, replace=False)
    return Claim("pair", (rich_mention(scene.items[int(i)], rng), rich_mention(scene.items[int(j)], rng)))


def count_claim(scene: Scene, rng: np.random.Generator) -> Claim | None:
    """Exact counts of one or two shapes (or colours): "two hearts and a ring"."""
    attr = "shape" if rng.random() < 0.7 else "colour"
    counts: dict[str, int] = {}
    for item in scene.items:
        counts[item.attribute(attr)] = counts.get(item.attribute(attr), 0) + 1
    values = list(counts)
    rng.shuffle(values)
    values = values[: int(rng.integers(1, 3))]
    values.sort(key=lambda v: -counts[v])  # "two hearts and a ring" rather than "a ring and two hearts"
    return Claim("count", tuple(Mention(**{attr: v}) for v in values), counts=tuple(counts[v] for v in values))


def single_claim(scene: Scene, rng: np.random.Generator) -> Claim | None:
    item = scene.items[int(rng.integers(len(scene.items)))]
    return Claim("single", (partial_mention(item, rng),))


BUILDERS: dict[str, Callable[[Scene, np.random.Generator], Claim | None]] = {
    "inventory": inventory_claim, "relation": relation_claim, "count": count_claim, "single": single_claim,
    "pair": pair_claim,
}


def write_captions(scene: Scene, rng: np.random.Generator, num: int = CAPTIONS_PER_SCENE) -> list[Caption]:
    """``num`` true captions with distinct texts (and distinct claims while that is possible)."""
    captions: list[Caption] = []
    claims: set[Claim] = set()
    texts: set[str] = set()
    kinds = list(BUILDERS)
    planned = list(PLAN[:num])
    for attempt in range(400):
        if len(captions) == num:
            return captions
        slot = len(captions)
        kind = planned[slot] if slot < len(planned) else kinds[int(rng.integers(len(kinds)))]
        claim = BUILDERS[kind](scene, rng)
        if claim is None or (claim in claims and attempt < 200):
            if slot < len(planned):  # this kind has nothing (new) to say here: draw another for the slot
                planned[slot] = kinds[int(rng.integers(len(kinds)))]
            continue
        wording = sample_wording(rng)
        text = say(claim, wording)
        if text in texts:
            continue
        if not is_true(claim, scene):
            raise AssertionError(f"caption {text!r} is false of {scene.name}")
        captions.append(Caption(text, claim, wording))
        claims.add(claim)
        texts.add(text)
    raise RuntimeError(f"could not write {num} distinct captions for {scene.name}")
