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
