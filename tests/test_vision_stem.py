"""The per-patch conv stem: same layout as the linear patch embedding, and no leakage between patches."""
from __future__ import annotations

import torch

from maskvlp.config import VisionConfig
from maskvlp.models.vision import ConvPatchEmbed, VisionTransformer


def test_conv_stem_embeds_each_patch_from_that_patch_alone():
    torch.manual_seed(0)
    stem = ConvPatchEmbed(patch_size=8, width=32)
    images = torch.randn(2, 3, 32, 32)
    out = stem(images)
    assert out.shape == (2, 32, 4, 4)
    changed = images.clone()
    changed[:, :, 8:16, 16:24] = torch.randn(2, 3, 8, 8)  # patch at grid (1, 2)
    diff = (stem(changed) - out).abs().sum(dim=(0, 1))
    assert diff[1, 2] > 0
    diff[1, 2] = 0
    assert torch.all(diff == 0), "a patch's embedding depended on another patch"


def test_vit_with_conv_stem_supports_masking_and_dropping():
    torch.manual_seed(0)
    vit = VisionTransformer(VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, stem="conv"))
    images = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 5] = True
    a = vit(images, mask=mask).tokens
    images2 = images.clone()
    images2[:, :, 8:16, 8:16] = 0.0  # patch 5 = row 1, column 1: hidden by the mask token
    assert torch.allclose(a, vit(images2, mask=mask).tokens, atol=1e-6)
    keep = torch.tensor([[0, 1, 2], [3, 4, 6]])
    assert vit(images, keep_idx=keep).tokens.shape == (2, 4, 32)
