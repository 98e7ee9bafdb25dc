"""Metrics to JSONL and TensorBoard, and a progress display with loss and throughput.

Only the main rank writes. On resume, the JSONL is cut back to the resumed step so the curves show
one trajectory, not two overlapping ones.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class MetricsLogger:
    def __init__(self, output_dir: Path, enabled: bool, resume_step: int | None = None, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except Exception as err:  # tensorboard is optional at run time
                console.print(f"[yellow]tensorboard disabled: {err}")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


class TrainProgress:
    """A rich progress bar on a terminal; periodic plain lines otherwise (CI logs, files)."""

    def __init__(self, total: int, enabled: bool, start: int = 0, every_s: float = 30.0):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.last = 0.0
        self.total = total
        self.progress = None
        if enabled and self.tty:
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self.task = self.progress.add_task("train", total=total, completed=start, info="")
            self.progress.start()

    def set_total(self, total: int) -> None:
        self.total = total
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def update(self, step: int, info: str) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        elif time.monotonic() - self.last > self.every_s or step >= self.total:
            self.last = time.monotonic()
            console.print(f"train {step}/{self.total} {info}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
