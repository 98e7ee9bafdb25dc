"""Where a fine-tuning run starts: a pre-trained checkpoint's weights, or no vision-language pre-training.

``--from RUN`` takes the pre-trained run's model settings and scene world (a task is fine-tuned on the
model that was pre-trained), copies every tensor the task module shares with the checkpoint, and
records which checkpoint it was (``task.init_from``, ``init_recipe``, ``init_step``), so a table row can
say which pre-training made it. ``--from none`` is the floor every table needs: the same task recipe
from the unimodal starts pre-training itself begins from (MiniLM text layers, the ImageNet stem), with
the fusion's cross-attention and the head fresh.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import safe_open
from torch import nn

from maskvlp.config import ConfigError, RunConfig, apply_overrides, from_yaml, load_config
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine.checkpoint import CheckpointError

NONE = "none"
# weights tied in a pre-trained model (BERT's MLM decoder is its word embedding): safetensors stores one name
# of each tied pair, so a task module without that head must find its word embeddings under the other name
TIED = {"mlm_head.decoder.weight": ("text.word_embeddings.weight", "text.embeddings.word_embeddings.weight")}
INHERITED = ("model.", "data.world.")
TEACHER_PREFIX = "teacher.models."  # model.teacher.models.vision.x is the EMA copy of model.vision.x  # settings a fine-tuning run takes from its pre-trained run


def task_recipe(task: str) -> str:
    """The path of a task's built-in recipe (``recipes/tasks/<task>.yaml``)."""
    path = resources.files("maskvlp") / "recipes" / "tasks" / f"{task}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown task {task!r}; valid tasks: retrieval, vqa, nlvr2, grounding")
    return str(path)


def finetune_config(task: str, source: str, overrides: list[str], size: str | None = None) -> RunConfig:
    """The task recipe over the pre-trained run's model and world (``source`` a run or checkpoint
    folder), or over the recipe's own size with ``source="none"``; then the user's overrides."""
    recipe = task_recipe(task)
    named_output = any(o.startswith("output_dir=") for o in overrides)
    if source == NONE:
        cfg = load_config(recipe, size, [*overrides, f"task.init_from={NONE}"])
        start_name = "none"
    else:
        path = ckpt.resolve_checkpoint(source)
        pre = from_yaml(ckpt.read_config_yaml(path))
        if pre.task.name:
            raise ConfigError(f"{path} is a fine-tuned {pre.task.name} checkpoint; --from takes a pre-trained run")
        cfg = load_config(recipe, pre.model.size, overrides)
        cfg.model, cfg.data.world = pre.model, pre.data.world
        cfg = apply_overrides(cfg, [o for o in overrides if o.startswith(INHERITED)])
        cfg.task.init_from, cfg.task.init_recipe, cfg.task.init_step = str(path), pre.recipe, ckpt.checkpoint_step(path)
        start_name = pre.recipe
        if cfg.model.fusion.depth == 0:
            _fit_to_dual_encoder(cfg, pre, path)
    if not named_output:
        blind = "-blind" if cfg.task.blind else ""
        cfg.output_dir = f"runs/{task}-from-{start_name}{blind}-{cfg.model.size}"
    return cfg


def _fit_to_dual_encoder(cfg: RunConfig, pre: RunConfig, path: Path) -> None:
    """A start without a fusion encoder (``clip``): retrieval fine-tunes it with its own contrastive
    objective (CLIP is fine-tuned contrastively; there is no matching head to train or re-rank with); the
    fused tasks need a fusion encoder, which the user adds fresh by override (METER's start from CLIP)."""
    if cfg.task.name != "retrieval":
        raise ConfigError(f"{path} is a {pre.recipe} run without a fusion encoder (model.fusion.depth=0); "
                          f"{cfg.task.name} reads fused states: add a fresh one with model.fusion.depth=2")
    cfg.objectives = [o for o in pre.objectives if o.name == "itc"]
    if not cfg.objectives:
        raise ConfigError(f"{path}: a {pre.recipe} run with neither a fusion encoder nor ITC; nothing to fine-tune "
                          "retrieval with")


def starts_from_checkpoint(cfg: RunConfig) -> bool:
    return cfg.task.init_from not in ("", NONE)


