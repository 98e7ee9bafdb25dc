"""Metrics to JSONL and TensorBoard, and a progress display with loss and throughput.

Only the main rank writes. On resume, the JSONL is cut back to the resumed step so the curves show
one trajectory, not two overlapping ones.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from maskvlp.files import atomic_write_text

console = Console(stderr=True)


def print_line(text: str) -> None:
    """One plain line on stderr: no markup colouring, never cut or wrapped to a terminal's width (so a log
    file or CI holds whole lines: paths, progress)."""
    console.print(text, highlight=False, soft_wrap=True)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl with a numeric ``step``; blank or torn lines (a run killed
    mid-write) are skipped, never an error."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            records.append(record)
    return records


class MetricsLogger:
    def __init__(self, output_dir: Path, enabled: bool, resume_step: int | None = None, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # torn lines (a kill mid-write) are dropped and the rest rewritten atomically, so a kill
            # during this rewrite keeps the old file and the next line never continues a torn one
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
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
        # a non-finite number is written as null: JSON has no NaN, and other readers reject Python's
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
        self.file.write(json.dumps({"step": step, **row}) + "\n")
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
        self.tty = console.is_terminal
        self.every_s = every_s
        self.last = 0.0
        self.total = total
        self.progress = None
        self.pending: tuple[int, str] | None = None  # the last step reported, for close()
        self.printed = -1
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
            self._print(step, info)
        self.pending = (step, info)

    def _print(self, step: int, info: str) -> None:
        print_line(f"train {step}/{self.total} {info}")
        self.printed = step

    def close(self) -> None:
        """Stop the bar; without a terminal, print the last step if the periodic lines missed it (a
        time budget ends the run before the step count it was sized to)."""
        if self.progress is not None:
            self.progress.stop()
        elif self.enabled and self.pending is not None and self.pending[0] != self.printed:
            self._print(*self.pending)


@contextlib.contextmanager
def task_progress(description: str, total: int, enabled: bool = True, every_s: float = 30.0) -> Iterator[Callable[[int], None] | None]:
    """Progress of a long job; yields ``advance(done)``. A bar on a terminal; without one (CI, nohup, a log
    file) whole plain lines every ``every_s`` seconds and at the end, never cut to a terminal width."""
    if not enabled:
        yield None
        return
    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done: bar.update(task, completed=done)
        return
    start = last = time.monotonic()
    state = {"done": 0}

    def advance(done: int) -> None:
        nonlocal last
        state["done"] = done
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            print_line(f"{description}: {done:,}/{total:,} ({time.monotonic() - start:.0f} s)")

    yield advance
    print_line(f"{description}: {state['done']:,}/{total:,} done in {time.monotonic() - start:.0f} s")
