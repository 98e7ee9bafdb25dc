"""The official VQA accuracy (VQA evaluation script ``vqaEval.py``), as percentages 0-100.

The normalisation and the per-question score live in :mod:`maskvlp.data.tasks.vqa_files` (the
training targets use them too); this module scores predictions and aggregates them the way the
official script does. docs/tasks.md ("Metrics") lists what was checked.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

from maskvlp.data.tasks.examples import VqaExample
from maskvlp.data.tasks.vqa_files import normalize_answer, question_accuracy

__all__ = ["normalize_answer", "vqa_accuracy", "vqa_report"]


def _round2(value: float) -> float:
    """Round to 2 decimals half away from zero on the exact float value, as the official script's
    Python 2 ``round`` does (Python 3's ``round`` sends exact halves such as 12.125 to even)."""
    return float(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's official accuracy in percent, rounded to 2 decimals as the script stores it
    per question (30.0, 60.0, 90.0, 100.0 for 1, 2, 3, >=4 of 10 matching answers)."""
    return _round2(100.0 * question_accuracy(prediction, answers))


def _mean_pct(values: list[float]) -> float:
    return _round2(100.0 * sum(values) / len(values)) if values else float("nan")


def vqa_report(predictions: Mapping[int, str], examples: Sequence[VqaExample]) -> dict[str, float]:
    """Overall, per answer type and per question type accuracy (percent, 2 decimals).

    Averages use the unrounded per-question scores, as the script does. Keys: ``overall``, ``n``
    (questions scored), ``unscored`` (examples without human answers, skipped), ``missing`` (scored
    questions without a prediction: they score 0; the official script refuses such a result file),
    ``type/<answer_type>``, ``qtype/<question_type>`` (empty types are left out), and ``heldout`` /
    ``seen`` when any scored example is held out. ``overall`` is NaN when nothing was scored.
    """
    scores: list[float] = []
    by_type: dict[str, list[float]] = {}
    by_qtype: dict[str, list[float]] = {}
    heldout: list[float] = []
    seen: list[float] = []
    unscored = missing = 0
    for ex in examples:
        if not ex.answers:
            unscored += 1
            continue
        prediction = predictions.get(ex.question_id)
        if prediction is None:
            missing += 1
            score = 0.0
        else:
            score = question_accuracy(prediction, ex.answers)
        scores.append(score)
        if ex.answer_type:
            by_type.setdefault(ex.answer_type, []).append(score)
        if ex.question_type:
            by_qtype.setdefault(ex.question_type, []).append(score)
        (heldout if ex.heldout else seen).append(score)
    report: dict[str, float] = {"overall": _mean_pct(scores), "n": len(scores), "unscored": unscored, "missing": missing}
    for name, values in sorted(by_type.items()):
        report[f"type/{name}"] = _mean_pct(values)
    for name, values in sorted(by_qtype.items()):
        report[f"qtype/{name}"] = _mean_pct(values)
    if heldout:
        report["heldout"] = _mean_pct(heldout)
        report["seen"] = _mean_pct(seen)
    return report
