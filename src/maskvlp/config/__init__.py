"""Typed configuration: dataclass schemas, YAML recipes and dotted ``key=value`` overrides.

* :mod:`~maskvlp.config.schema`: the run's settings (model and its sizes, data, objectives, train, eval);
* :mod:`~maskvlp.config.objective_params`: each objective's parameters, their defaults and valid values;
* :mod:`~maskvlp.config.checks`: choices, ranges and cross-field checks (:func:`validate`);
* :mod:`~maskvlp.config.load`: recipes, overrides, saved configs (:func:`load_config`, :func:`from_yaml`).

The lowest layer of the package: it imports nothing else from maskvlp. Every name is importable from
``maskvlp.config``.
"""
from maskvlp.config.checks import RANGES, check_objective_params, validate
from maskvlp.config.errors import ConfigError
from maskvlp.config.load import (
    SECTIONS, apply_overrides, config_differences, from_yaml, load_config, recipe_base, recipe_names, resolved_recipe,
    to_yaml,
)
from maskvlp.config.objective_params import (
    OBJECTIVE_NAMES, OBJECTIVE_PARAMS, TEXT_NEGATIVES, ITCParams, ITMParams, MAMOParams, MLIMParams, MLMParams,
    ObjectiveParams, SCLParams, SemMIMParams, SimlaMIMParams, SimlaPSLParams, objective_params,
)
from maskvlp.config.schema import (
    BATCHINGS, DATA_SOURCES, FRAME_SAMPLINGS, FUSION_MODES, ITM_SCORES, MODEL_SIZES, OVERLAPPING_STEMS, POS_EMBEDS, PRECISIONS, STEM_INITS,
    STEMS, TASK_SOURCES, TASKS, TEXT_INITS, DataConfig, EvalConfig, FusionConfig, ModelConfig, ObjectiveConfig,
    RunConfig, TaskConfig, TextConfig,
    TrainConfig, VisionConfig, WorldConfig, model_size,
)

__all__ = [
    "BATCHINGS", "DATA_SOURCES", "FRAME_SAMPLINGS", "FUSION_MODES", "ITM_SCORES", "MODEL_SIZES", "OBJECTIVE_NAMES", "OBJECTIVE_PARAMS",
    "OVERLAPPING_STEMS", "POS_EMBEDS", "PRECISIONS", "RANGES", "SECTIONS", "STEM_INITS", "STEMS", "TASK_SOURCES", "TASKS", "TEXT_INITS",
    "TEXT_NEGATIVES",
    "ConfigError", "DataConfig", "EvalConfig", "FusionConfig", "ITCParams", "ITMParams", "MAMOParams", "MLIMParams",
    "MLMParams", "ModelConfig", "ObjectiveConfig", "ObjectiveParams", "RunConfig", "SCLParams", "SemMIMParams",
    "SimlaMIMParams", "SimlaPSLParams", "TaskConfig", "TextConfig", "TrainConfig", "VisionConfig", "WorldConfig",
    "apply_overrides", "check_objective_params", "config_differences", "from_yaml", "load_config", "model_size",
    "objective_params", "recipe_base", "recipe_names", "resolved_recipe", "to_yaml", "validate",
]
