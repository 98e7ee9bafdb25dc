"""MLIM on properties: the objective uses the step's modality-aware mask (predicted text positions,
RECON region), decoder shape, target without gradient, gradient flow, no NaN on empty terms,
falling loss, and a hand-checked RECON value."""
from __future__ import annotations

import math

import pytest
import torch

import maskvlp.objectives.mlim  # noqa: F401  (registration)
from conftest import tiny_config
from maskvlp.config import ConfigError
from maskvlp.data.transforms import IMAGE_MEAN, IMAGE_STD
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.masking import mask_counts, modality_aware_mask
from maskvlp.data.batch import Batch
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.mlim import MLIM, per_image_recon_error, pixel_region, upsample_factors
from test_objectives import CAPTIONS, SPECIALS, TOKENIZER



def _cfg(tmp_path, *extra):
    return tiny_config(tmp_path, "mlim", *extra)


def _module(tmp_path, *extra) -> Pretrainer:
    torch.manual_seed(0)
    return Pretrainer(_cfg(tmp_path, *extra), SPECIALS)


def _batch(cfg) -> Batch:
    """Images made of flat-coloured quadrants (learnable structure), normalised like the transforms."""
    tok = TOKENIZER.encode(CAPTIONS, cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(len(CAPTIONS), 3, 2, 2, generator=g)
    pixels = colours.repeat_interleave(size // 2, dim=2).repeat_interleave(size // 2, dim=3)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return Batch((pixels - mean) / std, tok.input_ids, tok.attention_mask, torch.arange(len(CAPTIONS)), len(CAPTIONS))


def _ctx(module, batch, step=3) -> StepContext:
    return StepContext(module.model, batch, step, module.seed, SPECIALS)


# ------------------------------------------------------------------------------------------ masks used
def test_objective_uses_the_step_mask_for_text_positions_and_the_masked_image_pass(tmp_path):
    module = _module(tmp_path)
    batch = _batch(_cfg(tmp_path))
    obj: MLIM = module.objectives["mlim"]
    ctx = _ctx(module, batch)
    out = obj.compute(ctx)
    # the mask is modality_aware_mask on the context's global-batch noise, with the recipe's modes
    n = ctx.num_patches
    again = modality_aware_mask(
        batch.input_ids, batch.attention_mask, SPECIALS.special_ids, SPECIALS.mask_id, SPECIALS.vocab_size, n,
        modes=obj.modes, mode_noise=ctx.global_rand("mam-mode"), image_noise=ctx.patch_noise("mam-image"),
        text_noise=ctx.global_rand("mam-text", batch.input_ids.shape[1], 3))
    assert torch.equal(out.mask.image_masked, again.image_masked)
    assert torch.equal(out.mask.text.input_ids, again.text.input_ids)
    # predicted text positions are exactly the masked ones, labels the original ids
    assert torch.equal(out.mlm_positions, out.mask.text.masked)
    assert out.mlm_logits.shape[0] == int(out.mask.text.masked.sum())
    assert torch.equal(out.mlm_labels, batch.input_ids[out.mask.text.masked])
    # per-row counts follow the row's mode
    assert torch.equal(out.mask.image_masked.sum(1), mask_counts(torch.full((8,), n), out.mask.image_ratio))
    assert set(out.mask.mode.tolist()) <= {0, 1, 2}
    # the image pass was the shared replace-mode pass under this mask
    step_mask = ctx.image_mask(obj.mask_key, lambda: pytest.fail("the mask was not registered"))
    assert step_mask.mam is out.mask
    with torch.no_grad():
        direct = module.model.encode_image(batch.images, mask=out.mask.image_masked).tokens
    assert torch.allclose(ctx.masked_image(obj.mask_key, "replace").tokens, direct, atol=1e-6)


def test_heavy_and_light_ratios_come_from_params(tmp_path):
    module = _module(tmp_path, "objectives.mlim.params.heavy_ratio=0.5", "objectives.mlim.params.mode_weights=[1,0,0]")
    out = module.objectives["mlim"].compute(_ctx(module, _batch(_cfg(tmp_path))))
    assert (out.mask.image_masked.sum(1) == 8).all()  # 0.5 of 16 patches in every row
    assert not out.mask.text.masked.any() and out.mlm_logits.shape[0] == 0


@pytest.mark.parametrize("region", ["masked", "all"])
def test_recon_region_and_decoder_shape(tmp_path, region):
    module = _module(tmp_path, f"objectives.mlim.params.recon_region={region}")
    batch = _batch(_cfg(tmp_path))
    out = module.objectives["mlim"].compute(_ctx(module, batch))
    assert out.recon.shape == batch.images.shape
    assert float(out.recon.detach().min()) >= 0.0 and float(out.recon.detach().max()) <= 1.0
    if region == "all":
        assert out.region.all()
    else:
        p = module.model.cfg.vision.patch_size
        g = module.model.vision.grid
        for row in range(batch.images.shape[0]):
            for k in range(g * g):
                cell = out.region[row, 0, (k // g) * p:(k // g + 1) * p, (k % g) * p:(k % g + 1) * p]
                expected = bool(out.mask.image_masked[row, k])
                assert bool(cell.all()) == expected and bool(cell.any()) == expected


def test_target_is_the_unnormalised_image_without_gradient(tmp_path):
    module = _module(tmp_path)
    batch = _batch(_cfg(tmp_path))
    batch.images.requires_grad_(True)
    out = module.objectives["mlim"].compute(_ctx(module, batch))
    assert not out.target.requires_grad and out.target.grad_fn is None
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(out.target, (batch.images.detach() * std + mean).clamp(0, 1), atol=1e-6)


# ------------------------------------------------------------------------------------------ gradients
def test_gradients_reach_mask_token_fusion_towers_heads_and_no_teacher_exists(tmp_path):
    module = _module(tmp_path)
    loss, metrics = module(_batch(_cfg(tmp_path)), step=5)
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    model = module.model
    assert model.teacher is None and model.itm_head is None
    assert model.vision.mask_token.requires_grad

    def reached(prefix: str) -> None:
        params = [(n, p) for n, p in module.named_parameters() if n.startswith(prefix)]
        assert params, prefix
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), f"no gradient reached {prefix}"
        for n, p in params:
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), n

    for prefix in ("model.vision.mask_token", "model.vision.patch_embed", "model.vision.blocks", "model.text.",
                   "model.fusion.image_proj", "model.fusion.blocks", "model.fusion.modality_embed",
                   "model.mlm_head.dense", "objectives.mlim.decoder"):
        reached(prefix)
    # the ITC projections are not MLIM's: nothing reaches them
    assert model.vision_proj.linear.weight.grad is None and model.text_proj.linear.weight.grad is None


@pytest.mark.parametrize("weights,empty", [("[1,0,0]", "mlm"), ("[0,1,0]", "recon")])
def test_empty_terms_are_zero_not_nan(tmp_path, weights, empty):
    """All heavy-image: no masked text, no MLM term. All heavy-text: no masked patch, no RECON term."""
    module = _module(tmp_path, f"objectives.mlim.params.mode_weights={weights}")
    loss, metrics = module(_batch(_cfg(tmp_path)), step=0)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert metrics[f"mlim_{empty}"] == 0.0
    other = "recon" if empty == "mlm" else "mlm"
    assert metrics[f"mlim_{other}"] > 0.0
    for n, p in module.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), n


def test_loss_falls_on_a_fixed_batch(tmp_path):
    """Same batch and same step (so the same masks) each time: both terms must fall steadily."""
    module = _module(tmp_path, "objectives.mlim.params.recon_region=all")
    batch = _batch(_cfg(tmp_path))
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(15):
        opt.zero_grad()
        loss, metrics = module(batch, step=0)
        loss.backward()
        opt.step()
        module.after_step()
        history.append(metrics)
    mlm = [m["mlim_mlm"] for m in history]
    recon = [m["mlim_recon"] for m in history]
    assert mlm[-1] < mlm[0] - 0.5, f"MLM did not fall: {mlm[0]:.3f} -> {mlm[-1]:.3f}"
    assert history[-1]["mlim_mlm_acc"] >= 0.5
    assert recon[-1] < 0.97 * recon[0], f"RECON did not fall: {recon[0]:.4f} -> {recon[-1]:.4f}"
    for series in (mlm, recon):
        assert sum(b < a for a, b in zip(series, series[1:])) >= 0.8 * (len(series) - 1)


# ------------------------------------------------------------------------------------------ recon by hand
def test_recon_error_by_hand():
    # 2 images, 3 channels, 2x2 pixels, patch size 1 -> 4 patches in a 2x2 grid
    target = torch.zeros(2, 3, 2, 2)
    pred = torch.zeros(2, 3, 2, 2)
    pred[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.5])  # image 0: error only in pixel (0, 0)
    pred[0, 0, 1, 1] = 1.0  # and channel 0 of pixel (1, 1)
    pred[1] = 0.1  # image 1: 0.1 everywhere
    masked = torch.tensor([[True, False, False, False], [False, False, False, False]])
    region = pixel_region(masked, 1)
    assert region.shape == (2, 1, 2, 2) and region[0, 0].tolist() == [[True, False], [False, False]]
    err, present = per_image_recon_error(pred, target, region, "sum")
    assert present.tolist() == [True, False]
    assert torch.allclose(err, torch.tensor([3 * 0.25, 0.0]))  # pixel (1, 1) lies outside the region
    err, _ = per_image_recon_error(pred, target, region, "mean")
    assert torch.allclose(err, torch.tensor([0.25, 0.0]))  # 0.75 over 1 pixel x 3 channels
    everything = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    err, present = per_image_recon_error(pred, target, everything, "sum")
    assert present.all() and torch.allclose(err, torch.tensor([0.75 + 1.0, 12 * 0.01]))
    err, _ = per_image_recon_error(pred, target, everything, "mean")
    assert torch.allclose(err, torch.tensor([1.75 / 12, 0.01]))


