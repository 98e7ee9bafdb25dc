"""Referring expressions for weakly-supervised visual grounding (the world's RefCOCO+).

A referring expression names one object of a scene so that a model must find *its* box; the
world can check that exactly one object fits, which real data cannot. Grammar (noun phrases in
the captions' word order, :func:`text._words`)::

    NP         := [size] [colour] [material] shape            "small red metal circle"
    attributes := ["the"] NP ["in the picture"]               "the small red circle"
    relation   := ["the"] NP1 ["that is"] REL "the" NP2       "the red circle to the left of the square"
    REL        := "left of" | "to the left of" | "right of" | "to the right of" | "above" | "below"

Meaning (:func:`referents`, the single definition of truth): NP picks the objects it matches;
"NP1 REL NP2" picks the objects matching NP1 for which some *other* object matching NP2 stands in
REL (:func:`relation_holds`, the captions' relation with its RELATION_MARGIN). An expression is
valid when it picks exactly its target.

Choice (:func:`write_referring`): an attribute NP has the fewest words that make it unique (the
shape is always the head noun; ties drawn at random). A relational one has NP1 = the target's
shape or colour and shape, NP2 = the shape or a shortest unique NP of another object, and is only
written when NP1 alone is ambiguous, so in a "relation" expression the relation does the picking
(as ``GroundingExample.kind`` means); it is chosen with probability RELATION_SHARE when one exists.

Confuser rule: an expression is ``confused`` when another object shares the target's shape or its
colour; grounding scenes (``SyntheticWorld.grounding_scene``) always hold another object of the
target's shape (as RefCOCO+ images hold several objects of the referred category), so the category
word never picks the box alone.

Candidate boxes (:func:`candidate_boxes`) stand in for a detector's: every object's tight box plus
shifted copies and random object-sized boxes, so a heat map must be on the right object, not near it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from maskvlp.data.synthetic.captions import _describe
from maskvlp.data.synthetic.scenes import Scene, SceneObject, _pick
from maskvlp.data.synthetic.text import _REL_PHRASE, _words
from maskvlp.data.synthetic.truth import ObjectDescription, relation_holds
from maskvlp.data.synthetic.vocabulary import (
    _HALF_EXTENTS,
    ATTRIBUTES,
    LARGE_RADIUS,
    RADIUS_JITTER,
    RELATIONS,
    SHAPES,
    SMALL_RADIUS,
)
from maskvlp.data.tasks.boxes import iou
from maskvlp.data.tasks.examples import Box

RELATION_SHARE = 0.4  # chance of a relational expression when one is valid
SHIFT = 0.75  # a shifted distractor moves by this fraction of the box's width or height
MAX_DISTRACTOR_IOU = 0.5  # a distractor box never counts as a hit (ALBEF scores IoU >= 0.5)
_MODIFIERS = tuple(name for name in ATTRIBUTES if name != "shape")
_ATTRIBUTE_TEMPLATES = ("the {np}", "{np}", "the {np} in the picture")
_RELATION_TEMPLATES = ("the {np} {rel} the {ground}", "{np} {rel} the {ground}", "the {np} that is {rel} the {ground}")


@dataclass(frozen=True)
class ReferringExpression:
    """An expression's text, the object it picks, and the spec its truth is checked from."""

    text: str
    target: int  # index into scene.objects
    kind: str  # "attributes" | "relation"
    confused: bool  # another object shares the target's shape or colour
    desc: ObjectDescription  # NP (attributes) or NP1 (relation)
    relation: tuple[str, ObjectDescription] | None = None  # (REL, NP2)


def referents(desc: ObjectDescription, scene: Scene, relation: tuple[str, ObjectDescription] | None = None) -> list[int]:
    """Indices of the objects the spec picks (see the module docstring)."""
    picked = [i for i, obj in enumerate(scene.objects) if desc.matches(obj)]
    if relation is None:
        return picked
    predicate, ground = relation
    return [i for i in picked if any(j != i and ground.matches(other) and relation_holds(predicate, scene.objects[i], other)
                                     for j, other in enumerate(scene.objects))]


def confusers(scene: Scene, target: int) -> list[int]:
    """The other objects sharing the target's shape or colour."""
    t = scene.objects[target]
    return [j for j, o in enumerate(scene.objects) if j != target and (o.shape == t.shape or o.colour == t.colour)]


def _attribute_options(scene: Scene, target: int) -> list[ObjectDescription]:
    """All shortest unique descriptions of the target (shape plus as few modifiers as possible)."""
    obj = scene.objects[target]
    for k in range(len(_MODIFIERS) + 1):
        descs = [_describe(obj, names + ("shape",)) for names in itertools.combinations(_MODIFIERS, k)]
        unique = [d for d in descs if referents(d, scene) == [target]]
        if unique:
            return unique
    return []


