"""BERT-style text masking (exact counts, 80/10/10 split) and the WordPiece continuation table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from maskvlp.masking.counts import Ratio, exact_count_mask


@dataclass
class MaskedText:
    input_ids: torch.Tensor  # ids fed to the encoder: [MASK] / random / kept at masked positions
    labels: torch.Tensor  # original id at masked positions, -100 elsewhere
    masked: torch.Tensor  # bool, the positions to predict


def check_split(mask_fraction: float, random_fraction: float) -> None:
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise ValueError(
            f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be >= 0 and sum to <= 1"
        )


def bert_text_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
    ratio: Ratio = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    noise: torch.Tensor | None = None,
) -> MaskedText:
    """BERT's recipe: choose ``ratio`` of the real, non-special tokens; of those, ``mask_fraction``
    become [MASK], ``random_fraction`` a random token, the rest stay (still predicted).

    ``ratio`` may be a (B,) tensor of per-row ratios (modality-aware masking). ``noise`` (uniform
    [B, L, 3]: which tokens, which become [MASK], which random id) can be passed so that several
    ranks that each see a slice of one global batch draw the same masks as one process would; by
    default it is drawn from ``generator``.
    """
    check_split(mask_fraction, random_fraction)
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
    return _apply_text_mask(input_ids, masked, within, use_random, noise[..., 2], mask_id, vocab_size)


def _apply_text_mask(input_ids: torch.Tensor, masked: torch.Tensor, to_mask: torch.Tensor, to_random: torch.Tensor,
                     id_noise: torch.Tensor, mask_id: int, vocab_size: int) -> MaskedText:
    """Write [MASK] / random ids (from ``id_noise`` in [0, 1)) into a copy; labels at every masked position."""
    ids = input_ids.clone()
    ids[to_mask] = mask_id
    random_ids = (id_noise * vocab_size).long().clamp_(max=vocab_size - 1)
    ids[to_random] = random_ids[to_random]
    labels = torch.full_like(input_ids, -100)
    labels[masked] = input_ids[masked]
    return MaskedText(ids, labels, masked)


def continuation_table(vocab_tokens: Sequence[str]) -> torch.Tensor:
    """(V,) bool: which vocabulary entries are WordPiece continuations (``##...``).

    Build it once, e.g. from ``tok.backend.convert_ids_to_tokens(list(range(tok.vocab_size)))``
    (:attr:`maskvlp.data.tokenizer.Tokenizer.continuation_ids` does, for whole-word caption edits).
    """
    return torch.tensor([t.startswith("##") for t in vocab_tokens], dtype=torch.bool)
