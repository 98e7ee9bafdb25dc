"""What one training step reads: the batch and the text vocabulary's special ids.

Kept in the data layer because the trainer builds them and every objective reads them: neither
should have to import the other to name them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from maskvlp.negatives import WordLexicon


@dataclass
class TextSpecials:
    """What text masking must know about the vocabulary."""

    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: torch.Tensor
    lexicon: WordLexicon | None = None  # attribute and spatial words, for rule-based negative captions


@dataclass
class Batch:
    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_keys: torch.Tensor  # same value = same image (another caption of it is not a negative)
    global_size: int  # the global batch this rank's rows are a contiguous slice of

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.images.to(device), self.input_ids.to(device), self.attention_mask.to(device),
                     self.image_keys.to(device), self.global_size)