def checkpoint_tensor_names(cfg: RunConfig) -> set[str]:
    """The tensor names of the pre-trained checkpoint a run started from (empty for ``--from none``).

    Read from the file rather than remembered, so a resumed run builds the optimizer groups it began with."""
    if not starts_from_checkpoint(cfg):
        return set()
    file = Path(cfg.task.init_from) / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"the pre-trained checkpoint this run started from is gone: {file} "
                              "(task.init_from); its weights decide the run's optimizer groups")
    with safe_open(str(file), framework="pt") as f:
        return set(_sources(f.keys()))


def _sources(stored: Iterable[str]) -> dict[str, str]:
    """Every name a checkpoint's tensors answer to (its tied weights under both names) -> the stored name."""
    names = {name: name for name in stored}
    for name in list(names):
        for tied, aliases in TIED.items():
            if name.endswith(tied):
                for alias in aliases:
                    names.setdefault(name[: -len(tied)] + alias, name)
    return names


@torch.no_grad()
def load_start_weights(module: nn.Module, cfg: RunConfig) -> tuple[list[str], list[str]]:
    """Copy every tensor ``module`` shares (by name) with the pre-trained checkpoint; (loaded, fresh) names.

    A shared name with another shape is an error (the model settings differ), never silently skipped.
    A copied student whose EMA teacher the checkpoint lacks gets its teacher re-copied from it."""
    own = module.state_dict()
    file = Path(cfg.task.init_from) / "model.safetensors"
    loaded: list[str] = []
    with safe_open(str(file), framework="pt") as f:
        for name, stored in _sources(f.keys()).items():
            if name not in own:
                continue
            tensor = f.get_tensor(stored)
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise CheckpointError(f"{file}: {name} has shape {tuple(tensor.shape)}, the task model needs "
                                      f"{tuple(own[name].shape)}")
            own[name].copy_(tensor)
            loaded.append(name)
    fresh = sorted(set(own) - set(loaded))
    model = getattr(module, "model", None)
    if model is not None and model.teacher is not None and not any(".teacher." in n for n in loaded):
        from maskvlp.models.teacher import EMATeacher

        model.teacher = EMATeacher(model.teacher_students(), model.cfg.momentum)
    else:  # a fresh part the checkpoint lacks (a video model's temporal embedding): its EMA copy starts equal
        for name in fresh:
            student = name.replace(TEACHER_PREFIX, "", 1)
            if TEACHER_PREFIX in name and student in own:
                own[name].copy_(own[student])
    return sorted(loaded), fresh


def slow_rule(cfg: RunConfig, prefix: str = "model.") -> Callable[[str], bool] | None:
    """The optimizer's rule for a task run: a weight copied from the pre-trained checkpoint trains at
    ``train.text_lr``, the rest (the head, parts the checkpoint lacked) at ``train.lr``; None (the model's
    own rule: BERT and stem weights slow) when the run starts from no pre-training."""
    names = checkpoint_tensor_names(cfg)
    if not names:
        return None
    return lambda name: prefix + name in names


def fresh_summary(fresh: list[str]) -> str:
    """'model.itm_head, head' from tensor names: the top-level parts that start fresh."""
    parts = sorted({".".join(n.split(".")[:2]) if n.startswith("model.") else n.split(".")[0] for n in fresh})
    return ", ".join(parts) if parts else "nothing"


def start_module(make: Callable[[bool], nn.Module], cfg: RunConfig, start: bool) -> nn.Module:
    """``make(load_unimodal)`` a task run's module and, at the start of a run from a pre-trained checkpoint,
    copy that checkpoint's weights in and say which parts start fresh (a resumed run gets its weights
    from its own checkpoint instead)."""
    from_checkpoint = starts_from_checkpoint(cfg)
    module = make(start and not from_checkpoint)
    if start and from_checkpoint:
        from maskvlp.engine.logging import print_line

        loaded, fresh = load_start_weights(module, cfg)
        print_line(f"start: {len(loaded)} tensors copied from {cfg.task.init_from}; fresh: {fresh_summary(fresh)}")
    return module


def task_optimizer(module: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW over a task run's module: copied weights at ``train.text_lr``, the rest at ``train.lr`` (:func:`slow_rule`)."""
    from maskvlp.engine.optim import make_optimizer

    return make_optimizer(module, module.model, cfg.train, slow_rule(cfg))
