"""NLVR2-style statements about a pair of scenes, labelled from the scene graphs and balanced per wording.

A statement keeps the structured :class:`PairClaim` it was written from and its label is
:func:`pair_label` of that claim (built on :func:`holds`). The label is decided by a coin flip
before the statement is drawn, so labels are balanced. Within a kind, every claim is enumerated and
one with the wanted label is drawn with probability proportional to its draw weight times a keep
probability that makes it true half the time given the two scenes' object counts (the balancing
of :mod:`.questions`), so the sentence alone predicts nothing. Relations have no exact prior; theirs
treats object pairs as independent, each related with probability :data:`_RELATION_RATE`.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from maskvlp.data.synthetic.questions import (
    _NUMBER_WORDS,
    HeldoutPairs,
    _count_prior,
    _descriptions,
    _draw_index,
    _indefinite,
    _keep_table,
    _names_pair,
    _match_matrix,
    _match_probabilities,
    _plural,
    _touches_heldout,
)
from maskvlp.data.synthetic.scenes import Scene, SceneObject, _pick
from maskvlp.data.synthetic.text import _REL_PHRASE, _words
from maskvlp.data.synthetic.truth import CaptionSpec, ObjectDescription, holds, relation_holds
from maskvlp.data.synthetic.vocabulary import MAX_OBJECTS, RELATIONS

STATEMENT_KINDS = ("both", "exactly_one", "only", "compare", "compare_objects", "total", "relation")
SIDES = ("left", "right")
# P(a given relation holds between two objects of a scene): 0.414-0.419 for 2-4 objects, measured
# on 3,000 train scenes of the default world (it only sets the relation kind's prior).
_RELATION_RATE = 0.415


@dataclass(frozen=True)
class PairClaim:
    """What a statement says about a (left, right) pair, structured so its label can be recomputed.

    Per image, ``about`` is either tested, ``holds(about, image)`` (ops "both", "exactly_one",
    "only": ``side`` has it and the other does not, "in": ``side`` has it), or counted, the objects
    matching ``about.objects[0]`` (ops "more" / "fewer": ``side`` has more / fewer than the other,
    "same", "total": the two counts add up to ``number``).
    """

    op: str
    about: CaptionSpec
    side: str = "left"
    number: int = 0


@dataclass(frozen=True)
class Statement:
    """A sentence about a pair of scenes, its truth, its kind and the claim it was written from."""

    text: str
    label: bool
    heldout: bool  # the claim names a held-out colour-shape pair, or an object its descriptions match is one
    kind: str  # one of STATEMENT_KINDS
    claim: PairClaim


def _count(desc: ObjectDescription, scene: Scene) -> int:
    return sum(desc.matches(o) for o in scene.objects)


def pair_label(claim: PairClaim, left: Scene, right: Scene) -> bool:
    """Whether ``claim`` is true of the pair (the single definition the labels come from)."""
    this, other = (left, right) if claim.side == "left" else (right, left)
    if claim.op in ("both", "exactly_one", "only", "in"):
        a, b = holds(claim.about, this), holds(claim.about, other)
        return {"both": a and b, "exactly_one": a != b, "only": a and not b, "in": a}[claim.op]
    desc = claim.about.objects[0]
    a, b = _count(desc, this), _count(desc, other)
    if claim.op in ("more", "fewer", "same"):
        return {"more": a > b, "fewer": a < b, "same": a == b}[claim.op]
    if claim.op == "total":
        return a + b == claim.number
    raise ValueError(f"unknown claim op {claim.op!r}")


# --------------------------------------------------------------------------------------------
# Priors of a claim per (left, right) object counts
# --------------------------------------------------------------------------------------------
_Pairs = frozenset[tuple[str, str]]


def _has_prior(about: CaptionSpec, forced: bool, pairs: _Pairs) -> np.ndarray:
    """float [MAX_OBJECTS]: P(holds(about, scene)) for scenes of 1..MAX_OBJECTS objects; for a
    relation spec, approximate (object pairs independent, each related with :data:`_RELATION_RATE`)."""
    if about.relation is None:
        return 1.0 - _count_prior(about.objects[0], forced, pairs)[:, 0]
    n = np.arange(1, MAX_OBJECTS + 1)
    mean_match = []
    for desc in about.objects:
        first, other = _match_probabilities(desc, forced, pairs)
        mean_match.append((first + (n - 1) * other) / n)
    return 1.0 - (1.0 - mean_match[0] * mean_match[1] * _RELATION_RATE) ** (n * (n - 1))


def _claim_prior(claim: PairClaim, forced: tuple[bool, bool], pairs: _Pairs) -> np.ndarray:
    """float [MAX_OBJECTS, MAX_OBJECTS]: P(claim is true) for (left, right) scenes of (i + 1, j + 1)
    objects, drawn as the world draws them."""
    this, other = forced if claim.side == "left" else forced[::-1]
    if claim.op in ("more", "fewer", "total"):
        desc = claim.about.objects[0]
        i, j = np.indices((MAX_OBJECTS + 1, MAX_OBJECTS + 1))  # this image's count, the other's
        link = {"more": i > j, "fewer": i < j, "total": i + j == claim.number}[claim.op]
        prior = _count_prior(desc, this, pairs) @ link.astype(float) @ _count_prior(desc, other, pairs).T
    else:
        a, b = _has_prior(claim.about, this, pairs)[:, None], _has_prior(claim.about, other, pairs)[None, :]
        ops = {"both": lambda: a * b, "exactly_one": lambda: a * (1 - b) + (1 - a) * b,
               "only": lambda: a * (1 - b), "in": lambda: a + 0 * b}
        if claim.op not in ops:
            raise ValueError(f"no prior for claim op {claim.op!r}")
        prior = ops[claim.op]()
    return prior if claim.side == "left" else prior.T  # indexed [this, other] -> [left, right]


def _claim_keep(claim: PairClaim, forced: tuple[bool, bool], pairs: _Pairs) -> np.ndarray:
    """Keep probabilities of a claim (answer 0 = false, 1 = true), row ``(n_left - 1) *
    MAX_OBJECTS + n_right - 1`` for the pair's object counts."""
    prior = _claim_prior(claim, forced, pairs).reshape(-1)
    return _keep_table(np.stack([1.0 - prior, prior], axis=1), 2)


