"""Grad-CAM of the ITM score on the fusion encoder's cross-attention: where in the image the model looks
when it decides that a text matches (ALBEF's visualisation and its weakly-supervised grounding).

As ALBEF's ``Grounding.py`` computes it [code]: the match logit of the ITM head is differentiated with
respect to the cross-attention weights of one fusion layer (ALBEF: BERT layer 8, the 3rd of its 6
fusion layers; here the same index, or the last layer of a shallower fusion); each weight times its
positive gradient, averaged over the heads, gives one map per text token over the image patches (the
image [CLS] left out); the text's map is the mean over its real tokens. A map is relative evidence, not a probability: its scale depends
on the model and the text.

A single-stream fusion (``merged``, MLIM) has no cross-attention: its self-attention over [text; image]
holds the same quantity in the block of text rows and image columns, which is what is read there [ours].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskvlp.models.vlp import VLPModel

CAM_MODES = ("text_to_image", "two_stream", "merged")  # text tokens read image tokens in one attention


@dataclass
class GradCam:
    """Maps over the patch grid: ``token_maps`` (B, Lt, g, g), zero at padding; ``text_map`` (B, g, g), the
    mean over each text's real tokens; ``match`` (B,) the ITM probability that the text matches."""

    token_maps: torch.Tensor
    text_map: torch.Tensor
    match: torch.Tensor


def has_gradcam(model: VLPModel) -> bool:
    """Whether the model has what Grad-CAM reads: an ITM head over a fusion whose text tokens read the image."""
    return model.fusion is not None and model.itm_head is not None and model.fusion.mode in CAM_MODES


def default_cam_layer(depth: int) -> int:
    """ALBEF's layer (BERT layer 8: index 2 of its 6 fusion layers), or the last of a shallower fusion. On
    the tiny 2-layer fusion the first layer's maps spread over the background and the last one's sit on
    the named object (docs/tasks.md, "Looking at the evidence")."""
    return min(2, depth - 1)


def itm_gradcam(model: VLPModel, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                layer: int | None = None) -> GradCam:
    """Grad-CAM of each (image, text) row; the model's parameters get no gradient."""
    fusion = model.fusion
    if fusion is None or model.itm_head is None:
        raise ValueError("Grad-CAM needs a fusion encoder and an ITM head (a dual encoder has neither)")
    if not has_gradcam(model):
        raise ValueError(f"Grad-CAM reads how text tokens attend to image tokens ({', '.join(CAM_MODES)} fusion); "
                         f"this model fuses with {fusion.mode}")
    depth = len(fusion.blocks)
    layer = default_cam_layer(depth) if layer is None else layer
    if not 0 <= layer < depth:
        raise ValueError(f"Grad-CAM layer {layer} is not a fusion layer (0..{depth - 1})")
    was_training = model.training
    model.eval()
    mask = attention_mask.bool()
    with torch.no_grad():
        image_tokens = model.encode_image(images).tokens
        text = model.encode_text(input_ids, attention_mask).tokens
    with torch.enable_grad():
        run = _merged_stream if fusion.mode == "merged" else _text_stream
        x, weights = run(fusion, text, mask, image_tokens, layer)
        logits = model.itm_head(model.pool_text(x, attention_mask)).float()
        (grad,) = torch.autograd.grad(logits[:, 1].sum(), weights)
        lt = text.shape[1]
        if fusion.mode == "merged":  # text rows reading image columns
            weights, grad = weights[:, :, :lt, lt:], grad[:, :, :lt, lt:]
    model.train(was_training)
    n = model.vision.num_patches
    patches = model.vision.frames_in(image_tokens.shape[1], n) * n  # a clip's global and frame CLS come first
    cams = (weights.detach() * grad.clamp(min=0)).mean(1)[..., -patches:]  # (B, Lt, T*N): heads averaged, no CLS
    cams = cams * mask[..., None]
    g = model.vision.grid
    token_maps = cams.reshape(*cams.shape[:2], -1, g, g).sum(2)  # frames of a clip add up (T = 1 for images)
    text_map = token_maps.sum(1) / mask.sum(1).clamp(min=1)[:, None, None]
    return GradCam(token_maps, text_map, F.softmax(logits.detach(), dim=-1)[:, 1])


def _text_stream(fusion, text: torch.Tensor, mask: torch.Tensor, image_tokens: torch.Tensor,
                 layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused text states and layer ``layer``'s cross-attention weights (B, heads, Lt, Li)."""
    x, weights = text, None
    for i, block in enumerate(fusion.blocks):
        if i == layer:
            x, weights = block(x, mask=mask, context=image_tokens, return_attention="cross")
        else:
            x = block(x, mask=mask, context=image_tokens)
    return x, weights


def _merged_stream(fusion, text: torch.Tensor, mask: torch.Tensor, image_tokens: torch.Tensor,
                   layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The single stream as ``FusionEncoder`` runs it: its text states and layer ``layer``'s self-attention
    weights over [text; image] (B, heads, Lt + Li, Lt + Li)."""
    image = fusion.image_proj(image_tokens)
    x = torch.cat([text + fusion.modality_embed[0], image + fusion.modality_embed[1]], dim=1)
    full = torch.cat([mask, torch.ones(image.shape[:2], dtype=torch.bool, device=image.device)], dim=1)
    weights = None
    for i, block in enumerate(fusion.blocks):
        if i == layer:
            x, weights = block(x, mask=full, return_attention=True)
        else:
            x = block(x, mask=full)
    return x[:, :text.shape[1]], weights
