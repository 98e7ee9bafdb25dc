"""The Python API: load a checkpoint, score your own images and captions.

>>> import maskvlp
>>> m = maskvlp.load("runs/albef-tiny")                    # a run folder or a checkpoint folder
>>> m.score(["cat.jpg", "cat.jpg"], ["a red circle", "a blue square"], method="itm")
tensor([...])
>>> maskvlp.load("runs/vqa-from-albef-tiny").answer(["cat.jpg"], ["what colour is the circle?"])
['red']
>>> maskvlp.load("runs/nlvr2-from-albef-tiny").verify([("a.png", "b.png")], ["both images contain a star"])
[True]
>>> maskvlp.load("runs/grounding-from-albef-tiny").ground(["a.png"], ["the red circle"], [[[4, 4, 20, 20], [30, 8, 16, 16]]])
[0]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maskvlp.config import RunConfig

ImageLike = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]
METHODS = ("itc", "itm")
IMAGE_KINDS = "a path, a PIL image, an HxWx3 uint8 array or a normalised [3,H,W] tensor"


def _check_texts(texts: Sequence[str]) -> None:
    """Fail on the caller's line, not deep in the tokenizer (a bare str would be read letter by letter)."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not a single str")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a str, got {type(text).__name__}")


def _check_image(i: int, img: object, size: int) -> None:
    """One image of a call, checked before any work so the error names its position."""
    if isinstance(img, (str, Path)):
        if not Path(img).is_file():
            raise FileNotFoundError(f"images[{i}]: no image file at {img}")
    elif isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"images[{i}] must be an HxWx3 uint8 array, got shape {img.shape} {img.dtype}")
    elif isinstance(img, torch.Tensor):
        if tuple(img.shape) != (3, size, size) or not img.is_floating_point():
            raise ValueError(f"images[{i}] must be a normalised float tensor of shape [3, {size}, {size}] "
                             f"(the model's image size), got {list(img.shape)} {img.dtype}")
    elif not isinstance(img, Image.Image):
        raise ValueError(f"images[{i}] must be {IMAGE_KINDS}, got {type(img).__name__}")


def _check_images(images: Sequence[ImageLike], size: int) -> None:
    if isinstance(images, (str, Path, Image.Image)):
        raise ValueError(f"images must be a list of images, not a single {type(images).__name__}")
    for i, img in enumerate(images):
        _check_image(i, img, size)


def _size(img: ImageLike, tensor_size: int) -> tuple[int, int]:
    """(width, height) of an image as given: a tensor is already at the model's size."""
    if isinstance(img, torch.Tensor):
        return tensor_size, tensor_size
    if isinstance(img, (str, Path)):
        with Image.open(img) as f:
            return f.size
    if isinstance(img, Image.Image):
        return img.size
    return int(img.shape[1]), int(img.shape[0])


