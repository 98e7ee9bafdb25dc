"""The conv stems: the per-patch one never leaks between patches; the overlapping one reads across
patch borders, and never sees a patch the caller hid."""
from __future__ import annotations

import pytest
import torch

from maskvlp.config import ConfigError, VisionConfig, load_config
from maskvlp.models.vision import ConvPatchEmbed, OverlappingConvStem, VisionTransformer


def _token_change_from_one_patch(stem) -> torch.Tensor:
    """How much each token of a 4x4 grid moves when only the patch at grid (1, 2) changes."""
    images = torch.randn(2, 3, 32, 32)
    out = stem(images)
    assert out.shape == (2, 32, 4, 4)
    changed = images.clone()
    changed[:, :, 8:16, 16:24] = torch.randn(2, 3, 8, 8)
    return (stem(changed) - out).abs().sum(dim=(0, 1))


def test_conv_stem_embeds_each_patch_from_that_patch_alone():
    torch.manual_seed(0)
    diff = _token_change_from_one_patch(ConvPatchEmbed(patch_size=8, width=32))
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


def test_overlapping_stem_reads_the_neighbouring_patch_and_keeps_the_token_layout():
    torch.manual_seed(0)
    diff = _token_change_from_one_patch(OverlappingConvStem(patch_size=8, width=32))
    assert diff[1, 2] > 0 and diff[1, 3] > 0 and diff[2, 2] > 0, "the stem should see across patch borders"
    assert diff[3, 0] == 0, "a token far from the change moved: the receptive field is wider than the stem's"
    with pytest.raises(ValueError, match="power-of-two"):
        OverlappingConvStem(patch_size=12, width=32)


def test_overlapping_stem_never_sees_a_masked_or_dropped_patch():
    """The stem reads across patch borders, so the ViT zeroes hidden patches' pixels before it: the
    tokens must not change when only the hidden patches' content does."""
    torch.manual_seed(0)
    vit = VisionTransformer(VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, stem="overlap"))
    images = torch.randn(2, 3, 32, 32)
    changed = images.clone()
    changed[:, :, 8:16, 8:16] = torch.randn(2, 3, 8, 8)  # patch 5 = row 1, column 1
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 5] = True
    assert torch.allclose(vit(images, mask=mask).tokens, vit(changed, mask=mask).tokens, atol=1e-6)
    keep = torch.tensor([[0, 1, 2, 4, 6, 9], [3, 4, 6, 7, 10, 15]])  # 5 dropped in both rows
    assert torch.allclose(vit(images, keep_idx=keep).tokens, vit(changed, keep_idx=keep).tokens, atol=1e-6)
    # ... while without hiding it, its neighbours (patch 6, to its right) do see it
    assert not torch.allclose(vit(images).tokens[:, 1 + 6], vit(changed).tokens[:, 1 + 6], atol=1e-4)


def test_an_unknown_stem_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="model.vision.stem.*patch, conv, overlap"):
        load_config("clip", "tiny", ["model.vision.stem=cnn"])
