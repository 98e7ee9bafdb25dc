"""Task training sets and batches: VQA questions and NLVR2 statements as the engine samples them.

Images are referred to by each example's ``image`` field: an ``int`` indexes the rendered pictures of
a synthetic split, a ``str`` is a file, decoded when the item is read. An unreadable file gives a
``None`` item, which the engine replaces by a readable one and counts (never a crash); a VQA question
whose answers are all outside the answer vocabulary has nothing to learn from and is left out of
training (counted), but kept for evaluation. Items carry no randomness (no augmentation: a crop can
cut out the object a question asks about and a flip makes "left of" false), so resuming is exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from maskvlp.data.datasets import load_image
from maskvlp.data.tasks.examples import Nlvr2Example, VqaExample
from maskvlp.data.tokenizer import Tokenizer
from maskvlp.data.transforms import resize_square, to_tensor


class TaskImages:
    """An example's picture as a normalised tensor: from a rendered uint8 array [N,H,W,3] or a file."""

    def __init__(self, image_size: int, rendered: np.ndarray | None = None):
        self.image_size = image_size
        self.rendered = rendered

    def __call__(self, ref: str | int) -> torch.Tensor | None:
        """The image, or None when its file is missing or unreadable."""
        if isinstance(ref, int):
            if self.rendered is None:
                raise ValueError(f"example refers to rendered scene {ref}, but this set has no rendered scenes")
            return to_tensor(self.rendered[ref])
        img = load_image(ref)
        return None if img is None else to_tensor(resize_square(img, self.image_size))


class VqaTrainSet(Dataset):
    """Questions with at least one answer in the vocabulary; ``skipped_out_of_vocab`` counts the others."""

    def __init__(self, examples: Sequence[VqaExample], images: TaskImages, targets: Sequence[dict[int, float]]):
        keep = [i for i, t in enumerate(targets) if t]
        self.examples = [examples[i] for i in keep]
        self.targets = [targets[i] for i in keep]
        self.images = images
        self.skipped_out_of_vocab = len(examples) - len(keep)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict | None:
        example = self.examples[index]
        image = self.images(example.image)
        if image is None:
            return None
        return {"image": image, "text": example.question, "targets": self.targets[index], "index": index}


class Nlvr2TrainSet(Dataset):
    """Statements about a pair of images, with their true / false label."""

    def __init__(self, examples: Sequence[Nlvr2Example], images: TaskImages):
        self.examples = list(examples)
        self.images = images

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict | None:
        example = self.examples[index]
        left, right = self.images(example.left), self.images(example.right)
        if left is None or right is None:
            return None
        return {"left": left, "right": right, "text": example.sentence, "label": int(example.label), "index": index}


@dataclass
class VqaBatch:
    images: torch.Tensor  # [B,3,H,W]
    input_ids: torch.Tensor  # the questions
    attention_mask: torch.Tensor
    targets: torch.Tensor  # [B, answers]: each answer's soft score (its VQA accuracy against the human answers)

    def to(self, device: torch.device) -> "VqaBatch":
        return VqaBatch(*(t.to(device) for t in (self.images, self.input_ids, self.attention_mask, self.targets)))


@dataclass
class Nlvr2Batch:
    left: torch.Tensor  # [B,3,H,W]
    right: torch.Tensor
    input_ids: torch.Tensor  # the statements
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [B] 1 = true of the pair

    def to(self, device: torch.device) -> "Nlvr2Batch":
        return Nlvr2Batch(*(t.to(device) for t in (self.left, self.right, self.input_ids, self.attention_mask,
                                                   self.labels)))


def collate_vqa(items: list[dict | None], tokenizer: Tokenizer, max_len: int, num_answers: int) -> dict:
    """Stack images, tokenise questions, spread the sparse targets into [B, num_answers]."""
    good = [b for b in items if b is not None]
    tokens = tokenizer.encode([b["text"] for b in good], max_len)
    targets = torch.zeros(len(good), num_answers)
    for row, item in enumerate(good):
        for answer, score in item["targets"].items():
            targets[row, answer] = score
    return {"images": torch.stack([b["image"] for b in good]), "input_ids": tokens.input_ids,
            "attention_mask": tokens.attention_mask, "targets": targets, "num_bad": len(items) - len(good)}


def collate_nlvr2(items: list[dict | None], tokenizer: Tokenizer, max_len: int) -> dict:
    good = [b for b in items if b is not None]
    tokens = tokenizer.encode([b["text"] for b in good], max_len)
    return {"left": torch.stack([b["left"] for b in good]), "right": torch.stack([b["right"] for b in good]),
            "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
            "labels": torch.tensor([b["label"] for b in good], dtype=torch.long), "num_bad": len(items) - len(good)}


def vqa_batch(raw: dict, device: torch.device, rows: int, pad_id: int) -> VqaBatch:
    return VqaBatch(raw["images"], raw["input_ids"], raw["attention_mask"], raw["targets"]).to(device)


def nlvr2_batch(raw: dict, device: torch.device, rows: int, pad_id: int) -> Nlvr2Batch:
    return Nlvr2Batch(raw["left"], raw["right"], raw["input_ids"], raw["attention_mask"], raw["labels"]).to(device)
