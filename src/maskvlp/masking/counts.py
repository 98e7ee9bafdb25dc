"""Exact per-row counts and the lowest-score selections every masking policy is built on."""
from __future__ import annotations

import torch

Ratio = float | torch.Tensor  # one ratio for the batch, or a (B,) tensor of per-row ratios


def mask_counts(n: torch.Tensor, ratio: Ratio) -> torch.Tensor:
    """(B,) long: how many of each row's ``n`` eligible entries ``ratio`` masks.

    ``round(ratio * n)`` computed in float32 (as the original ``exact_count_mask`` did, so counts
    are unchanged), raised to 1 where ``ratio > 0`` and ``n > 0`` so a short caption still gets a
    target, and 0 where ``ratio == 0`` so a mode can leave a modality intact.
    """
    if isinstance(ratio, torch.Tensor):
        r = ratio.to(device=n.device, dtype=torch.float32)
        if r.shape != n.shape:
            raise ValueError(f"a per-row ratio must have shape {tuple(n.shape)}, got {tuple(r.shape)}")
        if bool(((r < 0) | (r > 1) | r.isnan()).any()):
            raise ValueError("every ratio must lie in [0, 1]")
        positive = r > 0
    else:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        r = ratio
        positive = torch.full_like(n, ratio > 0, dtype=torch.bool)
    k = (n.float() * r).round().long()
    return torch.where(positive & (n > 0), k.clamp(min=1), torch.zeros_like(k))


def lowest_k(scores: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, mark the ``k[row]`` eligible entries with the lowest scores; ties go to the lower
    position (stable sorts), so guided and keyword selections are deterministic."""
    order = scores.argsort(dim=1, stable=True)
    # then move ineligible entries behind all eligible ones, keeping the score order within each
    order = order.gather(1, (~eligible).gather(1, order).to(torch.uint8).argsort(dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return (ranks < k.to(scores.device)[:, None]) & eligible


def exact_count_mask(scores: torch.Tensor, eligible: torch.Tensor, ratio: Ratio) -> torch.Tensor:
    """Per row, mark the ``mask_counts(n_eligible, ratio)`` eligible entries with the lowest scores.

    ``scores`` are uniform noise for random masking, or negated relevance for guided masking;
    ``ratio`` is a float or a (B,) tensor of per-row ratios.
    """
    return lowest_k(scores, eligible, mask_counts(eligible.sum(1), ratio))


def noise_or_draw(noise: torch.Tensor | None, shape: tuple[int, ...], generator: torch.Generator | None,
                  what: str) -> torch.Tensor:
    """The passed noise (shape-checked) or a fresh draw from ``generator``; never the global RNG."""
    if noise is None:
        if generator is None:
            raise ValueError(f"pass {what} noise or a generator: masks never draw from the global RNG")
        return torch.rand(shape, generator=generator, device=generator.device)
    if tuple(noise.shape) != tuple(shape):
        raise ValueError(f"{what} noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
    return noise
