"""The pre-training loop: one process or ``torchrun`` DDP, exact resume, wall-clock budgets.

A run is deterministic given its config: model init from ``train.seed``, micro-batch ``d`` from
(seed, d), every mask and negative from (seed, step, purpose). So "train N steps" and "train k,
kill, resume, train N-k" produce the same weights, and 2 processes draw what 1 process draws.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from maskvlp.config import RunConfig, to_yaml
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine import run_folder
from maskvlp.files import atomic_write_text
from maskvlp.engine.batches import DataError, StepBatches, StepSampler
from maskvlp.distributed import DistInfo, barrier, init_distributed, reduce_mean
from maskvlp.engine.logging import MetricsLogger, TrainProgress, console, print_line
from maskvlp.engine.job import Job, TrainModule
from maskvlp.engine.optim import lr_factor, make_optimizer, set_lr
from maskvlp.engine.precision import autocast, resolve_precision
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.negatives import WordLexicon
from maskvlp.data.batch import Batch, TextSpecials
from maskvlp.data.datasets import collate_pretrain

CALIBRATE_AT = (20, 60)  # steps after which a time budget is converted into a step count
CALIBRATION_WINDOW = 50  # recent steps whose median time is the speed


class TrainingDiverged(RuntimeError):
    """Losses stayed non-finite; no checkpoint was written from the diverged weights."""


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path | None
    steps: int
    seconds: float
    samples: int
    losses: list[float]
    bad_samples: int  # sampled entries that were unreadable (each replaced by a readable stand-in)
    seen_samples: int = 0  # sampled entries, read or not
    data_notes: list[str] = field(default_factory=list)  # what loading the data dropped or repaired

    def data_report(self) -> list[str]:
        """One line per thing a user should know about their data, for the console and results.md."""
        lines = list(self.data_notes)
        if self.bad_samples:
            lines.append(f"training: {self.bad_samples:,} of {self.seen_samples:,} sampled entries had an unreadable "
                         f"image and were replaced by readable ones ({100 * self.bad_samples / self.seen_samples:.1f}%)")
        return lines


def text_specials(tokenizer: Any) -> TextSpecials:
    return TextSpecials(tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size,
                        torch.tensor(sorted(tokenizer.special_ids), dtype=torch.long),
                        WordLexicon.from_tokenizer(tokenizer))


def build_pretrain_dataset(cfg: RunConfig, progress: Callable[[int, int], None] | None = None):
    """The training set named by ``data.source``: the synthetic world or ALBEF-style JSON files."""
    from maskvlp.data import datasets

    if cfg.data.source == "synthetic":
        from maskvlp.data.synthetic import SyntheticWorld

        world_cfg = dataclasses.replace(cfg.data.world, image_size=cfg.model.vision.image_size)
        return datasets.SyntheticPretrainDataset(SyntheticWorld(world_cfg), split="train", seed=cfg.train.seed,
                                                 progress=progress)
    return datasets.AlbefJsonDataset(cfg.data.train_json, cfg.data.image_root, cfg.model.vision.image_size,
                                     cfg.data.crop_scale_min, cfg.data.hflip, seed=cfg.train.seed)


def _to_batch(raw: dict, device: torch.device, global_size: int, pad_id: int) -> Batch:
    ids, mask = raw["input_ids"], raw["attention_mask"]
    if dist.is_initialized():  # equal text length on every rank, so features can be gathered
        length = torch.tensor([ids.shape[1]])
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        pad = int(length) - ids.shape[1]
        if pad:
            ids = torch.nn.functional.pad(ids, (0, pad), value=pad_id)
            mask = torch.nn.functional.pad(mask, (0, pad), value=0)
    return Batch(raw["images"], ids, mask, raw["image_keys"], global_size).to(device)


def _all_finite(loss: torch.Tensor) -> bool:
    flag = torch.tensor([1.0 if bool(torch.isfinite(loss)) else 0.0])
    if dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def data_notes(dataset: Any) -> list[str]:
    """What loading the training set dropped or repaired (user JSON files; nothing for the synthetic world)."""
    notes = []
    if getattr(dataset, "skipped_empty", 0):
        notes.append(f"training data: {dataset.skipped_empty:,} entries dropped at load: every caption empty")
    if getattr(dataset, "repaired_text", 0):
        notes.append(f"training data: {dataset.repaired_text:,} captions held invalid characters (lone UTF-16 "
                     "surrogates), read with U+FFFD in their place")
    return notes


def _pretrainer(cfg: RunConfig, specials: TextSpecials, start: bool) -> Pretrainer:
    return Pretrainer(cfg, specials, load_pretrained=start)


def _pretrain_optimizer(module: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    return make_optimizer(module, module.model, cfg.train)


PRETRAINING = Job(build_pretrain_dataset, _pretrainer, _pretrain_optimizer, collate_pretrain, _to_batch)


def _open_run_folder(cfg: RunConfig, resume: str | None, overwrite: bool, info: DistInfo, say: Callable[[str], None]) -> Path | None:
    """Claim ``output_dir`` for a new run, or find the checkpoint to resume and check its settings."""
    out = Path(cfg.output_dir)
    if resume is None:
        message = run_folder.claim_for_new_run(out, overwrite, info.is_main)
        if message:
            say(message)
        barrier()
        path = None
    else:
        path = ckpt.resolve_checkpoint(resume, out)
        run_folder.check_resume_settings(path, cfg)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", to_yaml(cfg))
    return path


@dataclass
class _Run:
    """What a run trains with, set up once before the first step."""

    cfg: RunConfig
    info: DistInfo
    device: torch.device
    precision: Any
    say: Callable[[str], None]
    specials: TextSpecials
    module: TrainModule
    job: Job
    optimizer: torch.optim.Optimizer
    notes: list[str]  # what loading the training set dropped or repaired
    stop_after: int | None

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)


@dataclass
class _Loop:
    """The loop's mutable state. ``progress`` (step, total, elapsed, bad, seen) is what a checkpoint saves;
    ``step`` and ``total`` run ahead of it between checkpoints."""

    progress: dict[str, Any]
    last_ckpt: Path | None
    start: int = 0
    step: int = 0
    total: int = 0
    elapsed0: float = 0.0  # seconds trained before this process (a resumed run's)
    t0: float = 0.0  # time.monotonic() when this process's loop began
    step_times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    nonfinite: int = 0  # non-finite steps in a row


def train(cfg: RunConfig, resume: str | None = None, show_progress: bool = True,
          stop_after: int | None = None, overwrite: bool = False, job: Job = PRETRAINING) -> TrainResult:
    """Train ``job`` (pre-training unless a task hands its own) per ``cfg``; ``resume`` is ``latest`` or a
    checkpoint path. ``stop_after`` ends the run early after that many optimizer steps (as a kill would),
    leaving the schedule untouched. A new run refuses an ``output_dir`` that holds another run's checkpoint
    unless ``overwrite``."""
    from maskvlp.data.tokenizer import load_tokenizer

    info: DistInfo = init_distributed()
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    talk = info.is_main and show_progress
    say = _printer(talk)
    resume_from = _open_run_folder(cfg, resume, overwrite, info, say)
    say(f"run folder: {Path(cfg.output_dir)} (config.yaml, metrics.jsonl, checkpoints/)")
    precision = resolve_precision(tc.precision, device)
    tokenizer = load_tokenizer()
    specials = text_specials(tokenizer)
    with console.status("building the training set", spinner="dots") if talk else contextlib.nullcontext():
        dataset = job.build_dataset(cfg)
    notes = data_notes(dataset)
    for line in notes:
        say(line)
    torch.manual_seed(tc.seed)
    module = job.build_module(cfg, specials, resume is None).to(device)
    run = _Run(cfg, info, device, precision, say, specials, module, job, job.build_optimizer(module, cfg), notes,
               stop_after)
    loop = _resumed_loop(run, resume_from)
    # find_unused_parameters: a composed recipe may leave parts without gradient in a step (no ITC -> the
    # contrastive projections; MIM alone -> the last text block), which plain DDP would wait for forever
    ddp = DistributedDataParallel(module, find_unused_parameters=True) if info.world_size > 1 else module
    return _train_loop(run, loop, ddp, _data_loader(run, dataset, tokenizer, loop.start), resume_from is not None,
                       show_progress)


def _printer(talk: bool) -> Callable[[str], None]:
    return print_line if talk else lambda line: None


def _resumed_loop(run: _Run, resume_from: Path | None) -> _Loop:
    """A new run's loop state, or the one a checkpoint saved (weights, optimizer and CPU RNG restored too)."""
    loop = _Loop({"step": 0, "total": run.cfg.train.max_steps, "elapsed": 0.0, "bad": 0, "seen": 0}, None)
    if resume_from is not None:
        ckpt.load_weights(resume_from, run.module)
        saved = ckpt.load_state(resume_from)
        run.optimizer.load_state_dict(saved["optimizer"])
        loop.progress.update(saved["progress"])
        torch.set_rng_state(saved["rng_cpu"])
        loop.last_ckpt = resume_from  # resuming a finished run leaves this as the result
        step, total = loop.progress["step"], loop.progress["total"]
        run.say(f"{resume_from} finished the run at step {step}: nothing left to train" if step >= total
                else f"resumed from {resume_from} at step {step} of {total}")
    loop.start = loop.step = int(loop.progress["step"])
    loop.total = int(loop.progress["total"])
    return loop


