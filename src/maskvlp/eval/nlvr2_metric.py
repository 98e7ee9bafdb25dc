"""NLVR2 accuracy and consistency, as the official ``nlvr2/eval/metrics.py`` defines them
(percentages 0-100, not rounded).

Consistency is the share of unique sentences for which every example is predicted correctly. The
official script groups examples by the identifier ``split-set-pair-sentence`` with its pair part
blanked, i.e. by (split, set, sentence id): one sentence written for one image set, judged against
up to four pairs. Identifiers not of that form (ALBEF lists without identifiers get
``<file stem>-<index>``) are grouped by their sentence text instead.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from maskvlp.data.tasks.examples import Nlvr2Example

_OFFICIAL_ID = re.compile(r"^([^-]+)-(\d+)-(\d+)-(\d+)$")


def sentence_group(example: Nlvr2Example) -> str:
    """The consistency group of an example (see the module docstring)."""
    m = _OFFICIAL_ID.match(example.identifier)
    if m is None:
        return "sentence:" + example.sentence
    return f"{m.group(1)}-{m.group(2)}--{m.group(4)}"


def _pct(hits: int, total: int) -> float:
    return 100.0 * hits / total if total else float("nan")


def nlvr2_report(predictions: Mapping[str, bool], examples: Sequence[Nlvr2Example]) -> dict[str, float]:
    """``accuracy`` and ``consistency`` (%), ``n``, ``sentences`` (consistency groups), ``missing``
    (examples without a prediction: counted wrong; the official script stops instead), and
    ``heldout`` / ``seen`` accuracy when any example is held out. NaN when there are no examples."""
    correct = missing = 0
    consistent: dict[str, bool] = {}
    heldout = [0, 0]  # correct, total
    seen = [0, 0]
    for ex in examples:
        prediction = predictions.get(ex.identifier)
        if prediction is None:
            missing += 1
        ok = prediction is not None and bool(prediction) == ex.label
        correct += ok
        group = sentence_group(ex)
        consistent[group] = consistent.get(group, True) and ok
        bucket = heldout if ex.heldout else seen
        bucket[0] += ok
        bucket[1] += 1
    report: dict[str, float] = {
        "accuracy": _pct(correct, len(examples)),
        "consistency": _pct(sum(consistent.values()), len(consistent)),
        "n": len(examples),
        "sentences": len(consistent),
        "missing": missing,
    }
    if heldout[1]:
        report["heldout"] = _pct(*heldout)
        report["seen"] = _pct(*seen)
    return report