# --------------------------------------------------------------------------------------------
# Wording
# --------------------------------------------------------------------------------------------
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "both": ("both images contain {a}", "there is {a} in both images", "each image shows {a}"),
    "exactly_one": ("exactly one image contains {a}", "{a} appears in exactly one of the images",
                    "only one of the two images has {a}"),
    "only": ("the {s} image contains {a} and the {o} image does not", "{a} is in the {s} image but not in the {o} image",
             "the {s} image has {a}, the {o} image does not"),
    "more": ("the {s} image has more {ds} than the {o} image", "there are more {ds} in the {s} image than in the {o} image",
             "the {s} image contains more {ds} than the {o} one"),
    "fewer": ("the {s} image has fewer {ds} than the {o} image", "there are fewer {ds} in the {s} image than in the {o} image",
              "the {s} image contains fewer {ds} than the {o} one"),
    "same": ("both images contain the same number of {ds}", "the two images show equally many {ds}",
             "there are as many {ds} in the left image as in the right image"),
    "total": ("there {be} exactly {k} {n} in total", "the two images contain exactly {k} {n} altogether",
              "in total the images show exactly {k} {n}"),
    "relation_both": ("in both images {a} is {rel} {b}", "each image shows {a} {rel} {b}", "both images have {a} {rel} {b}"),
    "relation_in": ("in the {s} image {a} is {rel} {b}", "the {s} image shows {a} {rel} {b}", "the {s} image has {a} {rel} {b}"),
}


def _text(claim: PairClaim, rng: np.random.Generator) -> str:
    """One of the claim's wordings, at random."""
    descs = claim.about.objects
    side, other = claim.side, "right" if claim.side == "left" else "left"
    if claim.about.relation is not None:
        rel = _REL_PHRASE[claim.about.relation[1]]
        template = _pick(rng, _TEMPLATES["relation_both" if claim.op == "both" else "relation_in"])
        return template.format(a=_indefinite(descs[0]), rel=rel, b=_indefinite(descs[1]), s=side)
    template = _pick(rng, _TEMPLATES[claim.op])
    k = claim.number
    return template.format(a=_indefinite(descs[0]), ds=_plural(descs[0]), s=side, o=other, be="is" if k == 1 else "are",
                           k=_NUMBER_WORDS[k], n=_words(descs[0]) if k == 1 else _plural(descs[0]))


# --------------------------------------------------------------------------------------------
# Every claim of a kind, and all their labels at once
# --------------------------------------------------------------------------------------------
_CLASSES: tuple[tuple[str, ...], ...] = (
    ("shape",), ("colour",), ("colour", "shape"), ("size", "shape"), ("material", "shape"),
)
_COUNT_CLASSES: tuple[tuple[str, ...], ...] = (("shape",), ("colour",), ("size",), ("material",), ("size", "shape"))
_RELATION_CLASSES: tuple[tuple[str, ...], ...] = (("shape",), ("colour",), ("size",), ("material",))
_TOTALS = (1, 2, 3, 4)


