"""Recipes that name a base: sections merge key by key, objectives by name, and the CLI prints the result."""
from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from maskvlp.cli import app
from maskvlp.config import ConfigError, config_differences, load_config, recipe_base, resolved_recipe

MASKED = ["mlim", "mamo", "simla", "scl", "semmim", "composite"]


@pytest.mark.parametrize("recipe", MASKED)
def test_every_masked_recipe_is_albef_plus_what_it_says(recipe):
    """Only the keys the recipe writes differ from albef: the stem, learning rates, schedules, batch and
    budget are albef's, and every albef objective the recipe keeps has albef's settings unless it says."""
    assert recipe_base(recipe) == "albef"
    albef, cfg = load_config("albef"), load_config(recipe)
    own = yaml.safe_load(open(_builtin(recipe)))
    for section in ("train", "data", "eval"):
        assert getattr(cfg, section) == getattr(albef, section) or section in own
    assert cfg.model.vision == albef.model.vision
    own_text = own.get("model", {}).get("text", {})
    assert {k: v for k, v in vars(cfg.model.text).items() if k not in own_text} == {
        k: v for k, v in vars(albef.model.text).items() if k not in own_text}
    albef_objectives = {o.name: o for o in albef.objectives}
    changed = {o["name"] for o in own["objectives"]}
    for obj in cfg.objectives:
        if obj.name in albef_objectives and obj.name not in changed:
            assert obj == albef_objectives[obj.name], obj.name


def _builtin(recipe: str):
    from importlib import resources

    return resources.files("maskvlp") / "recipes" / f"{recipe}.yaml"


def test_objective_entries_merge_by_name_and_params_key_by_key():
    scl, albef = load_config("scl"), load_config("albef")
    itc = next(o for o in scl.objectives if o.name == "itc")
    albef_itc = next(o for o in albef.objectives if o.name == "itc")
    assert itc.weight == 0.5 and itc.params.momentum_features is False and itc.params.alpha == 0.0
    # what scl.yaml does not say comes from albef.yaml
    assert itc.params.batch_features == albef_itc.params.batch_features == "student"
    assert itc.params.text_negatives == "swap"
    assert [o.name for o in scl.objectives] == ["itc", "itm", "mlm", "scl"]


def test_remove_drops_a_base_objective():
    assert [o.name for o in load_config("mamo").objectives] == ["itc", "itm", "mamo"]
    assert [o.name for o in load_config("mlim").objectives] == ["mlim"]


def test_a_user_recipe_file_inherits_from_a_builtin_and_from_a_file_beside_it(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "base: albef\ntrain: {lr: 5.0e-4}\nobjectives:\n  - {name: mlm, weight: 0.5}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../mine.yaml\ntrain: {batch_size: 8}\n")
    mine = load_config(str(tmp_path / "mine.yaml"))
    child = load_config(str(tmp_path / "sub" / "child.yaml"))
    albef = load_config("albef")
    assert mine.train.lr == 5e-4 and mine.train.tower_lr == albef.train.tower_lr
    assert [o.weight for o in mine.objectives] == [1.0, 1.0, 0.5]
    diffs = set(config_differences(mine, child))
    assert diffs == {"train.batch_size", "recipe", "output_dir"}
    # an override still wins over the whole chain
    assert load_config(str(tmp_path / "sub" / "child.yaml"), overrides=["train.lr=1e-4"]).train.lr == 1e-4


@pytest.mark.parametrize("text, message", [
    ("base: loop.yaml\n", "base chain loops"),
    ("base: albef\nobjectives:\n  - {name: mamo, remove: true}\n", "base has no such objective"),
    ("objectives:\n  - {name: itc, remove: true}\n", "names no base"),
    ("base: [albef, clip]\n", "'base' must name one recipe"),
    ("base: nosuch\n", "unknown recipe 'nosuch'"),
])
def test_bad_bases_give_one_line_errors(tmp_path, text, message):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(str(tmp_path / "loop.yaml"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("recipe", ["scl", "albef"])
def test_recipes_show_prints_the_resolved_recipe(recipe, tmp_path):
    result = CliRunner().invoke(app, ["recipes", "--show", recipe])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed == resolved_recipe(recipe) and "base" not in printed
    # the printed recipe, saved as a file, is the same run config
    (tmp_path / f"{recipe}.yaml").write_text(result.output)
    saved = load_config(str(tmp_path / f"{recipe}.yaml"))
    assert set(config_differences(load_config(recipe), saved)) <= {"recipe", "output_dir"}


def test_recipes_lists_each_base():
    result = CliRunner().invoke(app, ["recipes"])
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if line.startswith("semmim"))
    assert "itc×1 + itm×1 + mlm×1 + semmim×1" in line and "(base: albef)" in line
