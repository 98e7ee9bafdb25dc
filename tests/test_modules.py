"""Properties of the network building blocks (tiny sizes, CPU, a few seconds)."""
from __future__ import annotations

import pytest
import torch

from maskvlp.config import TextConfig, VisionConfig
from maskvlp.models.fusion import FusionEncoder, FusionOutput
from maskvlp.models.heads import ITMHead, MLMHead, Projection
from maskvlp.models.teacher import EMATeacher
from maskvlp.models.text import TextEncoder
from maskvlp.models.transformer import Attention, Block
from maskvlp.models.vision import VisionTransformer, random_keep_indices

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_vision(**kw) -> VisionTransformer:
    cfg = VisionConfig(**{"image_size": 16, "patch_size": 4, "width": 32, "depth": 2, "heads": 4, **kw})
    return VisionTransformer(cfg).eval()


def tiny_text() -> TextEncoder:
    cfg = TextConfig(vocab_size=50, width=32, depth=2, heads=4, intermediate=64, max_positions=16)
    return TextEncoder(cfg).eval()


def patch_pixels(images: torch.Tensor, j: int, p: int = 4, grid: int = 4) -> tuple:
    """Index of patch j's pixels in (B, 3, H, W) images (raster order, as the Conv2d patch embedding)."""
    r, c = divmod(j, grid)
    return (slice(None), slice(None), slice(r * p, (r + 1) * p), slice(c * p, (c + 1) * p))


# ------------------------------------------------------------------------------------ attention
def test_attention_mask_ignores_padded_keys() -> None:
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = attn(x, mask=mask)
    x2 = x.clone()
    x2[0, 4:] = torch.randn(2, 32) * 10
    out2 = attn(x2, mask=mask)
    # queries at real positions of row 0 do not see the changed padded keys/values
    torch.testing.assert_close(out2[0, :4], out[0, :4], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2[1], out[1], atol=ATOL, rtol=0)


def test_return_attention_matches_sdpa_and_is_normalised() -> None:
    attn = Attention(32, 4, kv_dim=24).eval()  # cross-attention: context of another width
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    fast = attn(x, ctx, mask)
    slow, weights = attn(x, ctx, mask, return_attention=True)
    assert weights.shape == (2, 4, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5), atol=ATOL, rtol=0)
    assert weights[1, :, :, 4:].abs().max() == 0
    torch.testing.assert_close(slow, fast, atol=ATOL, rtol=0)


def test_bf16_autocast_attention_keeps_bf16_outputs_and_fp32_accuracy() -> None:
    """Under CPU bf16 autocast the attention itself runs in fp32 (CPU flash attention is slow in bf16):
    the output dtype is what autocast gives, gradients flow, and the result is as close to fp32 as the
    bf16 projections allow."""
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 6, 32, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6], dtype=torch.bool)
    reference = attn(x, mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, mask=mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=5e-2, rtol=5e-2)
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_block_returns_self_or_cross_weights() -> None:
    for pre_norm in (True, False):
        blk = Block(32, 4, 64, cross_kv_dim=16, pre_norm=pre_norm).eval()
        x, ctx = torch.randn(2, 5, 32), torch.randn(2, 3, 16)
        plain = blk(x, context=ctx)
        out_s, w_s = blk(x, context=ctx, return_attention=True)
        out_c, w_c = blk(x, context=ctx, return_attention="cross")
        assert w_s.shape == (2, 4, 5, 5) and w_c.shape == (2, 4, 5, 3)
        torch.testing.assert_close(out_s, plain, atol=ATOL, rtol=0)
        torch.testing.assert_close(out_c, plain, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------ vision
def test_vision_shapes_and_keep_indices() -> None:
    vit = tiny_vision()
    assert vit.num_patches == 16
    images = torch.randn(2, 3, 16, 16)
    assert vit(images).tokens.shape == (2, 17, 32)
    keep = random_keep_indices(2, 16, 5, generator=torch.Generator().manual_seed(1))
    assert keep.shape == (2, 5) and keep.dtype == torch.long
    assert torch.equal(keep, keep.sort(dim=1).values)
    assert all(len(set(row.tolist())) == 5 for row in keep)
    out = vit(images, keep_idx=keep)
    assert out.tokens.shape == (2, 6, 32) and out.keep_idx is keep


def test_keep_idx_equals_encoding_the_gathered_patches() -> None:
    vit = tiny_vision()
    images = torch.randn(2, 3, 16, 16)
    keep = random_keep_indices(2, 16, 6, generator=torch.Generator().manual_seed(2))
    out = vit(images, keep_idx=keep).tokens
    # reference: gather the positioned patch tokens by hand and run the blocks
    x = vit.embed_patches(images)
    x = torch.stack([x[b, keep[b]] for b in range(2)])
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(2, -1, -1), x], dim=1)
    for blk in vit.blocks:
        x = blk(x)
    torch.testing.assert_close(out, vit.norm(x), atol=ATOL, rtol=0)
    # property: the content of dropped patches does not matter
    changed = images.clone()
    for b in range(2):
        for j in set(range(16)) - set(keep[b].tolist()):
            changed[b][patch_pixels(changed, j)[1:]] = torch.randn(3, 4, 4) * 5
    torch.testing.assert_close(vit(changed, keep_idx=keep).tokens, out, atol=ATOL, rtol=0)


