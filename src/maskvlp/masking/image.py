"""Patch masks for the ViT: :class:`ImageMask` (both ViT paths), random and text-guided patches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from maskvlp.masking.counts import exact_count_mask, lowest_k, mask_counts


@dataclass
class ImageMask:
    """A patch mask with the same number M of masked patches in every row, in both ViT forms."""

    masked: torch.Tensor  # (B, N) bool, True = masked (the ViT's ``mask`` argument)
    keep_idx: torch.Tensor  # (B, N - M) long, visible patches ascending (the ViT's ``keep_idx``)
    mask_idx: torch.Tensor  # (B, M) long, masked patches ascending (where targets are gathered)

    @classmethod
    def from_bool(cls, masked: torch.Tensor) -> "ImageMask":
        """Index forms of a (B, N) bool mask; every row must mask the same count, since
        ``keep_idx`` is a rectangular tensor."""
        if masked.dim() != 2:
            raise ValueError(f"expected a (B, N) mask, got shape {tuple(masked.shape)}")
        masked = masked.bool()
        b, n = masked.shape
        counts = masked.sum(1)
        if b and not bool((counts == counts[0]).all()):
            raise ValueError(
                "ImageMask needs the same number of masked patches in every row (keep_idx is a "
                f"(B, K) tensor), got counts {sorted(set(counts.tolist()))}; pass the bool mask to the "
                "ViT's mask-token path instead"
            )
        m = int(counts[0]) if b else 0
        order = masked.to(torch.uint8).argsort(dim=1, stable=True)  # visible first, each group ascending
        return cls(masked, order[:, : n - m], order[:, n - m :])

    @property
    def num_masked(self) -> int:
        return self.mask_idx.shape[1]

    def rows(self, index: slice | torch.Tensor) -> "ImageMask":
        """The same mask for a subset of rows (e.g. this rank's slice of the global batch)."""
        return ImageMask(self.masked[index], self.keep_idx[index], self.mask_idx[index])


def random_patch_mask(noise: torch.Tensor, ratio: float = 0.75) -> ImageMask:
    """Mask ``mask_counts(N, ratio)`` uniformly random patches per row: the N lowest of ``noise``
    (uniform, (B, N)). 0.75 [paper: MAE; MAMO's image ratio per notes]."""
    if noise.dim() != 2:
        raise ValueError(f"noise must be (B, N), got shape {tuple(noise.shape)}")
    return ImageMask.from_bool(exact_count_mask(noise, torch.ones_like(noise, dtype=torch.bool), ratio))


def text_guided_patch_mask(
    relevance: torch.Tensor,
    noise: torch.Tensor,
    ratio: float = 0.5,
    guided_fraction: float = 0.5,
) -> ImageMask:
    """SemMIM-style text-guided masking: hide the patches the caption talks about.

    Per row ``k = mask_counts(N, ratio)`` patches are masked: the ``round(guided_fraction * k)``
    with the highest ``relevance`` (B, N) (e.g. text-to-patch attention or patch/text cosine; ties
    to the lower index), the rest uniformly at random among the others by lowest ``noise``
    (uniform, (B, N)). ``guided_fraction = 0`` gives exactly ``random_patch_mask(noise, ratio)``.
    Why the random share: masking only the most relevant patches is too hard (and the relevance
    too noisy) early on [notes: SemMIM]. Defaults ratio 0.5 and a 50/50 mix are [notes]
    suggestions, not SemMIM's numbers (not available to us); ramp ``guided_fraction`` with
    :func:`guided_fraction_at`.
    """
    if relevance.shape != noise.shape or relevance.dim() != 2:
        raise ValueError(f"relevance and noise must both be (B, N), got {tuple(relevance.shape)} and {tuple(noise.shape)}")
    if not 0.0 <= guided_fraction <= 1.0:
        raise ValueError(f"guided_fraction must lie in [0, 1], got {guided_fraction}")
    b, n = noise.shape
    everything = torch.ones_like(noise, dtype=torch.bool)
    k = mask_counts(torch.full((b,), n, device=noise.device), ratio)
    g = (k.float() * guided_fraction).round().long()
    guided = lowest_k(-relevance.detach().float().to(noise.device), everything, g)
    rest = lowest_k(noise, ~guided, k - g)
    return ImageMask.from_bool(guided | rest)


def guided_fraction_at(step: int, warmup_steps: int, final_fraction: float = 0.5) -> float:
    """Guided share at ``step``: linear from 0 (pure random masking, while relevance scores from a
    fresh model are noise) to ``final_fraction`` at ``warmup_steps``, then constant [ours; notes:
    SemMIM suggests a random warm-up or mix]."""
    if warmup_steps <= 0:
        return final_fraction
    return final_fraction * min(max(step, 0), warmup_steps) / warmup_steps