@dataclass(frozen=True)
class _Family:
    """Every claim of one kind in a fixed order with its draw probability, and the indices that
    let :func:`_labels` compute all their labels for a pair at once."""

    claims: tuple[PairClaim, ...]
    weights: np.ndarray  # [C]
    descs: tuple[ObjectDescription, ...]  # what the claims test or count
    first: np.ndarray  # [C] index into descs
    second: np.ndarray  # [C] index into descs of a relation's second object, else 0
    relation: np.ndarray  # [C] index into RELATIONS, -1 for no relation
    left: np.ndarray  # [C] bool: claim.side == "left"
    op: np.ndarray  # [C] claim.op
    number: np.ndarray  # [C] claim.number


@functools.lru_cache(maxsize=None)
def _family(kind: str) -> _Family:
    """The claims a kind can make: each a choice of description(s), op, side and number, uniformly."""
    classes = {"compare": _COUNT_CLASSES, "total": _COUNT_CLASSES, "relation": _RELATION_CLASSES}.get(kind, _CLASSES)
    descs, draw = _descriptions(classes)
    rows: list[tuple[PairClaim, float, int, int, int]] = []  # claim, weight, first, second, relation
    for d, (desc, w) in enumerate(zip(descs, draw)):
        about = CaptionSpec((desc,))
        if kind in ("both", "exactly_one"):
            rows.append((PairClaim(kind, about), w, d, 0, -1))
        elif kind == "only":
            rows.extend((PairClaim("only", about, side), w / 2, d, 0, -1) for side in SIDES)
        elif kind == "compare":
            rows.extend((PairClaim(op, about, side), w / 4, d, 0, -1) for op in ("more", "fewer") for side in SIDES)
        elif kind == "total":
            rows.extend((PairClaim("total", about, number=k), w / len(_TOTALS), d, 0, -1) for k in _TOTALS)
        elif kind == "relation":
            for (e, (other, v)), (r, predicate) in itertools.product(enumerate(zip(descs, draw)), enumerate(RELATIONS)):
                spec = CaptionSpec((desc, other), relation=(0, predicate, 1))
                base = w * v / len(RELATIONS)
                rows.append((PairClaim("both", spec), base / 2, d, e, r))
                rows.extend((PairClaim("in", spec, side), base / 4, d, e, r) for side in SIDES)
        else:
            raise ValueError(f"no claim family for kind {kind!r}")
    claims = tuple(row[0] for row in rows)
    return _Family(claims, np.array([row[1] for row in rows]), descs,
                   np.array([row[2] for row in rows]), np.array([row[3] for row in rows]),
                   np.array([row[4] for row in rows]), np.array([c.side == "left" for c in claims]),
                   np.array([c.op for c in claims]), np.array([c.number for c in claims]))


def _per_image(family: _Family, scene: Scene) -> np.ndarray:
    """int [C]: per claim, what it tests or counts in ``scene``: matching objects, or for a relation
    spec 1 / 0 for whether ``holds`` (distinct objects, ``relation_holds`` on the pair)."""
    match = _match_matrix(family.descs, scene).astype(float)
    if not (family.relation >= 0).any():
        return match.sum(axis=1).astype(int)[family.first]
    objs = scene.objects
    related = np.array([[[float(i != j and relation_holds(p, a, b)) for j, b in enumerate(objs)] for i, a in enumerate(objs)]
                        for p in RELATIONS])
    exists = np.einsum("ai,pij,bj->pab", match, related.reshape(len(RELATIONS), len(objs), len(objs)), match) > 0
    return exists[family.relation, family.first, family.second].astype(int)


_OPS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "both": lambda a, b, k: (a > 0) & (b > 0),
    "exactly_one": lambda a, b, k: (a > 0) != (b > 0),
    "only": lambda a, b, k: (a > 0) & (b == 0),
    "in": lambda a, b, k: a > 0,
    "more": lambda a, b, k: a > b,
    "fewer": lambda a, b, k: a < b,
    "total": lambda a, b, k: a + b == k,
}


def _labels(family: _Family, left: Scene, right: Scene) -> np.ndarray:
    """bool [C]: :func:`pair_label` of every claim of the family, vectorised (tests check they agree)."""
    on_left, on_right = _per_image(family, left), _per_image(family, right)
    this, other = np.where(family.left, on_left, on_right), np.where(family.left, on_right, on_left)
    out = np.zeros(len(family.claims), dtype=bool)
    for op, fn in _OPS.items():
        rows = family.op == op
        out[rows] = fn(this[rows], other[rows], family.number[rows])
    return out


