"""A procedural scene world whose captions can be checked against any image.

Real image-text data cannot say whether a caption of one image is also true of another, nor
whether a model knows *which* object is red. This world can: every scene is a small scene graph
(objects with shape, colour, size, material and a position), every caption keeps the structured
:class:`CaptionSpec` it was written from, and :func:`holds` decides exactly whether any spec is
true of any scene. That gives semantic retrieval ground truth (:func:`truth_matrix`), held-out
colour-shape pairs for compositional generalisation, and minimal-pair binding probes (a caption
and the same caption with two colours swapped or a relation reversed).

Everything is a pure function of ``(seed, split, index)`` so scenes, captions and pixels can be
recomputed anywhere. Coordinates are normalised to ``[0, 1]`` with ``y`` growing downwards
(image convention): "above" means a smaller ``y``.
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import math
import os
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from maskvlp.config import WorldConfig

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 215, 45),
    "purple": (145, 65, 200),
    "cyan": (45, 205, 215),
    "orange": (245, 140, 30),
    "gray": (140, 140, 140),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
MATERIALS = ("matte", "metal")
RELATIONS = ("left of", "right of", "above", "below")

# Attribute name -> values, in the word order of a noun phrase ("a large red metal circle");
# the last one is the head noun. Matching, truth tables and captions iterate over this table.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": SIZES,
    "colour": tuple(COLOURS),
    "material": MATERIALS,
    "shape": SHAPES,
}
CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

RELATION_MARGIN = 0.1  # centres must differ by more than this (normalised) for a relation to hold
SMALL_RADIUS = 0.08  # normalised half-width of a small object's box
LARGE_RADIUS = 0.144  # 1.8 x small, so size is readable across shapes
RADIUS_JITTER = 0.04  # relative
PLACEMENT_GAP = 0.04  # minimum gap between two objects' boxes
EDGE_GAP = 0.02  # minimum gap between an object's box and the image border
MAX_OBJECTS = 8  # more does not pack reliably at the large size
SPLITS = ("train", "val", "test", "heldout")
_SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
_STREAM_CAPTIONS, _STREAM_RENDER, _STREAM_PROBES, _STREAM_HELDOUT = 101, 102, 103, 104


# --------------------------------------------------------------------------------------------
# Shape geometry (unit box [-1, 1]^2, y down)
# --------------------------------------------------------------------------------------------
def _centred(points: list[tuple[float, float]], fill: bool) -> tuple[tuple[float, float], ...]:
    """Move a polygon so its box is centred; with ``fill`` scale it so the box touches +-1."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    scale = 1.0 / max(max(xs) - cx, max(ys) - cy) if fill else 1.0
    return tuple(((x - cx) * scale, (y - cy) * scale) for x, y in points)


def _star(points: int = 5, inner: float = 0.5) -> list[tuple[float, float]]:
    """Vertices of a star pointing up."""
    out = []
    for k in range(2 * points):
        rad = 1.0 if k % 2 == 0 else inner
        ang = -math.pi / 2 + k * math.pi / points
        out.append((rad * math.cos(ang), rad * math.sin(ang)))
    return out


def _cross(arm: float = 0.36) -> list[tuple[float, float]]:
    """A plus sign whose arms are ``2 * arm`` wide (a hexagon reads as a circle at 64 px; this does not)."""
    a = arm
    return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]


# None = circle (drawn as an ellipse). Sizes chosen so the five areas are comparable.
_UNIT_OUTLINES: dict[str, tuple[tuple[float, float], ...] | None] = {
    "circle": None,
    "square": _centred([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)], fill=False),
    "triangle": _centred([(0.0, -0.95), (1.0, 0.95), (-1.0, 0.95)], fill=False),
    "star": _centred(_star(), fill=True),
    "cross": _centred(_cross(), fill=False),
}


def _half_extent(shape: str) -> tuple[float, float]:
    """Half width and half height of a shape's tight box, in units of its radius."""
    outline = _UNIT_OUTLINES[shape]
    if outline is None:
        return 1.0, 1.0
    return max(abs(p[0]) for p in outline), max(abs(p[1]) for p in outline)


_HALF_EXTENTS = {shape: _half_extent(shape) for shape in SHAPES}


