"""What the engine trains, as one object: pre-training is one job, each downstream task another.

The loop (precision, DDP, budgets, exact resume, metrics, checkpoints) does not care whether a batch
holds captions or questions: a job says how to build the training set, the module and its optimizer,
and how items become a batch on the device. Tasks live above the engine and hand it their job, so the
engine never imports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from maskvlp.config import RunConfig
from maskvlp.data.batch import TextSpecials


class TrainModule(Protocol):
    """What the loop calls on the module it trains (``Pretrainer`` and every task module)."""

    def __call__(self, batch: Any, step: int, micro: int = 0) -> tuple[torch.Tensor, dict[str, float]]: ...

    def after_step(self) -> None: ...

    def trainable_parameters(self) -> list[nn.Parameter]: ...


@dataclass(frozen=True)
class Job:
    """``build_module(cfg, specials, start)``: ``start`` is True for a new run (load the weights it starts
    from) and False when a checkpoint will fill them. ``collate(items, tokenizer, max_len)`` must pickle
    (a module-level function or a ``functools.partial``) so DataLoader workers can run it.
    ``to_batch(raw, device, rows, pad_id)`` moves a collated micro-batch to the device."""

    build_dataset: Callable[[RunConfig], Any]
    build_module: Callable[[RunConfig, TextSpecials, bool], nn.Module]
    build_optimizer: Callable[[nn.Module, RunConfig], torch.optim.Optimizer]
    collate: Callable[..., dict]
    to_batch: Callable[[dict, torch.device, int, int], Any]