class LoadedModel:
    """A trained model with its image and text preprocessing."""

    def __init__(self, module, cfg: RunConfig, device: torch.device):
        from maskvlp.data.tokenizer import load_tokenizer
        from maskvlp.data.transforms import eval_transform

        self.module = module.to(device).eval()  # with a task checkpoint: the task module, head included
        self.model = module.model
        self.config = cfg
        self.device = device
        self.tokenizer = load_tokenizer()
        self.image_transform = eval_transform(cfg.model.vision.image_size)

    def preprocess_images(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Paths, PIL images, uint8 HxWx3 arrays or already-normalised [3,H,W] tensors -> a batch."""
        out = []
        for img in images:
            if isinstance(img, torch.Tensor):
                out.append(img)
                continue
            if isinstance(img, (str, Path)):
                with Image.open(img) as f:
                    img = f.convert("RGB")
            out.append(self.image_transform(img))
        return torch.stack(out).to(self.device)

    def _empty(self, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """What an empty input gives: the shape and dtype a non-empty one would have."""
        return torch.zeros(*shape, dtype=dtype or next(self.model.vision_proj.parameters()).dtype,
                           device=self.device)

    @torch.no_grad()
    def embed_images(self, images: Sequence[ImageLike], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised ITC embeddings [N, embed_dim]."""
        _check_images(images, self.config.model.vision.image_size)
        if len(images) == 0:
            return self._empty(0, self.config.model.embed_dim)
        return torch.cat([self.model.encode_image(self.preprocess_images(images[i:i + batch_size])).embed
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised ITC embeddings [N, embed_dim]."""
        _check_texts(texts)
        if len(texts) == 0:
            return self._empty(0, self.config.model.embed_dim)
        out = []
        for i in range(0, len(texts), batch_size):
            b = self.tokenizer.encode(list(texts[i:i + batch_size]), self.config.model.text.max_len)
            out.append(self.model.encode_text(b.input_ids.to(self.device), b.attention_mask.to(self.device)).embed)
        return torch.cat(out)

    @torch.no_grad()
    def score(self, images: Sequence[ImageLike], texts: Sequence[str], method: str = "itc",
              batch_size: int = 64) -> torch.Tensor:
        """Score pairs (images[i], texts[i]): ITC cosine similarity, or ITM log p(match) from the fusion encoder."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        _check_texts(texts)
        _check_images(images, self.config.model.vision.image_size)
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: score() takes aligned pairs")
        if method == "itm" and not self.model.has_fusion:
            raise ValueError(f"this {self.config.recipe} model has no fusion encoder; use method='itc'")
        if len(texts) == 0:
            return self._empty(0, dtype=torch.float32 if method == "itm" else None).cpu()
        scores = []
        for i in range(0, len(texts), batch_size):
            imgs = self.model.encode_image(self.preprocess_images(images[i:i + batch_size]))
            b = self.tokenizer.encode(list(texts[i:i + batch_size]), self.config.model.text.max_len)
            ids, mask = b.input_ids.to(self.device), b.attention_mask.to(self.device)
            txt = self.model.encode_text(ids, mask)
            if method == "itc":
                scores.append((imgs.embed * txt.embed).sum(-1))
            else:
                logits = self.model.itm_logits(txt.tokens, mask, imgs.tokens)
                scores.append(F.log_softmax(logits.float(), -1)[:, 1])
        return torch.cat(scores).cpu()


    def explain(self, images: Sequence[ImageLike], texts: Sequence[str], word: str | None = None,
                layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each image supports its text: Grad-CAM of the ITM match score on the fusion's cross-attention
        (ALBEF's; :mod:`maskvlp.eval.gradcam`). Returns (maps [N, g, g] over the patch grid, each text's
        match probability [N]); with ``word``, the map of that word's tokens instead of the whole text's."""
        from maskvlp.eval.gradcam import itm_gradcam

        _check_texts(texts)
        _check_images(images, self.config.model.vision.image_size)
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: explain() takes aligned pairs")
        if not self.model.has_fusion:
            raise ValueError(f"this {self.config.recipe} model has no fusion encoder: nothing to explain")
        b = self.tokenizer.encode(list(texts), self.config.model.text.max_len)
        ids, mask = b.input_ids.to(self.device), b.attention_mask.to(self.device)
        cam = itm_gradcam(self.model, self.preprocess_images(images), ids, mask, layer)
        if word is None:
            return cam.text_map.cpu(), cam.match.cpu()
        w = self.tokenizer.encode([word], self.config.model.text.max_len)
        pieces = [int(t) for t, m in zip(w.input_ids[0], w.attention_mask[0])
                  if m and int(t) not in self.tokenizer.special_ids]
        if not pieces:
            raise ValueError(f"word {word!r} has no token of its own")
        maps = []
        for i in range(len(texts)):
            at = [j for j in range(ids.shape[1] - len(pieces) + 1) if ids[i, j:j + len(pieces)].tolist() == pieces]
            if not at:
                raise ValueError(f"text {i} ({texts[i]!r}) has no word {word!r}")
            maps.append(cam.token_maps[i, at[0]:at[0] + len(pieces)].mean(0))
        return torch.stack(maps).cpu(), cam.match.cpu()

    def ground(self, images: Sequence[ImageLike], texts: Sequence[str],
               candidates: Sequence[Sequence[Sequence[float]]], alpha: float | None = None) -> list[int]:
        """For each (image, referring expression), the index of the candidate box (COCO ``[x, y, w, h]`` in the
        image's own pixels) where the Grad-CAM map of the ITM score is densest: ALBEF's weakly-supervised
        grounding (docs/tasks.md, "Grounding"). ``alpha``: the box score's area exponent (default: the
        checkpoint's ``task.box_alpha``, 0.5)."""
        from maskvlp.eval.grounding_metric import choose_box, map_at_image_size

        if len(candidates) != len(images) or any(len(c) == 0 for c in candidates):
            raise ValueError("ground() takes one non-empty list of candidate boxes per image")
        maps, _ = self.explain(images, texts)
        alpha = self.config.task.box_alpha if alpha is None else alpha
        chosen = []
        for img, cam, boxes in zip(images, maps, candidates):
            width, height = _size(img, self.config.model.vision.image_size)
            chosen.append(choose_box(map_at_image_size(cam, height, width), [tuple(b) for b in boxes], alpha))
        return chosen

    def _task(self, name: str, method: str) -> None:
        if self.config.task.name != name:
            kind = f"a fine-tuned {self.config.task.name}" if self.config.task.name else "a pre-trained"
            raise ValueError(f"{method}() needs a fine-tuned {name} checkpoint; this is {kind} checkpoint "
                             f"(maskvlp finetune {name} --from RUN makes one)")

    @torch.no_grad()
    def answer(self, images: Sequence[ImageLike], questions: Sequence[str], batch_size: int = 64) -> list[str]:
        """The top answer of the fine-tuned VQA head for each (images[i], questions[i])."""
        self._task("vqa", "answer")
        _check_texts(questions)
        _check_images(images, self.config.model.vision.image_size)
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions: answer() takes aligned pairs")
        out: list[str] = []
        for i in range(0, len(questions), batch_size):
            b = self.tokenizer.encode(list(questions[i:i + batch_size]), self.config.model.text.max_len)
            logits = self.module.logits(self.preprocess_images(images[i:i + batch_size]), b.input_ids.to(self.device),
                                        b.attention_mask.to(self.device))
            out.extend(self.module.answers[k] for k in logits.argmax(1).tolist())
        return out

    @torch.no_grad()
    def verify(self, image_pairs: Sequence[tuple[ImageLike, ImageLike]], statements: Sequence[str],
               batch_size: int = 32) -> list[bool]:
        """Whether each statement is true of its (left, right) pair, per the fine-tuned NLVR2 head."""
        self._task("nlvr2", "verify")
        _check_texts(statements)
        if isinstance(image_pairs, (str, Path)) or any(len(p) != 2 for p in image_pairs):
            raise ValueError("image_pairs must be a list of (left, right) image pairs")
        lefts, rights = [p[0] for p in image_pairs], [p[1] for p in image_pairs]
        _check_images(lefts, self.config.model.vision.image_size)
        _check_images(rights, self.config.model.vision.image_size)
        if len(image_pairs) != len(statements):
            raise ValueError(f"{len(image_pairs)} image pairs but {len(statements)} statements: verify() takes aligned pairs")
        out: list[bool] = []
        for i in range(0, len(statements), batch_size):
            b = self.tokenizer.encode(list(statements[i:i + batch_size]), self.config.model.text.max_len)
            logits = self.module.logits(self.preprocess_images(lefts[i:i + batch_size]),
                                        self.preprocess_images(rights[i:i + batch_size]),
                                        b.input_ids.to(self.device), b.attention_mask.to(self.device))
            out.extend(bool(k) for k in logits.argmax(1).tolist())
        return out


def load(checkpoint: str | Path, device: str | torch.device | None = None) -> LoadedModel:
    """Load a checkpoint folder, or a run folder's newest checkpoint, with its preprocessing: pre-trained
    (``embed_*``, ``score``) or fine-tuned (VQA: ``answer``; NLVR2: ``verify``; retrieval: as pre-trained)."""
    from maskvlp.finetuning import load_task_module

    module, cfg = load_task_module(checkpoint)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return LoadedModel(module, cfg, dev)
