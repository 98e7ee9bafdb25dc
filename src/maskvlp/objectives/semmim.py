"""SemMIM: semantics-enhanced cross-modal masked image modeling (Liu et al., LREC-COLING 2024,
arXiv 2403.00249).

What the paper's abstract establishes [paper]: MIM targets live in a learnable K-dimensional encoding
space shared by global and local image features; high-level semantics are learned on the global
feature by self-supervised agreement with a momentum encoder and reach the patch targets through
that shared space; text takes part three times: it guides which patches are masked, it is fused
with the masked image on the prediction side, and it is injected into the momentum patch
representations on the target side. No official code and no method section were available to us
(docs/methods.md, "Sources"), so every concrete choice below is
inferred [I] from the abstract and from DINO / iBOT, whose mechanism the abstract describes:

* **Shared head g** [I, DINO/iBOT head]: ``Linear(d, hidden) -> GELU -> Linear(hidden, bottleneck)``,
  L2-normalised bottleneck, then a weight-normalised linear ``bottleneck -> K`` with the weight norm's
  gain fixed at 1 (DINO's ``norm_last_layer=True``), i.e. cosine similarity to K prototypes. Defaults
  256 / 64 / 1024 suit the tiny models; iBOT uses 2048 / 256 / 8192 (DINO 65,536 prototypes, and one
  more hidden layer). d is the ViT width. The EMA copy (``teacher_head``) is frozen and follows the
  student head in :meth:`after_step` with ``model_cfg.momentum``, as the EMA towers do.
* **Text-guided masking** [I]: :func:`~maskvlp.masking.text_guided_patch_mask` on
  ``ctx.patch_relevance`` (how much the teacher's fused text attends to each patch, so the teacher's
  clean fusion pass runs before the mask is made), ratio 0.5, half of the masked patches chosen by
  relevance and half at random once the linear warm-up from pure random masking
  (``guided_warmup_steps``) is over. Masked patches are **replaced** by the ViT's learned mask token
  (BEiT/iBOT), since predictions are read at the masked positions after fusion.
* **Global agreement** [I, iBOT's [CLS] loss]: the student's masked-image [CLS] (unimodal ViT
  output) through g against the teacher's clean-image [CLS] through the EMA g; teacher logits
  centred and sharpened: ``CE(softmax((g_t - c) / tau_t), log_softmax(g_s / tau_s))``, tau_t 0.04,
  tau_s 0.1, centre momentum 0.9 (DINO defaults). No teacher-temperature warm-up (DINO's default
  warm-up goes 0.04 -> 0.04) and no frozen-last-layer epoch.
* **Semantics-enhanced MIM** [I]: the masked image fused with the student text in a fusion that
  returns image states (``two_stream`` in the recipe; ``cross`` or ``merged`` too); the fused image states at the masked patches go through a linear adapter
  from the fusion width to the ViT width (only when the widths differ; it has an EMA copy too) and
  then g. Targets: the EMA teacher's fused image states of the clean pair (``ctx.teacher_fused``,
  "patch encodings with text injected") at the same patches through the EMA adapter and EMA g,
  centred and sharpened like the global targets. CE averaged over the global count of masked patches.
* **Two centres** [I, as iBOT keeps ``center`` and ``center2``]: ``center`` for [CLS] logits and
  ``patch_center`` for fused patch logits, whose distributions differ (unimodal vs fused, one
  token vs many). The patch centre is the mean over the *masked* patches only (iBOT averages over
  every patch) so g is not evaluated on N - M patches nobody predicts [ours].
* **Centre updates** happen in :meth:`after_step`, after the optimizer step, from the teacher
  logits of that step: forward adds the local sums and counts (over micro-batches under gradient
  accumulation), ``after_step`` all-reduces them across ranks once and applies
  ``c <- m c + (1 - m) mean``. As in DINO the loss of a step uses the centre from before that step.

Losses: ``global_weight * L_glb + mim_weight * L_mim`` (both 1 [I]); L_glb is a mean over the
global batch's images, L_mim over the global batch's masked patches.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from maskvlp.config import ModelConfig, SemMIMParams
from maskvlp.distributed import mean_over_ranks_denominator, world_size
from maskvlp.masking import ImageMask, guided_fraction_at, text_guided_patch_mask
from maskvlp.models.fusion import fused_image_width
from maskvlp.models.vlp import FUSION, MASK_TOKEN, TEACHER, TEACHER_FUSION
from maskvlp.objectives.base import Objective, ObjectiveOutput, register, require_image_states
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads


class PrototypeHead(nn.Module):
    """DINO/iBOT projection head: MLP to an L2-normalised bottleneck, then cosine to K prototypes.

    The last layer is weight-normalised with its gain fixed at 1 (DINO ``norm_last_layer=True``),
    so logits lie in [-1, 1] and the temperatures alone set the sharpness.
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.prototypes = nn.Linear(bottleneck_dim, out_dim, bias=False)  # the weight norm's direction v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x).float(), dim=-1)
        with torch.autocast(z.device.type, enabled=False):  # fp32 cosines: tau_t = 0.04 magnifies rounding 25x
            return z @ F.normalize(self.prototypes.weight.float(), dim=-1).T


