"""MLIM's Modality Aware Masking: a per-sample mode sets how heavily each modality is masked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from maskvlp.masking.counts import exact_count_mask, noise_or_draw
from maskvlp.masking.text import MaskedText, bert_text_mask


class MaskingMode(NamedTuple):
    name: str
    image_ratio: float
    text_ratio: float
    probability: float


# MLIM's Modality Aware Masking [notes: MLIM, secondary summary]: three modes drawn with equal
# probability; heavy = 0.8 per that summary; the light ratio (BERT's 0.15) and leaving the other
# modality intact in the heavy modes are [notes] suggestions (unverified in the paper).
MLIM_MODES: tuple[MaskingMode, ...] = (
    MaskingMode("heavy_image", 0.8, 0.0, 1 / 3),
    MaskingMode("heavy_text", 0.0, 0.8, 1 / 3),
    MaskingMode("light", 0.15, 0.15, 1 / 3),
)


@dataclass
class ModalityAwareMask:
    mode: torch.Tensor  # (B,) long, index into the modes
    image_ratio: torch.Tensor  # (B,) float, the row's mode's image ratio
    text_ratio: torch.Tensor  # (B,) float
    image_masked: torch.Tensor  # (B, N) bool, for the ViT's mask-token path (counts differ per row)
    text: MaskedText


def modality_aware_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    num_patches: int,
    *,
    modes: Sequence[MaskingMode] = MLIM_MODES,
    generator: torch.Generator | None = None,
    mode_noise: torch.Tensor | None = None,
    image_noise: torch.Tensor | None = None,
    text_noise: torch.Tensor | None = None,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> ModalityAwareMask:
    """MLIM's Modality Aware Masking: per sample draw a mode (heavy image / heavy text / light
    both, :data:`MLIM_MODES`), then mask each modality at that mode's ratio, exactly.

    Why: heavily masking one modality while the other is (nearly) intact forces information to
    flow across modalities. Image counts differ per row, so the image mask is a (B, N) bool for
    mask-token replacement (as MLIM replaces, not drops), not an :class:`ImageMask`. Text uses
    BERT's 80/10/10 split [notes: unverified for MLIM].

    Noise (uniform): ``mode_noise`` (B,), ``image_noise`` (B, num_patches), ``text_noise``
    (B, L, 3); missing ones are drawn from ``generator`` in that order.
    """
    if not modes:
        raise ValueError("at least one masking mode is needed")
    probs = torch.tensor([m.probability for m in modes], dtype=torch.float64)
    if bool((probs < 0).any()) or abs(float(probs.sum()) - 1.0) > 1e-6:
        raise ValueError(f"mode probabilities must be >= 0 and sum to 1, got {probs.tolist()}")
    b, length = input_ids.shape
    device = input_ids.device
    mode_noise = noise_or_draw(mode_noise, (b,), generator, "mode").to(device)
    image_noise = noise_or_draw(image_noise, (b, num_patches), generator, "image").to(device)
    text_noise = noise_or_draw(text_noise, (b, length, 3), generator, "text").to(device)
    edges = probs.cumsum(0)[:-1].to(device)
    mode = torch.searchsorted(edges, mode_noise.double(), right=True).clamp_(max=len(modes) - 1)
    image_ratio = torch.tensor([m.image_ratio for m in modes], device=device)[mode]
    text_ratio = torch.tensor([m.text_ratio for m in modes], device=device)[mode]
    image_masked = exact_count_mask(image_noise, torch.ones_like(image_noise, dtype=torch.bool), image_ratio)
    text = bert_text_mask(input_ids, attention_mask, special_ids, mask_id, vocab_size, ratio=text_ratio,
                          mask_fraction=mask_fraction, random_fraction=random_fraction, noise=text_noise)
    return ModalityAwareMask(mode, image_ratio, text_ratio, image_masked, text)