def test_mask_token_hides_masked_patch_content() -> None:
    vit = tiny_vision()
    images = torch.randn(1, 3, 16, 16)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, [0, 5, 9]] = True
    out = vit(images, mask=mask).tokens
    assert out.shape == (1, 17, 32)
    changed = images.clone()
    for j in (0, 5, 9):
        changed[patch_pixels(changed, j)] = torch.randn(1, 3, 4, 4) * 5
    torch.testing.assert_close(vit(changed, mask=mask).tokens, out, atol=ATOL, rtol=0)
    assert not torch.allclose(vit(changed).tokens, vit(images).tokens)  # without the mask it does matter
    # mask and keep_idx together: mask in full-patch indexing, then the drop
    keep = torch.tensor([[0, 1, 5, 7]])
    both = vit(images, keep_idx=keep, mask=mask).tokens
    assert both.shape == (1, 5, 32)
    torch.testing.assert_close(vit(changed, keep_idx=keep, mask=mask).tokens, both, atol=ATOL, rtol=0)


def test_video_frames_and_attention_output() -> None:
    vit = tiny_vision(max_frames=2)
    video = torch.randn(2, 2, 3, 16, 16)
    out = vit(video, return_attention=True)
    assert out.tokens.shape == (2, 1 + 2 + 2 * 16, 32)  # [global, CLS_1, CLS_2, patches of both frames]
    assert out.attention is not None and out.attention.shape == (2, 4, 34, 34)
    torch.testing.assert_close(out.tokens[:, 0], out.tokens[:, 1:3].mean(1))  # the clip's feature: SCL's mean
    assert vit(video[:, 0]).tokens.shape == (2, 17, 32)  # a picture is a one-frame video
    torch.testing.assert_close(vit(video[:, :1]).tokens, vit(video[:, 0]).tokens, atol=0, rtol=0)
    # identical frames still give different tokens: the temporal embedding tells them apart
    same = video[:, :1].expand(-1, 2, -1, -1, -1)
    tok = vit(same).tokens
    assert not torch.allclose(tok[:, 3:19], tok[:, 19:])
    with pytest.raises(ValueError, match="max_frames"):
        vit(torch.randn(1, 3, 3, 16, 16))


def test_the_image_path_is_the_plain_vit() -> None:
    """T = 1 (and every picture) is CLS + positions, the blocks with no mask, the final norm: nothing of
    the video path touches it."""
    vit = tiny_vision()
    images = torch.randn(2, 3, 16, 16)
    x = vit.embed_patches(images)
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(2, -1, -1), x], dim=1)
    for block in vit.blocks:
        x = block(x)
    torch.testing.assert_close(vit(images).tokens, vit.norm(x), atol=0, rtol=0)


