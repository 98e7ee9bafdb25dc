"""AdamW parameter groups and the warm-up + cosine schedule.

The schedule is a pure function of (step, total steps), so resuming needs only those two numbers;
``total`` can be set after a short calibration when training runs to a wall-clock budget.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from maskvlp.config import TrainConfig
from maskvlp.models.vlp import VLPModel

NO_DECAY_HINTS = ("bias", "norm", "pos_embed", "cls_token", "mask_token", "position_embeddings",
                  "token_type_embeddings", "temp", "modality")


def make_optimizer(root: torch.nn.Module, model: VLPModel, cfg: TrainConfig,
                   is_pretrained: Callable[[str], bool] | None = None) -> torch.optim.AdamW:
    """AdamW with no decay on biases/norms/position tables; weights that start from BERT at ``text_lr``,
    the towers' fresh weights (ViT body, a text tower from scratch) at ``tower_lr`` when it is set.
    ``is_pretrained`` (a name in ``model``) replaces the model's own rule: fine-tuning from a pre-trained
    checkpoint puts every weight it loaded at ``text_lr`` and only the task head at ``lr``.

    ALBEF fine-tunes its BERT at 1e-4; the vision tower, cross-attention and heads start from
    scratch and want more. The fused AdamW kernel measured 7x faster than the default per-tensor
    loop on CPU (the 30522-row word embedding dominates), about 5% of a tiny ``albef`` step.
    """
    rule = is_pretrained or model.is_pretrained_parameter
    slow = {id(p) for name, p in model.named_parameters() if rule(name)}
    # a group of its own only when its lr differs, so runs without it keep their optimizer layout (resume)
    distinct = cfg.tower_lr and cfg.tower_lr != cfg.lr
    tower = {id(p) for p in [*model.vision.parameters(), *model.text.parameters()]} if distinct else set()
    lr_of = {"pretrained": cfg.text_lr, "tower": cfg.tower_lr or cfg.lr, "new": cfg.lr}
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in root.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        decay = p.ndim >= 2 and not any(h in name for h in NO_DECAY_HINTS)
        kind = "pretrained" if id(p) in slow else "tower" if id(p) in tower else "new"
        groups.setdefault((kind, decay), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "base_lr": lr_of[kind], "lr": lr_of[kind]}
        for (kind, decay), ps in sorted(groups.items())
    ]
    devices = {p.device.type for group in param_groups for p in group["params"]}
    fused = devices <= {"cpu", "cuda"}  # one kernel per step instead of a loop over tensors
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.98), eps=1e-6, fused=fused)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine to ``min_ratio`` at ``total``."""
    warmup = min(warmup, max(1, total // 5))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[-1]["lr"]
