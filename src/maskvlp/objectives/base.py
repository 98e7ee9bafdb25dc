"""The objective interface and registry.

An objective reads what the step already computed (a :class:`~maskvlp.objectives.context.StepContext`)
and returns its loss and metrics. It declares what it reads (:class:`~maskvlp.objectives.reads.Reads`:
model parts, text passes, masked-caption image states) so the model builds only those parts and the step
batches and shares the passes. Its parameters are its dataclass in :mod:`maskvlp.config.objective_params`,
their defaults and valid values declared there and checked by the config layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch
import torch.nn as nn

from maskvlp.config import (
    OBJECTIVE_PARAMS, ConfigError, ModelConfig, ObjectiveParams, check_objective_params, objective_params,
)
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads

_REGISTRY: dict[str, type["Objective"]] = {}


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """One loss. Subclasses set ``name`` and implement ``forward(ctx)`` and, when they read more than the
    clean unimodal passes, ``reads()``.

    Objectives are modules so that their state (an ITC queue, a prototype centre) is saved in
    checkpoints with the model.
    """

    name: ClassVar[str]

    def __init__(self, model_cfg: ModelConfig, params: ObjectiveParams | None = None):
        """``params``: this objective's parameter dataclass (``maskvlp.config.OBJECTIVE_PARAMS[name]``), checked
        here as at load time; None takes the defaults."""
        super().__init__()
        self.params = OBJECTIVE_PARAMS[self.name]() if params is None else params
        check_objective_params(self.name, self.params)

    def reads(self) -> Reads:
        """What this instance reads from the step (may depend on its parameters). Default: nothing
        beyond the clean unimodal passes, which every model has."""
        return Reads()

    def forward(self, ctx: StepContext) -> ObjectiveOutput:  # pragma: no cover - interface
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


def target_width(name: str, model_cfg: ModelConfig, source: str) -> int:
    """Width of an image-side target: the ViT's for ``teacher``; the frozen stem's channels for ``stem``,
    refused at construction when the stem has no frozen pretrained part."""
    if source == "teacher":
        return model_cfg.vision.width
    vision = model_cfg.vision
    if vision.stem != "efficientnet_lite0" or vision.stem_trainable or vision.stem_init != "pretrained":
        raise ConfigError(f"objective {name!r}: stem targets need a frozen pretrained stem (model.vision.stem="
                          f"efficientnet_lite0, stem_init=pretrained, stem_trainable=false); this model has "
                          f"stem={vision.stem}, stem_init={vision.stem_init}, stem_trainable={vision.stem_trainable}")
    from maskvlp.models.efficientnet import trunk_channels

    return trunk_channels(vision.patch_size)


def register(cls: type[Objective]) -> type[Objective]:
    if cls.name not in OBJECTIVE_PARAMS:  # the config layer must know every objective a recipe may name
        raise TypeError(f"objective {cls.name!r} has no parameter class in maskvlp.config.OBJECTIVE_PARAMS")
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(name: str, model_cfg: ModelConfig,
                    params: ObjectiveParams | Mapping[str, Any] | None = None) -> Objective:
    """Objective ``name`` with ``params``: its parameter dataclass, or a recipe-style mapping of the
    parameters that differ from the defaults (merged and checked as ``load_config`` does)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(objective_names())}")
    return _REGISTRY[name](model_cfg, objective_params(name, params))