@functools.lru_cache(maxsize=None)
def _family_keep(kind: str, forced: tuple[bool, bool], pairs: _Pairs) -> np.ndarray:
    """float [C, MAX_OBJECTS**2, 2]: every claim's keep probabilities (:func:`_claim_keep`)."""
    return np.stack([_claim_keep(claim, forced, pairs) for claim in _family(kind).claims])


@functools.lru_cache(maxsize=None)
def _family_names_heldout(kind: str, pairs: _Pairs) -> np.ndarray:
    """bool [C]: claims naming a held-out pair."""
    return np.array([any(_names_pair(d, pairs) for d in c.about.objects) for c in _family(kind).claims], dtype=bool)


# --------------------------------------------------------------------------------------------
# Statement writing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pair:
    """The two scenes and what the balancing needs to know about their splits."""

    left: Scene
    right: Scene
    pairs: _Pairs

    @property
    def forced(self) -> tuple[bool, bool]:
        return (self.left.split == "heldout" and bool(self.pairs), self.right.split == "heldout" and bool(self.pairs))

    @property
    def condition(self) -> int:
        """Row of a claim's keep table; -1 for hand-built scenes outside 1..MAX_OBJECTS objects."""
        n_left, n_right = len(self.left.objects), len(self.right.objects)
        inside = 1 <= min(n_left, n_right) and max(n_left, n_right) <= MAX_OBJECTS
        return (n_left - 1) * MAX_OBJECTS + n_right - 1 if inside else -1

    def statement(self, claim: PairClaim, kind: str, want: bool, rng: np.random.Generator) -> Statement:
        """The statement of ``claim``; its label is recomputed with :func:`pair_label`."""
        label = pair_label(claim, self.left, self.right)
        if label != want:
            raise RuntimeError(f"the vectorised label of {claim} disagrees with pair_label")
        matched: list[SceneObject] = [o for s in (self.left, self.right) for o in s.objects
                                      if any(d.matches(o) for d in claim.about.objects)]
        heldout = _touches_heldout(matched, claim.about.objects, self.pairs)
        return Statement(_text(claim, rng), label, heldout, kind, claim)


def _draw(kind: str, pair: _Pair, want: bool, rng: np.random.Generator) -> PairClaim | None:
    """A claim of ``kind`` with label ``want``, drawn with probability proportional to its draw
    weight times its keep probability (what drawing and keeping until one is kept would give).

    None unless the kind could also say something with the other label: a kind used only where it
    can say both stays balanced however often it can only say one of them.
    """
    family = _family(kind)
    if pair.condition < 0:
        return None
    weights = family.weights.copy()
    if not all(pair.forced):  # held-out pairs are named only between heldout scenes
        weights[_family_names_heldout(kind, pair.pairs)] = 0.0
    labels = _labels(family, pair.left, pair.right)
    keep = _family_keep(kind, pair.forced, pair.pairs)[:, pair.condition, :]
    wanted = np.where(labels == want, weights * keep[:, int(want)], 0.0)
    unwanted = np.where(labels != want, weights * keep[:, int(not want)], 0.0)
    if unwanted.sum() <= 0:
        return None
    index = _draw_index(wanted, rng)
    return None if index is None else family.claims[index]


def _compare_objects(pair: _Pair, want: bool, rng: np.random.Generator) -> Statement:
    """More / fewer / as many objects: the label is fixed by the object counts, which no prior over
    wordings can hide, so the wording is picked uniformly among those with the wanted label. With
    1-4 objects per scene (ties 1 in 4) each wording is then true exactly half the time."""
    everything = CaptionSpec((ObjectDescription(),))
    claims = [PairClaim(op, everything, side) for op in ("more", "fewer") for side in SIDES] + [PairClaim("same", everything)]
    fitting = [c for c in claims if pair_label(c, pair.left, pair.right) == want]
    return pair.statement(_pick(rng, fitting), "compare_objects", want, rng)


def write_statement(left: Scene, right: Scene, rng: np.random.Generator, heldout_pairs: HeldoutPairs) -> Statement:
    """A statement about the pair, true or false with probability 1/2 each; its kind is drawn at
    random, passing to another kind when one cannot say both something true and something false
    of this pair ("compare_objects" always can).

    ``heldout_pairs`` are the world's: they set the ``heldout`` flag, are named only when both
    scenes come from the heldout split, and shape the priors the balancing uses.
    """
    pair = _Pair(left, right, frozenset(heldout_pairs))
    want = bool(rng.random() < 0.5)
    order = [STATEMENT_KINDS[int(k)] for k in rng.permutation(len(STATEMENT_KINDS))]
    for kind in order[: order.index("compare_objects")]:
        claim = _draw(kind, pair, want, rng)
        if claim is not None:
            return pair.statement(claim, kind, want, rng)
    return _compare_objects(pair, want, rng)
