"""Grounding's data: (image, referring expression) pairs to fine-tune ITC + ITM on, and test images with
their own size (a heat map is scored against boxes in the original image's pixels).

Training is pre-training's batch on other texts: an item is an image and one expression about it, so the
pre-training collate, module and objectives run unchanged. No boxes are read for training: the
supervision is weak, as in ALBEF.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from maskvlp.data.datasets import PretrainDataset, load_image
from maskvlp.data.transforms import resize_square, to_tensor


class GroundingTrainSet(PretrainDataset):
    """Rendered synthetic scenes, each with the expressions that refer to one of its objects; an item draws
    one expression per (seed, epoch, scene), as pre-training draws a caption."""

    def __init__(self, texts: Sequence[Sequence[str]], images: np.ndarray, seed: int = 0):
        super().__init__(seed)
        kept = [i for i, t in enumerate(texts) if t]
        if not kept:
            raise ValueError("no grounding scene has an expression to train on")
        self.texts = [list(texts[i]) for i in kept]
        self.images = images[kept]

    def __len__(self) -> int:
        return len(self.texts)

    def captions_of(self, index: int) -> Sequence[str]:
        return self.texts[index]

    def image_key_of(self, index: int) -> int:
        return index

    def __getitem__(self, index: int) -> dict:
        texts = self.texts[index]
        text = texts[int(self.rng(index).integers(len(texts)))]
        return {"image": to_tensor(self.images[index]), "text": text, "image_key": index, "index": index}


class SizedImages:
    """A test image as the model's square input plus its original (width, height), or None if unreadable."""

    def __init__(self, image_size: int, rendered: np.ndarray | None = None):
        self.image_size = image_size
        self.rendered = rendered

    def __call__(self, ref: str | int) -> tuple[torch.Tensor, tuple[int, int]] | None:
        if isinstance(ref, int):
            if self.rendered is None:
                raise ValueError(f"example refers to rendered scene {ref}, but this set has no rendered scenes")
            img = self.rendered[ref]
            return to_tensor(img), (img.shape[1], img.shape[0])
        pil = load_image(ref)
        return None if pil is None else (to_tensor(resize_square(pil, self.image_size)), pil.size)

    def picture(self, ref: str | int) -> np.ndarray | None:
        """The image as a person sees it: (H, W, 3) uint8 at its own size."""
        if isinstance(ref, int):
            return None if self.rendered is None else self.rendered[ref]
        pil = load_image(ref)
        return None if pil is None else np.asarray(pil)
