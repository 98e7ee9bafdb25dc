"""Grad-CAM of the ITM score on the fusion's cross-attention: equal to a hand computation made on the usual
(SDPA) forward pass through hooks, batched equal to one row at a time, and no gradient left on the model."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.eval.gradcam import default_cam_layer, itm_gradcam
from test_objectives import SPECIALS, TOKENIZER

CAPTIONS = ["a red circle left of a blue square", "a green star above a small cyan cross", "two yellow triangles"]


def _model(tmp_path, *extra: str):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, "albef", "model.fusion.depth=2", *extra)
    model = Pretrainer(cfg, SPECIALS).model.eval()
    size = cfg.model.vision.image_size
    images = torch.randn(len(CAPTIONS), 3, size, size, generator=torch.Generator().manual_seed(1))
    tok = TOKENIZER.encode(CAPTIONS, cfg.model.text.max_len)
    return model, images, tok.input_ids, tok.attention_mask


def _hooked_backward(model, images, ids, mask, attn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The usual forward and backward of the ITM match logit (no attention weights kept); hooks catch the
    query input of ``attn`` and the input of its output projection with its gradient. Returns the image
    tokens and those two as they ran (packed to the real tokens where the block packs)."""
    caught = {}

    def query_input(_module, args):
        caught["x"] = args[0]

    def heads_output(_module, args):
        args[0].retain_grad()
        caught["y"] = args[0]

    hooks = [attn.register_forward_pre_hook(query_input), attn.out.register_forward_pre_hook(heads_output)]
    with torch.no_grad():
        image = model.encode_image(images).tokens
        text = model.encode_text(ids, mask).tokens
    logits = model.itm_logits(text, mask, image)
    logits[:, 1].sum().backward()
    for h in hooks:
        h.remove()
    return image, caught["x"].detach(), caught["y"].grad


def _unpacked(t: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Packed (real tokens, D) rows back to (B, L, D) with zeros at padding; an unpacked tensor as it is."""
    if t.dim() == 3:
        return t
    full = t.new_zeros(*real.shape, t.shape[-1])
    full[real] = t
    return full


def _cams(attn, x: torch.Tensor, keys: torch.Tensor, dy: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Weights times positive gradient, heads averaged: softmax(QK^T) rebuilt from the caught query input and
    dS/dW = dS/dy . V^T per head."""
    heads, hd = attn.heads, attn.head_dim
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, hd).transpose(1, 2)  # noqa: E731
    q, k, v = split(attn.query(x)), split(attn.key(keys)), split(attn.value(keys))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    grad = split(dy) @ v.transpose(-2, -1)
    return (torch.softmax(scores, dim=-1) * grad.clamp(min=0)).mean(1)


def _by_hand(model, images, ids, mask, layer: int) -> torch.Tensor:
    """ALBEF's maps rebuilt from the usual (SDPA) forward through hooks on the layer's cross-attention."""
    attn = model.fusion.blocks[layer].cross
    image, x, dy = _hooked_backward(model, images, ids, mask, attn)
    real = mask.bool()
    cams = _cams(attn, _unpacked(x, real), image, _unpacked(dy, real), None)  # every image token is real
    cams = cams[..., 1:] * real[..., None]
    model.zero_grad(set_to_none=True)
    return cams.reshape(*ids.shape, model.vision.grid, model.vision.grid).detach()


