"""Downstream task examples (VQA, NLVR2, grounding, video captions), one record per question, sentence,
expression or caption, as the readers return them.

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


Box = tuple[float, float, float, float]  # COCO's [x, y, width, height], in pixels of the original image


@dataclass(frozen=True)
class GroundingExample:
    """One referring expression, the box of the object it refers to, and the candidate boxes to choose from."""

    ref_id: int  # unique within a file / split (RefCOCO+'s ref_id)
    image: str | int  # a file path, or for the synthetic world the index of a grounding scene of ``split``
    text: str
    box: Box  # the referred object's ground-truth box
    candidates: tuple[Box, ...]  # the boxes the model chooses among (RefCOCO+: a detector's; the world: every object plus distractors)
    split: str = ""  # REFER's split ("val", "testA", "testB"), or the world's ("test", "heldout")
    heldout: bool = False  # synthetic: the referred object is a held-out colour-shape pair
    confused: bool = False  # synthetic: another object in the scene shares the referred object's shape or colour
    kind: str = ""  # synthetic: "attributes" (the object's own words pick it) | "relation" (a relation to another does)


@dataclass(frozen=True)
class VideoCaption:
    """One caption of one video clip (MSR-VTT style video-text retrieval)."""

    video: str | int  # a file path (already joined to the video root), or a synthetic clip index
    caption: str
    video_id: str  # MSR-VTT's "video<k>"; captions of one video share it
    split: str = ""  # "train" | "test" (MSR-VTT's own split field) when the file says
    twin: str = ""  # synthetic: the video_id of its motion twin (same first frame, opposite motion)
