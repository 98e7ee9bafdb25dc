"""Binding probes: a true caption and a same-wording false twin (colours swapped or relation reversed).

A model that ranks the true one higher has bound the attribute or relation to the right object;
a probe is only emitted when :func:`holds` confirms one is true and the other false.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from maskvlp.data.synthetic.captions import _describe, _related_pairs, _unique_description
from maskvlp.data.synthetic.scenes import Scene
from maskvlp.data.synthetic.text import NUM_STYLES, realize
from maskvlp.data.synthetic.truth import Caption, CaptionSpec, holds
from maskvlp.data.synthetic.vocabulary import ATTRIBUTES, CONVERSE


# --------------------------------------------------------------------------------------------
# Minimal-pair edits
# --------------------------------------------------------------------------------------------
def colour_swap(spec: CaptionSpec) -> CaptionSpec | None:
    """Exchange the colours of the first two descriptions with different colours (None if none)."""
    descs = spec.objects
    for a, b in itertools.combinations(range(len(descs)), 2):
        ca, cb = descs[a].colour, descs[b].colour
        if ca is not None and cb is not None and ca != cb:
            swapped = list(descs)
            swapped[a], swapped[b] = replace(descs[a], colour=cb), replace(descs[b], colour=ca)
            return replace(spec, objects=tuple(swapped))
    return None


def reverse_relation(spec: CaptionSpec) -> CaptionSpec | None:
    """The same spec with the converse predicate (left of <-> right of, above <-> below)."""
    if spec.relation is None:
        return None
    i, predicate, j = spec.relation
    return replace(spec, relation=(i, CONVERSE[predicate], j))


@dataclass(frozen=True)
class BindingProbe:
    """A true caption and a same-style false one that differ only in binding (verified by holds)."""

    kind: str  # "colour_swap" | "relation"
    true: Caption
    false: Caption


def _probe_names() -> tuple[tuple[str, ...], ...]:
    """Descriptions tried in order: colour+shape first, more attributes if needed to be false."""
    return (("colour", "shape"), ("size", "colour", "shape"), tuple(ATTRIBUTES))


def _probe(kind: str, true: CaptionSpec, false: CaptionSpec | None, scene: Scene, style: int) -> BindingProbe | None:
    if false is None or not holds(true, scene) or holds(false, scene):
        return None
    return BindingProbe(kind, Caption(realize(true, style), true), Caption(realize(false, style), false))


def _colour_swap_probe(scene: Scene, rng: np.random.Generator) -> BindingProbe | None:
    objs = scene.objects
    pairs = list(itertools.permutations(range(len(objs)), 2))
    style = int(rng.integers(NUM_STYLES))
    for k in rng.permutation(len(pairs)):
        a, b = objs[pairs[int(k)][0]], objs[pairs[int(k)][1]]
        if a.colour == b.colour:
            continue
        for names in _probe_names():
            true = CaptionSpec((_describe(a, names), _describe(b, names)))
            probe = _probe("colour_swap", true, colour_swap(true), scene, style)
            if probe is not None:
                return probe
    return None


def _relation_probe(scene: Scene, rng: np.random.Generator) -> BindingProbe | None:
    related = _related_pairs(scene)
    style = int(rng.integers(NUM_STYLES))
    for k in rng.permutation(len(related)):
        a, b, predicate = related[int(k)]
        for names in _probe_names():
            da, db = (_unique_description(scene.objects[k], scene, list(names)) or _describe(scene.objects[k], names)
                      for k in (a, b))  # unique when possible: some wordings say "the ..."
            true = CaptionSpec((da, db), (0, predicate, 1))
            probe = _probe("relation", true, reverse_relation(true), scene, style)
            if probe is not None:
                return probe
    return None
