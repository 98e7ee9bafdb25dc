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


def _by_hand(model, images, ids, mask, layer: int) -> torch.Tensor:
    """The usual forward (no attention weights kept); hooks catch the layer's cross-attention query input and
    the input of its output projection, and the weights and their gradient are rebuilt from those."""
    block = model.fusion.blocks[layer]
    caught = {}

    def query_input(_module, args):
        caught["x"] = args[0]

    def heads_output(_module, args):
        args[0].retain_grad()
        caught["y"] = args[0]

    hooks = [block.cross.register_forward_pre_hook(query_input), block.cross.out.register_forward_pre_hook(heads_output)]
    with torch.no_grad():
        image = model.encode_image(images).tokens
        text = model.encode_text(ids, mask).tokens
    logits = model.itm_logits(text, mask, image)
    logits[:, 1].sum().backward()
    for h in hooks:
        h.remove()
    b, lt = ids.shape
    real = mask.bool()
    attn = block.cross
    heads, hd = attn.heads, attn.head_dim

    def unpacked(t: torch.Tensor) -> torch.Tensor:  # packed (real tokens, D) rows back to (B, Lt, D)
        if t.dim() == 3:
            return t
        full = t.new_zeros(b, lt, t.shape[-1])
        full[real] = t
        return full

    x, dy = unpacked(caught["x"].detach()), unpacked(caught["y"].grad)
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, hd).transpose(1, 2)  # noqa: E731
    q, k, v = split(attn.query(x)), split(attn.key(image)), split(attn.value(image))
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)  # every image token is real
    grad = split(dy) @ v.transpose(-2, -1)  # dS/dW = dS/dy . V^T, per head
    cams = (weights * grad.clamp(min=0)).mean(1)[..., 1:] * real[..., None]
    g = model.vision.grid
    model.zero_grad(set_to_none=True)
    return cams.reshape(b, lt, g, g).detach()


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
    """MLIM's single stream: the same rebuild from the usual forward, on the self-attention over [text; image],
    of which the text rows' image columns are kept."""
    attn = model.fusion.blocks[layer].attn
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
    b, lt = ids.shape
    full = torch.cat([mask.bool(), torch.ones(b, image.shape[1], dtype=torch.bool)], dim=1)

    def unpacked(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 3:
            return t
        out = t.new_zeros(b, full.shape[1], t.shape[-1])
        out[full] = t
        return out

    x, dy = unpacked(caught["x"].detach()), unpacked(caught["y"].grad)
    heads, hd = attn.heads, attn.head_dim
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, hd).transpose(1, 2)  # noqa: E731
    q, k, v = split(attn.query(x)), split(attn.key(x)), split(attn.value(x))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(hd)).masked_fill(~full[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    grad = split(dy) @ v.transpose(-2, -1)
    cams = (weights * grad.clamp(min=0)).mean(1)[:, :lt, lt + 1:] * mask.bool()[..., None]
    g = model.vision.grid
    model.zero_grad(set_to_none=True)
    return cams.reshape(b, lt, g, g).detach()


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
