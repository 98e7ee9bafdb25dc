"""Masked language modeling conditioned on the image (ALBEF's MLM).

BERT-style masking (15% of real tokens, exact count; 80% [MASK], 10% random, 10% kept), the masked
caption goes through the text tower and the fusion encoder with the full image, and the MLM head
predicts the original tokens, only at masked positions (the vocabulary projection is the costly
part). With ``alpha > 0`` the target mixes in the EMA teacher's prediction (momentum distillation),
with the softmax over the vocabulary dimension (ALBEF applied it over the sequence: ALBEF #58).

``batch_share`` < 1 (ours; ALBEF: 1) runs all of this on that share of the batch's captions only: MLM's
passes were a third of an ``albef`` step (docs/design.md, "Speed of a step").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvlp.config import MLMParams, ModelConfig
from maskvlp.models.vlp import FUSION, MLM as MLM_HEAD, TEACHER_FUSION
from maskvlp.objectives.base import Objective, ObjectiveOutput, register
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads, TextMaskKey, TextPass
from maskvlp.distributed import mean_over_ranks_denominator


@register
class MLM(Objective):
    name = "mlm"

    def __init__(self, model_cfg: ModelConfig, params: MLMParams | None = None):
        super().__init__(model_cfg, params)
        p: MLMParams = self.params
        self.ratio: float = p.ratio
        self.alpha: float = p.alpha
        self.alpha_ramp_steps: int = p.alpha_ramp_steps
        self.mask_key = TextMaskKey(self.ratio, rows=p.batch_share)  # BERT's 80/10/10

    def reads(self) -> Reads:
        distil = self.alpha > 0
        return Reads(parts={FUSION, MLM_HEAD} | ({TEACHER_FUSION} if distil else set()),
                     text_passes={TextPass(False, self.mask_key)} | ({TextPass(True, self.mask_key)} if distil else set()))

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        model = ctx.model
        masked, fused_out = ctx.fused_masked_text(self.mask_key)  # shared with any objective naming the same mask
        rows = masked.input_ids.shape[0]  # batch_share of this rank's captions
        mask = ctx.batch.attention_mask[:rows]
        fused = fused_out.text[masked.masked]
        logits = model.mlm_head(fused)
        labels = masked.labels[masked.masked]
        per_token = F.cross_entropy(logits.float(), labels, reduction="none")
        alpha = self.alpha * min(1.0, (ctx.step + 1) / max(1, self.alpha_ramp_steps))
        if alpha > 0:
            with torch.no_grad():
                t_text = ctx.encoded_text(True, self.mask_key).tokens
                t_fused = ctx.teacher_fuse(t_text, mask, ctx.teacher_image.tokens[:rows], need_image=False).text[masked.masked]
                soft = F.softmax(ctx.teacher_mlm_logits(t_fused).float(), dim=-1)
            per_token = (1 - alpha) * per_token - alpha * (soft * F.log_softmax(logits.float(), dim=-1)).sum(-1)
        # mean over the masked tokens of the *global* batch (ranks hold different counts)
        loss = per_token.sum() / mean_over_ranks_denominator(per_token.numel())
        acc = (logits.argmax(-1) == labels).float().mean()
        return ObjectiveOutput(loss, {"mlm_acc": float(acc)})