def _data_loader(run: _Run, dataset: Any, tokenizer: Any, start: int) -> torch.utils.data.DataLoader:
    """Micro-batches from optimizer step ``start`` on; micro-batch ``d`` is a function of (seed, d)."""
    cfg, tc = run.cfg, run.cfg.train
    micro = tc.batch_size // tc.grad_accum
    if tc.batch_size % tc.grad_accum:
        raise DataError(f"train.batch_size={tc.batch_size} is not divisible by train.grad_accum={tc.grad_accum}")
    collate = functools.partial(run.job.collate, tokenizer=tokenizer, max_len=cfg.model.text.max_len)
    batches = StepBatches(dataset, micro, tc.seed, run.info, collate,
                          lexical_pool=cfg.data.lexical_pool if cfg.data.batching == "lexical" else 0)
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=StepSampler(start * tc.grad_accum, tc.max_steps * tc.grad_accum),
        num_workers=cfg.data.num_workers, persistent_workers=False)


def _train_loop(run: _Run, loop: _Loop, ddp: torch.nn.Module, loader: torch.utils.data.DataLoader, resumed: bool,
                show_progress: bool) -> TrainResult:
    """Optimizer steps until the schedule ends, the time budget runs out or ``stop_after``; then the result."""
    logger = MetricsLogger(run.out, run.info.is_main, resume_step=loop.start if resumed else None)
    bar = TrainProgress(loop.total, run.info.is_main and show_progress, start=loop.start)
    loop.elapsed0, loop.t0 = float(loop.progress["elapsed"]), time.monotonic()
    data_iter = iter(loader)
    run.module.train()
    try:
        while loop.step < loop.total:
            t_step = time.monotonic()
            trained = _optimizer_step(run, loop, ddp, data_iter)
            if trained is not None and _after_step(run, loop, logger, bar, t_step, *trained):
                break
    finally:
        bar.close()
        logger.close()
    seconds = time.monotonic() - loop.t0
    if run.info.is_main:
        _plot(run.out)
    return TrainResult(run.out, loop.last_ckpt, loop.step, seconds, (loop.step - loop.start) * run.cfg.train.batch_size,
                       loop.losses, loop.progress["bad"], loop.progress["seen"], run.notes)


