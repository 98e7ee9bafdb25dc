"""Image-text contrastive loss (ITC), as ALBEF and CLIP use it.

* ``albef`` style (``momentum_features: true``): student features against the EMA teacher's features of
  the global batch plus a queue of past teacher features, with momentum distillation: targets are
  ``alpha * softmax(teacher similarities) + (1 - alpha) * ground truth``.
* ``clip`` style (``momentum_features: false, queue: false, alpha: 0``): in-batch InfoNCE with the
  features of every rank gathered with gradient (open_clip's local loss).

Positives are defined by image identity, not by the diagonal: another caption of the same image, in
the batch or in the queue, is a positive, never a negative.

``text_negatives: swap`` (NegCLIP's hard negative captions, Yuksekgonul et al. 2023; ALBEF and CLIP:
none) adds each caption's rule-based twin (two attribute words exchanged, or a spatial word reversed;
:mod:`maskvlp.negatives`) as extra text columns of the image -> text loss: every image must score its
caption above every twin in the global batch, its own among them, which bag-of-words embeddings cannot.
The twins are never queued; under momentum distillation the teacher scores them too (one more teacher
text pass), so the soft targets cover the extra columns.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from maskvlp.config import ITCParams, ModelConfig
from maskvlp.distributed import all_gather_nograd, all_gather_with_grad, local_slice
from maskvlp.models.vlp import TEACHER
from maskvlp.objectives.base import Objective, ObjectiveOutput, register
from maskvlp.objectives.context import CLEAN, NEGATIVES, StepContext
from maskvlp.objectives.reads import Reads, TextPass


class FeatureQueue(torch.nn.Module):
    """A ring buffer of (image feature, text feature, image key) that accepts any batch size.

    Enqueue wraps around the end (no "queue size must be divisible by the batch" assert), and only
    filled slots are ever read, so the first steps do not contrast against random vectors.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("image", torch.zeros(size, dim))
        self.register_buffer("text", torch.zeros(size, dim))
        self.register_buffer("keys", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = int(self.filled)
        return self.image[:n], self.text[:n], self.keys[:n]

    @torch.no_grad()
    def push(self, image: torch.Tensor, text: torch.Tensor, keys: torch.Tensor) -> None:
        n = image.shape[0]
        if n >= self.size:  # keep the newest `size` entries
            image, text, keys, n = image[-self.size:], text[-self.size:], keys[-self.size:], self.size
        idx = (int(self.ptr) + torch.arange(n, device=self.image.device)) % self.size
        self.image[idx] = image.to(self.image.dtype)
        self.text[idx] = text.to(self.text.dtype)
        self.keys[idx] = keys
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))


