"""What an objective reads from a step, as types: the step context's cache keys and an objective's declaration.

* :class:`TextMaskKey`: one text-masking setting; objectives naming equal keys share the mask and its passes.
* :class:`TextInput`: the text passes besides masked captions (the clean captions, their rule-based twins).
* :class:`TextPass`: one text-tower pass, the student's or the EMA teacher's, over one of those inputs.
* :class:`Reads`: an objective's declaration (:meth:`~maskvlp.objectives.base.Objective.reads`) of the model
  parts it needs built, the text passes it reads and the masked-caption fusions it reads image states from.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Iterable, Union


class TextInput(enum.Enum):
    """Text passes besides masked captions."""

    CLEAN = "clean"  # the batch's captions
    NEGATIVES = "negatives"  # their rule-based twins (maskvlp.negatives)


@dataclass(frozen=True)
class TextMaskKey:
    """One BERT-style text-masking setting (``ratio`` of the real tokens; of those, ``mask_fraction`` become
    [MASK] and ``random_fraction`` a random token), read on the first ``rows`` share of the batch's captions
    (``ceil(rows * B)`` of this rank's rows; the mask drawn is that of the whole batch, so keys that differ only in
    ``rows`` agree on the rows they share). Values are stored as floats, so ``TextMaskKey(1, 1, 0)`` and
    ``TextMaskKey(1.0, 1.0, 0.0)`` are one key."""

    ratio: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    rows: float = 1.0

    def __post_init__(self) -> None:
        for name in ("ratio", "mask_fraction", "random_fraction", "rows"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not 0.0 < self.rows <= 1.0:
            raise ValueError(f"a text mask's rows share must be in (0, 1], got {self.rows}")

    def row_count(self, batch: int) -> int:
        """How many of ``batch`` rows the key reads: at least one."""
        return batch if self.rows == 1.0 else max(1, math.ceil(self.rows * batch))

    @property
    def whole_batch(self) -> "TextMaskKey":
        """The same mask on every row of the batch."""
        return TextMaskKey(self.ratio, self.mask_fraction, self.random_fraction)


TextSource = Union[TextInput, TextMaskKey]


@dataclass(frozen=True)
class TextPass:
    """One text-tower pass: the student's (``teacher=False``) or the EMA teacher's, over ``what``."""

    teacher: bool
    what: TextSource

    @property
    def order(self) -> tuple:
        """Where the pass goes in its tower's batched call: clean captions, twins, then masked captions by
        the reprs of their setting. That is the order of the step's untyped keys, sorted by repr: the rows of
        the batch, and so the summation order of the embedding gradient, are what they were."""
        if isinstance(self.what, TextInput):
            return (0 if self.what is TextInput.CLEAN else 1,)
        return (2, repr(self.what.ratio), repr(self.what.mask_fraction), repr(self.what.random_fraction),
                -self.what.rows)


def _frozen(items: Iterable) -> frozenset:
    return items if isinstance(items, frozenset) else frozenset(items)


@dataclass(frozen=True)
class Reads:
    """What an objective reads from the step; the step takes the union over its objectives.

    * ``parts``: model parts it needs built (``maskvlp.models.vlp``'s FUSION, TEACHER, MLM, ...): the model
      builds the union over the recipe's objectives.
    * ``text_passes``: the text-tower passes it reads; a step runs each tower's declared passes as one batch
      (:meth:`~maskvlp.objectives.context.StepContext.encoded_text`). Undeclared passes still work, each alone.
    * ``masked_text_image_states``: masks whose masked-caption fusion
      (:meth:`~maskvlp.objectives.context.StepContext.fused_masked_text`) it reads *image* states from, so a
      pass shared with a text-only reader (MLM) computes them once.
    """

    parts: frozenset[str] = field(default_factory=frozenset)
    text_passes: frozenset[TextPass] = field(default_factory=frozenset)
    masked_text_image_states: frozenset[TextMaskKey] = field(default_factory=frozenset)

    def __post_init__(self) -> None:  # accept any iterable, keep frozensets (hashable, immutable)
        for name in ("parts", "text_passes", "masked_text_image_states"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def __or__(self, other: Reads) -> Reads:
        return Reads(self.parts | other.parts, self.text_passes | other.text_passes,
                     self.masked_text_image_states | other.masked_text_image_states)

    @staticmethod
    def union(reads: Iterable[Reads]) -> Reads:
        out = Reads()
        for r in reads:
            out = out | r
        return out

    def student_only(self) -> Reads:
        """These reads without the teacher's text passes (for a model built without a teacher)."""
        return Reads(self.parts, frozenset(p for p in self.text_passes if not p.teacher), self.masked_text_image_states)