def _relation_options(scene: Scene, target: int) -> list[tuple[ObjectDescription, str, ObjectDescription]]:
    """Valid (NP1, REL, NP2) specs where NP1 alone is ambiguous, so the relation does the picking."""
    obj = scene.objects[target]
    heads = [d for d in (_describe(obj, ("shape",)), _describe(obj, ("colour", "shape"))) if len(referents(d, scene)) > 1]
    valid = []
    for j, other in enumerate(scene.objects):
        if j == target or not heads:
            continue
        grounds = list(dict.fromkeys([_describe(other, ("shape",))] + _attribute_options(scene, j)))
        for predicate in RELATIONS:
            if relation_holds(predicate, obj, other):
                valid += [(d1, predicate, d2) for d1 in heads for d2 in grounds
                          if referents(d1, scene, (predicate, d2)) == [target]]
    return valid


def referable(scene: Scene, target: int) -> bool:
    """Whether any valid expression picks the target (no random draws)."""
    return bool(_attribute_options(scene, target) or _relation_options(scene, target))


def write_referring(scene: Scene, target: int, rng: np.random.Generator) -> ReferringExpression | None:
    """A valid expression for ``scene.objects[target]``, or None when none exists (e.g. twins)."""
    attributes, relations = _attribute_options(scene, target), _relation_options(scene, target)
    if not attributes and not relations:
        return None
    confused = bool(confusers(scene, target))
    if relations and (not attributes or rng.random() < RELATION_SHARE):
        desc, predicate, ground = _pick(rng, relations)
        rel = _pick(rng, (predicate, _REL_PHRASE[predicate]))
        text = _pick(rng, _RELATION_TEMPLATES).format(np=_words(desc), rel=rel, ground=_words(ground))
        return ReferringExpression(text, target, "relation", confused, desc, (predicate, ground))
    desc = _pick(rng, attributes)
    text = _pick(rng, _ATTRIBUTE_TEMPLATES).format(np=_words(desc))
    return ReferringExpression(text, target, "attributes", confused, desc)


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------
def _clipped(x0: float, y0: float, x1: float, y1: float, image_size: int) -> Box:
    """COCO [x, y, w, h] of corners clipped to the image, rounded to 1/100 px (stable in JSON)."""
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(image_size), x1), min(float(image_size), y1)
    return (round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2))


def object_box(obj: SceneObject, image_size: int) -> Box:
    """The object's tight box in pixels of an ``image_size`` picture (the ground truth)."""
    x0, y0, x1, y1 = obj.bbox
    return _clipped(x0 * image_size, y0 * image_size, x1 * image_size, y1 * image_size, image_size)


def _shifted(box: Box, image_size: int, rng: np.random.Generator) -> Box:
    """The box moved by SHIFT of its width or height (a direction that stays inside when one does)."""
    x, y, w, h = box
    moves = [(-SHIFT * w, 0.0), (SHIFT * w, 0.0), (0.0, -SHIFT * h), (0.0, SHIFT * h)]
    inside = [(dx, dy) for dx, dy in moves
              if 0 <= x + dx and x + dx + w <= image_size and 0 <= y + dy and y + dy + h <= image_size]
    dx, dy = _pick(rng, inside or moves)
    out = _clipped(x + dx, y + dy, x + dx + w, y + dy + h, image_size)
    assert iou(out, box) < MAX_DISTRACTOR_IOU, (box, out)
    return out


def _random_box(truths: list[Box], image_size: int, rng: np.random.Generator, tries: int = 20) -> Box | None:
    """A box the size of some object at a random place, overlapping no object's box by half."""
    for _ in range(tries):
        hx, hy = _HALF_EXTENTS[_pick(rng, SHAPES)]
        r = float(rng.uniform(SMALL_RADIUS * (1 - RADIUS_JITTER), LARGE_RADIUS * (1 + RADIUS_JITTER))) * image_size
        w, h = 2 * hx * r, 2 * hy * r
        x, y = float(rng.uniform(0, image_size - w)), float(rng.uniform(0, image_size - h))
        box = _clipped(x, y, x + w, y + h, image_size)
        if all(iou(box, t) < MAX_DISTRACTOR_IOU for t in truths):
            return box
    return None


def candidate_boxes(scene: Scene, image_size: int, rng: np.random.Generator, target: int = 0) -> tuple[Box, ...]:
    """Every object's box, shifted copies of the target's and one other object's, and 2-3 random
    object-sized boxes, in random order (the index says nothing)."""
    truths = [object_box(o, image_size) for o in scene.objects]
    others = [j for j in range(len(truths)) if j != target]
    shifted = [target] + ([_pick(rng, others)] if others else [])
    boxes = truths + [_shifted(truths[j], image_size, rng) for j in shifted]
    randoms = [_random_box(truths, image_size, rng) for _ in range(2 + int(rng.integers(2)))]
    boxes += [b for b in randoms if b is not None]
    return tuple(boxes[int(k)] for k in rng.permutation(len(boxes)))
