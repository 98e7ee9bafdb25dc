"""The training module: a model plus the recipe's weighted objectives.

Objectives are children of this module, so their state (queues, centres) is checkpointed with the
model, and DDP wraps the whole thing.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from maskvlp.config import RunConfig
from maskvlp.models.vlp import VLPModel, build_model
from maskvlp.objectives import build_objective
from maskvlp.data.batch import Batch, TextSpecials
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads


class Pretrainer(nn.Module):
    def __init__(self, cfg: RunConfig, specials: TextSpecials, load_pretrained: bool = True):
        super().__init__()
        objectives: dict[str, nn.Module] = {}
        self.weights: dict[str, float] = {}
        self.schedules: dict[str, tuple[int, int]] = {}  # (start_step, ramp_steps)
        for spec in cfg.objectives:
            key = spec.name if spec.name not in objectives else f"{spec.name}_{len(objectives)}"
            objectives[key] = build_objective(spec.name, cfg.model, spec.params)
            self.weights[key] = float(spec.weight)
            self.schedules[key] = (int(spec.start_step), int(spec.ramp_steps))
        # what every objective reads, whether or not it is active at a step: the model parts to build, and the
        # masked-caption fusions whose image states some objective reads
        reads = Reads.union(o.reads() for o in objectives.values())
        self.model: VLPModel = build_model(cfg.model, set(reads.parts), load_pretrained=load_pretrained)
        self.objectives = nn.ModuleDict(objectives)
        self.specials = specials
        self.seed = cfg.train.seed
        self.masked_text_image_states = reads.masked_text_image_states

    @torch.no_grad()
    def after_step(self) -> None:
        """Move the EMA teacher, then let objectives update their own EMA state."""
        self.model.update_teacher()
        for objective in self.objectives.values():
            objective.after_step()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Model and objective-owned heads (the teacher's are frozen and not included)."""
        return [p for p in self.parameters() if p.requires_grad]

    def weight(self, key: str, step: int) -> float:
        """The objective's weight at ``step``: 0 before ``start_step``, then ramped in over ``ramp_steps``.

        A zero-weight objective is not computed at all (no passes, no metrics that step): an objective
        that starts late costs nothing before it starts. Every rank skips the same steps, and DDP runs
        with ``find_unused_parameters`` because composed recipes already leave parts unused.
        """
        start, ramp = self.schedules[key]
        if step < start:
            return 0.0
        return self.weights[key] * (min(1.0, (step - start + 1) / ramp) if ramp > 0 else 1.0)

    def forward(self, batch: Batch, step: int, micro: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        active = {key: w for key in self.objectives if (w := self.weight(key, step)) != 0.0}
        # the text passes of this step's objectives, run as one batch per tower
        text_passes = Reads.union(self.objectives[key].reads() for key in active).text_passes
        reads = Reads(text_passes=text_passes, masked_text_image_states=self.masked_text_image_states)
        if self.model.teacher is None:
            reads = reads.student_only()
        ctx = StepContext(self.model, batch, step, self.seed, self.specials, micro, reads)
        total = torch.zeros((), device=batch.images.device)
        metrics: dict[str, float] = {}
        for key, weight in active.items():
            objective = self.objectives[key]
            out = objective(ctx)
            total = total + weight * out.loss
            metrics[f"loss_{key}"] = float(out.loss.detach())
            metrics.update(out.metrics)
        return total, metrics