def centred_sharpened_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, center: torch.Tensor,
                         student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Per-row DINO cross-entropy: ``-sum_k softmax((t - c)/tau_t)_k * log_softmax(s/tau_s)_k``.

    The target side is detached (it never carries gradient).
    """
    targets = F.softmax((teacher_logits.detach().float() - center) / teacher_temp, dim=-1)
    return -(targets * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)


def entropy(logits: torch.Tensor, center: torch.Tensor, temp: float) -> float:
    """Mean entropy (nats) of the centred, sharpened target distributions (collapse monitor)."""
    with torch.no_grad():
        logp = F.log_softmax((logits.float() - center) / temp, dim=-1)
        return float(-(logp.exp() * logp).sum(-1).mean()) if logits.numel() else 0.0


@register
class SemMIM(Objective):
    name = "semmim"

    def __init__(self, model_cfg: ModelConfig, params: SemMIMParams | None = None):
        super().__init__(model_cfg, params)
        p: SemMIMParams = self.params
        require_image_states(self.name, model_cfg, "predicts at image positions after fusion")
        self.ratio: float = float(p.ratio)
        self.guided_fraction: float = float(p.guided_fraction)
        self.guided_warmup_steps: int = p.guided_warmup_steps
        self.teacher_temp: float = float(p.teacher_temp)
        self.student_temp: float = float(p.student_temp)
        self.center_momentum: float = float(p.center_momentum)
        self.global_weight: float = float(p.global_weight)
        self.mim_weight: float = float(p.mim_weight)
        self.momentum: float = model_cfg.momentum

        vision_w = model_cfg.vision.width
        fusion_w = fused_image_width(model_cfg.fusion.mode, model_cfg.text.width, vision_w)
        self.head = PrototypeHead(vision_w, p.hidden_dim, p.bottleneck_dim, p.out_dim)
        # fused image states come at the text width except in two_stream; g reads ViT-width features
        self.fused_adapter: nn.Module = nn.Linear(fusion_w, vision_w) if fusion_w != vision_w else nn.Identity()
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.teacher_fused_adapter = copy.deepcopy(self.fused_adapter).requires_grad_(False)
        self.register_buffer("center", torch.zeros(p.out_dim))
        self.register_buffer("patch_center", torch.zeros(p.out_dim))
        # this step's teacher-logit sums and counts, applied to the centres in after_step
        self._pending: dict[str, tuple[torch.Tensor, int]] = {}

    def reads(self) -> Reads:
        return Reads(parts={FUSION, TEACHER_FUSION, MASK_TOKEN, TEACHER})

    # ------------------------------------------------------------------ masking
    def mask_key(self) -> str:
        return f"text-guided-{self.ratio}-{self.guided_fraction}-{self.guided_warmup_steps}"

    def current_guided_fraction(self, step: int) -> float:
        return guided_fraction_at(step, self.guided_warmup_steps, self.guided_fraction)

    def mask(self, ctx: StepContext) -> ImageMask:
        """This step's text-guided mask (made once per step, shared under :meth:`mask_key`)."""
        def make() -> ImageMask:
            ctx.teacher_fusion(need_image=True)  # the targets read image states: one teacher pass serves both
            return text_guided_patch_mask(ctx.patch_relevance, ctx.patch_noise(f"text-guided-{self.ratio}"),
                                          self.ratio, self.current_guided_fraction(ctx.step))
        return ctx.image_mask(self.mask_key(), make)

    # ------------------------------------------------------------------ targets
    @torch.no_grad()
    def teacher_global_logits(self, ctx: StepContext) -> torch.Tensor:
        """(B, K) EMA-head logits of the teacher's clean-image [CLS] (uncentred)."""
        return self.teacher_head(ctx.teacher_image.tokens[:, 0])

    @torch.no_grad()
    def teacher_patch_logits(self, ctx: StepContext, mask: ImageMask) -> torch.Tensor:
        """(B, M, K) EMA logits of the teacher's fused clean-pair image states at the masked patches."""
        fused = ctx.teacher_fused.image
        states = _gather_patches(fused[:, 1:], mask.mask_idx)
        return self.teacher_head(self.teacher_fused_adapter(states))

    # ------------------------------------------------------------------ loss
    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        model = ctx.model
        mask = self.mask(ctx)
        masked = ctx.masked_image(self.mask_key(), "replace")  # [CLS] + N patches, masked ones = mask token

        # global agreement: masked student [CLS] vs clean teacher [CLS], in the shared K space
        t_glb = self.teacher_global_logits(ctx)
        s_glb = self.head(masked.tokens[:, 0])
        per_image = centred_sharpened_ce(s_glb, t_glb, self.center, self.student_temp, self.teacher_temp)
        loss_glb = per_image.sum() / mean_over_ranks_denominator(per_image.numel())

        # semantics-enhanced MIM: masked image fused with the text, predicted at masked patches
        fused = model.fuse(ctx.text.tokens, ctx.batch.attention_mask, masked.tokens, need_text=False).image
        s_patch = self.head(self.fused_adapter(_gather_patches(fused[:, 1:], mask.mask_idx)))
        t_patch = self.teacher_patch_logits(ctx, mask)
        per_patch = centred_sharpened_ce(s_patch, t_patch, self.patch_center, self.student_temp, self.teacher_temp)
        loss_mim = per_patch.sum() / mean_over_ranks_denominator(per_patch.numel())

        if self.training:
            self._accumulate("center", t_glb.flatten(0, -2))
            self._accumulate("patch_center", t_patch.flatten(0, -2))
        k = mask.num_masked
        guided = float((torch.tensor(float(k)) * self.current_guided_fraction(ctx.step)).round()) / max(k, 1)
        with torch.no_grad():
            agree = float((s_glb.argmax(-1) == t_glb.argmax(-1)).float().mean())
        metrics = {
            "semmim_glb": float(loss_glb.detach()),
            "semmim_mim": float(loss_mim.detach()),
            "semmim_target_entropy": entropy(t_glb, self.center, self.teacher_temp),
            "semmim_patch_target_entropy": entropy(t_patch.flatten(0, -2), self.patch_center, self.teacher_temp),
            "semmim_guided_fraction": guided,
            "semmim_center_norm": float(self.center.norm()),
            "semmim_patch_center_norm": float(self.patch_center.norm()),
            "semmim_glb_agree": agree,
        }
        return ObjectiveOutput(self.global_weight * loss_glb + self.mim_weight * loss_mim, metrics)

    # ------------------------------------------------------------------ state updates
    @torch.no_grad()
    def _accumulate(self, name: str, logits: torch.Tensor) -> None:
        total, count = self._pending.get(name, (torch.zeros_like(self.center), 0))
        self._pending[name] = (total + logits.float().sum(0), count + logits.shape[0])

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA of the head (and adapter) towards the student, then the centres towards this step's
        mean teacher logits over the global batch (one all-reduce for both centres)."""
        for teacher, student in ((self.teacher_head, self.head), (self.teacher_fused_adapter, self.fused_adapter)):
            for p_t, p_s in zip(teacher.parameters(), student.parameters()):
                p_t.lerp_(p_s.detach().to(p_t.dtype), 1.0 - self.momentum)
        if not self._pending:
            return
        names = sorted(self._pending)
        sums = torch.stack([self._pending[n][0] for n in names])
        counts = torch.tensor([float(self._pending[n][1]) for n in names], device=sums.device)
        self._pending = {}
        if world_size() > 1:
            packed = torch.cat([sums.flatten(), counts])
            dist.all_reduce(packed)
            sums, counts = packed[: sums.numel()].view_as(sums), packed[sums.numel():]
        for i, n in enumerate(names):
            if counts[i] > 0:
                buf: torch.Tensor = getattr(self, n)
                buf.mul_(self.center_momentum).add_(sums[i] / counts[i], alpha=1.0 - self.center_momentum)


def _gather_patches(states: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, M, D) rows of ``states`` (B, N, D) at patch indices ``idx`` (B, M)."""
    return states.gather(1, idx.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
