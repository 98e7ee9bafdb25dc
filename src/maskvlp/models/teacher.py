"""Exponential-moving-average teacher (ALBEF's momentum model, MAMO/SIMLA targets)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher(nn.Module):
    """Frozen deep copies of the student modules, updated as p_t <- m * p_t + (1 - m) * p_s.

    An ``nn.Module`` so its weights are saved with checkpoints; keep it out of the optimizer.
    All students are copied in one ``deepcopy`` call, so parameters shared *between* students
    (e.g. an MLM decoder tied to the text encoder's word embeddings) stay shared in the teacher,
    and :meth:`update` moves each shared parameter exactly once.
    """

    def __init__(self, students: dict[str, nn.Module], momentum: float):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.models = nn.ModuleDict(copy.deepcopy(dict(students)))
        self.models.requires_grad_(False)

    def __getitem__(self, name: str) -> nn.Module:
        return self.models[name]

    def __contains__(self, name: str) -> bool:
        return name in self.models

    @torch.no_grad()
    def update(self, students: dict[str, nn.Module]) -> None:
        """One EMA step towards ``students`` (same names and structure as at construction); buffers are copied."""
        if set(students) != set(self.models.keys()):
            raise ValueError(f"students {sorted(students)} do not match the teacher's {sorted(self.models.keys())}")
        done: set[int] = set()
        for name, teacher in self.models.items():
            student = students[name]
            t_params = dict(teacher.named_parameters())
            s_params = dict(student.named_parameters())
            if t_params.keys() != s_params.keys():
                raise ValueError(f"student {name!r} no longer has the teacher's parameter structure")
            for key, p_t in t_params.items():
                if id(p_t) in done:  # shared with an already updated parameter
                    continue
                done.add(id(p_t))
                p_t.lerp_(s_params[key].detach().to(p_t.dtype), 1.0 - self.momentum)
            t_bufs = dict(teacher.named_buffers())
            for key, b_s in student.named_buffers():
                if key in t_bufs:
                    t_bufs[key].copy_(b_s)