def test_video_attention_keeps_patches_in_their_frame_and_lets_cls_see_all() -> None:
    """SCL's pattern: a patch attends to its own frame's CLS and patches, a frame CLS to every token. With one
    block, frame 1's patch outputs cannot depend on frame 2's pixels; its CLS output must."""
    vit = tiny_vision(max_frames=3, depth=1)
    video = torch.randn(1, 3, 3, 16, 16)
    changed = video.clone()
    changed[:, 1] += 1.0
    a, b = vit(video).tokens, vit(changed).tokens
    patches_of = lambda t, f: t[:, 1 + 3 + 16 * f: 1 + 3 + 16 * (f + 1)]  # noqa: E731
    torch.testing.assert_close(patches_of(a, 0), patches_of(b, 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(patches_of(a, 2), patches_of(b, 2), atol=1e-6, rtol=0)
    assert not torch.allclose(patches_of(a, 1), patches_of(b, 1))
    assert not torch.allclose(a[:, 1], b[:, 1])  # frame 1's CLS saw frame 2
    # the pattern against a brute-force double loop, with patches dropped
    keep = torch.tensor([[0, 5, 17, 20, 40, 47]])
    pattern = vit.frame_pattern(1, 3, keep, torch.device("cpu"))[0]
    frame = [0, 1, 2] + [int(k) // 16 for k in keep[0]]
    for i in range(len(frame)):
        for j in range(len(frame)):
            assert bool(pattern[i, j]) == (i < 3 or frame[i] == frame[j]), (i, j)
    assert vit(video, keep_idx=keep).tokens.shape == (1, 1 + 3 + 6, 32)


def test_patch_time_attention_adds_the_same_position_in_other_frames_only() -> None:
    """TimeSformer's time attention folded in: a patch also sees the patches at its position in the other
    frames, nothing else more. With one block, a patch's output then depends on its own position in another
    frame and on no other patch of that frame; the pattern against a brute-force loop, patches dropped."""
    vit = tiny_vision(max_frames=3, depth=1, patch_time_attention=True)
    video = torch.randn(1, 3, 3, 16, 16)
    changed = video.clone()
    changed[:, 1, :, :4, :4] += 1.0  # frame 1's patch 0 (top-left 4x4) only
    a, b = vit(video).tokens, vit(changed).tokens
    patch = lambda t, f, p: t[:, 1 + 3 + 16 * f + p]  # noqa: E731
    assert not torch.allclose(patch(a, 0, 0), patch(b, 0, 0))  # frame 0's patch 0 saw frame 1's patch 0
    torch.testing.assert_close(patch(a, 0, 5), patch(b, 0, 5), atol=1e-6, rtol=0)  # others did not
    keep = torch.tensor([[0, 5, 16, 21, 37, 40]])
    pattern = vit.frame_pattern(1, 3, keep, torch.device("cpu"))[0]
    frame = [0, 1, 2] + [int(k) // 16 for k in keep[0]]
    place = [-1, -1, -1] + [int(k) % 16 for k in keep[0]]
    for i in range(len(frame)):
        for j in range(len(frame)):
            want = i < 3 or frame[i] == frame[j] or (j >= 3 and place[i] == place[j])
            assert bool(pattern[i, j]) == want, (i, j)


# ------------------------------------------------------------------------------------ text and fusion
def test_text_padding_does_not_leak() -> None:
    text = tiny_text()
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.tensor([[1] * 5 + [0] * 2, [1] * 7])
    out = text(ids, mask)
    assert out.shape == (2, 7, 32)
    ids2 = ids.clone()
    ids2[0, 5:] = torch.randint(1, 50, (2,))
    torch.testing.assert_close(text(ids2, mask)[0, :5], out[0, :5], atol=ATOL, rtol=0)


@pytest.mark.parametrize("pre_norm", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_padded_block_equals_each_sequence_alone(pre_norm: bool, cross: bool) -> None:
    """Position-wise layers skip the padding (Packing): the real tokens' outputs and the weights'
    gradients equal running each sequence alone, unpadded; the padding comes out as zeros."""
    blk = Block(32, 4, 64, cross_kv_dim=24 if cross else None, pre_norm=pre_norm).eval()
    lengths = [7, 4, 1]
    x = torch.randn(3, 7, 32)
    ctx = torch.randn(3, 5, 24) if cross else None
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    out = blk(x, mask=mask, context=ctx)
    (out * mask[..., None]).square().sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in blk.named_parameters()}
    blk.zero_grad()
    total = 0.0
    for i, n in enumerate(lengths):
        alone = blk(x[i : i + 1, :n], context=None if ctx is None else ctx[i : i + 1])
        torch.testing.assert_close(out[i, :n], alone[0], atol=ATOL, rtol=0)
        assert torch.count_nonzero(out[i, n:]) == 0
        total = total + alone.square().sum()
    total.backward()
    for name, p in blk.named_parameters():
        torch.testing.assert_close(packed_grads[name], p.grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("mode", ["text_to_image", "cross", "merged"])
def test_fusion_modes(mode: str) -> None:
    fusion = FusionEncoder(mode, depth=2, text_width=32, image_width=24, heads=4, intermediate=64).eval()
    text, image = torch.randn(2, 6, 32), torch.randn(2, 5, 24)
    text_mask = torch.tensor([[1] * 4 + [0] * 2, [1] * 6])
    out = fusion(text, text_mask, image)
    assert isinstance(out, FusionOutput)
    assert out.text.shape == (2, 6, 32)
    if mode == "text_to_image":
        assert out.image is None
    else:
        assert out.image is not None and out.image.shape == (2, 5, 32)
    # the text output depends on the image
    assert not torch.allclose(fusion(text, text_mask, image + 1.0).text, out.text)
    # padded text positions do not affect the real ones (nor the image stream)
    text2 = text.clone()
    text2[0, 4:] = torch.randn(2, 32) * 5
    out2 = fusion(text2, text_mask, image)
    torch.testing.assert_close(out2.text[0, :4], out.text[0, :4], atol=ATOL, rtol=0)
    if out.image is not None:
        torch.testing.assert_close(out2.image, out.image, atol=ATOL, rtol=0)
    # an image padding mask is honoured as well
    image_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    a = fusion(text, text_mask, image, image_mask)
    image2 = image.clone()
    image2[0, 3:] = torch.randn(2, 24) * 5
    b = fusion(text, text_mask, image2, image_mask)
    torch.testing.assert_close(b.text[0, :4], a.text[0, :4], atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode,need_image", [("text_to_image", False), ("two_stream", False), ("two_stream", True),
                                             ("cross", True), ("merged", True)])
def test_fusion_with_an_image_index_equals_the_gathered_pairs(mode: str, need_image: bool) -> None:
    """ITM pairs each image with several captions; fusing with ``image_index`` (each image projected once)
    gives the outputs, attention maps and gradients of fusing the per-pair copies."""
    torch.manual_seed(0)
    fusion = FusionEncoder(mode, depth=2, text_width=32, image_width=24, heads=4, intermediate=64).eval()
    text = torch.randn(5, 6, 32, requires_grad=True)
    text_mask = torch.tensor([[1] * 4 + [0] * 2, [1] * 6, [1] * 3 + [0] * 3, [1] * 6, [1] * 5 + [0]])
    image = torch.randn(3, 7, 24, requires_grad=True)
    image_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 7])
    index = torch.tensor([2, 0, 2, 1, 0])
    outs, grads = [], []
    for use_index in (False, True):
        kwargs = {"image_index": index} if use_index else {}
        img, img_mask = (image, image_mask) if use_index else (image[index], image_mask[index])
        out = fusion(text, text_mask, img, img_mask, return_attention=True, need_image=need_image, **kwargs)
        loss = out.text.square().sum() + (out.image.square().sum() if out.image is not None else 0)
        grads.append(torch.autograd.grad(loss, (text, image)))
        outs.append(out)
    direct, indexed = outs
    torch.testing.assert_close(indexed.text, direct.text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(indexed.text_image_attention, direct.text_image_attention, atol=1e-5, rtol=1e-5)
    if need_image and mode != "text_to_image":
        torch.testing.assert_close(indexed.image, direct.image, atol=1e-5, rtol=1e-5)
    for g_direct, g_indexed in zip(*grads):
        torch.testing.assert_close(g_indexed, g_direct, atol=1e-5, rtol=1e-5)


def test_fusion_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="text_to_image"):
        FusionEncoder("sideways", 1, 32, 32, 4, 64)


# ------------------------------------------------------------------------------------ heads and teacher
def test_heads() -> None:
    text = tiny_text()
    head = MLMHead(32, 50, 1e-12, word_embeddings=text.word_embeddings)
    assert head.decoder.weight is text.word_embeddings.weight
    assert head(torch.randn(3, 32)).shape == (3, 50)
    untied = MLMHead(32, 50, 1e-12)
    assert untied.decoder.weight is not text.word_embeddings.weight
    assert Projection(32, 8)(torch.randn(2, 32)).shape == (2, 8)
    assert ITMHead(32)(torch.randn(2, 32)).shape == (2, 2)


def test_ema_teacher() -> None:
    text = tiny_text()
    head = MLMHead(32, 50, 1e-12, word_embeddings=text.word_embeddings)
    students = {"text": text, "mlm": head}
    m = 0.9
    teacher = EMATeacher(students, momentum=m)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher["mlm"].decoder.weight is teacher["text"].word_embeddings.weight  # tie kept in the copy
    assert teacher["text"].word_embeddings.weight is not text.word_embeddings.weight

    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in list(text.parameters()) + list(head.parameters()):
            p.add_(torch.randn_like(p))
    teacher.update(students)
    for name, student in students.items():
        for key, p_s in student.named_parameters():
            p_t = dict(teacher[name].named_parameters())[key]
            t0 = before[f"models.{name}.{key}"]
            # moved toward the student by exactly (1 - m) of the gap, shared weights only once
            torch.testing.assert_close(p_t - t0, (1 - m) * (p_s - t0), atol=1e-6, rtol=0)
    assert teacher["mlm"].decoder.weight is teacher["text"].word_embeddings.weight
    assert all(not p.requires_grad for p in teacher.parameters())
    assert "text" in teacher and "vision" not in teacher


def test_position_and_temporal_init_scales_follow_the_config_and_keep_the_default_draws() -> None:
    torch.manual_seed(0)
    default = VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=32, depth=1, heads=4, max_frames=4))
    torch.manual_seed(0)
    same = VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=32, depth=1, heads=4, max_frames=4,
                                          pos_init_std=0.02, temporal_init_std=0.02))
    assert torch.equal(default.pos_embed, same.pos_embed) and torch.equal(default.temporal_embed, same.temporal_embed)
    wide = VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=32, depth=1, heads=4, max_frames=4,
                                          pos_init_std=0.5, temporal_init_std=1.0))
    assert 0.35 < wide.pos_embed.std().item() < 0.5 and wide.pos_embed.abs().max().item() <= 1.0
    assert 0.7 < wide.temporal_embed.std().item() < 1.0 and wide.temporal_embed.abs().max().item() <= 2.0
    assert default.cls_token.abs().max().item() <= 0.04


