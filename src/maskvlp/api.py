"""The Python API: load a checkpoint, score your own images and captions.

>>> import maskvlp
>>> m = maskvlp.load("runs/albef-tiny")                    # a run folder or a checkpoint folder
>>> m.score(["cat.jpg", "cat.jpg"], ["a red circle", "a blue square"], method="itm")
tensor([...])
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


class LoadedModel:
    """A trained model with its image and text preprocessing."""

    def __init__(self, module, cfg: RunConfig, device: torch.device):
        from maskvlp.data.tokenizer import load_tokenizer
        from maskvlp.data.transforms import eval_transform

        self.model = module.model.to(device).eval()
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

    @torch.no_grad()
    def embed_images(self, images: Sequence[ImageLike], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised ITC embeddings [N, embed_dim]."""
        return torch.cat([self.model.encode_image(self.preprocess_images(images[i:i + batch_size])).embed
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
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
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: score() takes aligned pairs")
        if method == "itm" and not self.model.has_fusion:
            raise ValueError(f"this {self.config.recipe} model has no fusion encoder; use method='itc'")
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


def load(checkpoint: str | Path, device: str | torch.device | None = None) -> LoadedModel:
    """Load a checkpoint folder, or a run folder's newest checkpoint, with its preprocessing."""
    from maskvlp.pipeline import load_pretrainer

    module = load_pretrainer(checkpoint)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return LoadedModel(module, module.config, dev)
