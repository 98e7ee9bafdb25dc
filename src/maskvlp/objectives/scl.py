"""Semantic completion learning (SCL; MGSC in the GLSCL follow-up): a masked input's global feature
must recover the feature of the complete input, with the missing part read from the other modality.

Ji et al., "Seeing What You Miss: Vision-Language Pre-training with Semantic Completion Learning",
CVPR 2023 (arXiv 2211.13437). The paper body was not available to us; the mechanism follows the
official code (``IIGROUP/SCL``, ``scl/modules/objectives.py`` ``compute_scl``, read at ``928b1cd`` and
``cd0d819``; docs/methods.md, "Sources").

Two fused passes per step, both trained (no EMA teacher in SCL):

* pass A: image with ``image_ratio`` = 0.8 of its patches **dropped** (MAE style: only the visible
  patches enter the ViT; [CLS] kept) + the full caption. Student: fused image [CLS]
  (``fused.image[:, 0]``). Target: the fused text vector.
* pass B: the full image + the caption with ``text_ratio`` = 0.4 of its tokens replaced by [MASK].
  Student: the fused text vector. Target: fused image [CLS].

Each modality's target is the pass in which that modality is intact (the other one masked), as the
official code does, so no third, clean pass is run. Targets are detached. Vectors are L2-normalised
over the feature dimension (the CVPR release's video path normalised over the frame axis, a bug we do
not copy), and each modality pays a symmetric InfoNCE at temperature 0.03 over the global batch:
``NCE(S) = CE_rows(S / t) + CE_cols(S / t)`` (sum of both directions, as the code's
``NormSoftmaxLoss``); ``loss = NCE(S_img) + NCE(S_txt)``. Positives are the same sample (the diagonal,
as in the code, not ITC's "same image" rule). [code]

Our choices, and why:

* Text masking takes an exact count, ``round(0.4 * n)`` (at least 1) of the real non-special tokens,
  without replacement, all set to [MASK] (no 80/10/10, as the code). The code draws
  ``int(0.4 * n) + 1`` positions *with* replacement, so duplicates make its effective ratio lower and
  variable; an exact count makes the recipe's 40% what the model sees. [ours]
* Image masking: ``round(0.8 * N)`` patches dropped per image (the code keeps ``int(0.2 * N)``;
  identical whenever ``0.2 * N`` is a whole number). Video: the code drops the same positions in every
  frame (tube masking) and scores each frame's [CLS]; our ViT has one [CLS] per clip and the mask
  indexes its patch sequence, so a clip is scored by that one [CLS]. [ours]
* The fused text vector is ``VLPModel.pool_text``: token 0 when ``model.text.pool=cls`` (the code's
  choice, RoBERTa ``<s>``), the mean over real tokens when ``pool=mean`` (MiniLM's pooling, the tiny
  default), so SCL reads the same text vector ITM does. [ours]
* Distributed: targets are gathered without gradient; the row term scores this rank's students
  against every target, the column term this rank's targets against every student, gathered *with*
  gradient (open_clip's local loss). The gradient equals that of the single-process loss over the
  global batch; the official ``AllGather_multi`` keeps only the local slice's gradient of a loss every
  rank computes in full, which after DDP's average scales it by 1/world_size. [ours]
* ``temperature`` is fixed (not learned), 0.03 as hard-coded in the CVPR release. [code]

Memory: each pass keeps autograd state only for what is trained: pass A's last text block and pass
B's whole image stream compute targets alone and run without a graph (``text_grad`` /
``image_grad`` of the fusion encoder; the gradient is unchanged, tests/test_fusion_two_stream.py).

Cost per step: one extra ViT pass over the 20% visible patches (shared with any objective naming the
same mask key), and pass A's fusion with both streams. Pass B (text tower over the masked caption, then
the fusion with the clean image) is ``ctx.fused_masked_text``: one pass per step and text mask, so when
MLM names the same mask (``text_ratio 0.15, text_mask_fraction 0.8, text_random_fraction 0.1``, as
``composite`` does) pass B *is* MLM's pass and SCL adds only its image stream, without a graph. The
full image and text passes are the step's cached ones (shared with ITC / ITM).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvlp.config import ConfigError, ModelConfig, SCLParams
from maskvlp.distributed import all_gather_nograd, all_gather_with_grad, local_slice
from maskvlp.masking import random_patch_mask
from maskvlp.models.vlp import FUSION
from maskvlp.objectives.base import Objective, ObjectiveOutput, register, require_image_states
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads, TextMaskKey


def completion_nce(student: torch.Tensor, target: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between this rank's ``student`` (B, D) and ``target`` (B, D) vectors.

    Both are L2-normalised here; ``target`` is detached. Row i of the local batch is global sample
    ``offset + i``, its positive. Returns (loss, row logits (B_local, B_global)); the loss is
    ``mean_i CE(student_i . targets / t) + mean_j CE(target_j . students / t)`` over this rank's
    rows, which DDP's gradient average turns into the same means over the global batch.
    """
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(target.detach().float(), dim=-1)
    all_t = all_gather_nograd(t)
    all_s = all_gather_with_grad(s)
    rows = local_slice(all_t.shape[0])
    labels = torch.arange(rows.start, rows.start + s.shape[0], device=s.device)
    row_logits = s @ all_t.T / temperature
    col_logits = t @ all_s.T / temperature
    loss = F.cross_entropy(row_logits, labels) + F.cross_entropy(col_logits, labels)
    return loss, row_logits


