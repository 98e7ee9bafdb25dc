"""The objective interface and registry.

An objective reads what the step already computed (a :class:`~maskvlp.objectives.context.StepContext`)
and returns its loss and metrics. It declares the model parts it needs so the model builds only those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from maskvlp.config import ConfigError, ModelConfig

_REGISTRY: dict[str, type["Objective"]] = {}


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """One loss. Subclasses set ``name`` and ``needs`` and implement ``forward(ctx)``.

    Objectives are modules so that their state (an ITC queue, a prototype centre) is saved in
    checkpoints with the model.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model_cfg: ModelConfig, **params: Any):
        super().__init__()
        if params:
            raise ConfigError(f"objective {self.name!r} has no parameter(s) {', '.join(sorted(params))}")

    def required_parts(self) -> set[str]:
        """Model parts this instance needs (may depend on its parameters)."""
        return set(self.needs)

    def masked_text_image_states(self) -> set[tuple]:
        """Text-mask keys (:func:`~maskvlp.objectives.context.text_mask_key`) whose masked-caption fusion
        (``ctx.fused_masked_text``) this objective reads *image* states from. Declared up front so a pass
        shared with a text-only reader (MLM) computes them once. Default: none."""
        return set()

    def text_passes(self) -> set[tuple]:
        """The text-tower passes this objective reads, as ``(teacher, what)`` with ``what`` one of the
        context's ``CLEAN``, ``NEGATIVES`` or a text-mask key: a step runs each tower's declared passes as
        one batch (:meth:`~maskvlp.objectives.context.StepContext.encoded_text`). Undeclared passes still
        work, each on its own. Default: none."""
        return set()

    def forward(self, ctx: Any) -> ObjectiveOutput:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self) -> None:
        """Called once after each optimizer step (after the EMA teacher moves): EMA copies of an
        objective's own heads and running centres update here. Default: nothing."""


def require_image_states(name: str, model_cfg: ModelConfig, why: str) -> None:
    """Refuse, at construction, a fusion mode that returns no fused image states (``text_to_image``)."""
    from maskvlp.models.fusion import IMAGE_STATE_MODES

    if model_cfg.fusion.mode not in IMAGE_STATE_MODES:
        raise ConfigError(f"objective {name!r} {why}, but model.fusion.mode={model_cfg.fusion.mode} returns text "
                          f"states only; set model.fusion.mode to one of {', '.join(IMAGE_STATE_MODES)}")


def register(cls: type[Objective]) -> type[Objective]:
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(name: str, model_cfg: ModelConfig, params: dict[str, Any]) -> Objective:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(objective_names())}")
    try:
        return _REGISTRY[name](model_cfg, **params)
    except TypeError as err:  # unknown keyword in a recipe's params
        raise ConfigError(f"objective {name!r}: {err}") from None


def take(params: dict[str, Any], defaults: dict[str, Any], name: str) -> dict[str, Any]:
    """Merge recipe params over defaults; unknown keys are a config error naming the valid ones."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise ConfigError(
            f"objective {name!r} has no parameter(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(defaults))}")
    out = dict(defaults)
    for key, value in params.items():
        if defaults[key] is not None and not isinstance(value, type(defaults[key])) and not (
                isinstance(defaults[key], float) and isinstance(value, int)):
            raise ConfigError(f"objective {name!r} parameter {key!r} must be {type(defaults[key]).__name__}, got {value!r}")
        out[key] = value
    return out