def _optimizer_step(run: _Run, loop: _Loop, ddp: torch.nn.Module,
                    data_iter: Iterator[dict]) -> tuple[float, dict, torch.Tensor | None] | None:
    """One optimizer step over ``grad_accum`` micro-batches: (loss, last metrics, gradient norm), or None
    when the loss was non-finite on some rank (the step is skipped, its gradients dropped)."""
    tc = run.cfg.train
    set_lr(run.optimizer, lr_factor(loop.step, loop.total, tc.warmup_steps, tc.min_lr_ratio))
    run.optimizer.zero_grad(set_to_none=True)
    step_loss, metrics = 0.0, {}
    micro = tc.batch_size // tc.grad_accum
    for m in range(tc.grad_accum):
        raw = next(data_iter)
        loop.progress["bad"] += raw["num_bad"]
        loop.progress["seen"] += raw["num_seen"]
        batch = run.job.to_batch(raw, run.device, micro, run.specials.pad_id)
        with autocast(run.precision, run.device):
            loss, metrics = ddp(batch, loop.step, m)
        (loss / tc.grad_accum).backward()
        step_loss += float(reduce_mean(loss)) / tc.grad_accum
    _check_bad_fraction(loop.progress, run.cfg.data.max_bad_fraction)
    if not _all_finite(torch.tensor(step_loss)):
        loop.nonfinite += 1
        run.optimizer.zero_grad(set_to_none=True)
        if loop.nonfinite > tc.max_nonfinite:
            raise TrainingDiverged(f"loss was non-finite for {loop.nonfinite} steps in a row at step {loop.step}; "
                                   "lower train.lr or raise train.warmup_steps")
        loop.step += 1
        return None
    loop.nonfinite = 0
    grad_norm = _grad_norm(run.module, tc.grad_clip, _logs_at(loop.step + 1, loop.total, tc.log_every))
    run.optimizer.step()
    run.module.after_step()
    loop.step += 1
    loop.losses.append(step_loss)
    return step_loss, metrics, grad_norm


