"""NLVR2 as a recipe: the world's statements about pairs of scenes or the datasets' files, the engine job,
accuracy and consistency on every evaluation split."""
from __future__ import annotations

from typing import Sequence

import torch

from maskvlp.config import ConfigError, RunConfig
from maskvlp.data.batch import TextSpecials
from maskvlp.data.tasks.datasets import Nlvr2TrainSet, TaskImages, collate_nlvr2, nlvr2_batch
from maskvlp.data.tasks.examples import Nlvr2Example
from maskvlp.data.tasks.nlvr2_files import read_nlvr2
from maskvlp.data.tokenizer import Tokenizer
from maskvlp.engine.job import Job
from maskvlp.eval.nlvr2_metric import nlvr2_report
from maskvlp.tasks.common import (
    EvalSet, batched, evaluate_sets, inference, load_rows, rendered_split, synthetic_test_splits, world_for,
)
from maskvlp.tasks.modules import Nlvr2Module
from maskvlp.tasks.start import start_module, task_optimizer


def training_set(cfg: RunConfig, show_progress: bool = False) -> Nlvr2TrainSet:
    if cfg.task.source == "synthetic":
        world = world_for(cfg)
        examples = world.nlvr2_examples("train", cfg.task.train_pairs)
        return Nlvr2TrainSet(examples, rendered_split(world, "train", None, cfg.model.vision.image_size, show_progress))
    if not cfg.task.train_files:
        raise ConfigError("fine-tuning NLVR2 on files needs task.train_files=[train.json] and task.train_image_root=...")
    return Nlvr2TrainSet(read_nlvr2(cfg.task.train_files, cfg.task.train_image_root),
                         TaskImages(cfg.model.vision.image_size))


def evaluation_sets(cfg: RunConfig, show_progress: bool = False) -> list[EvalSet]:
    """Pairs of the world's test and held-out scenes (``task.test_pairs`` each), or ``task.test_files``."""
    if cfg.task.source == "synthetic":
        world = world_for(cfg, test_scenes=cfg.eval.num_images)
        sets = []
        for split, scenes in synthetic_test_splits(world, cfg.eval.num_images):
            examples = world.nlvr2_examples(split, cfg.task.test_pairs, num_scenes=scenes)
            sets.append(EvalSet(split, examples, rendered_split(world, split, scenes, cfg.model.vision.image_size,
                                                                show_progress)))
        return sets
    if not cfg.task.test_files:
        raise ConfigError("evaluating NLVR2 on files needs task.test_files=[test.json] and task.test_image_root=...")
    return [EvalSet("test", read_nlvr2(cfg.task.test_files, cfg.task.test_image_root),
                    TaskImages(cfg.model.vision.image_size))]


def job(cfg: RunConfig, train_set: Nlvr2TrainSet) -> Job:
    def build(cfg: RunConfig, specials: TextSpecials, start: bool) -> Nlvr2Module:
        return start_module(lambda unimodal: Nlvr2Module(cfg, specials, load_unimodal=unimodal), cfg, start)

    return Job(lambda cfg: train_set, build, task_optimizer, collate_nlvr2, nlvr2_batch)


@torch.no_grad()
def predict(module: Nlvr2Module, examples: Sequence[Nlvr2Example], images: TaskImages, tokenizer: Tokenizer,
            cfg: RunConfig) -> tuple[dict[str, bool], int]:
    """True / false for every statement whose two images read, and how many were skipped as unreadable."""
    module.eval()
    device, precision = inference(module, cfg)
    predictions: dict[str, bool] = {}
    skipped = 0

    def pair(example: Nlvr2Example):
        left, right = images(example.left), images(example.right)
        return None if left is None or right is None else (left, right)

    for chunk in batched(examples, cfg.eval.batch_size):
        kept, pairs, bad = load_rows(chunk, pair)
        skipped += bad
        if not kept:
            continue
        tokens = tokenizer.encode([e.sentence for e in kept], cfg.model.text.max_len)
        left = torch.stack([p[0] for p in pairs]).to(device)
        right = torch.stack([p[1] for p in pairs]).to(device)
        with precision:
            logits = module.logits(left, right, tokens.input_ids.to(device), tokens.attention_mask.to(device))
        for example, verdict in zip(kept, logits.argmax(1).tolist()):
            predictions[example.identifier] = bool(verdict)
    return predictions, skipped


def evaluate(module: Nlvr2Module, sets: Sequence[EvalSet], tokenizer: Tokenizer, cfg: RunConfig,
             label: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    return evaluate_sets(sets, lambda s: predict(module, s.examples, s.images, tokenizer, cfg),
                         lambda e: e.identifier, nlvr2_report, label, "statements")
