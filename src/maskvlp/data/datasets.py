"""Pre-training datasets, user JSON files and the batch collate (the retrieval evaluation sets are in
:mod:`maskvlp.data.retrieval_sets`).

Every item is a pure function of (seed, epoch, index): the caption choice and the augmentation
draw from ``np.random.default_rng([seed, epoch, index])``. Training can therefore resume exactly
at any position, and the result does not depend on how many data-loader workers there are.
(``set_epoch`` must reach the dataset the workers use: create workers per epoch, i.e. do not use
``persistent_workers=True``, or call ``set_epoch`` before the loader's iterator is created.)

User data never crashes a run: malformed files fail at load with a :class:`DataFormatError`
naming the file and entry; unreadable images at run time give ``None`` items that
:func:`collate_pretrain` drops and counts, so the trainer can stop when too many are bad.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from maskvlp.data.tokenizer import Tokenizer, repair_surrogates
from maskvlp.data.transforms import resize_square, to_tensor, train_transform

if TYPE_CHECKING:
    from maskvlp.data.synthetic import SyntheticWorld

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


class DataFormatError(ValueError):
    """A user data file is not in the expected format; the message names the file and the entry."""


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The one source of randomness for an item, so it can be recomputed anywhere."""
    return np.random.default_rng([seed, epoch, index])