# --------------------------------------------------------------------------------------------
# Scene graph
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneObject:
    """One object; centre ``(x, y)`` and ``radius`` (half the box side) are normalised to [0, 1].

    ``vx``/``vy`` (normalised units per frame) are unused by still images; they are here so video
    clips of moving objects can reuse the same scene graph.
    """

    shape: str
    colour: str
    size: str
    material: str
    x: float
    y: float
    radius: float
    vx: float = 0.0
    vy: float = 0.0

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose from {values}")
        for name in ("x", "y", "radius", "vx", "vy"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight box ``(x0, y0, x1, y1)`` of the drawn shape, normalised (for referring expressions)."""
        hx, hy = _HALF_EXTENTS[self.shape]
        return (self.x - hx * self.radius, self.y - hy * self.radius, self.x + hx * self.radius, self.y + hy * self.radius)


@dataclass(frozen=True)
class Scene:
    """A picture's content; ``split`` is one of :data:`SPLITS` (or anything for hand-built scenes)."""

    scene_id: str
    split: str
    objects: tuple[SceneObject, ...]


# --------------------------------------------------------------------------------------------
# Caption semantics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectDescription:
    """A partial object description; ``None`` means "any value"."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    material: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        """Whether every given attribute equals the object's."""
        for name in ATTRIBUTES:
            want = getattr(self, name)
            if want is not None and want != getattr(obj, name):
                return False
        return True


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption claims about a scene.

    Meaning: there are *distinct* scene objects ``o_k`` with ``objects[k].matches(o_k)`` for every
    ``k``, and if ``relation = (i, p, j)`` then ``p(o_i, o_j)`` holds. If ``count`` is given the
    spec has exactly one description and means "exactly ``count`` objects match it". If ``total``
    is given the scene also has exactly ``total`` objects: a whole-scene description with
    ``total == len(objects)`` names every object, the specific captions real data mostly has.
    """

    objects: tuple[ObjectDescription, ...]
    relation: tuple[int, str, int] | None = None
    count: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if self.relation is not None:
            i, predicate, j = self.relation
            if predicate not in RELATIONS:
                raise ValueError(f"unknown relation {predicate!r}; choose from {RELATIONS}")
            if i == j or not (0 <= i < len(self.objects) and 0 <= j < len(self.objects)):
                raise ValueError(f"relation {self.relation} needs two different indices into objects")
        if self.count is not None:
            if len(self.objects) != 1 or self.relation is not None or self.count < 0 or self.total is not None:
                raise ValueError("a count spec has exactly one description, no relation, no total and count >= 0")
        if self.total is not None and self.total < len(self.objects):
            raise ValueError(f"total {self.total} is smaller than the {len(self.objects)} objects described")


@dataclass(frozen=True)
class Caption:
    """A caption's text and the spec it was written from."""

    text: str
    spec: CaptionSpec


def _relation_value(predicate: str, ax: Any, ay: Any, bx: Any, by: Any) -> Any:
    """The relation test, written once so floats and numpy arrays give bit-identical answers."""
    if predicate == "left of":
        return bx - ax > RELATION_MARGIN
    if predicate == "right of":
        return ax - bx > RELATION_MARGIN
    if predicate == "above":
        return by - ay > RELATION_MARGIN
    if predicate == "below":
        return ay - by > RELATION_MARGIN
    raise ValueError(f"unknown relation {predicate!r}; choose from {RELATIONS}")


def relation_holds(predicate: str, a: SceneObject, b: SceneObject) -> bool:
    """``predicate(a, b)`` by centres, with a margin so near-ties are neither left nor right."""
    return bool(_relation_value(predicate, a.x, a.y, b.x, b.y))


def _assign(spec: CaptionSpec, objects: tuple[SceneObject, ...], chosen: list[int]) -> bool:
    """Depth-first search for distinct objects matching the remaining descriptions."""
    k = len(chosen)
    if k == len(spec.objects):
        if spec.relation is None:
            return True
        i, predicate, j = spec.relation
        return relation_holds(predicate, objects[chosen[i]], objects[chosen[j]])
    for idx, obj in enumerate(objects):
        if idx not in chosen and spec.objects[k].matches(obj):
            chosen.append(idx)
            if _assign(spec, objects, chosen):
                return True
            chosen.pop()
    return False


def holds(spec: CaptionSpec, scene: Scene) -> bool:
    """Whether ``spec`` is true of ``scene`` (exact search over distinct assignments)."""
    if spec.count is not None:
        return sum(spec.objects[0].matches(o) for o in scene.objects) == spec.count
    if spec.total is not None and len(scene.objects) != spec.total:
        return False
    return _assign(spec, scene.objects, [])


# --------------------------------------------------------------------------------------------
# Fast exact truth table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _SceneTable:
    """Scenes as padded arrays: attribute codes [S, M] (-1 = no object) and relations [S, M, M]."""

    codes: dict[str, np.ndarray]
    valid: np.ndarray
    relations: dict[str, np.ndarray]

    @property
    def width(self) -> int:
        return self.valid.shape[1]


def _scene_table(scenes: Sequence[Scene]) -> _SceneTable:
    """Encode scenes once so each spec costs a few vectorised operations."""
    width = max([1] + [len(s.objects) for s in scenes])
    codes = {name: np.full((len(scenes), width), -1, dtype=np.int16) for name in ATTRIBUTES}
    xs = np.zeros((len(scenes), width))
    ys = np.zeros((len(scenes), width))
    index = {name: {v: c for c, v in enumerate(values)} for name, values in ATTRIBUTES.items()}
    for s, scene in enumerate(scenes):
        for m, obj in enumerate(scene.objects):
            for name in ATTRIBUTES:
                codes[name][s, m] = index[name][getattr(obj, name)]
            xs[s, m], ys[s, m] = obj.x, obj.y
    relations = {p: _relation_value(p, xs[:, :, None], ys[:, :, None], xs[:, None, :], ys[:, None, :]) for p in RELATIONS}
    return _SceneTable(codes, codes["shape"] >= 0, relations)


def _description_mask(desc: ObjectDescription, table: _SceneTable) -> np.ndarray:
    """bool [S, M]: which scene objects the description matches."""
    mask = table.valid.copy()
    for name, values in ATTRIBUTES.items():
        want = getattr(desc, name)
        if want is None:
            continue
        if want not in values:
            return np.zeros_like(mask)
        mask &= table.codes[name] == values.index(want)
    return mask


@functools.lru_cache(maxsize=None)
def _permutations(width: int, k: int) -> np.ndarray:
    """int [n, k]: every ordered choice of k distinct object slots out of ``width``."""
    return np.array(list(itertools.permutations(range(width), k)), dtype=np.intp).reshape(-1, k)


def _evaluate(spec: CaptionSpec, table: _SceneTable, masks: Callable[[ObjectDescription], np.ndarray]) -> np.ndarray:
    """bool [S]: ``holds(spec, scene)`` for every scene of the table."""
    num_scenes = table.valid.shape[0]
    if spec.count is not None:
        return masks(spec.objects[0]).sum(axis=1) == spec.count
    k = len(spec.objects)
    right_total = np.ones(num_scenes, dtype=bool) if spec.total is None else table.valid.sum(axis=1) == spec.total
    if k > table.width:
        return np.zeros(num_scenes, dtype=bool)
    if k == 0:
        return right_total
    perms = _permutations(table.width, k)
    ok = masks(spec.objects[0])[:, perms[:, 0]]
    for slot in range(1, k):
        ok = ok & masks(spec.objects[slot])[:, perms[:, slot]]
    if spec.relation is not None:
        i, predicate, j = spec.relation
        ok = ok & table.relations[predicate][:, perms[:, i], perms[:, j]]
    return ok.any(axis=1) & right_total


def truth_matrix(specs: Sequence[CaptionSpec], scenes: Sequence[Scene]) -> np.ndarray:
    """bool [len(specs), len(scenes)], equal to ``holds`` in a loop but vectorised over scenes.

    Identical specs and identical descriptions are evaluated once; each distinct spec is a
    handful of numpy operations over all (scene, assignment) pairs at once.
    """
    table = _scene_table(scenes)
    unique: dict[CaptionSpec, int] = {}
    rows = np.array([unique.setdefault(spec, len(unique)) for spec in specs], dtype=np.intp)
    cache: dict[ObjectDescription, np.ndarray] = {}

    def masks(desc: ObjectDescription) -> np.ndarray:
        if desc not in cache:
            cache[desc] = _description_mask(desc, table)
        return cache[desc]

    out = np.zeros((len(unique), len(scenes)), dtype=bool)
    for spec, u in unique.items():
        out[u] = _evaluate(spec, table, masks)
    return out[rows] if len(specs) else np.zeros((0, len(scenes)), dtype=bool)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
NUM_STYLES = 5
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_REL_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_REL_ITS = {"left of": "to its left", "right of": "to its right", "above": "above it", "below": "below it"}


def _words(desc: ObjectDescription, plural: bool = False) -> str:
    """Attributes in noun-phrase order with the shape (or "object") as head noun."""
    mods = [getattr(desc, name) for name in ATTRIBUTES if name != "shape" and getattr(desc, name) is not None]
    noun = desc.shape or "object"
    return " ".join(mods + [noun + ("s" if plural else "")])


def _indefinite(desc: ObjectDescription) -> str:
    words = _words(desc)
    return ("an " if words[0] in "aeiou" else "a ") + words


def _definite(desc: ObjectDescription) -> str:
    return "the " + _words(desc)


def _listing(descs: Sequence[ObjectDescription]) -> str:
    """'a, b and c' with indefinite articles."""
    parts = [_indefinite(d) for d in descs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _realize_count(spec: CaptionSpec, style: int) -> str:
    n = spec.count or 0
    number = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    noun = _words(spec.objects[0], plural=n != 1)
    verb = "is" if n == 1 else "are"
    frames = (f"{number} {noun}", f"there {verb} {number} {noun}", f"exactly {number} {noun}",
              f"a picture with exactly {number} {noun}", f"a scene with {number} {noun}")
    return frames[style % NUM_STYLES]


def _realize_relation(spec: CaptionSpec, style: int) -> str:
    assert spec.relation is not None
    i, predicate, j = spec.relation
    subj, ground = spec.objects[i], spec.objects[j]
    phrase = _REL_PHRASE[predicate]
    frames = (f"{_indefinite(subj)} {phrase} {_indefinite(ground)}",
              f"there is {_indefinite(subj)} {phrase} {_indefinite(ground)}",
              f"{phrase} {_definite(ground)} is {_indefinite(subj)}",
              f"{_indefinite(ground)} with {_indefinite(subj)} {_REL_ITS[predicate]}",
              f"{_definite(subj)} is {phrase} {_definite(ground)}")
    text = frames[style % NUM_STYLES]
    extras = [d for k, d in enumerate(spec.objects) if k not in (i, j)]
    return text + (" and " + _listing(extras) if extras else "")


def _realize_objects(spec: CaptionSpec, style: int) -> str:
    listing = _listing(spec.objects)
    frames = (listing, f"there is {listing}", f"a picture of {listing}", f"the scene contains {listing}",
              f"a scene with {listing}")
    return frames[style % NUM_STYLES]


def _realize_scene(spec: CaptionSpec, style: int) -> str:
    """A whole-scene description; some wordings say the object count, as "only" would."""
    n = spec.total or 0
    number = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    noun = "object" if n == 1 else "objects"
    if spec.relation is not None:
        body = _realize_relation(replace(spec, total=None), style)
        return body if style % 2 == 0 else f"{body}, {number} {noun} in all"
    listing = _listing(spec.objects)
    frames = (listing, f"{number} {noun}: {listing}", f"a picture of {listing}", f"only {listing}",
              f"a scene with {number} {noun}, {listing}")
    return frames[style % NUM_STYLES]


def realize(spec: CaptionSpec, style: int) -> str:
    """Deterministic text for ``spec`` in wording ``style`` (taken modulo :data:`NUM_STYLES`)."""
    if spec.total is not None:
        return _realize_scene(spec, style)
    if spec.count is not None:
        return _realize_count(spec, style)
    if spec.relation is not None:
        return _realize_relation(spec, style)
    if not spec.objects:
        return "a picture"
    return _realize_objects(spec, style)


def caption_kind(spec: CaptionSpec) -> str:
    """Content type: "scene" (every object, a total), "count", "relation", "single" or "objects" (joined by and)."""
    if spec.total is not None:
        return "scene"
    if spec.count is not None:
        return "count"
    if spec.relation is not None:
        return "relation"
    return "single" if len(spec.objects) == 1 else "objects"


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


# --------------------------------------------------------------------------------------------
# Caption writing
# --------------------------------------------------------------------------------------------
def _describe(obj: SceneObject, names: Sequence[str]) -> ObjectDescription:
    return ObjectDescription(**{name: getattr(obj, name) for name in names})


def _matches(desc: ObjectDescription, scene: Scene) -> int:
    return sum(desc.matches(o) for o in scene.objects)


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


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


# --------------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------------
def choose_heldout_pairs(num: int, seed: int) -> frozenset[tuple[str, str]]:
    """``num`` (colour, shape) pairs, spread so every colour and shape keeps a training partner.

    Pairs with a fresh colour and a fresh shape are taken first, so each held-out pair's colour
    and shape are both seen in training (with other partners): a test of composition.
    """
    colours, shapes = list(COLOURS), list(SHAPES)
    if not 0 <= num <= len(colours) * (len(shapes) - 1):
        raise ValueError(f"heldout_pairs must be in [0, {len(colours) * (len(shapes) - 1)}], got {num}")
    rng = np.random.default_rng([seed, _STREAM_HELDOUT])
    pool = [(colours[c], shapes[s]) for c in rng.permutation(len(colours)) for s in rng.permutation(len(shapes))]
    pool = [pool[int(k)] for k in rng.permutation(len(pool))]
    chosen: list[tuple[str, str]] = []
    for fresh in (True, False):
        for pair in pool:
            if len(chosen) < num and pair not in chosen and _can_hold_out(pair, chosen, fresh):
                chosen.append(pair)
    return frozenset(chosen)


def _can_hold_out(pair: tuple[str, str], chosen: list[tuple[str, str]], fresh: bool) -> bool:
    colour, shape = pair
    if fresh:
        return all(colour != c and shape != s for c, s in chosen)
    shapes_left = len(SHAPES) - 1 - sum(c == colour for c, _ in chosen)
    colours_left = len(COLOURS) - 1 - sum(s == shape for _, s in chosen)
    return shapes_left >= 1 and colours_left >= 1


def _place(objs: list[dict], rng: np.random.Generator, tries: int = 300) -> list[dict]:
    """Rejection-sample centres so boxes stay inside the image and apart; large objects first.

    An object that cannot be placed is shrunk to small, then dropped (never happens at <= 4).
    """
    placed: list[SceneObject] = []
    out: list[dict] = []
    for spec in sorted(objs, key=lambda o: -o["radius"]):
        obj = _try_place(spec, placed, rng, tries)
        if obj is None and spec["size"] == "large":
            spec = dict(spec, size="small", radius=spec["radius"] * SMALL_RADIUS / LARGE_RADIUS)
            obj = _try_place(spec, placed, rng, tries)
        if obj is not None:
            placed.append(obj)
            out.append(dict(spec, obj=obj))
    return sorted(out, key=lambda o: o["order"])


def _try_place(spec: dict, placed: list[SceneObject], rng: np.random.Generator, tries: int) -> SceneObject | None:
    hx, hy = _HALF_EXTENTS[spec["shape"]]
    r = spec["radius"]
    lo_x, lo_y = hx * r + EDGE_GAP, hy * r + EDGE_GAP
    for _ in range(tries):
        x, y = float(rng.uniform(lo_x, 1 - lo_x)), float(rng.uniform(lo_y, 1 - lo_y))
        obj = SceneObject(**{name: spec[name] for name in ATTRIBUTES}, x=x, y=y, radius=r)
        if all(_apart(obj, other) for other in placed):
            return obj
    return None


def _apart(a: SceneObject, b: SceneObject) -> bool:
    """Boxes separated by at least PLACEMENT_GAP along x or along y."""
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax0 >= bx1 + PLACEMENT_GAP or bx0 >= ax1 + PLACEMENT_GAP or ay0 >= by1 + PLACEMENT_GAP or by0 >= ay1 + PLACEMENT_GAP


class SyntheticWorld:
    """The scene world of one :class:`WorldConfig`: scenes, captions, pictures and probes."""

    def __init__(self, cfg: WorldConfig) -> None:
        if not 1 <= cfg.min_objects <= cfg.max_objects <= MAX_OBJECTS:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {cfg.min_objects}, {cfg.max_objects}")
        if cfg.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {cfg.image_size}")
        if cfg.captions_per_scene < 1:
            raise ValueError(f"captions_per_scene must be >= 1, got {cfg.captions_per_scene}")
        self.cfg = cfg
        self.seed = int(cfg.seed) % (2**63)
        self.heldout_pairs: frozenset[tuple[str, str]] = choose_heldout_pairs(cfg.heldout_pairs, self.seed)
        all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
        self._seen_pairs = [p for p in all_pairs if p not in self.heldout_pairs]
        self._all_pairs = all_pairs
        self._scenes: dict[str, list[Scene]] = {}
        self._captions: dict[Scene, list[Caption]] = {}

    def num_scenes(self, split: str) -> int:
        """Scenes in a split; "heldout" has as many as "test" (none when no pair is held out)."""
        sizes = {"train": self.cfg.train_scenes, "val": self.cfg.val_scenes, "test": self.cfg.test_scenes,
                 "heldout": self.cfg.test_scenes if self.heldout_pairs else 0}
        if split not in sizes:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        return sizes[split]

    def scenes(self, split: str) -> list[Scene]:
        """All scenes of a split (cached; scene i never depends on the others)."""
        if split not in self._scenes:
            self._scenes[split] = [self.scene(split, i) for i in range(self.num_scenes(split))]
        return self._scenes[split]

    def scene(self, split: str, index: int) -> Scene:
        """Scene ``index`` of ``split``, drawn from its own generator (seed, split, index)."""
        if split not in _SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        if split == "heldout" and not self.heldout_pairs:
            raise ValueError("the heldout split is empty: cfg.heldout_pairs is 0")
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[split], int(index)])
        count = int(rng.integers(self.cfg.min_objects, self.cfg.max_objects + 1))
        forced = int(rng.integers(count)) if split == "heldout" else -1
        held = sorted(self.heldout_pairs)
        objs = [self._sample_object(k, rng, _pick(rng, held) if k == forced else None, split) for k in range(count)]
        placed = _place(objs, rng)
        if len(placed) < self.cfg.min_objects:
            raise RuntimeError(f"could not place {count} objects in scene {split}-{index}")
        return Scene(f"{split}-{index:06d}", split, tuple(o["obj"] for o in placed))

    def _sample_object(self, order: int, rng: np.random.Generator, pair: tuple[str, str] | None, split: str) -> dict:
        """Attributes of one object; held-out pairs only in the heldout split."""
        if pair is None:
            pair = _pick(rng, self._all_pairs if split == "heldout" else self._seen_pairs)
        size = _pick(rng, SIZES)
        base = LARGE_RADIUS if size == "large" else SMALL_RADIUS
        radius = base * float(rng.uniform(1 - RADIUS_JITTER, 1 + RADIUS_JITTER))
        return {"order": order, "colour": pair[0], "shape": pair[1], "size": size,
                "material": _pick(rng, MATERIALS), "radius": radius}

    def _scene_rng(self, stream: int, scene: Scene) -> np.random.Generator:
        """A generator for one purpose and one scene, stable across processes (crc32, not hash)."""
        return np.random.default_rng([self.seed, stream, zlib.crc32(scene.scene_id.encode("utf-8"))])

    def captions(self, scene: Scene) -> list[Caption]:
        """``captions_per_scene`` true captions, differently worded and (when possible) different in content."""
        if scene not in self._captions:
            rng = self._scene_rng(_STREAM_CAPTIONS, scene)
            self._captions[scene] = write_captions(scene, self.cfg.captions_per_scene, rng)
        return list(self._captions[scene])

    def render(self, scene: Scene) -> np.ndarray:
        """uint8 [image_size, image_size, 3], the same pixels every time."""
        return render_scene(scene, self.cfg.image_size, self._scene_rng(_STREAM_RENDER, scene))

    def binding_probes(self, scene: Scene) -> list[BindingProbe]:
        """A colour-swap and a relation probe when the scene allows them (>= 2 objects)."""
        if len(scene.objects) < 2:
            return []
        rng = self._scene_rng(_STREAM_PROBES, scene)
        probes = [_colour_swap_probe(scene, rng), _relation_probe(scene, rng)]
        return [p for p in probes if p is not None]


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def export_albef_json(world: SyntheticWorld, split: str, out_dir: str | Path, limit: int | None = None) -> tuple[Path, Path]:
    """Write a split as images plus ALBEF ``pretrain.json`` and Karpathy-style ``test.json``.

    pretrain.json: ``[{"image": "images/<id>.png", "caption": str}]``, one entry per caption.
    test.json: ``[{"image": "images/<id>.png", "caption": [str, ...]}]``, one entry per image.
    Image paths are relative to ``out_dir``. Returns ``(pretrain_json, test_json)``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    total = world.num_scenes(split)
    scenes = [world.scene(split, i) for i in range(total if limit is None else min(limit, total))]
    pretrain: list[dict[str, str]] = []
    test: list[dict[str, Any]] = []
    for scene in scenes:
        rel = f"images/{scene.scene_id}.png"
        _atomic_write_bytes(out / rel, _png_bytes(world.render(scene)))
        texts = [c.text for c in world.captions(scene)]
        pretrain.extend({"image": rel, "caption": t} for t in texts)
        test.append({"image": rel, "caption": texts})
    pretrain_path, test_path = out / "pretrain.json", out / "test.json"
    _atomic_write_bytes(pretrain_path, json.dumps(pretrain, indent=1).encode("utf-8"))
    _atomic_write_bytes(test_path, json.dumps(test, indent=1).encode("utf-8"))
    return pretrain_path, test_path