def _after_step(run: _Run, loop: _Loop, logger: MetricsLogger, bar: TrainProgress, t_step: float, step_loss: float,
                metrics: dict, grad_norm: torch.Tensor | None) -> bool:
    """Re-fit a time budget's schedule, log, checkpoint; True when the run stops here."""
    tc = run.cfg.train
    dt = time.monotonic() - t_step
    loop.step_times.append(dt)
    elapsed = loop.elapsed0 + time.monotonic() - loop.t0
    if tc.time_budget > 0:
        calibrated = _calibrated_total(loop.step, loop.total, tc, elapsed, loop.step_times)
        loop.total = _agree(calibrated, "min", run.device) if _calibration_due(loop.step, loop.total) else calibrated
        bar.set_total(loop.total)
    if _logs_at(loop.step, loop.total, tc.log_every):
        grad = {} if grad_norm is None else {"grad_norm": float(grad_norm)}
        logger.log(loop.step, {"loss": step_loss, **metrics, "lr": run.optimizer.param_groups[-1]["lr"], **grad,
                               "samples_per_s": tc.batch_size / dt, "elapsed_s": elapsed,
                               "bad_samples": loop.progress["bad"]})
    bar.update(loop.step, f"loss {step_loss:.3f} · {tc.batch_size / dt:.0f} samples/s")
    out_of_time = tc.time_budget > 0 and _agree(int(elapsed >= tc.time_budget), "max", run.device) == 1
    done = loop.step >= loop.total or out_of_time
    if done:
        loop.total = loop.step  # saved so: a run that ran out of time is finished, and resuming it trains nothing
    loop.progress.update(step=loop.step, total=loop.total, elapsed=elapsed)
    stopping = run.stop_after is not None and loop.step - loop.start >= run.stop_after
    if loop.step % tc.ckpt_every == 0 or done or stopping:
        loop.last_ckpt = _save(run.out, loop.step, run.module, run.optimizer, loop.progress, run.cfg, run.info)
    return done or stopping


def _logs_at(step: int, total: int, log_every: int) -> bool:
    """Whether step ``step`` (counted from 1) writes a metrics line: every ``log_every``-th and the last."""
    return step % log_every == 0 or step == total


def _grad_norm(module: TrainModule, clip: float, wanted: bool) -> torch.Tensor | None:
    """The global gradient norm before clipping: computed every step when clipping needs it, else only
    on the steps that log it (None otherwise: never a placeholder 0 that reads as "no gradient")."""
    params = module.trainable_parameters()
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    if not wanted:
        return None
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def _calibration_due(step: int, total: int) -> bool:
    """At CALIBRATE_AT, then every tenth of the run: a machine whose speed changes (another job starts
    or ends) gets its schedule re-fitted instead of ending early or being cut off."""
    if step in CALIBRATE_AT:
        return True
    return step > CALIBRATE_AT[-1] and step % max(CALIBRATE_AT[0], total // 10) == 0


def _calibrated_total(step: int, total: int, tc, elapsed: float, step_times: list[float]) -> int:
    """Turn the remaining wall-clock budget into steps, so the cosine schedule ends on time.

    The median of the recent step times (the first 5 of a run excluded: warm-up) is the speed, so a
    one-off stall (a checkpoint write, a burst of other work) does not shorten the whole schedule.
    """
    if not _calibration_due(step, total) or len(step_times) < 10:
        return total
    per_step = statistics.median(step_times[5:][-CALIBRATION_WINDOW:])
    return max(step + 1, min(tc.max_steps, step + int((tc.time_budget - elapsed) / per_step)))


def _agree(value: int, op: str, device: torch.device) -> int:
    """The same number on every rank (min or max), so no rank steps once more than the others and
    waits forever in a collective."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)  # NCCL reduces CUDA tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    return int(t.item())


def _check_bad_fraction(state: dict, limit: float) -> None:
    seen, bad = state["seen"], state["bad"]
    if seen >= 200 and bad / seen > limit:
        raise DataError(f"{bad} of {seen} sampled entries had an unreadable image ({100 * bad / seen:.1f}% > "
                        f"data.max_bad_fraction={100 * limit:.1f}%); `maskvlp data check` lists them, or fix the image paths")


def _save(out: Path, step: int, module: nn.Module, optimizer, state: dict, cfg: RunConfig, info: DistInfo) -> Path | None:
    path = None
    if info.is_main:
        bad = [n for n, p in module.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"non-finite values in {bad[:5]}; checkpoint not written")
        payload = {"optimizer": optimizer.state_dict(), "progress": dict(state), "rng_cpu": torch.get_rng_state()}
        path = ckpt.save_checkpoint(out, step, module, payload, to_yaml(cfg), {"recipe": cfg.recipe, "task": cfg.task.name or "pretrain"},
                                    keep=cfg.train.keep_checkpoints)
    barrier()
    return path if info.is_main else ckpt.resolve_checkpoint("latest", out)


def _plot(out: Path) -> None:
    try:
        from maskvlp.engine.curves import plot_curves

        plot_curves(out / "metrics.jsonl", out / "loss_curves.png")
    except Exception as err:  # a plot must never lose a finished run
        console.print(f"[yellow]could not plot the loss curves: {err}")

