"""Masking policies. This issue needs BERT-style text masking; image policies join it later.

Ratios are *exact* per sample (the number of masked tokens is ``round(ratio * n)``, at least one),
not Bernoulli draws, so a recipe's "15%" is what the model actually sees, and tests can check it.
All randomness comes from the passed generator, so a step's masks do not depend on the process
layout (each rank draws the whole global batch and keeps its rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskedText:
    input_ids: torch.Tensor  # ids fed to the encoder: [MASK] / random / kept at masked positions
    labels: torch.Tensor  # original id at masked positions, -100 elsewhere
    masked: torch.Tensor  # bool, the positions to predict


def exact_count_mask(scores: torch.Tensor, eligible: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per row, mark the ``round(ratio * n_eligible)`` (>= 1 when any is eligible) eligible entries with
    the lowest scores. ``scores`` are uniform noise for random masking, or negated relevance for
    guided masking."""
    n = eligible.sum(1)
    k = torch.where(n > 0, torch.clamp((n.float() * ratio).round().long(), min=1), torch.zeros_like(n))
    order = scores.masked_fill(~eligible, float("inf")).argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return (ranks < k[:, None]) & eligible


def bert_text_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
    ratio: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    noise: torch.Tensor | None = None,
) -> MaskedText:
    """BERT's recipe: choose ``ratio`` of the real, non-special tokens; of those, ``mask_fraction``
    become [MASK], ``random_fraction`` a random token, the rest stay (still predicted).

    ``noise`` (uniform [B, L, 3]: which tokens, which become [MASK], which random id) can be passed so that several ranks that each see a slice of one
    global batch draw the same masks as one process would; by default it is drawn from ``generator``.
    """
    B, L = input_ids.shape
    if noise is None:
        noise = torch.rand(B, L, 3, generator=generator)
    noise = noise.to(input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))
    masked = exact_count_mask(noise[..., 0], eligible, ratio)
    # split the masked positions of each row by exact counts, in a random order
    within = exact_count_mask(noise[..., 1], masked, mask_fraction) if mask_fraction > 0 else torch.zeros_like(masked)
    rest = masked & ~within
    n_masked = masked.sum(1).float()
    n_random = (n_masked * random_fraction).round().long()
    rank_rest = torch.cumsum(rest.long(), dim=1)
    use_random = rest & (rank_rest <= n_random[:, None])
    ids = input_ids.clone()
    ids[within] = mask_id
    random_ids = (noise[..., 2] * vocab_size).long().clamp_(max=vocab_size - 1)
    ids[use_random] = random_ids[use_random]
    labels = torch.full_like(input_ids, -100)
    labels[masked] = input_ids[masked]
    return MaskedText(ids, labels, masked)
