"""Retrieval evaluation sets: images and captions for image-text retrieval (COCO protocol), from the
synthetic world (with exact truth and binding probes) or from a Karpathy/ALBEF test file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from maskvlp.data.datasets import DataFormatError, Progress, _parse_entries, _render_all, load_image
from maskvlp.data.transforms import resize_square, to_tensor

if TYPE_CHECKING:
    from maskvlp.data.synthetic import SyntheticWorld


@dataclass(frozen=True)
class ArrayImages:
    """Images kept as one uint8 array [N,H,W,3] (4x smaller than floats); normalised on access."""

    array: np.ndarray

    def __call__(self, index: int) -> torch.Tensor:
        return to_tensor(self.array[index])

    def __len__(self) -> int:
        return len(self.array)


@dataclass
class RetrievalSet:
    """Images and captions for image-text retrieval (COCO protocol: several captions per image).

    ``truth[t, i]`` says whether caption t is true of image i (synthetic data only: a caption of
    another scene can still be true of this one). ``probes`` are (image index, kind, true text,
    false text) binding tests (synthetic only).
    """

    images: Callable[[int], torch.Tensor] | list[torch.Tensor]
    num_images: int
    texts: list[str]
    txt2img: list[int]
    img2txt: list[list[int]]
    skipped_images: int = 0
    truth: np.ndarray | None = None
    probes: list[tuple[int, str, str, str]] | None = None

    def image(self, index: int) -> torch.Tensor:
        """FloatTensor[3,H,W] of one image, already eval-transformed."""
        return self.images[index] if isinstance(self.images, list) else self.images(index)

    def image_batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """FloatTensor[B,3,H,W] of the given images."""
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        return torch.stack([self.image(int(i)) for i in indices])


def _index_captions(captions: list[list[str]]) -> tuple[list[str], list[int], list[list[int]]]:
    """Flatten per-image captions into texts with txt2img / img2txt maps."""
    texts: list[str] = []
    txt2img: list[int] = []
    img2txt: list[list[int]] = []
    for i, caps in enumerate(captions):
        img2txt.append(list(range(len(texts), len(texts) + len(caps))))
        texts.extend(caps)
        txt2img.extend([i] * len(caps))
    return texts, txt2img, img2txt


def synthetic_retrieval_set(
    world: "SyntheticWorld",
    split: str = "test",
    num_images: int = 1000,
    *,
    image_size: int | None = None,
    progress: Progress | None = None,
) -> RetrievalSet:
    """The first ``num_images`` scenes of a split with all their captions, exact truth and probes."""
    from maskvlp.data.synthetic import truth_matrix

    scenes = list(world.scenes(split))[:num_images]
    caption_objs = [list(world.captions(s)) for s in scenes]
    texts, txt2img, img2txt = _index_captions([[c.text for c in caps] for caps in caption_objs])
    specs = [c.spec for caps in caption_objs for c in caps]
    truth = np.asarray(truth_matrix(specs, scenes), dtype=bool)
    probes = [(i, p.kind, p.true.text, p.false.text) for i, s in enumerate(scenes) for p in world.binding_probes(s)]
    images = ArrayImages(_render_all(world, scenes, image_size, progress))
    return RetrievalSet(images, len(scenes), texts, txt2img, img2txt, 0, truth, probes)


def json_retrieval_set(file: str | Path, image_root: str | Path, image_size: int) -> RetrievalSet:
    """A Karpathy/ALBEF test file ``[{"image": path, "caption": [str, ...]}]``, images decoded once.

    Entries naming the same image are merged. Unreadable images (and their captions) and images
    left with no non-empty caption are skipped and counted in ``skipped_images``.
    """
    by_image: dict[str, list[str]] = {}
    for e in _parse_entries(file, image_root):
        by_image.setdefault(e.image, []).extend(e.captions)
    arrays: list[np.ndarray] = []
    captions: list[list[str]] = []
    skipped = 0
    for path, caps in by_image.items():
        img = load_image(path) if caps else None
        if img is None:
            skipped += 1
            continue
        arrays.append(np.asarray(resize_square(img, image_size)))
        captions.append(caps)
    if not arrays:
        raise DataFormatError(f"{file}: no readable image with a caption")
    texts, txt2img, img2txt = _index_captions(captions)
    return RetrievalSet(ArrayImages(np.stack(arrays)), len(arrays), texts, txt2img, img2txt, skipped)