@register
class SCL(Objective):
    """Semantic completion: masked-image and masked-text global features complete to the full ones."""

    name = "scl"

    def __init__(self, model_cfg: ModelConfig, params: SCLParams | None = None):
        super().__init__(model_cfg, params)
        p: SCLParams = self.params
        require_image_states(self.name, model_cfg, "completes the fused image [CLS]")
        if model_cfg.fusion.depth < 1:
            raise ConfigError("objective 'scl' needs a fusion encoder: set model.fusion.depth >= 1")
        self.image_ratio: float = float(p.image_ratio)
        self.text_ratio: float = float(p.text_ratio)
        self.temperature: float = float(p.temperature)
        self.text_mask: tuple[float, float, float] = (self.text_ratio, float(p.text_mask_fraction),
                                                     float(p.text_random_fraction))
        self.text_mask_key = TextMaskKey(*self.text_mask)  # pass B's mask

    def reads(self) -> Reads:
        # pass B's fused image [CLS] is the image target
        return Reads(parts={FUSION}, masked_text_image_states={self.text_mask_key})

    @property
    def mask_key(self) -> str:
        """The shared image-mask key: uniform random patches at ``image_ratio``, noise named the same."""
        return f"random-{self.image_ratio}"

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        model = ctx.model
        mask = ctx.batch.attention_mask
        key = self.mask_key
        ctx.image_mask(key, lambda: random_patch_mask(ctx.patch_noise(key), self.image_ratio))
        # pass A: 80% of patches dropped + full text; its text output is only a target (no graph kept)
        fused_a = model.fuse(ctx.text.tokens, mask, ctx.masked_image(key, "drop").tokens, text_grad=False)
        # pass B: full image + the masked caption (40% all-[MASK] by default); its image output is only a target.
        # The context runs it once per step and mask: an MLM naming the same mask reads this very pass
        _, fused_b = ctx.fused_masked_text(self.text_mask_key, need_image=True)
        if fused_a.image is None or fused_b.image is None:  # checked in __init__; also catches a model built otherwise
            raise ConfigError("objective 'scl' needs a fusion mode that returns image states (cross or merged)")

        image_student, image_target = fused_a.image[:, 0], fused_b.image[:, 0].detach()
        text_student = model.pool_text(fused_b.text, mask)
        text_target = model.pool_text(fused_a.text, mask).detach()
        loss_img, logits_img = completion_nce(image_student, image_target, self.temperature)
        loss_txt, logits_txt = completion_nce(text_student, text_target, self.temperature)

        with torch.no_grad():
            rows = local_slice(logits_img.shape[1])
            labels = torch.arange(rows.start, rows.start + logits_img.shape[0], device=logits_img.device)
            acc_img = (logits_img.argmax(1) == labels).float().mean()
            acc_txt = (logits_txt.argmax(1) == labels).float().mean()
            pos_cos = (logits_img.gather(1, labels[:, None]) * self.temperature).mean()
        return ObjectiveOutput(loss_img + loss_txt, {
            "scl_img_loss": float(loss_img.detach()), "scl_txt_loss": float(loss_txt.detach()),
            "scl_img_acc": float(acc_img), "scl_txt_acc": float(acc_txt), "scl_img_pos_cos": float(pos_cos),
        })