def test_sincos_positions_are_fixed_at_the_tokens_scale_and_encode_row_and_column() -> None:
    cfg = VisionConfig(image_size=16, patch_size=4, width=32, depth=1, heads=4, max_frames=3, pos_embed="sincos")
    vit = VisionTransformer(cfg)
    pos = vit.pos_embed[0]
    assert torch.equal(pos[0], torch.zeros(32))  # the CLS sits nowhere
    # patch (row r, col c) = [sin(r f), cos(r f), sin(c f), cos(c f)] with f = 1 / 10000^(i/8), i < 8
    f = 1.0 / 10000 ** (torch.arange(8, dtype=torch.float64) / 8)
    for r, c in ((0, 0), (1, 2), (3, 1)):
        want = torch.cat([(r * f).sin(), (r * f).cos(), (c * f).sin(), (c * f).cos()]).float()
        torch.testing.assert_close(pos[1 + 4 * r + c], want)
    torch.testing.assert_close(pos[1:].norm(dim=1), torch.full((16,), 4.0))  # sqrt(width / 2)
    frames = torch.arange(3, dtype=torch.float64)[:, None] * (1.0 / 10000 ** (torch.arange(16) / 16))[None]
    torch.testing.assert_close(vit.temporal_embed[0], torch.cat([frames.sin(), frames.cos()], 1).float())
    assert not vit.pos_embed.requires_grad and not vit.temporal_embed.requires_grad
    clips = torch.randn(2, 3, 3, 16, 16)
    vit(clips).tokens.sum().backward()
    assert vit.pos_embed.grad is None and vit.temporal_embed.grad is None
    assert all(p.grad is not None for p in vit.blocks.parameters())
    with pytest.raises(ValueError, match="divisible by 4"):
        VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=30, depth=1, heads=3, pos_embed="sincos"))


def test_a_position_embedding_that_does_not_exist_is_refused_up_front() -> None:
    from maskvlp.config import ConfigError, RunConfig
    from maskvlp.config.checks import validate

    cfg = RunConfig()
    cfg.model.vision.pos_embed = "rope"
    with pytest.raises(ConfigError, match="model.vision.pos_embed"):
        validate(cfg)
