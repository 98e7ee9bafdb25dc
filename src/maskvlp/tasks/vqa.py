"""VQA as a recipe: the world's questions or the datasets' files, the answer vocabulary, the engine job,
and the official accuracy on every evaluation split."""
from __future__ import annotations

import functools
from typing import Sequence

import torch

from maskvlp.config import ConfigError, RunConfig
from maskvlp.data.batch import TextSpecials
from maskvlp.data.tasks.datasets import TaskImages, VqaTrainSet, collate_vqa, vqa_batch
from maskvlp.data.tasks.examples import VqaExample
from maskvlp.data.tasks.vqa_files import build_answer_vocab, read_vqa, soft_targets
from maskvlp.data.tokenizer import Tokenizer
from maskvlp.engine.job import Job
from maskvlp.eval.vqa_metric import vqa_report
from maskvlp.tasks.common import (
    EvalSet, batched, evaluate_sets, inference, load_rows, rendered_split, synthetic_test_splits, world_for,
)
from maskvlp.tasks.modules import VqaModule
from maskvlp.tasks.start import start_module, task_optimizer


def training_examples(cfg: RunConfig, show_progress: bool = False) -> tuple[list[VqaExample], TaskImages]:
    if cfg.task.source == "synthetic":
        world = world_for(cfg)
        examples = world.vqa_examples("train", per_scene=cfg.task.questions_per_scene)
        return examples, rendered_split(world, "train", None, cfg.model.vision.image_size, show_progress)
    if not cfg.task.train_files:
        raise ConfigError("fine-tuning VQA on files needs task.train_files=[questions.json,annotations.json] "
                          "(or ALBEF's vqa_train.json) and task.train_image_root=...")
    return read_vqa(cfg.task.train_files, cfg.task.train_image_root), TaskImages(cfg.model.vision.image_size)


def evaluation_sets(cfg: RunConfig, show_progress: bool = False) -> list[EvalSet]:
    """The world's test and held-out splits (``eval.num_images`` scenes each), or ``task.test_files``."""
    if cfg.task.source == "synthetic":
        world = world_for(cfg, test_scenes=cfg.eval.num_images)
        sets = []
        for split, scenes in synthetic_test_splits(world, cfg.eval.num_images):
            examples = world.vqa_examples(split, num_scenes=scenes, per_scene=cfg.task.questions_per_scene)
            sets.append(EvalSet(split, examples, rendered_split(world, split, scenes, cfg.model.vision.image_size,
                                                                show_progress)))
        return sets
    if not cfg.task.test_files:
        raise ConfigError("evaluating VQA on files needs task.test_files=[...] and task.test_image_root=...")
    return [EvalSet("test", read_vqa(cfg.task.test_files, cfg.task.test_image_root),
                    TaskImages(cfg.model.vision.image_size))]


def answer_vocabulary(cfg: RunConfig, examples: Sequence[VqaExample]) -> list[str]:
    """The ``task.num_answers`` most frequent (normalised) training answers."""
    vocab = build_answer_vocab(examples, cfg.task.num_answers)
    if len(vocab) < 2:
        raise ConfigError(f"the VQA training set has {len(vocab)} distinct answer(s); a classifier needs 2 or more")
    return vocab


def training_set(cfg: RunConfig, examples: Sequence[VqaExample], images: TaskImages) -> VqaTrainSet:
    index = {answer: i for i, answer in enumerate(cfg.task.answers)}
    return VqaTrainSet(examples, images, [soft_targets(e.answers, index) for e in examples])


def job(cfg: RunConfig, train_set: VqaTrainSet) -> Job:
    """The engine job of a VQA run whose training set is already built (its vocabulary is in ``cfg``)."""

    def build(cfg: RunConfig, specials: TextSpecials, start: bool) -> VqaModule:
        return start_module(lambda unimodal: VqaModule(cfg, specials, load_unimodal=unimodal), cfg, start)

    collate = functools.partial(collate_vqa, num_answers=len(cfg.task.answers))
    return Job(lambda cfg: train_set, build, task_optimizer, collate, vqa_batch)


@torch.no_grad()
def predict(module: VqaModule, examples: Sequence[VqaExample], images: TaskImages, tokenizer: Tokenizer,
            cfg: RunConfig) -> tuple[dict[int, str], int]:
    """The top answer of every question whose image reads, and how many were skipped as unreadable."""
    module.eval()
    device, precision = inference(module, cfg)
    predictions: dict[int, str] = {}
    skipped = 0
    for chunk in batched(examples, cfg.eval.batch_size):
        kept, pictures, bad = load_rows(chunk, lambda e: images(e.image))
        skipped += bad
        if not kept:
            continue
        tokens = tokenizer.encode([e.question for e in kept], cfg.model.text.max_len)
        with precision:
            logits = module.logits(torch.stack(pictures).to(device), tokens.input_ids.to(device),
                                   tokens.attention_mask.to(device))
        for example, best in zip(kept, logits.argmax(1).tolist()):
            predictions[example.question_id] = module.answers[best]
    return predictions, skipped


def evaluate(module: VqaModule, sets: Sequence[EvalSet], tokenizer: Tokenizer, cfg: RunConfig,
             label: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    """VQA accuracy per split (overall, per answer type and question type); notes on what was skipped."""
    return evaluate_sets(sets, lambda s: predict(module, s.examples, s.images, tokenizer, cfg),
                         lambda e: e.question_id, vqa_report, label, "questions")