def test_recon_loss_in_forward_is_mean_over_images_with_a_region(tmp_path):
    module = _module(tmp_path, "objectives.mlim.params.recon_reduction=sum")
    obj: MLIM = module.objectives["mlim"]
    ctx = _ctx(module, _batch(_cfg(tmp_path)))
    metrics = obj(ctx).metrics
    out = obj.compute(_ctx(module, _batch(_cfg(tmp_path))))
    rows = [b for b in range(8) if out.mask.image_masked[b].any()]
    sse = [float(((out.recon[b].detach() - out.target[b]) ** 2 * out.region[b]).sum()) for b in rows]
    assert math.isclose(metrics["mlim_recon"], sum(sse) / len(rows), rel_tol=1e-4)


def test_upsample_factors_and_config_errors(tmp_path):
    assert upsample_factors(16) == [2, 2, 2, 2] and upsample_factors(12) == [2, 2, 3] and upsample_factors(1) == []
    with pytest.raises(ConfigError, match="recon_region"):
        _module(tmp_path, "objectives.mlim.params.recon_region=visible")
    with pytest.raises(ConfigError, match="fusion.mode"):
        _module(tmp_path, "model.fusion.mode=text_to_image")
    with pytest.raises(ConfigError, match="mode_weights"):
        _module(tmp_path, "objectives.mlim.params.mode_weights=[1,1]")
