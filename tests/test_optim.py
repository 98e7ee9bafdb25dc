"""Optimizer groups: each trainable parameter once, at the learning rate of what it starts from."""
from __future__ import annotations

import pytest

from conftest import tiny_config
from maskvlp.engine.optim import make_optimizer
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.engine.trainer import text_specials
from maskvlp.data.tokenizer import load_tokenizer

SPECIALS = text_specials(load_tokenizer())


@pytest.mark.parametrize("init", ["minilm", "scratch"])  # minilm: names mark BERT weights (none loaded here)
@pytest.mark.parametrize("tower_lr", [0.0, 1e-3, 2e-4])  # 1e-3 is conftest's train.lr: no group of its own
def test_every_parameter_once_at_its_kinds_lr(tmp_path, tower_lr, init):
    """BERT-initialised weights at text_lr; the towers' fresh weights (the ViT body, and the text tower when it
    starts from scratch) at tower_lr when set; everything else (fusion, heads, projections) at lr."""
    cfg = tiny_config(tmp_path, "albef", f"model.text.init={init}", "train.lr=1e-3", "train.text_lr=1e-4",
                      f"train.tower_lr={tower_lr}")
    module = Pretrainer(cfg, SPECIALS, load_pretrained=False)
    optimizer = make_optimizer(module, module.model, cfg.train)
    lr_of = {id(p): g["base_lr"] for g in optimizer.param_groups for p in g["params"]}
    placed = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert len(placed) == len(set(placed)) == len(trainable)  # each trainable parameter exactly once
    model = module.model
    towers = {id(p) for p in [*model.vision.parameters(), *model.text.parameters()] if p.requires_grad}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if model.is_pretrained_parameter(name):
            want = 1e-4
        elif id(p) in towers and tower_lr:
            want = tower_lr
        else:
            want = 1e-3
        assert lr_of[id(p)] == want, name
    assert any(lr_of[id(p)] == (tower_lr or 1e-3) for p in model.text.parameters()) == (init == "scratch")
    assert len(optimizer.param_groups) == 2 * len(set(lr_of.values()))  # (lr, decay) pairs: no empty groups


@pytest.mark.parametrize("override", ["train.lr=0", "train.text_lr=-1e-4", "train.tower_lr=-1"])
def test_a_learning_rate_out_of_range_is_a_config_error(tmp_path, override):
    from maskvlp.config import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        tiny_config(tmp_path, "albef", override)
