"""One run per output folder: a new run never mixes its files with an earlier run's.

A run folder holds ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``, ``loss_curves.png``,
``checkpoints/`` and ``eval/``. Pruning, ``latest`` and the metrics' resume cut all assume that
these belong to one run, so a new run in a folder that holds a checkpoint is refused (the user
chooses: ``--resume latest``, ``--overwrite``, or another ``output_dir``), and a resumed run must
keep the settings it was started with (its schedule was fitted to them). docs/failures.md.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from maskvlp.config import ConfigError, RunConfig, config_differences, from_yaml
from maskvlp.engine import checkpoint as ckpt

RUN_FILES = ("config.yaml", "metrics.jsonl", "loss_curves.png")
RUN_DIRS = (ckpt.CKPT_DIR, "tensorboard", "eval")
# settings a resumed run may change: where results go, how often it logs or saves, how it evaluates,
# how many threads or workers load data; none of them changes a trained weight
RESUMABLE_CHANGES = ("output_dir", "eval.", "train.threads", "train.log_every", "train.ckpt_every",
                     "train.keep_checkpoints", "data.num_workers", "data.max_bad_fraction", "data.image_root")


class RunFolderInUse(ConfigError):
    """``output_dir`` holds another run's checkpoints; the message says how to go on."""


def claim_for_new_run(out: Path, overwrite: bool, is_main: bool) -> str | None:
    """Make ``out`` ready for a run from step 0, or refuse; returns a line to tell the user, if any.

    A folder with a complete checkpoint is refused unless ``overwrite``; files an earlier attempt
    left without any checkpoint (killed or diverged before its first save) hold nothing to resume
    and are replaced. Only the run's own files are removed, never anything else in the folder.
    """
    latest = ckpt.latest_checkpoint(out)
    if latest is not None and not overwrite:
        raise RunFolderInUse(
            f"{out} already holds a run (its latest checkpoint is {latest.name}); continue it with "
            f"--resume latest, start it over with --overwrite, or give another output_dir=...")
    stale = [out / name for name in (*RUN_FILES, *RUN_DIRS) if (out / name).exists()]
    if not stale:
        return None
    if is_main:
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if latest is not None:
        return f"--overwrite: removed the earlier run in {out} (its latest checkpoint was {latest.name})"
    return f"{out}: replaced the files of an earlier attempt that left no checkpoint"


def check_resume_settings(checkpoint: Path, cfg: RunConfig) -> None:
    """Refuse to resume ``checkpoint`` under settings other than its own (beyond RESUMABLE_CHANGES).

    Without this check a changed ``train.max_steps`` was silently ignored (the schedule's length is
    in the checkpoint) and a changed learning rate silently applied half-way through a run.
    """
    saved = from_yaml(ckpt.read_config_yaml(checkpoint))
    differ = {key: values for key, values in config_differences(saved, cfg).items()
              if not any(key == free or (free.endswith(".") and key.startswith(free)) for free in RESUMABLE_CHANGES)}
    if differ:
        shown = ", ".join(f"{key}={new!r} (the run has {old!r})" for key, (old, new) in list(differ.items())[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ConfigError(
            f"--resume continues {checkpoint} with the settings it started with, but this command sets {shown}{more}; "
            "a run's schedule is fitted to its settings: drop those overrides, or start a new run with another "
            "output_dir=... (or --overwrite)")
