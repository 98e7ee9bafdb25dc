"""Caption writing: sample true caption specs of a scene (whole-scene, relation, pair, single, count).

The order of kinds and random draws here fixes every world's captions; text comes from
:mod:`.text` and each caption is checked with :func:`holds` before it is kept.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable, Sequence

import numpy as np

from maskvlp.data.synthetic.scenes import Scene, SceneObject, _pick
from maskvlp.data.synthetic.text import NUM_STYLES, realize
from maskvlp.data.synthetic.truth import Caption, CaptionSpec, ObjectDescription, holds, relation_holds
from maskvlp.data.synthetic.vocabulary import ATTRIBUTES, RELATIONS


# --------------------------------------------------------------------------------------------
# Caption writing
# --------------------------------------------------------------------------------------------
def _describe(obj: SceneObject, names: Sequence[str]) -> ObjectDescription:
    return ObjectDescription(**{name: getattr(obj, name) for name in names})


def _matches(desc: ObjectDescription, scene: Scene) -> int:
    return sum(desc.matches(o) for o in scene.objects)


def _weighted(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """Index drawn with the given weights (cheaper than ``rng.choice`` for a handful of options)."""
    u, acc = rng.random() * sum(weights), 0.0
    for k, w in enumerate(weights):
        acc += w
        if u < acc:
            return k
    return len(weights) - 1


def _random_names(rng: np.random.Generator, size: int, require: Sequence[str] = (),
                  pool: Sequence[str] = tuple(ATTRIBUTES)) -> list[str]:
    """``size`` attribute names including ``require``, the rest drawn from ``pool`` at random."""
    rest = [n for n in pool if n not in require]
    extra = [rest[int(k)] for k in rng.permutation(len(rest))[: max(0, size - len(require))]]
    return [n for n in ATTRIBUTES if n in require or n in extra]


def _specific_names(rng: np.random.Generator) -> list[str]:
    """Colour and shape, plus each other attribute with probability 1/4."""
    return [n for n in ATTRIBUTES if n in ("colour", "shape") or rng.random() < 0.25]


def _single_spec(scene: Scene, rng: np.random.Generator) -> CaptionSpec | None:
    obj = _pick(rng, scene.objects)
    size = 1 + _weighted(rng, (0.1, 0.3, 0.35, 0.25))
    require = ("shape",) if rng.random() < 0.75 else ()
    return CaptionSpec((_describe(obj, _random_names(rng, size, require)),))


def _count_spec(scene: Scene, rng: np.random.Generator) -> CaptionSpec | None:
    obj = _pick(rng, scene.objects)
    size = _weighted(rng, (0.1, 0.5, 0.4))
    desc = _describe(obj, _random_names(rng, size, pool=("size", "colour", "shape")))
    return CaptionSpec((desc,), count=_matches(desc, scene))


def _pair_spec(scene: Scene, rng: np.random.Generator) -> CaptionSpec | None:
    a, b = (scene.objects[int(k)] for k in rng.permutation(len(scene.objects))[:2])
    names = _specific_names(rng)
    da, db = _describe(a, names), _describe(b, names)
    return None if da == db else CaptionSpec((da, db))


def _unique_description(obj: SceneObject, scene: Scene, names: list[str]) -> ObjectDescription | None:
    """Add attributes (in table order) until only ``obj`` matches, so "the ..." is felicitous."""
    for name in [None] + [n for n in ATTRIBUTES if n not in names]:
        if name is not None:
            names = names + [name]
        desc = _describe(obj, names)
        if _matches(desc, scene) == 1:
            return desc
    return None


def _related_pairs(scene: Scene) -> list[tuple[int, int, str]]:
    objs = scene.objects
    return [(a, b, p) for a, b in itertools.permutations(range(len(objs)), 2) for p in RELATIONS
            if relation_holds(p, objs[a], objs[b])]


def _relation_spec(scene: Scene, rng: np.random.Generator) -> CaptionSpec | None:
    related = _related_pairs(scene)
    if not related:
        return None
    a, b, predicate = _pick(rng, related)
    names = _specific_names(rng)
    da = _unique_description(scene.objects[a], scene, names)
    db = _unique_description(scene.objects[b], scene, names)
    if da is None or db is None:
        return None
    return CaptionSpec((da, db), relation=(0, predicate, 1))


def _scene_spec(scene: Scene, rng: np.random.Generator, with_relation: bool = False) -> CaptionSpec | None:
    """Every object (colour and shape at least; a lone object fully), in random order, the total,
    optionally one relation.

    With a relation, the related pair is described uniquely (its wordings may say "the ...").
    """
    names = list(ATTRIBUTES) if len(scene.objects) == 1 else _specific_names(rng)
    order = [int(k) for k in rng.permutation(len(scene.objects))]
    relation = None
    if with_relation:
        related = _related_pairs(scene)
        if not related:
            return None
        a, b, predicate = _pick(rng, related)
        order = [a, b] + [k for k in order if k not in (a, b)]
        relation = (0, predicate, 1)
    descs = []
    for rank, k in enumerate(order):
        unique = _unique_description(scene.objects[k], scene, names) if relation and rank < 2 else None
        if relation and rank < 2 and unique is None:
            return None
        descs.append(unique or _describe(scene.objects[k], names))
    return CaptionSpec(tuple(descs), relation=relation, total=len(scene.objects))


_SPEC_MAKERS: dict[str, Callable[[Scene, np.random.Generator], CaptionSpec | None]] = {
    "scene": _scene_spec,
    "scene_relation": functools.partial(_scene_spec, with_relation=True),
    "single": _single_spec,
    "count": _count_spec,
    "objects": _pair_spec,
    "relation": _relation_spec,
}


def _available_kinds(scene: Scene) -> list[str]:
    if not scene.objects:
        return []
    if len(scene.objects) == 1:
        return ["scene", "scene", "single", "count"]
    return ["scene", "scene_relation", "scene", "objects", "relation", "single", "count"]


def _kind_order(kinds: list[str], rng: np.random.Generator) -> list[str]:
    """Whole-scene kinds first, so most captions pick out their picture as real captions mostly do
    (the COCO-protocol ceiling stays high), then the partial kinds in random order."""
    scene = [k for k in kinds if k.startswith("scene")]
    pairs = [k for k in kinds if k in ("objects", "relation")]
    rest = [k for k in kinds if k not in scene and k not in pairs]
    return (scene + [pairs[int(k)] for k in rng.permutation(len(pairs))]
            + [rest[int(k)] for k in rng.permutation(len(rest))])


def write_captions(scene: Scene, num: int, rng: np.random.Generator, attempts: int = 40) -> list[Caption]:
    """``num`` true captions with distinct texts; content types cycle and styles rotate.

    Specs are kept distinct too while that is possible, so the captions say different things.
    """
    kinds = _available_kinds(scene)
    if not kinds:
        return []
    order = _kind_order(kinds, rng)
    style0 = int(rng.integers(NUM_STYLES))
    texts: set[str] = set()
    specs: set[CaptionSpec] = set()
    out: list[Caption] = []
    for slot in range(num):
        for attempt in range(attempts):
            kind = order[(slot + attempt // 8) % len(order)]
            spec = _SPEC_MAKERS[kind](scene, rng)
            if spec is None or (spec in specs and attempt < attempts // 2):
                continue
            text = realize(spec, style0 + slot + attempt)
            if text in texts or not holds(spec, scene):
                continue
            texts.add(text)
            specs.add(spec)
            out.append(Caption(text, spec))
            break
    return out
