"""The shared step context: every pass an objective might need, computed at most once per step.

Objectives ask the context for unimodal features, teacher features or masked inputs; the first
request computes and caches them, later requests (from other objectives) reuse them. This is what
makes a composed recipe cost one teacher pass per step and one masked forward per masking policy.

All randomness of a step comes from generators seeded by (seed, step, purpose) and is drawn for the
whole global batch, each rank keeping its rows: a 2-process run draws exactly what a 1-process run
with the same global batch draws, and a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import torch

from maskvlp.engine.distributed import all_gather_nograd, local_slice
from maskvlp.masking import MaskedText, bert_text_mask
from maskvlp.models.vlp import Encoded, VLPModel


@dataclass
class TextSpecials:
    """What text masking must know about the vocabulary."""

    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: torch.Tensor


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


class StepContext:
    def __init__(self, model: VLPModel, batch: Batch, step: int, seed: int, specials: TextSpecials, micro: int = 0):
        self.model = model
        self.micro = micro  # micro-batch index under gradient accumulation
        self.batch = batch
        self.step = step
        self.seed = seed
        self.specials = specials
        self._masked: dict[tuple, MaskedText] = {}

    # ------------------------------------------------------------------ randomness
    def generator(self, purpose: str) -> torch.Generator:
        g = torch.Generator()
        mix = zlib.crc32(f"{self.seed}/{self.step}/{self.micro}/{purpose}".encode())
        g.manual_seed(mix)
        return g

    def global_rand(self, purpose: str, *tail: int) -> torch.Tensor:
        """Uniform noise drawn for the whole global batch; this rank's rows."""
        noise = torch.rand(self.batch.global_size, *tail, generator=self.generator(purpose))
        return noise[local_slice(self.batch.global_size)].to(self.batch.images.device)

    # ------------------------------------------------------------------ unimodal passes
    @cached_property
    def image(self) -> Encoded:
        return self.model.encode_image(self.batch.images)

    @cached_property
    def text(self) -> Encoded:
        return self.model.encode_text(self.batch.input_ids, self.batch.attention_mask)

    @cached_property
    def teacher_image(self) -> Encoded:
        with torch.no_grad():
            return self.model.encode_image(self.batch.images, teacher=True)

    @cached_property
    def teacher_text(self) -> Encoded:
        with torch.no_grad():
            return self.model.encode_text(self.batch.input_ids, self.batch.attention_mask, teacher=True)

    @cached_property
    def global_image_keys(self) -> torch.Tensor:
        return all_gather_nograd(self.batch.image_keys)

    @cached_property
    def global_similarity(self) -> torch.Tensor:
        """[B_global, B_global] image-text similarity (no grad), for sampling ITM hard negatives.

        As in ALBEF: student image features against teacher text features when a teacher exists.
        """
        with torch.no_grad():
            text = self.teacher_text.embed if self.model.teacher is not None else self.text.embed
            image = all_gather_nograd(self.image.embed)
            return image @ all_gather_nograd(text).T / self.model.temp.detach()

    # ------------------------------------------------------------------ masked inputs
    def masked_text(self, ratio: float = 0.15) -> MaskedText:
        key = ("bert", ratio)
        if key not in self._masked:
            ids = self.batch.input_ids
            self._masked[key] = bert_text_mask(
                ids, self.batch.attention_mask, self.specials.special_ids, self.specials.mask_id,
                self.specials.vocab_size, None, ratio=ratio,
                noise=self.global_rand(f"text-mask-{ratio}", ids.shape[1], 3),
            )
        return self._masked[key]
