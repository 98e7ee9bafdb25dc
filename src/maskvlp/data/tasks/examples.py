"""Downstream task examples (VQA, NLVR2), one record per question or sentence, as the readers return them.

The file readers and the synthetic world both produce these records, so training, evaluation and
the metrics never care where an example came from.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VqaExample:
    """One question about one image with its human answers (none for a test file)."""

    question_id: int  # unique within a file / split
    image: str | int  # a file path (already joined to the image root) or, for the synthetic world, a scene index
    question: str
    answers: tuple[str, ...]  # the human answers (10 in VQA v2); empty when a test file carries none
    answer_type: str = ""  # VQA v2: "yes/no" | "number" | "other"; the world uses the same three
    # VQA v2's question_type string; the world's: "colour", "shape", "size", "material", "count",
    # "exist", "relation", "compositional"
    question_type: str = ""
    heldout: bool = False  # synthetic: the question is about / its answer involves a held-out colour-shape pair


@dataclass(frozen=True)
class Nlvr2Example:
    """One sentence about a pair of images and whether it is true of them."""

    identifier: str  # NLVR2 style "{split}-{set}-{pair}-{sentence}"
    sentence: str
    label: bool
    left: str | int  # a file path, or a scene index (synthetic)
    right: str | int
    heldout: bool = False  # synthetic: the sentence concerns a held-out colour-shape pair
