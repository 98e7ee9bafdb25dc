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

from maskvlp.files import atomic_write_text

CKPT_DIR = "checkpoints"
LATEST = "latest"  # text file in CKPT_DIR naming the newest complete checkpoint


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or read; the message says which and why."""


def save_checkpoint(output_dir: Path, step: int, module: torch.nn.Module, state: dict[str, Any],
                    config_yaml: str, meta: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` of ``module`` (+ ``state``) atomically and prune old ones."""
    root = Path(output_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f"step-{step:07d}.tmp"
    _remove_stale_temps(root)
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
    atomic_write_text(root / LATEST, final.name + "\n")
    _prune(output_dir, keep, final)
    return final


def _remove_stale_temps(root: Path) -> None:
    """Half-written files a killed run left behind: checkpoint folders (``step-*.tmp``) and the temp file of
    an interrupted ``latest`` update (``.latest.*.tmp``). One process writes a run's checkpoints, so any
    found here before it writes are dead; the complete checkpoints and ``latest`` are never touched."""
    for stale in root.glob("step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{LATEST}.*.tmp"):
        stale.unlink(missing_ok=True)


def _prune(output_dir: Path, keep: int, newest: Path) -> None:
    """Delete all but the ``keep`` highest-step checkpoints (0 keeps all); never ``newest``, which
    ``latest`` now names. By step number, not folder name, and only after ``latest`` moved on."""
    if keep <= 0:
        return
    for old in [p for p in list_checkpoints(output_dir) if p != newest][: -(keep - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(path: Path) -> int:
    """The step a ``step-0001234`` folder holds (-1 for a name that is not one)."""
    digits = Path(path).name[len("step-"):]
    return int(digits) if Path(path).name.startswith("step-") and digits.isdigit() else -1


def is_complete(path: Path) -> bool:
    return (Path(path) / "model.safetensors").is_file() and (Path(path) / "state.pt").is_file()


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest step first (half-written ``.tmp`` folders excluded)."""
    root = Path(output_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) >= 0 and is_complete(p)]
    return sorted(done, key=checkpoint_step)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint ``checkpoints/latest`` names: the one source of truth for resuming.

    ``latest`` is replaced atomically after its checkpoint is complete, so it names a complete one.
    Only when it is missing or names no complete checkpoint (a kill between the folder's rename and
    ``latest``'s update of a run's very first checkpoint; a folder edited by hand) is the highest
    complete step taken instead.
    """
    root = Path(output_dir) / CKPT_DIR
    pointer = root / LATEST
    name = pointer.read_text().strip() if pointer.is_file() else ""
    if name and checkpoint_step(root / name) >= 0 and is_complete(root / name):
        return root / name
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_checkpoint(spec: str, output_dir: Path | None = None) -> Path:
    """``latest`` (the checkpoint ``output_dir``'s ``latest`` names), a checkpoint folder, or a run folder."""
    if spec == "latest":
        if output_dir is None:
            raise CheckpointError("--resume latest needs the run's output_dir")
        found = latest_checkpoint(output_dir)
        if found is None:
            raise CheckpointError(f"no complete checkpoint under {Path(output_dir) / CKPT_DIR} to resume from")
        return found
    path = Path(spec)
    if (path / "model.safetensors").is_file():
        return path
    found = latest_checkpoint(path)
    if found is not None:
        return found
    raise CheckpointError(f"{spec} is neither a checkpoint folder (with model.safetensors) nor a run folder with checkpoints")


def load_weights(path: Path, module: torch.nn.Module, may_lack: tuple[str, ...] = ()) -> None:
    """The checkpoint's weights into ``module``, every name matched; names ending in one of ``may_lack``
    may be absent from the checkpoint (they keep the module's own values)."""
    try:
        missing, unexpected = load_model(module, str(Path(path) / "model.safetensors"), strict=False)
    except Exception as err:  # safetensors raises plain Exceptions on corrupt files
        raise CheckpointError(f"cannot read {path}/model.safetensors: {err}") from None
    missing = [name for name in missing if not name.endswith(may_lack)] if may_lack else missing
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
