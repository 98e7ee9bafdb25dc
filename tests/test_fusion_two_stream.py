"""two_stream fusion: ALBEF's text stream unchanged, an image stream that only runs when asked for."""
from __future__ import annotations

import torch

from maskvlp.models.fusion import FusionEncoder


def _pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text, image = torch.randn(3, 5, 32, generator=g), torch.randn(3, 9, 24, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return text, mask, image


def test_text_stream_equals_text_to_image_and_image_stream_is_lazy():
    torch.manual_seed(0)
    two = FusionEncoder("two_stream", 2, 32, 24, heads=4, intermediate=64).eval()
    albef = FusionEncoder("text_to_image", 2, 32, 24, heads=4, intermediate=64).eval()
    albef.load_state_dict({k: v for k, v in two.state_dict().items() if k.startswith("blocks.")})
    text, mask, image = _pair()
    full = two(text, mask, image)
    assert torch.allclose(full.text, albef(text, mask, image).text, atol=1e-6)
    assert full.image is not None and full.image.shape == (3, 9, 24)  # the image stream keeps the vision width
    calls = []
    for blk in two.image_blocks:
        blk.register_forward_hook(lambda *_: calls.append(1))
    lazy = two(text, mask, image, need_image=False)
    assert lazy.image is None and not calls and torch.equal(lazy.text, full.text)


def test_image_stream_reads_the_text_and_its_padding_mask():
    torch.manual_seed(0)
    two = FusionEncoder("two_stream", 2, 32, 24, heads=4, intermediate=64).eval()
    text, mask, image = _pair()
    base = two(text, mask, image).image
    changed_text = text.clone()
    changed_text[1, 0] += 1.0
    moved = two(changed_text, mask, image).image
    assert not torch.allclose(moved[1], base[1]) and torch.allclose(moved[0], base[0])
    padded = text.clone()
    padded[0, 4] += 5.0  # a padding position of row 0: the image stream must not read it
    assert torch.allclose(two(padded, mask, image).image[0], base[0], atol=1e-6)


def test_image_states_alone_skip_the_last_text_block():
    """No image-stream block reads the last text block's output, so need_text=False skips it."""
    torch.manual_seed(0)
    two = FusionEncoder("two_stream", 2, 32, 24, heads=4, intermediate=64).eval()
    text, mask, image = _pair()
    full = two(text, mask, image)
    calls = []
    two.blocks[-1].register_forward_hook(lambda *_: calls.append(1))
    alone = two(text, mask, image, need_text=False)
    assert alone.text is None and not calls
    torch.testing.assert_close(alone.image, full.image, atol=0, rtol=0)


def _grads(module, loss):
    module.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_target_only_streams_keep_no_graph_and_leave_the_trained_gradients_unchanged():
    """text_grad/image_grad=False: that output carries no graph, the other output's gradients are exact."""
    for mode in ("two_stream", "cross"):
        torch.manual_seed(0)
        fusion = FusionEncoder(mode, 3, 32, 24, heads=4, intermediate=64)
        text, mask, image = _pair()
        image.requires_grad_(True)
        full = fusion(text, mask, image)
        image_only = fusion(text, mask, image, text_grad=False)  # text out is a target (SCL pass A)
        text_only = fusion(text, mask, image, image_grad=False)  # image out is a target (SCL pass B)
        torch.testing.assert_close(image_only.text, full.text, atol=0, rtol=0)
        torch.testing.assert_close(text_only.image, full.image, atol=0, rtol=0)
        assert not image_only.text.requires_grad and not text_only.image.requires_grad, mode
        weights = torch.randn_like(full.image)
        expected = _grads(fusion, (full.image * weights).sum() + 0 * full.text.sum())
        got = _grads(fusion, (image_only.image * weights).sum())
        assert expected.keys() >= got.keys() and all(torch.equal(got[n], expected[n]) for n in got), mode
        # parameters the image output does not depend on get no gradient either way
        assert all(expected[n].abs().sum() == 0 for n in expected.keys() - got.keys()), mode
        weights = torch.randn_like(full.text)
        full = fusion(text, mask, image)
        expected = _grads(fusion, (full.text * weights).sum())
        got = _grads(fusion, (text_only.text * weights).sum())
        assert all(torch.equal(got[n], expected[n]) for n in expected), mode


def test_a_fixed_image_context_is_read_at_every_layer_and_the_text_stream_does_not_run():
    """image_context: every image-stream block reads the same given states (SIMLA's image queries over the
    caption's embeddings), checked against the blocks run by hand; with need_text=False no text block runs."""
    torch.manual_seed(0)
    two = FusionEncoder("two_stream", 2, 32, 24, heads=4, intermediate=64).eval()
    text, mask, image = _pair()
    fixed = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(7))
    calls = []
    for blk in two.blocks:
        blk.register_forward_hook(lambda *_: calls.append(1))
    out = two(text, mask, image, need_text=False, image_context=fixed)
    assert out.text is None and not calls
    by_hand = image
    for blk in two.image_blocks:
        by_hand = blk(by_hand, context=fixed, context_mask=mask)
    torch.testing.assert_close(out.image, by_hand, atol=1e-6, rtol=1e-6)
    # with the text stream wanted too, the text output is the usual one and the image stream still reads `fixed`
    both = two(text, mask, image, image_context=fixed)
    torch.testing.assert_close(both.text, two(text, mask, image).text, atol=0, rtol=0)
    torch.testing.assert_close(both.image, by_hand, atol=1e-6, rtol=1e-6)
    import pytest

    with pytest.raises(ValueError, match="two_stream"):
        FusionEncoder("cross", 1, 32, 24, heads=4, intermediate=64)(text, mask, image, image_context=fixed)
