"""SIMLA's pseudo-keywords: tokens chosen by the teacher's [CLS] attention, and their multi-hot targets."""
from __future__ import annotations

import torch

from maskvlp.masking.counts import lowest_k


def attention_votes(cls_attention: torch.Tensor, eligible: torch.Tensor, per_head: int = 4) -> torch.Tensor:
    """(B, L) keyword scores from the [CLS] row of a layer's attention, (B, heads, L).

    SIMLA's official code lets each head vote for its ``per_head`` = 4 most attended positions and
    keeps the 5 positions with most votes [code: codezakh/SIMLA]; the paper's appendix describes
    the plain top-k of the [CLS] attention, k = 4 [paper]. Score = votes + half the head-mean
    attention, which breaks vote ties by attention mass and never overturns a vote (the mean is
    below 1). Only ``eligible`` positions vote or score [ours; the code only drops [CLS]].
    """
    att = cls_attention.detach().float().masked_fill(~eligible[:, None, :], float("-inf"))
    top = (-att).argsort(dim=-1, stable=True)[..., : min(per_head, att.shape[-1])]  # (B, H, per_head)
    valid = eligible.gather(1, top.flatten(1)).float()
    votes = torch.zeros(eligible.shape, device=att.device).scatter_add_(1, top.flatten(1), valid)
    mean = att.masked_fill(~eligible[:, None, :], 0.0).mean(1)
    return torch.where(eligible, votes + 0.5 * mean, torch.zeros_like(votes))


def keyword_token_mask(scores: torch.Tensor, eligible: torch.Tensor, k: int = 4) -> torch.Tensor:
    """(B, L) bool: the ``k`` eligible tokens with the highest ``scores`` per row (all eligible
    tokens when fewer), ties to the earlier position: SIMLA's pseudo-keyword (PSL) selection.

    k = 4 [paper: SIMLA appendix, best of the values tried]; use k = 5 with
    :func:`attention_votes` scores to follow the official code. ``eligible`` should exclude
    special tokens and padding.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    counts = eligible.sum(1).clamp(max=k)
    return lowest_k(-scores.detach().float(), eligible.bool(), counts)


def multi_hot(input_ids: torch.Tensor, selected: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) float targets: 1 for every vocabulary id selected in the row (duplicates count once),
    the hard PSL labels of SIMLA."""
    out = torch.zeros(input_ids.shape[0], vocab_size, device=input_ids.device)
    return out.scatter_add_(1, input_ids, selected.float()).clamp_(max=1.0)
