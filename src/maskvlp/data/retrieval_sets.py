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
    false text) binding tests: the synthetic world's, or a probe file's (:func:`read_probe_file`), whose
    images are ``probe_images`` (probe image indices point there when it is set, else into ``images``).
    """

    images: Callable[[int], torch.Tensor] | list[torch.Tensor]
    num_images: int
    texts: list[str]
    txt2img: list[int]
    img2txt: list[list[int]]
    skipped_images: int = 0
    truth: np.ndarray | None = None
    probes: list[tuple[int, str, str, str]] | None = None
    probe_images: ArrayImages | None = None
    skipped_probes: int = 0

    def probe_image_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """FloatTensor[B,3,H,W] of the images probes point at."""
        if self.probe_images is None:
            return self.image_batch(indices)
        return torch.stack([self.probe_images(int(i)) for i in indices])

    @property
    def num_probe_images(self) -> int:
        return self.num_images if self.probe_images is None else len(self.probe_images)

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


PROBE_ENTRY = '{"image": path, "true": str, "false": str, "kind": str, "heldout": bool (optional)}'
HELDOUT_SUFFIX = "_heldout"  # appended to a probe's kind when its entry says "heldout": true


def read_probe_file(file: str | Path, image_root: str | Path, image_size: int
                    ) -> tuple[list[tuple[int, str, str, str]], ArrayImages | None, int]:
    """Binding probes from a file (``eval.probes_json``): a JSON list of :data:`PROBE_ENTRY` objects, each a
    true caption of its image and a minimally edited false one (ARO's and Winoground's idea, in the layout
    the tabletop world writes). Returns (probes indexing the returned images, the images, probes skipped
    because their image could not be read). A wrong entry is a one-line error naming file, entry and field."""
    from maskvlp.data.datasets import _join, _read_json_list

    path = Path(file)
    rows: list[tuple[str, str, str, str]] = []
    for i, item in enumerate(_read_json_list(path, PROBE_ENTRY)):
        if not isinstance(item, dict):
            raise DataFormatError(f"{path}: entry {i} is a {type(item).__name__}, expected an object {PROBE_ENTRY}")
        for key in ("image", "true", "false", "kind"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                problem = "is missing" if key not in item else "must be a non-empty string"
                raise DataFormatError(f"{path}: entry {i}: \"{key}\" {problem}")
        heldout = item.get("heldout", False)
        if not isinstance(heldout, bool):
            raise DataFormatError(f"{path}: entry {i}: \"heldout\" must be true or false, got {heldout!r}")
        kind = item["kind"].strip() + (HELDOUT_SUFFIX if heldout else "")
        rows.append((_join(image_root, item["image"].strip()), kind, item["true"], item["false"]))
    index: dict[str, int] = {}
    arrays: list[np.ndarray] = []
    probes: list[tuple[int, str, str, str]] = []
    unreadable: set[str] = set()
    skipped = 0
    for image, kind, true, false in rows:
        if image not in index and image not in unreadable:
            img = load_image(image)
            if img is None:
                unreadable.add(image)
            else:
                index[image] = len(arrays)
                arrays.append(np.asarray(resize_square(img, image_size)))
        if image in unreadable:
            skipped += 1
            continue
        probes.append((index[image], kind, true, false))
    return probes, (ArrayImages(np.stack(arrays)) if arrays else None), skipped


def json_retrieval_set(file: str | Path, image_root: str | Path, image_size: int,
                       probes_file: str | Path | None = None) -> RetrievalSet:
    """A Karpathy/ALBEF test file ``[{"image": path, "caption": [str, ...]}]``, images decoded once, with
    the binding probes of ``probes_file`` (image paths relative to the same ``image_root``) if given.

    Entries naming the same image are merged. Unreadable images (and their captions) and images
    left with no non-empty caption are skipped and counted in ``skipped_images``; probes whose image
    cannot be read in ``skipped_probes``.
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
    rset = RetrievalSet(ArrayImages(np.stack(arrays)), len(arrays), texts, txt2img, img2txt, skipped)
    if probes_file:
        probes, probe_images, rset.skipped_probes = read_probe_file(probes_file, image_root, image_size)
        if not probes:
            raise DataFormatError(f"{probes_file}: no probe with a readable image")
        rset.probes, rset.probe_images = probes, probe_images
    return rset
