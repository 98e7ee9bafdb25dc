"""What a caption claims and whether it is true of a scene: specs, :func:`holds`, :func:`truth_matrix`.

:func:`holds` is the single definition of truth; :func:`truth_matrix` is the same answer vectorised
over many scenes, for semantic retrieval ground truth.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from maskvlp.data.synthetic.scenes import Scene, SceneObject
from maskvlp.data.synthetic.vocabulary import ATTRIBUTES, RELATION_MARGIN, RELATIONS


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
