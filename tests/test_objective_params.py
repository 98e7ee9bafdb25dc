"""Objectives' typed parameters (maskvlp.config.objective_params) and typed reads (maskvlp.objectives.reads):
bad values are one-line config errors at load time, configs round-trip through YAML (old saved configs
included), recipes list only what differs from the defaults, and objectives reach the teacher only through
the step context."""
from __future__ import annotations

import dataclasses
import random
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from maskvlp.config import (
    OBJECTIVE_NAMES, OBJECTIVE_PARAMS, ConfigError, ITMParams, MLMParams, apply_overrides, config_differences,
    from_yaml, load_config, recipe_names, to_yaml,
)
from maskvlp.objectives import build_objective
from maskvlp.objectives.reads import Reads, TextInput, TextMaskKey, TextPass

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).resolve().parents[1] / "src" / "maskvlp"


def _error(recipe: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(recipe, None, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("recipe, override, expected", [
    ("albef", "objectives.itm.params.random_mix=2.0", "bad value for 'objectives.itm.params.random_mix': 2.0; must be in [0, 1]"),
    ("albef", "objectives.itm.params.random_steps=-1", "bad value for 'objectives.itm.params.random_steps': -1; must be >= 0"),
    ("scl", "objectives.scl.params.temperature=0", "bad value for 'objectives.scl.params.temperature': 0.0; must be > 0"),
    ("scl", "objectives.scl.params.image_ratio=1", "bad value for 'objectives.scl.params.image_ratio': 1.0; must be in [0, 1)"),
    ("semmim", "objectives.semmim.params.out_dim=0", "bad value for 'objectives.semmim.params.out_dim': 0; must be >= 1"),
    ("simla", "objectives.simla_mim.params.min_block=0", "bad value for 'objectives.simla_mim.params.min_block': 0; must be >= 1"),
    ("mamo", "objectives.mamo.params.text_ratio=1.0", "bad value for 'objectives.mamo.params.text_ratio': 1.0; must be in (0, 1)"),
    ("mamo", "objectives.mamo.params.image_masking=blank",
     "bad value for 'objectives.mamo.params.image_masking': 'blank'; valid choices: drop, replace"),
    ("albef", "objectives.itc.params.text_negatives=shuffle",
     "bad value for 'objectives.itc.params.text_negatives': 'shuffle'; valid choices: none, swap"),
    ("mlim", "objectives.mlim.params.mode_weights=[1,1]", "bad value for 'objectives.mlim.params.mode_weights': [1.0, 1.0]; "
     "must be 3 non-negative numbers (heavy_image, heavy_text, light) with a positive sum"),
])
def test_a_bad_objective_parameter_is_a_one_line_error_at_load_time(recipe, override, expected):
    assert _error(recipe, override) == expected


def test_checks_across_parameters_name_every_key():
    assert _error("scl", "objectives.scl.params.text_mask_fraction=0.8", "objectives.scl.params.text_random_fraction=0.3") == (
        "bad values for 'objectives.scl.params.text_mask_fraction', 'objectives.scl.params.text_random_fraction': "
        "0.8, 0.3; must sum to <= 1")
    assert "must not all be 0" in _error("mamo", "objectives.mamo.params.mlm_weight=0", "objectives.mamo.params.mim_weight=0",
                                         "objectives.mamo.params.mrm_weight=0")


@pytest.mark.parametrize("override, expected", [
    ("objectives.itm.params.rank=abc", "bad value for 'objectives.itm.params.rank': 'abc'; must be a number"),
    ("objectives.itm.params.balance=1", "bad value for 'objectives.itm.params.balance': 1; must be true or false"),
    ("objectives.itm.params.random_steps=1.5", "bad value for 'objectives.itm.params.random_steps': 1.5; must be an integer"),
    ("objectives.itc.params.batch_features=3", "bad value for 'objectives.itc.params.batch_features': 3; must be a string"),
])
def test_a_value_of_the_wrong_type_is_a_one_line_error(override, expected):
    assert _error("albef", override) == expected


def test_an_unknown_parameter_names_the_valid_ones():
    assert _error("albef", "objectives.itm.params.foo=1") == (
        "unknown config key 'objectives.itm.params.foo'; valid keys under objectives.itm.params: balance, "
        "hard_negatives, random_mix, random_ramp_steps, random_steps, rank, text_negatives")
    recipe = load_config("albef")
    with pytest.raises(ConfigError, match=r"unknown config key 'objectives.mlm.params.ratios'; valid keys under "
                                          r"objectives.mlm.params: alpha, alpha_ramp_steps, batch_share, ratio$"):
        build_objective("mlm", recipe.model, {"ratios": 0.2})


def test_objectives_built_from_code_are_checked_as_recipes_are():
    model = load_config("albef").model
    with pytest.raises(ConfigError, match=re.escape("'objectives.itm.params.random_mix': 1.5; must be in [0, 1]")):
        build_objective("itm", model, ITMParams(random_mix=1.5))
    with pytest.raises(ConfigError, match="objective 'mlm' takes MLMParams, got ITMParams"):
        build_objective("mlm", model, ITMParams())
    assert build_objective("mlm", model, {"alpha": 0}).params == MLMParams(alpha=0.0)


# ------------------------------------------------------------------------------------------ typed, merged
def test_params_are_typed_with_the_defaults_filled_in_and_overrides_apply():
    cfg = load_config("albef", None, ["objectives.mlm.params.alpha=0", "objectives.itm.params.balance=true"])
    by_name = {o.name: o.params for o in cfg.objectives}
    assert by_name["mlm"] == MLMParams(ratio=0.15, alpha=0.0, alpha_ramp_steps=200)
    assert isinstance(by_name["mlm"].alpha, float) and by_name["itm"].balance is True
    assert by_name["itm"].rank == 1.0 and by_name["itm"].random_steps == 75  # from albef.yaml
    again = apply_overrides(cfg, ["train.lr=0.01"])
    assert [o.params for o in again.objectives] == [o.params for o in cfg.objectives]


def test_the_params_registry_is_the_list_of_objective_names():
    assert OBJECTIVE_NAMES == tuple(OBJECTIVE_PARAMS)


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_round_trips_through_yaml(recipe):
    cfg = load_config(recipe)
    back = from_yaml(to_yaml(cfg))
    assert config_differences(cfg, back) == {}
    assert back == cfg and type(back.objectives[0].params) is OBJECTIVE_PARAMS[cfg.objectives[0].name]


@pytest.mark.parametrize("saved", ["old_config_albef.yaml", "old_config_albef_full_params.yaml"])
def test_a_config_saved_before_typed_params_still_loads(saved):
    """config.yaml as the code before the parameter dataclasses wrote it (the recipe's params only), and the
    same with every parameter written out: both load, typed, as today's albef."""
    cfg = from_yaml((DATA / saved).read_text())
    assert all(type(o.params) is OBJECTIVE_PARAMS[o.name] for o in cfg.objectives)
    assert config_differences(cfg, load_config("albef")) == {}


def test_recipes_list_only_parameters_that_differ_from_the_defaults():
    for recipe in recipe_names():
        text = (resources.files("maskvlp") / "recipes" / f"{recipe}.yaml").read_text()
        for entry in yaml.safe_load(text)["objectives"]:
            defaults = OBJECTIVE_PARAMS[entry["name"]]()
            for key, value in (entry.get("params") or {}).items():
                assert value != defaults[key], f"{recipe}.yaml: {entry['name']}.{key}={value!r} is the default"


# ------------------------------------------------------------------------------------------ typed reads
def test_text_mask_keys_and_passes_are_values():
    assert TextMaskKey(1, 1, 0) == TextMaskKey(1.0, 1.0, 0.0) and hash(TextMaskKey(1, 1, 0)) == hash(TextMaskKey(1.0, 1.0, 0.0))
    assert len({TextPass(False, TextMaskKey()), TextPass(False, TextMaskKey(0.15, 0.8, 0.1))}) == 1
    assert TextPass(True, TextInput.CLEAN) != TextPass(False, TextInput.CLEAN)
    a = Reads(parts={"fusion"}, text_passes={TextPass(False, TextInput.CLEAN)})
    b = Reads(parts={"teacher"}, text_passes={TextPass(True, TextInput.CLEAN)}, masked_text_image_states={TextMaskKey()})
    both = Reads.union([a, b])
    assert both.parts == {"fusion", "teacher"} and len(both.text_passes) == 2
    assert both.student_only().text_passes == {TextPass(False, TextInput.CLEAN)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        both.parts = frozenset()  # type: ignore[misc]


def test_passes_batch_in_the_order_the_untyped_keys_sorted_in():
    """A tower's declared passes are concatenated in TextPass.order: the order in which the (teacher, what)
    tuples of the untyped keys sorted by repr, so the batch rows (and gradient sums) are unchanged."""
    rng = random.Random(0)
    values = [0.0, 0.1, 0.15, 0.2, 0.25, 0.4, 0.5, 0.75, 0.8, 0.9, 1.0, 0.125, 0.05, 0.001]
    for _ in range(200):
        passes = [TextPass(False, TextInput.CLEAN), TextPass(False, TextInput.NEGATIVES)]
        passes += [TextPass(False, TextMaskKey(*(rng.choice(values) for _ in range(3)))) for _ in range(4)]
        rng.shuffle(passes)

        def untyped(p: TextPass) -> tuple:
            w = p.what
            return (p.teacher, w.value if isinstance(w, TextInput) else ("bert", w.ratio, w.mask_fraction, w.random_fraction))

        assert sorted(passes, key=lambda p: p.order) == sorted(passes, key=lambda p: repr(untyped(p)))


def test_objectives_reach_the_teacher_only_through_the_step_context():
    for path in sorted((SRC / "objectives").glob("*.py")):
        if path.name == "context.py":
            continue
        text = path.read_text()
        assert not re.search(r"model\.teacher\b|teacher=True", text), f"{path.name} reads the teacher directly"
