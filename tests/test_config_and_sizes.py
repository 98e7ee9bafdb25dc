"""Configs and the model-size registry: every size builds, `base` matches ALBEF's architecture."""
from __future__ import annotations

import pytest
import torch

from maskvlp.config import MODEL_SIZES, ConfigError, load_config, recipe_names
from maskvlp.models.vlp import FUSION, ITM, MLM, TEACHER, VLPModel

ALBEF_PARTS = {FUSION, ITM, MLM}


def _count(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@pytest.mark.parametrize("size", MODEL_SIZES)
def test_every_registered_size_builds_with_consistent_shapes(size):
    cfg = load_config("albef", size).model
    with torch.device("meta"):
        model = VLPModel(cfg, ALBEF_PARTS | {TEACHER})
    assert model.fusion is not None and model.teacher is not None
    assert cfg.vision.image_size % cfg.vision.patch_size == 0
    assert cfg.text.width % cfg.text.heads == 0 and cfg.vision.width % cfg.vision.heads == 0


def test_base_has_albefs_parameter_count():
    """ViT-B/16 + BERT-base (6 text + 6 fusion layers with cross-attention) + ITC projections + ITM head,
    counted from transformers' own modules, must equal ours (the EMA teacher excluded)."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    cfg = load_config("albef", "base").model
    with torch.device("meta"):
        ours = VLPModel(cfg, ALBEF_PARTS)
        vit = ViTModel(ViTConfig(image_size=224, patch_size=16), add_pooling_layer=False)
        bert = BertModel(BertConfig(), add_pooling_layer=False)
        bert_cross = BertModel(BertConfig(is_decoder=True, add_cross_attention=True), add_pooling_layer=False)
    cross_per_layer = (_count(bert_cross) - _count(bert)) // 12
    mlm_transform = 768 * 768 + 768 + 2 * 768 + 30522  # dense, LayerNorm, output bias (decoder tied)
    reference = (_count(vit) + 1 * 768  # + the learned mask token
                 + _count(bert) + 6 * cross_per_layer
                 + 2 * (768 * 256 + 256)  # ITC projections
                 + (768 * 2 + 2)  # ITM head
                 + mlm_transform + 1)  # + temperature
    assert _count(ours) == reference
    assert 209e6 < reference < 210.5e6  # ALBEF's ~209.5M (ViT-B/16 86M + BERT-base with 6 cross layers 123M)


def test_recipes_are_listed_and_load():
    assert {"albef", "clip"} <= set(recipe_names())
    for name in recipe_names():
        cfg = load_config(name)
        assert cfg.objectives and cfg.recipe == name


def test_objective_overrides_by_name_and_their_errors():
    cfg = load_config("albef", None, ["objectives.itc.params.alpha=0.0", "objectives.mlm.weight=2"])
    by_name = {o.name: o for o in cfg.objectives}
    assert by_name["itc"].params["alpha"] == 0.0 and by_name["mlm"].weight == 2
    with pytest.raises(ConfigError, match="has no such objective; it has: itc, itm, mlm"):
        load_config("albef", None, ["objectives.xmm.weight=1"])
    with pytest.raises(ConfigError, match="unknown config key 'objectives.itc.params.alpah'"):
        from maskvlp.objectives import build_objective

        build_objective("itc", load_config("albef").model, {"alpah": 0.1})
