"""Masked language modeling conditioned on the image (ALBEF's MLM).

BERT-style masking (15% of real tokens, exact count; 80% [MASK], 10% random, 10% kept), the masked
caption goes through the text tower and the fusion encoder with the full image, and the MLM head
predicts the original tokens, only at masked positions (the vocabulary projection is the costly
part). With ``alpha > 0`` the target mixes in the EMA teacher's prediction (momentum distillation),
with the softmax over the vocabulary dimension (ALBEF applied it over the sequence: ALBEF #58).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from maskvlp.config import ModelConfig
from maskvlp.models.vlp import FUSION, MLM as MLM_HEAD, TEACHER_FUSION
from maskvlp.objectives.base import Objective, ObjectiveOutput, register, take
from maskvlp.objectives.context import text_mask_key
from maskvlp.distributed import mean_over_ranks_denominator


@register
class MLM(Objective):
    name = "mlm"
    needs = frozenset({FUSION, MLM_HEAD})
    DEFAULTS: dict[str, Any] = {"ratio": 0.15, "alpha": 0.4, "alpha_ramp_steps": 200}

    def __init__(self, model_cfg: ModelConfig, **params: Any):
        super().__init__(model_cfg)
        p = take(params, self.DEFAULTS, self.name)
        self.ratio: float = p["ratio"]
        self.alpha: float = p["alpha"]
        self.alpha_ramp_steps: int = p["alpha_ramp_steps"]

    def required_parts(self) -> set[str]:
        return set(self.needs) | ({TEACHER_FUSION} if self.alpha > 0 else set())

    def text_passes(self) -> set[tuple]:
        key = text_mask_key(self.ratio)
        return {(False, key)} | ({(True, key)} if self.alpha > 0 else set())

    def forward(self, ctx) -> ObjectiveOutput:
        model = ctx.model
        mask = ctx.batch.attention_mask
        masked, fused_out = ctx.fused_masked_text(self.ratio)  # shared with any objective naming the same mask
        fused = fused_out.text[masked.masked]
        logits = model.mlm_head(fused)
        labels = masked.labels[masked.masked]
        per_token = F.cross_entropy(logits.float(), labels, reduction="none")
        alpha = self.alpha * min(1.0, (ctx.step + 1) / max(1, self.alpha_ramp_steps))
        if alpha > 0:
            with torch.no_grad():
                t_text = ctx.encoded_text(True, text_mask_key(self.ratio)).tokens
                t_fused = model.fuse(t_text, mask, ctx.teacher_image.tokens, teacher=True, need_image=False).text[masked.masked]
                soft = F.softmax(model.teacher["mlm_head"](t_fused).float(), dim=-1)
            per_token = (1 - alpha) * per_token - alpha * (soft * F.log_softmax(logits.float(), dim=-1)).sum(-1)
        # mean over the masked tokens of the *global* batch (ranks hold different counts)
        loss = per_token.sum() / mean_over_ranks_denominator(per_token.numel())
        acc = (logits.argmax(-1) == labels).float().mean()
        return ObjectiveOutput(loss, {"mlm_acc": float(acc)})
