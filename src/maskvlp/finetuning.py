"""What ``maskvlp finetune TASK`` and ``maskvlp evaluate TASK`` do, as plain functions.

A fine-tuning run is a training run like pre-training (the engine's loop, run folder, resume, metrics
and checkpoints), handed the task's job; it then evaluates on the task's test splits. Fine-tuned
retrieval is evaluated beside the zero-shot figure of the checkpoint it started from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maskvlp.config import ConfigError, RunConfig, apply_overrides, from_yaml
from maskvlp.distributed import init_distributed
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine.job import Job
from maskvlp.engine.logging import print_line
from maskvlp.engine.trainer import TrainResult, text_specials, train
from maskvlp.eval.report import print_table, write_report
from maskvlp.pipeline import evaluate_modules, load_pretrainer
from maskvlp.tasks import grounding, nlvr2, video_retrieval, vqa
from maskvlp.tasks.common import pretraining_module_job, status
from maskvlp.tasks.modules import Nlvr2Module, VqaModule
from maskvlp.tasks.start import NONE, finetune_config, starts_from_checkpoint

VQA_TYPES = ("type/yes/no", "type/number", "type/other")
PRETRAINING_MODULE_TASKS = ("retrieval", "grounding", "video_retrieval")  # fine-tuned as pre-training's own module
RUNNERS = {"vqa": vqa, "nlvr2": nlvr2, "grounding": grounding, "video_retrieval": video_retrieval}
ZERO_SHOT_TASKS = ("grounding", "video_retrieval")  # evaluate TASK also takes a pre-trained checkpoint as it is
VIDEO_COLUMNS = ("img_r1", "img_r5", "img_r10", "img_medr", "txt_r1", "txt_medr", "twins", "binding_motion", "n")
GROUNDING_COLUMNS = ("accuracy", "random_box", "largest_box", "centre_box", "attributes", "relation", "confused", "n")
MAX_QUESTION_TYPE_COLUMNS = 10  # the world has 8; VQA v2's 65 stay in results.json


def prepare(task: str, source: str, overrides: list[str], size: str | None = None) -> RunConfig:
    """The run's config: the task recipe over the pre-trained run (see :func:`finetune_config`), with a
    retrieval run's ``task.*`` files mapped onto the pre-training reader's ``data.*`` / ``eval.*``."""
    cfg = finetune_config(task, source, overrides, size)
    if task == "retrieval" and cfg.task.source == "files":
        if not cfg.task.train_files or not cfg.task.test_files:
            raise ConfigError("retrieval on files needs task.train_files=[train.json] (ALBEF's coco_train.json layout) "
                              "and task.test_files=[test.json] (Karpathy test layout)")
        cfg.data.source, cfg.data.train_json, cfg.data.image_root = "json", list(cfg.task.train_files), cfg.task.train_image_root
        cfg.eval.test_json, cfg.eval.image_root = cfg.task.test_files[0], cfg.task.test_image_root
    if task == "video_retrieval":  # SCL's encoder: the image model gains a temporal embedding (fresh) for its frames
        cfg.model.vision.max_frames = max(cfg.model.vision.max_frames, cfg.task.frames)
    return cfg


def _job_for(cfg: RunConfig, show_progress: bool) -> tuple[Job, list[str]]:
    """The task's engine job, its training set built, and what building it left out. A VQA run's answer
    vocabulary is taken from its training set here, before the run's config is saved with it."""
    if cfg.task.name == "vqa":
        examples, images = vqa.training_examples(cfg, show_progress)
        if not cfg.task.answers:
            cfg.task.answers = vqa.answer_vocabulary(cfg, examples)
        train_set = vqa.training_set(cfg, examples, images)
        left_out = train_set.skipped_out_of_vocab
        notes = [f"training: {left_out:,} of {len(examples):,} questions left out: no answer in the "
                 f"{len(cfg.task.answers):,}-answer vocabulary (kept for evaluation)"] if left_out else []
        return vqa.job(cfg, train_set), notes
    if cfg.task.name == "nlvr2":
        return nlvr2.job(cfg, nlvr2.training_set(cfg, show_progress)), []
    if cfg.task.name == "grounding":
        return pretraining_module_job(grounding.training_set(cfg, show_progress)), []
    if cfg.task.name == "video_retrieval":
        return pretraining_module_job(video_retrieval.training_set(cfg, show_progress)), []
    return pretraining_module_job(), []


def finetune_and_evaluate(cfg: RunConfig, resume: str | None = None, evaluate: bool = True,
                          show_progress: bool = True, overwrite: bool = False) -> tuple[TrainResult, dict | None]:
    """Train the task ``cfg.task.name`` from its start, then evaluate the last checkpoint."""
    task = cfg.task.name
    talk = show_progress and init_distributed().is_main
    if talk:
        start = (f"{cfg.task.init_recipe} checkpoint {cfg.task.init_from} (step {cfg.task.init_step})"
                 if starts_from_checkpoint(cfg) else "no vision-language pre-training (--from none)")
        print_line(f"{task} fine-tuning from {start}")
    job, notes = _job_for(cfg, talk)
    result = train(cfg, resume=resume, show_progress=show_progress, overwrite=overwrite, job=job)
    result.data_notes.extend(notes)
    if talk:
        for line in result.data_report():
            print_line(line)
        print_line(f"checkpoint: {result.checkpoint} (run folder {result.output_dir})")
    if not evaluate or not init_distributed().is_main or result.checkpoint is None:
        return result, None
    title = (f"{task} fine-tuned from {cfg.task.init_recipe or 'none'} ({cfg.model.size}): {result.steps} steps, "
             f"{result.seconds / 60:.1f} min, {result.samples:,} samples")
    return result, evaluate_task_checkpoint(result.checkpoint, [], str(Path(cfg.output_dir) / "eval"), show_progress, title=title,
                                            extra_notes=result.data_report())