NO_COLUMN = -1e4  # logit of a column that does not exist (a caption without a twin): finite, so 0 * log p stays 0


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum(targets * log_softmax(logits)) over the LAST dim (ALBEF #58's fix)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def top1_hits(similarity: torch.Tensor, positives: torch.Tensor) -> float:
    """Fraction of rows whose most similar column is a positive (a readable training signal)."""
    with torch.no_grad():
        best = similarity.argmax(dim=1)
        return float((positives.gather(1, best[:, None]) > 0).float().mean())


def positive_targets(row_keys: torch.Tensor, column_keys: torch.Tensor) -> torch.Tensor:
    """Row-normalised indicator of columns showing the same image as each row."""
    pos = (row_keys[:, None] == column_keys[None, :]).float()
    return pos / pos.sum(1, keepdim=True).clamp(min=1)


class Twins(NamedTuple):
    """The caption twins of the global batch as ITC columns: one slot per global row, in row order."""

    student: torch.Tensor  # this rank's slots (zeros where a caption has no twin), to gather with grad
    teacher: torch.Tensor | None  # every rank's slots, teacher features (momentum distillation only)
    valid: torch.Tensor  # bool per global slot
    offset: torch.Tensor  # 0 where valid, NO_COLUMN where not: added to a twin column's logits


def rows_with_negatives(embed: torch.Tensor, has_negative: torch.Tensor) -> torch.Tensor:
    """``embed`` (one row per True of ``has_negative``) spread to one row per batch item, zeros elsewhere,
    so every rank gathers a block of the same size (ranks hold different numbers of negatives)."""
    out = embed.new_zeros(has_negative.shape[0], embed.shape[1])
    return out.index_put((has_negative.nonzero().squeeze(1),), embed)


@register
class ITC(Objective):
    name = "itc"

    def __init__(self, model_cfg: ModelConfig, params: ITCParams | None = None):
        super().__init__(model_cfg, params)
        p: ITCParams = self.params
        self.momentum_features: bool = p.momentum_features
        self.alpha: float = p.alpha if p.momentum_features else 0.0
        self.alpha_ramp_steps: int = p.alpha_ramp_steps
        self.batch_features: str = p.batch_features
        self.queue = FeatureQueue(model_cfg.queue_size, model_cfg.embed_dim) if p.queue and p.momentum_features else None
        self.text_negatives: bool = p.text_negatives != "none"

    def reads(self) -> Reads:
        passes = {TextPass(False, CLEAN)} | ({TextPass(False, NEGATIVES)} if self.text_negatives else set())
        if self.momentum_features:
            passes.add(TextPass(True, CLEAN))
            if self.text_negatives and (self.alpha > 0 or self.batch_features == "teacher"):
                passes.add(TextPass(True, NEGATIVES))
        return Reads(parts={TEACHER} if self.momentum_features else set(), text_passes=passes)

    def current_alpha(self, step: int) -> float:
        return self.alpha * min(1.0, (step + 1) / max(1, self.alpha_ramp_steps))

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        model = ctx.model
        with torch.no_grad():
            model.temp.clamp_(0.001, 0.5)
        temp = model.temp
        img, txt = ctx.image.embed, ctx.text.embed
        keys = ctx.batch.image_keys
        if self.momentum_features:
            return self._momentum_loss(ctx, img, txt, keys, temp)
        # CLIP: in-batch negatives from every rank, gradients through the gather
        all_img, all_txt = all_gather_with_grad(img), all_gather_with_grad(txt)
        all_keys = ctx.global_image_keys
        targets = positive_targets(keys, all_keys)
        sim_i2t = img @ all_txt.T / temp
        metrics = {"temp": float(temp.detach()), "itc_acc": top1_hits(sim_i2t, targets)}
        i2t_targets = targets
        twins = self._twins(ctx)
        if twins is not None:  # NegCLIP: the twins are more text columns of image -> text, never positives
            twin_sim = img @ all_gather_with_grad(twins.student).T / temp + twins.offset
            metrics["itc_swap_acc"] = self._swap_accuracy(ctx, sim_i2t, twin_sim, twins.valid)
            sim_i2t = torch.cat([sim_i2t, twin_sim], 1)
            i2t_targets = F.pad(targets, (0, twin_sim.shape[1]))
        loss = (soft_cross_entropy(sim_i2t, i2t_targets) + soft_cross_entropy(txt @ all_img.T / temp, targets)) / 2
        return ObjectiveOutput(loss, metrics)

    def _twins(self, ctx: StepContext) -> Twins | None:
        """The batch's caption twins as columns; None when off or no caption of the global batch has one."""
        if not self.text_negatives:
            return None
        _, _, has = ctx.negative_captions
        valid = all_gather_nograd(has.long()).bool()  # (gloo gathers no bool tensors)
        if not valid.any():
            return None
        dim = ctx.text.embed.shape[1]
        student = rows_with_negatives(ctx.negative_text.embed if has.any() else ctx.text.embed.new_zeros(0, dim), has)
        teacher = None
        if self.momentum_features and (self.alpha > 0 or self.batch_features == "teacher"):  # else never read
            t = ctx.teacher_negative_text.embed if has.any() else student.new_zeros(0, dim)
            teacher = all_gather_nograd(rows_with_negatives(t, has))
        return Twins(student, teacher, valid, torch.where(valid, 0.0, NO_COLUMN).to(student.dtype))

    @staticmethod
    def _swap_accuracy(ctx: StepContext, sim_i2t: torch.Tensor, twin_sim: torch.Tensor, valid: torch.Tensor) -> float:
        """How often an image scores its caption above that caption's own twin (over rows with a twin);
        column g of the batch block and of the twin block both belong to global row g."""
        with torch.no_grad():
            rows = torch.arange(sim_i2t.shape[0], device=sim_i2t.device)
            own = local_slice(ctx.batch.global_size).start + rows
            has = valid[own]
            if not has.any():
                return float("nan")
            return float((sim_i2t[rows, own] > twin_sim[rows, own])[has].float().mean())

    def _momentum_loss(self, ctx: StepContext, img, txt, keys, temp) -> ObjectiveOutput:
        t_img, t_txt = ctx.teacher_image.embed, ctx.teacher_text.embed
        twins = self._twins(ctx)
        with torch.no_grad():
            teacher_img, teacher_txt, batch_keys = all_gather_nograd(t_img), all_gather_nograd(t_txt), ctx.global_image_keys
            q_img, q_txt, q_keys = self.queue.contents() if self.queue is not None else (t_img[:0], t_txt[:0], keys[:0])
            bank_keys = torch.cat([batch_keys, q_keys])
            truth_t2i = positive_targets(keys, bank_keys)
            # twin columns come after the batch and the queue, and are never positives
            truth = truth_t2i if twins is None else F.pad(truth_t2i, (0, len(twins.valid)))
            alpha = self.current_alpha(ctx.step)
            if alpha > 0:
                t_logits = t_img @ torch.cat([teacher_txt, q_txt]).T / temp
                if twins is not None:
                    t_logits = torch.cat([t_logits, t_img @ twins.teacher.T / temp + twins.offset], 1)
                t_i2t = F.softmax(t_logits.float(), dim=-1)
                t_t2i = F.softmax((t_txt @ torch.cat([teacher_img, q_img]).T / temp).float(), dim=-1)
                tgt_i2t, tgt_t2i = alpha * t_i2t + (1 - alpha) * truth, alpha * t_t2i + (1 - alpha) * truth_t2i
            else:
                tgt_i2t, tgt_t2i = truth, truth_t2i
        if self.batch_features == "student":  # in-batch columns carry gradient to both towers (CLIP-like)
            batch_img, batch_txt = all_gather_with_grad(img), all_gather_with_grad(txt)
            twin_cols = None if twins is None else all_gather_with_grad(twins.student)
        else:  # ALBEF: every column is a teacher feature
            batch_img, batch_txt = teacher_img, teacher_txt
            twin_cols = None if twins is None else twins.teacher
        sim_i2t = img @ torch.cat([batch_txt, q_txt]).T / temp
        metrics = {"temp": float(temp.detach()), "alpha": alpha, "itc_acc": top1_hits(sim_i2t, truth_t2i)}
        if twin_cols is not None:
            twin_sim = img @ twin_cols.T / temp + twins.offset
            metrics["itc_swap_acc"] = self._swap_accuracy(ctx, sim_i2t, twin_sim, twins.valid)
            sim_i2t = torch.cat([sim_i2t, twin_sim], 1)
        sim_t2i = txt @ torch.cat([batch_img, q_img]).T / temp
        loss = (soft_cross_entropy(sim_i2t, tgt_i2t) + soft_cross_entropy(sim_t2i, tgt_t2i)) / 2
        if self.queue is not None and self.training:
            self.queue.push(teacher_img, teacher_txt, batch_keys)
        return ObjectiveOutput(loss, metrics)
