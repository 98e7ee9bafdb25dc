"""Image transforms in PIL + numpy (no torchvision), with all randomness from a passed Generator.

Passing the ``np.random.Generator`` in, rather than drawing from a global RNG, makes a sample's
augmentation a pure function of (seed, epoch, index): training resumes bit-exactly at any step,
whatever the number of data-loader workers.

Normalisation uses CLIP's mean/std, which ALBEF also uses; the values matter only in that
pre-training and evaluation agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP / ALBEF
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect-ratio range of RandomResizedCrop (torchvision default)
CROP_TRIES = 10

_MEAN = np.asarray(IMAGE_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGE_STD, dtype=np.float32)


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """FloatTensor[3,H,W] normalised by IMAGE_MEAN/IMAGE_STD, from a PIL image or a uint8 (H,W,3) array.

    A float array is taken to be already in [0, 1].
    """
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    x = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    x = (x - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def as_pil(img: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from either input type, so transforms accept rendered arrays too."""
    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    return Image.fromarray(np.asarray(img, dtype=np.uint8), mode="RGB")


def resize_square(img: Image.Image | np.ndarray, size: int) -> Image.Image:
    """Bicubic resize to size x size (aspect not kept, as ALBEF's eval transform)."""
    pil = as_pil(img)
    if pil.size == (size, size):
        return pil
    return pil.resize((size, size), Image.BICUBIC)


def crop_box(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w), torchvision semantics; centre crop after 10 misses."""
    area = width * height
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(CROP_TRIES):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return _centre_box(width, height)


def _centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred box whose aspect ratio is within CROP_RATIO."""
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif in_ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class EvalTransform:
    """Resize (bicubic) to a square and normalise; a class so it pickles into workers."""

    image_size: int

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        return to_tensor(resize_square(img, self.image_size))


@dataclass(frozen=True)
class TrainTransform:
    """RandomResizedCrop + optional horizontal flip + normalise, drawing only from the given rng."""

    image_size: int
    crop_scale_min: float
    hflip: bool

    def __call__(self, img: Image.Image | np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        pil = as_pil(img)
        top, left, h, w = crop_box(pil.width, pil.height, (self.crop_scale_min, 1.0), rng)
        size = (self.image_size, self.image_size)
        out = pil.resize(size, Image.BICUBIC, box=(left, top, left + w, top + h))
        if self.hflip and rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(out)


def eval_transform(image_size: int) -> EvalTransform:
    """Deterministic evaluation transform: bicubic resize to image_size x image_size, normalise."""
    return EvalTransform(image_size)


def train_transform(image_size: int, crop_scale_min: float, hflip: bool) -> TrainTransform:
    """Training augmentation; ``crop_scale_min=1.0, hflip=False`` reduces to (about) the eval resize.

    With scale fixed at 1 the only crop that fits is the whole image (up to one pixel of rounding
    for non-square images), which is also the centre-crop fallback for images whose aspect ratio is
    within [3/4, 4/3]; more elongated images get their central 4:3 part.
    """
    if not 0.0 < crop_scale_min <= 1.0:
        raise ValueError(f"crop_scale_min must be in (0, 1], got {crop_scale_min}")
    return TrainTransform(image_size, crop_scale_min, hflip)
