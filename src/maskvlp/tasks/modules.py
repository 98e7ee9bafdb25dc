"""Task modules: the pre-trained image and text towers and fusion encoder, and a classifier head.

Both tasks read the fusion encoder's pooled text state, the vector the ITM head reads in pre-training:
VQA classifies it into the answer vocabulary (soft targets, binary cross-entropy, as ViLT, METER and
FLAVA do); NLVR2 fuses the statement with each image and classifies the two pooled states side by side
(ViLT's "pair" form; ALBEF instead extends its fusion encoder to read both images: docs/tasks.md).
Parts a task does not read (the contrastive projections and temperature) are frozen, so gradients reach
exactly the parameters the task uses.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from maskvlp.config import RunConfig
from maskvlp.data.batch import TextSpecials
from maskvlp.data.tasks.datasets import Nlvr2Batch, VqaBatch
from maskvlp.models.heads import ClassifierHead
from maskvlp.models.vlp import FUSION, VLPModel, build_model

UNUSED_PARTS = ("vision_proj", "text_proj", "temp")


class TaskModule(nn.Module):
    """A model with fusion and a head; ``fused_state`` is what every head reads."""

    def __init__(self, cfg: RunConfig, load_unimodal: bool):
        super().__init__()
        self.model: VLPModel = build_model(cfg.model, {FUSION}, load_pretrained=load_unimodal)
        for name, p in self.model.named_parameters():
            if name.split(".")[0] in UNUSED_PARTS:
                p.requires_grad_(False)
        self.fused_width = cfg.model.text.width
        self.hidden = max(1, int(round(cfg.task.head_hidden * self.fused_width)))

    def fused_state(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, text_width]: the pooled fused text of each (image, text) row."""
        image_tokens = self.model.encode_image(images).tokens
        text_tokens = self.model.text(input_ids, attention_mask)
        fused = self.model.fuse(text_tokens, attention_mask, image_tokens, need_image=False).text
        return self.model.pool_text(fused, attention_mask)

    def after_step(self) -> None:
        """No EMA teacher in fine-tuning (ALBEF keeps one for retrieval only)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class VqaModule(TaskModule):
    """Answer classification over ``cfg.task.answers``; ``task.blind`` hides every image (the
    question-only floor: the same model and budget, with a blank picture)."""

    def __init__(self, cfg: RunConfig, specials: TextSpecials | None = None, load_unimodal: bool = True):
        super().__init__(cfg, load_unimodal)
        if len(cfg.task.answers) < 2:
            raise ValueError("VQA needs an answer vocabulary of at least 2 answers (task.answers)")
        self.answers = list(cfg.task.answers)
        self.blind = cfg.task.blind
        self.head = ClassifierHead(self.fused_width, self.hidden, len(self.answers), cfg.model.text.layer_norm_eps)
        # every answer starts at probability 1/answers, not 1/2: a question has about one right answer, and
        # from 1/2 the first hundreds of steps only push thousands of wrong answers down (the prior
        # initialisation of Lin et al.'s focal loss for many-class sigmoid heads)
        torch.nn.init.constant_(self.head.out.bias, -math.log(len(self.answers) - 1))

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.blind:
            images = torch.zeros_like(images)
        return self.head(self.fused_state(images, input_ids, attention_mask))

    def forward(self, batch: VqaBatch, step: int = 0, micro: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.logits(batch.images, batch.input_ids, batch.attention_mask).float()
        # summed over answers, averaged over questions (ViLT): a mean over both would shrink the gradient
        # of the few answers that matter by the vocabulary's size
        loss = F.binary_cross_entropy_with_logits(logits, batch.targets) * batch.targets.shape[1]
        with torch.no_grad():
            score = batch.targets.gather(1, logits.argmax(1, keepdim=True)).mean()
        return loss, {"vqa_score": float(score)}


class Nlvr2Module(TaskModule):
    """True / false of a statement about a pair of images."""

    def __init__(self, cfg: RunConfig, specials: TextSpecials | None = None, load_unimodal: bool = True):
        super().__init__(cfg, load_unimodal)
        self.head = ClassifierHead(2 * self.fused_width, self.hidden, 2, cfg.model.text.layer_norm_eps)

    def logits(self, left: torch.Tensor, right: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
        """Both images in one pass of each tower; the statement is encoded once and fused with each."""
        rows = left.shape[0]
        image_tokens = self.model.encode_image(torch.cat([left, right])).tokens
        text_tokens = self.model.text(input_ids, attention_mask)
        mask2 = attention_mask.repeat(2, 1)
        fused = self.model.fuse(text_tokens.repeat(2, 1, 1), mask2, image_tokens, need_image=False).text
        pooled = self.model.pool_text(fused, mask2)
        return self.head(torch.cat([pooled[:rows], pooled[rows:]], dim=-1))

    def forward(self, batch: Nlvr2Batch, step: int = 0, micro: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.logits(batch.left, batch.right, batch.input_ids, batch.attention_mask).float()
        loss = F.cross_entropy(logits, batch.labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == batch.labels).float().mean()
        return loss, {"nlvr2_acc": float(accuracy)}
