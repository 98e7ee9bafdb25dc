"""Checkpoints that hold everything a resumed run needs, written so a kill never leaves half a file.

Layout of ``<output_dir>/checkpoints/step-000123/``:
  model.safetensors  every parameter and buffer: student, EMA teacher, ITC queue and its pointer
  state.pt           optimizer, schedule, data position, RNG states, metrics (tensors and plain
                     types only: loaded with ``weights_only=True``, so no pickled code runs)
  config.yaml        the run configuration
  meta.json          step, recipe, time
A checkpoint is written into ``step-000123.tmp`` and renamed into place when complete; ``latest``
(a text file, itself replaced atomically) names the newest complete one.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

CKPT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or read; the message says which and why."""


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(output_dir: Path, step: int, module: torch.nn.Module, state: dict[str, Any],
                    config_yaml: str, meta: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` of ``module`` (+ ``state``) atomically and prune old ones."""
    root = Path(output_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f"step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_model(module, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / "meta.json").write_text(json.dumps({"step": step, "time": time.time(), **meta}, indent=1))
        for f in tmp.iterdir():  # make the contents durable before the rename publishes them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except Exception as err:  # a full disk surfaces as OSError, or as torch's RuntimeError "iostream error"
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(root).free / 2**30
        raise CheckpointError(f"could not write checkpoint {final} ({type(err).__name__}: {err}); {free:.1f} GiB free "
                              f"on that disk; the previous checkpoint is intact (--resume latest)") from err
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp")
            and (p / "model.safetensors").is_file() and (p / "state.pt").is_file()]
    return sorted(done, key=lambda p: p.name)


def resolve_checkpoint(spec: str, output_dir: Path | None = None) -> Path:
    """``latest`` (newest complete checkpoint in ``output_dir``), a checkpoint folder, or a run folder."""
    if spec == "latest":
        if output_dir is None:
            raise CheckpointError("--resume latest needs the run's output_dir")
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"no complete checkpoint under {Path(output_dir) / CKPT_DIR}")
        return found[-1]
    path = Path(spec)
    if (path / "model.safetensors").is_file():
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    raise CheckpointError(f"{spec} is neither a checkpoint folder (with model.safetensors) nor a run folder with checkpoints")


def load_weights(path: Path, module: torch.nn.Module) -> None:
    try:
        missing, unexpected = load_model(module, str(Path(path) / "model.safetensors"), strict=False)
    except Exception as err:  # safetensors raises plain Exceptions on corrupt files
        raise CheckpointError(f"cannot read {path}/model.safetensors: {err}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {path}/state.pt: {err}") from None


def read_config_yaml(path: Path) -> str:
    f = Path(path) / "config.yaml"
    if not f.is_file():
        raise CheckpointError(f"{path} has no config.yaml")
    return f.read_text()