def load_task_module(path: str | Path) -> tuple[torch.nn.Module, RunConfig]:
    """A fine-tuned checkpoint's module (VQA, NLVR2, or the pre-training module retrieval and grounding
    fine-tune) with its config."""
    path = ckpt.resolve_checkpoint(str(path))
    cfg = from_yaml(ckpt.read_config_yaml(path))
    if cfg.task.name in PRETRAINING_MODULE_TASKS or not cfg.task.name:
        return load_pretrainer(path), cfg
    from maskvlp.data.tokenizer import load_tokenizer

    cls = VqaModule if cfg.task.name == "vqa" else Nlvr2Module
    module = cls(cfg, text_specials(load_tokenizer()), load_unimodal=False)
    ckpt.load_weights(path, module)
    module.eval()
    return module, cfg


def clip_model_from_image_checkpoint(path: Path, cfg: RunConfig, frames: int) -> torch.nn.Module:
    """A pre-trained image model reading clips of ``frames`` frames: SCL's encoder with the temporal embedding
    the checkpoint lacks at zero (every frame alike; its CLS tokens still see each other)."""
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.pretrainer import Pretrainer

    cfg.model.vision.max_frames = max(cfg.model.vision.max_frames, frames)
    module = Pretrainer(cfg, text_specials(load_tokenizer()), load_pretrained=False)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("temporal_embed"):
                param.zero_()
    ckpt.load_weights(path, module, may_lack=("temporal_embed",))
    return module.eval()


def _columns(task: str, results: dict[str, dict[str, float]]) -> tuple[str, ...]:
    if task == "nlvr2":
        return ("accuracy", "consistency", "heldout", "n")
    if task == "grounding":
        return GROUNDING_COLUMNS
    if task == "video_retrieval":
        return VIDEO_COLUMNS
    qtypes = sorted({k for row in results.values() for k in row if k.startswith("qtype/")})
    shown = qtypes if len(qtypes) <= MAX_QUESTION_TYPE_COLUMNS else []
    return ("overall", *VQA_TYPES, *shown, "heldout", "n")


def evaluate_task_checkpoint(path: str | Path, overrides: list[str], output_dir: str | None = None,
                             show_progress: bool = True, title: str | None = None,
                             extra_notes: list[str] | None = None, task: str | None = None) -> dict[str, Any]:
    """``maskvlp evaluate TASK``: a fine-tuned checkpoint on its task's test splits (its own config, with
    ``eval.*`` / ``task.test_*`` overrides); results.json / results.md in ``<checkpoint>/eval``."""
    from maskvlp.data.tokenizer import load_tokenizer

    path = ckpt.resolve_checkpoint(str(path))
    module, saved = load_task_module(path)
    zero_shot = task in ZERO_SHOT_TASKS and not saved.task.name  # a pre-trained model as it is, not fine-tuned
    if zero_shot:
        saved.task.name = task
        if task == "video_retrieval":
            module = clip_model_from_image_checkpoint(path, saved, apply_overrides(saved, overrides).task.frames)
    if task is not None and saved.task.name != task:
        raise ConfigError(f"{path} is a {saved.task.name or 'pre-training'} checkpoint, not a {task} one")
    cfg = apply_overrides(saved, overrides)
    out = Path(output_dir) if output_dir else path / "eval"
    title = title or f"{cfg.task.name} checkpoint {path}"
    start = cfg.task.init_from if starts_from_checkpoint(cfg) else NONE
    notes = [f"started from: {start}" + (f" ({cfg.task.init_recipe}, step {cfg.task.init_step})"
                                         if starts_from_checkpoint(cfg) else ""), *(extra_notes or [])]
    if cfg.task.name == "retrieval":
        models = {"fine-tuned": module}
        if starts_from_checkpoint(cfg) and Path(cfg.task.init_from).is_dir():
            models["zero-shot (start)"] = load_pretrainer(cfg.task.init_from)
        cfg.eval.compare_random_init = False
        return evaluate_modules(models, cfg, out, title, show_progress, notes)
    tokenizer = load_tokenizer()
    runner = RUNNERS[cfg.task.name]
    with status(show_progress, "building the evaluation sets"):
        sets = runner.evaluation_sets(cfg)
    label = "question only" if cfg.task.blind else "pre-trained (no fine-tuning)" if zero_shot else "fine-tuned"
    results, skipped = runner.evaluate(module, sets, tokenizer, cfg, label)
    notes.extend(skipped)
    if cfg.task.name == "grounding" and starts_from_checkpoint(cfg) and Path(cfg.task.init_from).is_dir():
        start_module = load_pretrainer(cfg.task.init_from)
        if grounding.has_maps(start_module):
            start_rows, _ = grounding.evaluate(start_module, sets, tokenizer, cfg, "zero-shot (start)")
            results.update(start_rows)
        else:
            notes.append(f"zero-shot (start): none, the {cfg.task.init_recipe} start has no ITM head to take maps from")
    if cfg.task.name == "grounding":
        picture = grounding.save_examples(module, sets, tokenizer, cfg, out / "grounding_examples.png", title)
        if picture is not None and show_progress:
            print_line(f"maps of the first test expressions: {picture}")
        notes.append("accuracy: the Grad-CAM map's top candidate box at IoU >= 0.5 (ALBEF's protocol); floors: a random, "
                     "the largest and the centre-most candidate; attributes / relation: per kind of expression; "
                     "confused: targets sharing shape or colour with another object")
    columns = _columns(cfg.task.name, results)
    json_path, md_path = write_report(results, out, title, notes, columns)
    if show_progress:
        print_table(results, title, columns)
        print_line(f"results: {md_path} and {json_path.name}")
    return results
