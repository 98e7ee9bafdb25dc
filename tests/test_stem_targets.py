"""Image-side masked objectives with targets from the frozen pretrained stem (``source=stem``): the targets
are the stem's features of the clean image at exactly the masked patches, they need no teacher, a MIM
trained on them learns, and a model without a frozen pretrained stem is refused in one line."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from maskvlp.config import ConfigError, MAMOParams, SimlaMIMParams
from maskvlp.data.batch import Batch
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.models.vlp import FUSION, TEACHER, TEACHER_FUSION
from maskvlp.objectives.context import StepContext
from test_objectives import CAPTIONS, SPECIALS, TOKENIZER


def _recipe(tmp_path, objective: str, params: str) -> str:
    path = tmp_path / f"{objective}.yaml"
    path.write_text(f"model: {{fusion: {{mode: two_stream}}}}\nobjectives:\n  - name: {objective}\n    weight: 1.0\n"
                    f"    params: {params}\n")
    return str(path)


def _setup(tmp_path, objective: str, params: str):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, _recipe(tmp_path, objective, params))
    assert cfg.model.vision.stem == "efficientnet_lite0" and not cfg.model.vision.stem_trainable
    module = Pretrainer(cfg, SPECIALS)
    tok = TOKENIZER.encode(CAPTIONS, cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    images = torch.rand(len(CAPTIONS), 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = Batch(images, tok.input_ids, tok.attention_mask, torch.arange(len(CAPTIONS)), len(CAPTIONS))
    return module, batch


def _stem_targets(module, images: torch.Tensor, mask_idx: torch.Tensor) -> torch.Tensor:
    """The frozen trunk run by hand on the clean images, at the masked patches, layer-normalised."""
    with torch.no_grad():
        features = module.model.vision.patch_embed.trunk_features(images)  # (B, C, g, g)
    patches = features.flatten(2).transpose(1, 2)
    picked = torch.stack([patches[b, mask_idx[b]] for b in range(len(patches))]).float()
    return F.layer_norm(picked, picked.shape[-1:], eps=1e-6).flatten(0, 1)


def test_mamo_stem_targets_are_the_stems_features_at_the_masked_patches(tmp_path):
    module, batch = _setup(tmp_path, "mamo", "{mim_source: stem, mlm_weight: 0.0, mrm_weight: 0.0}")
    objective = module.objectives["mamo"]
    assert objective.reads().parts == {FUSION}  # no teacher: the stem is the target
    assert module.model.teacher is None or "vision" not in module.model.teacher
    out = objective.run(StepContext(module.model, batch, 0, 0, SPECIALS))
    expected = _stem_targets(module, batch.images, out.image_mask.mask_idx)
    assert out.mim_pred.shape == out.mim_target.shape == expected.shape
    assert expected.shape[1] == module.model.vision.patch_embed.trunk.out_channels
    torch.testing.assert_close(out.mim_target.float(), expected, atol=1e-5, rtol=1e-5)
    assert not out.mim_target.requires_grad


def test_simla_stem_targets_regress_or_code_the_stems_features(tmp_path):
    module, batch = _setup(tmp_path, "simla_mim", "{source: stem, target: features, alpha: 0.0}")
    objective = module.objectives["simla_mim"]
    assert TEACHER not in objective.reads().parts
    ctx = StepContext(module.model, batch, 0, 0, SPECIALS)
    mask = objective.image_mask(ctx)
    got = objective.targets(ctx.stem_patches, mask.mask_idx)
    torch.testing.assert_close(got, _stem_targets(module, batch.images, mask.mask_idx), atol=1e-5, rtol=1e-5)
    coded, _ = _setup(tmp_path, "simla_mim", "{source: stem, codebook_size: 64}")
    assert coded.objectives["simla_mim"].codebook.shape == (64, coded.model.vision.patch_embed.trunk.out_channels)
    assert {TEACHER, TEACHER_FUSION} <= coded.objectives["simla_mim"].reads().parts  # distillation still reads them


def test_mim_on_stem_targets_falls_on_a_fixed_batch(tmp_path):
    """30 AdamW steps on one batch and one mask: the regression to the stem's features falls well below the
    1.0 of a near-zero prediction (the targets are layer-normalised)."""
    module, batch = _setup(tmp_path, "mamo", "{mim_source: stem, mlm_weight: 0.0, mrm_weight: 0.0}")
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        opt.zero_grad()
        loss, metrics = module(batch, step=0)
        loss.backward()
        opt.step()
        history.append(metrics["mamo_mim"])
    assert history[-1] < 0.8 * history[0], history[::5]


@pytest.mark.parametrize("objective, params", [("mamo", "{mim_source: stem}"), ("simla_mim", "{source: stem}"),
                                               ("mlim", "{recon_target: stem}")])
def test_a_model_without_a_frozen_pretrained_stem_is_refused_in_one_line(tmp_path, objective, params):
    with pytest.raises(ConfigError, match="stem targets need a frozen pretrained stem") as err:
        Pretrainer(tiny_config(tmp_path, _recipe(tmp_path, objective, params), "model.vision.stem=patch"), SPECIALS)
    assert "\n" not in str(err.value)


def test_teacher_remains_the_default_source():
    assert MAMOParams().mim_source == "teacher" and SimlaMIMParams().source == "teacher"


def test_mlim_reconstructs_the_stems_features_of_the_masked_patches(tmp_path):
    """recon_target=stem: the target is the stem's layer-normalised features on the patch grid, the region
    the MAM-masked patches, and RECON falls on a fixed batch."""
    module, batch = _setup(tmp_path, "mlim", "{recon_target: stem, recon_weight: 1.0}")
    objective = module.objectives["mlim"]
    out = objective.compute(StepContext(module.model, batch, 0, 0, SPECIALS))
    with torch.no_grad():
        features = module.model.vision.patch_embed.trunk_features(batch.images).float()  # (B, C, g, g)
    expected = F.layer_norm(features.permute(0, 2, 3, 1), features.shape[1:2], eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.target, expected, atol=1e-5, rtol=1e-5)
    assert out.recon.shape == out.target.shape and out.recon.requires_grad and not out.target.requires_grad
    g = features.shape[-1]
    assert torch.equal(out.region.flatten(1), out.mask.image_masked.bool().reshape(len(features), g * g))
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        opt.zero_grad()
        loss, metrics = module(batch, step=0)
        loss.backward()
        opt.step()
        history.append(metrics["mlim_recon"])
    assert history[-1] < 0.8 * history[0], history[::5]
