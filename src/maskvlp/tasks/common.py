"""What the tasks share: the synthetic world at the model's image size, evaluation sets, batched prediction."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from maskvlp.config import RunConfig
from maskvlp.data.tasks.datasets import TaskImages
from maskvlp.engine.logging import console
from maskvlp.engine.precision import autocast, resolve_precision

if TYPE_CHECKING:
    from maskvlp.engine.job import Job
    from maskvlp.data.synthetic import SyntheticWorld

SYNTHETIC_TEST_SPLITS = ("test", "heldout")  # heldout: every scene holds a colour-shape pair never trained on


@dataclass
class EvalSet:
    """Examples of one evaluation split and the images they refer to."""

    name: str
    examples: list[Any]
    images: TaskImages


def status(show: bool, what: str) -> contextlib.AbstractContextManager:
    """A spinner saying ``what`` while a slow step runs, or nothing when progress is not shown."""
    return console.status(what) if show else contextlib.nullcontext()


def pretraining_module_job(train_set: Any = None) -> "Job":
    """The engine job of a task fine-tuned as pre-training's own module (retrieval, grounding, video): the
    module started from the run's checkpoint (:func:`start_module`), the task optimizer, and ``train_set``
    (pre-training's own training set when None)."""
    from dataclasses import replace

    from maskvlp.engine.pretrainer import Pretrainer
    from maskvlp.engine.trainer import PRETRAINING
    from maskvlp.tasks.start import start_module, task_optimizer

    def build(cfg: RunConfig, specials, start: bool) -> Pretrainer:
        return start_module(lambda unimodal: Pretrainer(cfg, specials, load_pretrained=unimodal), cfg, start)

    job = replace(PRETRAINING, build_module=build, build_optimizer=task_optimizer)
    return job if train_set is None else replace(job, build_dataset=lambda cfg: train_set)


def world_for(cfg: RunConfig, test_scenes: int | None = None) -> "SyntheticWorld":
    from maskvlp.data.synthetic import SyntheticWorld

    world_cfg = dataclasses.replace(cfg.data.world, image_size=cfg.model.vision.image_size)
    if test_scenes is not None:
        world_cfg = dataclasses.replace(world_cfg, test_scenes=max(world_cfg.test_scenes, test_scenes))
    return SyntheticWorld(world_cfg)


def synthetic_test_splits(world: "SyntheticWorld", num_images: int) -> list[tuple[str, int]]:
    """(split, scenes) for each of the world's evaluation splits that has scenes: its first ``num_images``."""
    return [(split, min(num_images, world.num_scenes(split))) for split in SYNTHETIC_TEST_SPLITS
            if world.num_scenes(split) > 0]


def rendered_split(world: "SyntheticWorld", split: str, num_scenes: int | None, image_size: int,
                   show_progress: bool = False) -> TaskImages:
    """The first ``num_scenes`` scenes of a split drawn once into memory (indices = scene indices)."""
    from maskvlp.data.datasets import _render_all

    scenes = world.scenes(split)[:num_scenes]
    with status(show_progress, f"rendering {len(scenes):,} {split} scenes"):
        return TaskImages(image_size, _render_all(world, scenes, None, None))


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def load_rows(examples: Sequence[Any], load: Callable[[Any], Any]) -> tuple[list[Any], list[Any], int]:
    """(examples whose images read, their loaded images, how many were skipped as unreadable)."""
    kept, loaded = [], []
    for example in examples:
        images = load(example)
        if images is not None:
            kept.append(example)
            loaded.append(images)
    return kept, loaded, len(examples) - len(kept)


def inference(module: torch.nn.Module, cfg: RunConfig) -> tuple[torch.device, contextlib.AbstractContextManager]:
    """The module's device and the autocast context training used (``train.precision``)."""
    device = next(module.parameters()).device
    return device, autocast(resolve_precision(cfg.train.precision, device), device)


def evaluate_sets(sets: Sequence[EvalSet], predict: Callable[[EvalSet], tuple[dict, int]],
                  key: Callable[[Any], Any], report: Callable[[dict, list], dict[str, float]], label: str,
                  noun: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    """One row per split: ``report`` over the examples that were predicted (``key`` names an example in the
    predictions); a note for each split where unreadable images left ``noun`` unscored."""
    rows: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for eval_set in sets:
        predictions, skipped = predict(eval_set)
        scored = [e for e in eval_set.examples if key(e) in predictions]
        rows[f"{label} · {eval_set.name}"] = report(predictions, scored)
        if skipped:
            notes.append(f"{eval_set.name}: {skipped:,} of {len(eval_set.examples):,} {noun} skipped: unreadable image")
    return rows, notes
