"""What the CLI commands do, as plain functions: pre-train then evaluate, evaluate a checkpoint.

Kept apart from the CLI so notebooks, benchmarks and tests call the same code users run.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch

from maskvlp.config import ConfigError, RunConfig, apply_overrides, from_yaml
from maskvlp.engine import checkpoint as ckpt
from maskvlp.distributed import init_distributed
from maskvlp.engine.logging import console, print_line
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.engine.trainer import TrainResult, text_specials, train
from maskvlp.eval.report import print_table, write_report
from maskvlp.eval.retrieval import evaluate_retrieval

RANDOM_INIT_SEED_OFFSET = 1000


def retrieval_set_for(cfg: RunConfig, show_progress: bool = True):
    """The evaluation set: a user's Karpathy-style test JSON, or the synthetic world's test split."""
    from maskvlp.data import retrieval_sets

    if cfg.eval.test_json:
        return retrieval_sets.json_retrieval_set(cfg.eval.test_json, cfg.eval.image_root, cfg.model.vision.image_size,
                                                 cfg.eval.probes_json or None)
    if cfg.eval.probes_json:
        raise ConfigError("eval.probes_json is read beside a test file: set eval.test_json=<Karpathy-style test file>")
    if cfg.data.source != "synthetic":
        raise ConfigError("evaluating a model trained on user data needs eval.test_json=<Karpathy-style test file>")
    from maskvlp.data.synthetic import SyntheticWorld

    world_cfg = dataclasses.replace(cfg.data.world, image_size=cfg.model.vision.image_size,
                                    test_scenes=max(cfg.data.world.test_scenes, cfg.eval.num_images))
    world = SyntheticWorld(world_cfg)
    with console.status(f"rendering {cfg.eval.num_images} {cfg.eval.split} scenes") if show_progress else contextlib.nullcontext():
        return retrieval_sets.synthetic_retrieval_set(world, split=cfg.eval.split, num_images=cfg.eval.num_images)


def evaluate_modules(models: dict[str, Pretrainer], cfg: RunConfig, out_dir: Path, title: str,
                     show_progress: bool = True, extra_notes: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Evaluate each named model on the same set; write results.json / results.md and print the table."""
    from maskvlp.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    rset = retrieval_set_for(cfg, show_progress)
    results: dict[str, dict[str, float]] = {}
    for name, module in models.items():
        rows = evaluate_retrieval(module.model, tokenizer, rset, cfg.eval, cfg.model.text.max_len, label=name,
                                  show_progress=show_progress)
        for row, metrics in rows.items():
            results[f"{name} · {row}"] = metrics
    notes = [f"{rset.num_images} images, {len(rset.texts)} captions ({cfg.eval.test_json or 'synthetic ' + cfg.eval.split})"]
    if rset.skipped_images:
        notes.append(f"{rset.skipped_images} unreadable or caption-less images skipped")
    if cfg.eval.probes_json and rset.probes:
        notes.append(f"binding probes: {len(rset.probes)} from {cfg.eval.probes_json}"
                     + (f" ({rset.skipped_probes} skipped: image unreadable)" if rset.skipped_probes else ""))
    notes.extend(extra_notes or [])
    if rset.truth is not None:
        notes.append("sem_*: a hit is any image the caption is true of; ceiling_img_r1: the best COCO-protocol "
                     "R@1 any model can reach (captions that fit several images)")
    if rset.probes:
        notes.append("binding_*: true caption scored above its colour-swapped / relation-reversed twin (chance 50%)"
                     "; *_heldout: probes naming a held-out pair")
    json_path, md_path = write_report(results, out_dir, title, notes)
    if show_progress:
        print_table(results, title)
        print_line(f"results: {md_path} and {json_path.name}")
    return results


def random_init_like(cfg: RunConfig) -> Pretrainer:
    """A same-size model with every weight random (text tower included): the floor to beat."""
    from maskvlp.data.tokenizer import load_tokenizer

    torch.manual_seed(cfg.train.seed + RANDOM_INIT_SEED_OFFSET)
    return Pretrainer(cfg, text_specials(load_tokenizer()), load_pretrained=False)


def pretrain_and_evaluate(cfg: RunConfig, resume: str | None = None, evaluate: bool = True,
                          show_progress: bool = True, overwrite: bool = False) -> tuple[TrainResult, dict | None]:
    result = train(cfg, resume=resume, show_progress=show_progress, overwrite=overwrite)
    is_main = init_distributed().is_main
    if is_main and show_progress:
        for line in result.data_report():
            print_line(line)
        print_line(f"checkpoint: {result.checkpoint} (run folder {result.output_dir})")
    if not evaluate or not is_main or result.checkpoint is None:
        return result, None
    trained = load_pretrainer(result.checkpoint)
    models = {"trained": trained}
    if cfg.eval.compare_random_init:
        models["random init"] = random_init_like(cfg)
    title = (f"{cfg.recipe} ({cfg.model.size}, text.init={cfg.model.text.init}): {result.steps} steps, "
             f"{result.seconds / 60:.1f} min, {result.samples:,} samples")
    results = evaluate_modules(models, cfg, Path(cfg.output_dir) / "eval", title, show_progress, result.data_report())
    return result, results


def load_pretrainer(path: str | Path) -> Pretrainer:
    """Rebuild the training module a checkpoint was saved from and load its weights (no downloads)."""
    from maskvlp.data.tokenizer import load_tokenizer

    path = ckpt.resolve_checkpoint(str(path))
    cfg = from_yaml(ckpt.read_config_yaml(path))
    module = Pretrainer(cfg, text_specials(load_tokenizer()), load_pretrained=False)
    ckpt.load_weights(path, module)
    module.eval()
    module.config = cfg  # type: ignore[attr-defined]
    return module


def evaluate_checkpoint(path: str | Path, overrides: list[str], output_dir: str | None = None,
                        show_progress: bool = True) -> dict:
    """``maskvlp evaluate retrieval``: the checkpoint's own config, with eval.* (or other) overrides."""
    module = load_pretrainer(path)
    cfg = apply_overrides(module.config, overrides)  # type: ignore[attr-defined]
    out = Path(output_dir) if output_dir else Path(ckpt.resolve_checkpoint(str(path))) / "eval"
    title = f"{cfg.recipe} ({cfg.model.size}) checkpoint {Path(ckpt.resolve_checkpoint(str(path))).name}"
    return evaluate_modules({"checkpoint": module}, cfg, out, title, show_progress)