# --------------------------------------------------------------------------------------------
# Pre-training datasets
# --------------------------------------------------------------------------------------------
class PretrainDataset(Dataset):
    """Base: items are dicts {image, text, image_key, index}, or None for an unreadable sample.

    ``image_key`` identifies the image (not the pair), so ITM never takes another caption of the
    same image as a negative.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose captions/augmentations __getitem__ produces."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return sample_rng(self.seed, self.epoch, index)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Optional[dict]:
        raise NotImplementedError

    def captions_of(self, index: int) -> Sequence[str]:
        """Every caption item ``index`` may be shown with (one is drawn per epoch)."""
        raise NotImplementedError

    def image_key_of(self, index: int) -> int:
        raise NotImplementedError

    def pairs(self) -> Optional[np.ndarray]:
        """(P, 2) item indices each batched beside the other (the engine's batches hold whole pairs), or None."""
        return None

    def caption_index(self, index: int) -> int:
        """Which of ``captions_of(index)`` ``__getitem__`` shows this epoch, without loading the image:
        the first draw of the item's generator, as ``__getitem__`` makes it."""
        return int(self.rng(index).integers(len(self.captions_of(index))))


def _render_all(world: "SyntheticWorld", scenes: Sequence[Any], image_size: int | None, progress: Progress | None) -> np.ndarray:
    """Render every scene once into one uint8 array [N,H,W,3] (rendering in the loop steals model CPU)."""
    images: np.ndarray | None = None
    for i, scene in enumerate(scenes):
        img = world.render(scene)
        if image_size is not None and img.shape[:2] != (image_size, image_size):
            img = np.asarray(resize_square(img, image_size))
        if images is None:
            images = np.empty((len(scenes), *img.shape), dtype=np.uint8)
        images[i] = img
        if progress is not None:
            progress(i + 1, len(scenes))
    if images is None:
        raise ValueError("the synthetic split has no scenes")
    return images


class SyntheticPretrainDataset(PretrainDataset):
    """One item per scene of the procedural world, images pre-rendered and cached.

    No augmentation by default: a random crop can cut out an object the caption names, which makes
    the pair false, and a flip makes "left of" captions false. ``augment=True`` crops only
    (``crop_scale_min``), never flips.
    """

    def __init__(
        self,
        world: "SyntheticWorld",
        split: str = "train",
        seed: int = 0,
        augment: bool = False,
        *,
        crop_scale_min: float = 0.5,
        image_size: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(seed)
        scenes = world.scenes(split)
        self.captions: list[list[str]] = [[c.text for c in world.captions(s)] for s in scenes]
        for i, caps in enumerate(self.captions):
            if not caps:
                raise ValueError(f"synthetic scene {i} of split {split!r} has no captions")
        self.images = _render_all(world, scenes, image_size, progress)
        size = self.images.shape[1]
        self.transform = train_transform(size, crop_scale_min, hflip=False) if augment else None

    def __len__(self) -> int:
        return len(self.captions)

    def captions_of(self, index: int) -> Sequence[str]:
        return self.captions[index]

    def image_key_of(self, index: int) -> int:
        return index

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        caps = self.captions[index]
        text = caps[int(rng.integers(len(caps)))]
        img = self.images[index]
        image = self.transform(img, rng) if self.transform is not None else to_tensor(img)
        return {"image": image, "text": text, "image_key": index, "index": index}


# --------------------------------------------------------------------------------------------
# User JSON files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JsonEntry:
    image: str  # path joined to image_root
    captions: tuple[str, ...]  # non-empty, stripped
    repaired: int = 0  # how many captions held lone UTF-16 surrogates (now U+FFFD)


def load_json_file(file: str | Path) -> Any:
    """A user's JSON file decoded, or a one-line DataFormatError naming the file."""
    path = Path(file)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None


def _read_json_list(file: str | Path, entries: str = '{"image": ..., "caption": ...}') -> list:
    """A JSON file that must hold a list of ``entries``."""
    data = load_json_file(file)
    if not isinstance(data, list):
        raise DataFormatError(f"{Path(file)}: expected a JSON list of {entries} entries, got a {type(data).__name__}")
    return data


def _entry_captions(file: Path, i: int, caption: Any, key: str = "caption") -> tuple[tuple[str, ...], int]:
    """The entry's non-empty captions, lone surrogates repaired, and how many were repaired;
    a string or a list of strings is accepted."""
    if isinstance(caption, str):
        caption = [caption]
    if not isinstance(caption, list) or not all(isinstance(c, str) for c in caption):
        raise DataFormatError(f"{file}: entry {i}: \"{key}\" must be a string or a list of strings")
    kept = [c.strip() for c in caption if c.strip()]
    repaired = [repair_surrogates(c) for c in kept]
    return tuple(repaired), sum(a != b for a, b in zip(kept, repaired))


def _join(image_root: str | Path, image: str) -> str:
    """Relative paths are joined to image_root, absolute ones kept; normalised so keys match."""
    return os.path.normpath(image if os.path.isabs(image) else os.path.join(str(image_root), image))


def _parse_entries(file: str | Path, image_root: str | Path, text_key: str = "caption") -> list[JsonEntry]:
    """Validated entries of one ALBEF-style file, including those left with no caption; ``text_key`` names
    the text field (ALBEF's grounding files call it "text")."""
    path = Path(file)
    entries: list[JsonEntry] = []
    for i, item in enumerate(_read_json_list(path)):
        if not isinstance(item, dict):
            raise DataFormatError(f"{path}: entry {i} is a {type(item).__name__}, expected an object")
        for key in ("image", text_key):
            if key not in item:
                raise DataFormatError(f"{path}: entry {i} has no \"{key}\" key (keys: {sorted(item)})")
        if not isinstance(item["image"], str) or not item["image"].strip():
            raise DataFormatError(f"{path}: entry {i}: \"image\" must be a non-empty path string")
        captions, repaired = _entry_captions(path, i, item[text_key], text_key)
        entries.append(JsonEntry(_join(image_root, item["image"].strip()), captions, repaired))
    return entries


def load_json_entries(file: str | Path, image_root: str | Path, text_key: str = "caption") -> tuple[list[JsonEntry], int]:
    """Validated entries of one ALBEF-style file, and how many were dropped for empty captions."""
    entries = _parse_entries(file, image_root, text_key)
    kept = [e for e in entries if e.captions]
    return kept, len(entries) - len(kept)


def load_image(path: str) -> Image.Image | None:
    """The decoded RGB image, or None if it is missing, truncated or not an image."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the try
    except Exception as err:  # noqa: BLE001 - any decoder failure means "bad sample", never a crash
        log.warning("skipping unreadable image %s: %s", path, err)
        return None


class AlbefJsonDataset(PretrainDataset):
    """ALBEF pre-training lists ``[{"image": path, "caption": str | [str, ...]}, ...]``.

    One item per entry; with a caption list one caption is drawn per (seed, epoch, index), as
    ALBEF/SIMLA do. Entries whose captions are all empty are dropped (``skipped_empty``); captions
    with lone UTF-16 surrogates (valid JSON, not valid Unicode) get U+FFFD and are counted
    (``repaired_text``).
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        image_root: str | Path,
        image_size: int,
        crop_scale_min: float,
        hflip: bool,
        seed: int = 0,
        text_key: str = "caption",
    ) -> None:
        super().__init__(seed)
        if isinstance(files, (str, Path)):
            files = [files]
        self.entries: list[JsonEntry] = []
        self.skipped_empty = 0
        self.repaired_text = 0
        for file in files:
            entries, skipped = load_json_entries(file, image_root, text_key)
            self.entries.extend(entries)
            self.skipped_empty += skipped
            self.repaired_text += sum(e.repaired for e in entries)
        if not self.entries:
            raise DataFormatError(f"no usable entries in {', '.join(map(str, files)) or 'the empty file list'}")
        keys: dict[str, int] = {}
        self.image_keys = [keys.setdefault(e.image, len(keys)) for e in self.entries]
        self.num_images = len(keys)
        self.transform = train_transform(image_size, crop_scale_min, hflip)

    def __len__(self) -> int:
        return len(self.entries)

    def captions_of(self, index: int) -> Sequence[str]:
        return self.entries[index].captions

    def image_key_of(self, index: int) -> int:
        return self.image_keys[index]

    def __getitem__(self, index: int) -> Optional[dict]:
        entry = self.entries[index]
        rng = self.rng(index)
        text = entry.captions[int(rng.integers(len(entry.captions)))]
        img = load_image(entry.image)
        if img is None:
            return None
        return {"image": self.transform(img, rng), "text": text, "image_key": self.image_keys[index], "index": index}


# --------------------------------------------------------------------------------------------
# Collate
# --------------------------------------------------------------------------------------------
def collate_pretrain(batch: list[Optional[dict]], tokenizer: Tokenizer, max_len: int) -> dict:
    """Stack images, tokenise texts, drop None items and report how many (``num_bad``).

    Bind ``tokenizer`` and ``max_len`` with functools.partial (picklable for workers). A batch
    whose items were all bad has B = 0; the trainer should skip it.
    """
    good = [b for b in batch if b is not None]
    tokens = tokenizer.encode([b["text"] for b in good], max_len)
    images = torch.stack([b["image"] for b in good]) if good else torch.zeros(0, 3, 0, 0)
    return {
        "images": images,
        "input_ids": tokens.input_ids,
        "attention_mask": tokens.attention_mask,
        "word_ids": tokens.word_ids,
        "image_keys": torch.tensor([b["image_key"] for b in good], dtype=torch.long),
        "indices": torch.tensor([b["index"] for b in good], dtype=torch.long),
        "texts": [b["text"] for b in good],
        "num_bad": len(batch) - len(good),
    }
