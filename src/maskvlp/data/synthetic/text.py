"""Caption wording: turn a :class:`CaptionSpec` into English in one of :data:`NUM_STYLES` styles.

Text is a pure function of (spec, style), so the same content can be written in several ways and a
probe's true and false captions can share one wording.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from maskvlp.data.synthetic.truth import CaptionSpec, ObjectDescription
from maskvlp.data.synthetic.vocabulary import ATTRIBUTES


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
