"""Checks OmegaConf cannot express: choices, ranges and cross-field consistency, one table of ranges for the
run's settings and one function for the objectives' parameters (whose ranges live with their dataclasses)."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from maskvlp.config.errors import ConfigError
from maskvlp.config.objective_params import (
    OBJECTIVE_NAMES, OBJECTIVE_PARAMS, ObjectiveParams, objective_params, params_key,
)
from maskvlp.config.rules import Rule, above, at_least, check_choice, check_rule, within
from maskvlp.config.schema import (
    BATCHINGS, DATA_SOURCES, FRAME_SAMPLINGS, FUSION_MODES, ITM_SCORES, POS_EMBEDS, PRECISIONS, STEM_INITS, STEMS,
    TASK_SOURCES, TASKS, TEXT_INITS,
    RunConfig,
)

# Every numeric setting's valid range, checked before any work starts, so a value that would only fail
# later (a division by train.log_every=0 after step 1, a crop of scale 0 at the first batch) is a
# one-line error up front. Keys absent from the table accept any value of their type.
RANGES: dict[str, Rule] = {
    "model.vision.image_size": at_least(1), "model.vision.patch_size": at_least(1),
    "model.vision.width": at_least(1), "model.vision.depth": at_least(0), "model.vision.heads": at_least(1),
    "model.vision.mlp_ratio": above(0), "model.vision.max_frames": at_least(1),
    "model.vision.pos_init_std": above(0), "model.vision.temporal_init_std": above(0),
    "model.text.vocab_size": at_least(1), "model.text.width": at_least(1), "model.text.depth": at_least(0),
    "model.text.heads": at_least(1), "model.text.intermediate": at_least(1), "model.text.max_len": at_least(2),
    "model.fusion.depth": at_least(0), "model.embed_dim": at_least(1), "model.dropout": within(0, 0.99),
    "model.temperature": within(0, 1, low_open=True), "model.momentum": within(0, 1),
    "model.queue_size": at_least(0),
    "data.crop_scale_min": within(0, 1, low_open=True), "data.max_bad_fraction": within(0, 1),
    "data.num_workers": at_least(0), "data.lexical_pool": at_least(1),
    "data.world.image_size": at_least(8), "data.world.train_scenes": at_least(1),
    "data.world.val_scenes": at_least(0), "data.world.test_scenes": at_least(1),
    "data.world.captions_per_scene": at_least(1), "data.world.min_objects": at_least(1),
    "data.world.heldout_pairs": at_least(0),
    "train.batch_size": at_least(1), "train.grad_accum": at_least(1), "train.lr": above(0),
    "train.text_lr": above(0), "train.tower_lr": at_least(0), "train.weight_decay": at_least(0),
    "train.warmup_steps": at_least(0), "train.max_steps": at_least(1), "train.time_budget": at_least(0),
    "train.min_lr_ratio": within(0, 1), "train.grad_clip": at_least(0), "train.threads": at_least(0),
    "train.log_every": at_least(1), "train.ckpt_every": at_least(1), "train.keep_checkpoints": at_least(0),
    "train.max_nonfinite": at_least(0),
    "eval.num_images": at_least(1), "eval.itm_k": at_least(1), "eval.batch_size": at_least(1),
    "task.num_answers": at_least(2), "task.questions_per_scene": at_least(1), "task.train_pairs": at_least(1),
    "task.test_pairs": at_least(1), "task.head_hidden": above(0),
}


def _setting(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_ranges(cfg: RunConfig) -> None:
    for key, rule in RANGES.items():
        check_rule(key, _setting(cfg, key), rule, " (0 = train.lr)" if key == "train.tower_lr" else "")


def check_objective_params(name: str, params: ObjectiveParams) -> None:
    """Objective ``name``'s parameters against the valid values their dataclass declares: each field's
    choices and range (a None passes), then the checks across fields (``CROSS``)."""
    cls, where = OBJECTIVE_PARAMS[name], params_key(name)
    if not isinstance(params, cls):
        raise ConfigError(f"{where}: objective {name!r} takes {cls.__name__}, got {type(params).__name__}")
    for f in fields(params):
        value, key = getattr(params, f.name), f"{where}.{f.name}"
        if "choices" in f.metadata:
            check_choice(key, value, f.metadata["choices"])
        if "rule" in f.metadata and value is not None:
            check_rule(key, value, f.metadata["rule"])
    for names, ok, rule in cls.CROSS:
        values = [getattr(params, n) for n in names]
        if not ok(*values):
            keys = ", ".join(repr(f"{where}.{n}") for n in names)
            raise ConfigError(f"bad values for {keys}: {', '.join(map(str, values))}; {rule}")


def validate(cfg: RunConfig) -> None:
    """Checks OmegaConf cannot express: choices, ranges and cross-field consistency."""
    _check_ranges(cfg)  # first: the checks below divide by some of these settings
    check_choice("model.fusion.mode", cfg.model.fusion.mode, FUSION_MODES)
    check_choice("model.text.init", cfg.model.text.init, TEXT_INITS)
    check_choice("train.precision", cfg.train.precision, PRECISIONS)
    check_choice("model.text.pool", cfg.model.text.pool, ("cls", "mean"))
    check_choice("model.vision.stem", cfg.model.vision.stem, STEMS)
    check_choice("model.vision.pos_embed", cfg.model.vision.pos_embed, POS_EMBEDS)
    check_choice("model.vision.stem_init", cfg.model.vision.stem_init, STEM_INITS)
    if cfg.model.vision.stem == "efficientnet_lite0" and cfg.model.vision.patch_size not in (2, 4, 8, 16, 32):
        raise ConfigError(f"model.vision.stem=efficientnet_lite0 needs model.vision.patch_size 2, 4, 8, 16 or 32, "
                          f"got {cfg.model.vision.patch_size}")
    check_choice("data.batching", cfg.data.batching, BATCHINGS)
    check_choice("eval.itm_score", cfg.eval.itm_score, ITM_SCORES)
    check_choice("data.source", cfg.data.source, DATA_SOURCES)
    if cfg.model.text.init == "hf" and not cfg.model.text.checkpoint:
        raise ConfigError("model.text.init=hf needs model.text.checkpoint=<folder of a HF BERT checkpoint>")
    if cfg.model.vision.image_size % cfg.model.vision.patch_size:
        raise ConfigError("model.vision.image_size must be a multiple of model.vision.patch_size")
    for section, width, heads in (("vision", cfg.model.vision.width, cfg.model.vision.heads),
                                  ("text", cfg.model.text.width, cfg.model.text.heads)):
        if width % heads:
            raise ConfigError(f"model.{section}.width={width} must be a multiple of model.{section}.heads={heads}")
    if cfg.model.text.max_len > cfg.model.text.max_positions:
        raise ConfigError(f"model.text.max_len={cfg.model.text.max_len} exceeds model.text.max_positions="
                          f"{cfg.model.text.max_positions}")
    if cfg.data.world.max_objects < cfg.data.world.min_objects:
        raise ConfigError(f"data.world.max_objects={cfg.data.world.max_objects} is below data.world.min_objects="
                          f"{cfg.data.world.min_objects}")
    if cfg.data.source == "json" and not cfg.data.train_json:
        raise ConfigError("data.source=json needs data.train_json=[file.json,...]")
    _check_task(cfg)
    if not cfg.objectives and cfg.task.name in ("", "retrieval"):
        raise ConfigError("the recipe lists no objectives")
    for i, obj in enumerate(cfg.objectives):
        check_choice(f"objectives.{i}.name", obj.name, OBJECTIVE_NAMES)
        for key in ("start_step", "ramp_steps"):
            if getattr(obj, key) < 0:
                raise ConfigError(f"objectives.{obj.name}.{key} must be >= 0, got {getattr(obj, key)}")
        check_objective_params(obj.name, objective_params(obj.name, obj.params))  # typed already: returned as is



def _check_task(cfg: RunConfig) -> None:
    """A task names a known task and, when it reads files, the files it trains and is tested on."""
    task = cfg.task
    if not task.name:
        return
    check_choice("task.name", task.name, TASKS)
    check_choice("task.source", task.source, TASK_SOURCES)
    if task.source == "files" and task.name != "retrieval" and not task.train_files and not task.test_files:
        raise ConfigError(f"task.source=files needs task.train_files=[...] and/or task.test_files=[...] for {task.name}")
    if task.blind and task.name != "vqa":
        raise ConfigError("task.blind (the question-only floor) is a VQA setting")
    if task.name == "grounding":
        if task.box_alpha < 0:
            raise ConfigError(f"task.box_alpha must be >= 0, got {task.box_alpha}")
        if task.train_scenes < 1:
            raise ConfigError(f"task.train_scenes must be >= 1, got {task.train_scenes}")
    if task.name == "video_retrieval":
        check_choice("task.frame_sampling", task.frame_sampling, FRAME_SAMPLINGS)
        if task.frames < 1 or task.train_clips < 1:
            raise ConfigError(f"task.frames and task.train_clips must be >= 1, got {task.frames}, {task.train_clips}")
