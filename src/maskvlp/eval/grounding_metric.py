"""Weakly-supervised grounding accuracy, as ALBEF scores RefCOCO+ (``Grounding.py``, ``grounding_eval``) [code].

A heat map over the image (Grad-CAM of the ITM score) is resized to the image's own height and width
(bicubic); every candidate box gets the map's sum inside it divided by its area to the power ``alpha``
(ALBEF evaluates with 0.5: a big box collects more of the map, the power takes part of that back); the
top box is correct when its IoU with the ground truth is at least 0.5. Boxes are COCO's ``[x, y, w, h]``
in pixels. The IoU is ALBEF's ``computeIoU`` (inclusive pixel corners in the intersection, ``w * h`` in
the union), so figures compare with the paper's.

The floors every grounding table needs (no model): a random candidate (its expected accuracy), the
largest candidate and the candidate whose centre is nearest the image centre.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from maskvlp.data.tasks.boxes import iou
from maskvlp.data.tasks.examples import Box

ALPHA = 0.5  # ALBEF's grounding_eval(..., alpha=0.5)
IOU_HIT = 0.5
FLOORS = ("random_box", "largest_box", "centre_box")


def map_at_image_size(heat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (g, g) map resized to (height, width) as ALBEF does (bicubic)."""
    return F.interpolate(heat.float()[None, None], size=(height, width), mode="bicubic", align_corners=False)[0, 0]


def box_scores(heat: torch.Tensor, boxes: Sequence[Box], alpha: float = ALPHA) -> list[float]:
    """Each box's score on a map already at image size: the map's sum over ``[y:y+h, x:x+w]`` (ALBEF's int
    truncation of the corners) over ``area ** alpha``."""
    scores = []
    for x, y, w, h in boxes:
        inside = heat[int(y):int(y + h), int(x):int(x + w)]
        area = w * h
        scores.append(float(inside.sum()) / area ** alpha if area > 0 else float("-inf"))
    return scores


def choose_box(heat: torch.Tensor, boxes: Sequence[Box], alpha: float = ALPHA) -> int:
    """The index of the best-scoring box; ties go to the first, as ALBEF's strict ``>`` keeps the first."""
    scores = box_scores(heat, boxes, alpha)
    return max(range(len(boxes)), key=lambda i: (scores[i], -i))


def hit(chosen: Box, truth: Box) -> bool:
    return iou(chosen, truth) >= IOU_HIT


def floor_hits(truth: Box, candidates: Sequence[Box], width: int, height: int) -> dict[str, float]:
    """The floors for one expression: the chance a random candidate is a hit, and whether the largest
    candidate and the centre-most candidate are (first one on ties)."""
    hits = [hit(c, truth) for c in candidates]
    largest = max(range(len(candidates)), key=lambda i: (candidates[i][2] * candidates[i][3], -i))
    cx, cy = width / 2, height / 2

    def distance(i: int) -> float:
        x, y, w, h = candidates[i]
        return (x + w / 2 - cx) ** 2 + (y + h / 2 - cy) ** 2

    centre = min(range(len(candidates)), key=lambda i: (distance(i), i))
    return {"random_box": sum(hits) / len(hits), "largest_box": float(hits[largest]), "centre_box": float(hits[centre])}
