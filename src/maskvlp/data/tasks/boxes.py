"""Box overlap as the grounding metric counts it, in the data layer so the world's distractor boxes are
placed by the same rule the evaluation scores them with."""
from __future__ import annotations

from maskvlp.data.tasks.examples import Box


def iou(a: Box, b: Box) -> float:
    """ALBEF's ``computeIoU`` of two ``[x, y, w, h]`` boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2] - 1, b[0] + b[2] - 1), min(a[1] + a[3] - 1, b[1] + b[3] - 1)
    inter = (x2 - x1 + 1) * (y2 - y1 + 1) if x1 < x2 and y1 < y2 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter) / union if union > 0 else 0.0