def test_gradcam_equals_a_hand_computation_from_the_usual_forward(tmp_path):
    model, images, ids, mask = _model(tmp_path)
    assert not bool(mask.all())  # the captions differ in length: padding is exercised
    for layer in (0, 1):
        cam = itm_gradcam(model, images, ids, mask, layer=layer)
        expected = _by_hand(model, images, ids, mask, layer)
        torch.testing.assert_close(cam.token_maps, expected, atol=1e-6, rtol=1e-4)
        assert cam.token_maps.abs().sum() > 0 and (cam.token_maps >= 0).all()
        per_text = expected.sum(1) / mask.sum(1)[:, None, None]
        torch.testing.assert_close(cam.text_map, per_text, atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # Grad-CAM leaves no gradient on the model
    assert ((cam.match > 0) & (cam.match < 1)).all()


def _merged_by_hand(model, images, ids, mask, layer: int) -> torch.Tensor:
    """MLIM's single stream: the same rebuild on the self-attention over [text; image], of which the text
    rows' image columns are kept."""
    attn = model.fusion.blocks[layer].attn
    image, x, dy = _hooked_backward(model, images, ids, mask, attn)
    b, lt = ids.shape
    full = torch.cat([mask.bool(), torch.ones(b, image.shape[1], dtype=torch.bool)], dim=1)
    x = _unpacked(x, full)
    cams = _cams(attn, x, x, _unpacked(dy, full), full)[:, :lt, lt + 1:] * mask.bool()[..., None]
    model.zero_grad(set_to_none=True)
    return cams.reshape(b, lt, model.vision.grid, model.vision.grid).detach()


def test_single_stream_gradcam_reads_the_text_rows_image_columns(tmp_path):
    model, images, ids, mask = _model(tmp_path, "model.fusion.mode=merged")
    assert model.fusion.mode == "merged" and not bool(mask.all())
    for layer in (0, 1):
        cam = itm_gradcam(model, images, ids, mask, layer=layer)
        torch.testing.assert_close(cam.token_maps, _merged_by_hand(model, images, ids, mask, layer), atol=1e-6, rtol=1e-4)
        assert cam.token_maps.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_batched_maps_equal_one_row_at_a_time(tmp_path):
    model, images, ids, mask = _model(tmp_path)
    batched = itm_gradcam(model, images, ids, mask)
    for i in range(len(CAPTIONS)):
        n = int(mask[i].sum())
        one = itm_gradcam(model, images[i:i + 1], ids[i:i + 1, :n], mask[i:i + 1, :n])
        torch.testing.assert_close(one.text_map[0], batched.text_map[i], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(one.token_maps[0], batched.token_maps[i, :n], atol=1e-6, rtol=1e-4)


def test_layer_choice_and_models_without_a_usable_fusion(tmp_path):
    assert default_cam_layer(6) == 2 and default_cam_layer(2) == 1  # ALBEF: the 3rd of 6 fusion layers
    model, images, ids, mask = _model(tmp_path)
    with pytest.raises(ValueError, match="not a fusion layer"):
        itm_gradcam(model, images, ids, mask, layer=2)
    cross, *_ = _model(tmp_path, "model.fusion.mode=cross")
    with pytest.raises(ValueError, match="how text tokens attend to image tokens"):
        itm_gradcam(cross, images, ids, mask)


def test_explain_in_the_api_and_the_cli_writes_a_picture(tmp_path):
    """maskvlp.load(run).explain: whole-text and one-word maps equal the Grad-CAM of the same batch;
    `maskvlp explain` writes a PNG; a word the text lacks and a missing image are one-line errors."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    import maskvlp
    from conftest import TINY
    from maskvlp.cli import app
    from maskvlp.config import load_config
    from maskvlp.engine.trainer import train

    cfg = load_config("albef", "tiny", [*TINY, "train.max_steps=1", f"output_dir={tmp_path / 'run'}"])
    train(cfg, show_progress=False)
    picture = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)).save(picture)
    m = maskvlp.load(tmp_path / "run", device="cpu")
    texts = ["a red circle left of a blue square", "a green star"]
    maps, match = m.explain([picture, picture], texts)
    g = m.model.vision.grid
    assert maps.shape == (2, g, g) and match.shape == (2,)
    b = m.tokenizer.encode(texts, cfg.model.text.max_len)
    cam = itm_gradcam(m.model, m.preprocess_images([picture, picture]), b.input_ids, b.attention_mask)
    torch.testing.assert_close(maps, cam.text_map)
    red, _ = m.explain([picture], [texts[0]], word="red")
    where = b.input_ids[0].tolist().index(m.tokenizer.encode(["red"], 8).input_ids[0][1].item())
    torch.testing.assert_close(red[0], cam.token_maps[0, where])
    with pytest.raises(ValueError, match="has no word 'purple'"):
        m.explain([picture], [texts[0]], word="purple")
    out = tmp_path / "maps" / "red.png"
    result = CliRunner().invoke(app, ["explain", "--checkpoint", str(tmp_path / "run"), "--image", str(picture),
                                      "--text", texts[0], "--word", "red", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.stat().st_size > 2000 and "p(match)" in result.output
    missing = CliRunner().invoke(app, ["explain", "--checkpoint", str(tmp_path / "run"), "--image",
                                       str(tmp_path / "none.png"), "--text", "x"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
