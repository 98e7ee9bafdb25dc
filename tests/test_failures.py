"""What happens when things go wrong (docs/failures.md): a reused run folder, kills at any moment, torn
metrics, settings that would fail late, honest counts of bad data, metrics that say what they measure."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import TINY, tiny_config
from maskvlp.cli import app
from maskvlp.config import ConfigError
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine import logging as mlog
from maskvlp.engine.batches import StepBatches
from maskvlp.distributed import DistInfo
from maskvlp.engine.run_folder import RunFolderInUse
from maskvlp.engine.trainer import train

runner = CliRunner()
FP32 = ["train.precision=fp32", "train.threads=1"]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.resolve_checkpoint("latest", run_dir) / "model.safetensors"))


def _steps(run_dir: Path) -> list[int]:
    return [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run_dir)]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# --------------------------------------------------------------------------------------------
# 1. One run per folder; `latest` is what resume reads
# --------------------------------------------------------------------------------------------
def test_a_shorter_run_in_a_longer_runs_folder_is_refused_and_both_are_kept(tmp_path):
    """The issue's reproduction: a 10-step run, then a 4-step run in the same folder. Before, the
    second run pruned its own step-2/step-4 (sorted below step-8/step-10), failed, and `--resume latest`
    continued the first run. Now it is refused, the first run is intact, and resume means that run."""
    common = [*FP32, "train.ckpt_every=2", "train.keep_checkpoints=2"]
    long = tiny_config(tmp_path, "albef", *common, "train.max_steps=10")
    train(long, show_progress=False)
    run = Path(long.output_dir)
    before = (run / "metrics.jsonl").read_text()
    assert _steps(run) == [8, 10]

    short = tiny_config(tmp_path, "albef", *common, "train.max_steps=4")
    with pytest.raises(RunFolderInUse, match=r"already holds a run .*step-0000010.*--resume latest.*--overwrite.*output_dir"):
        train(short, show_progress=False)
    assert _steps(run) == [8, 10] and (run / "metrics.jsonl").read_text() == before
    assert (run / ckpt.CKPT_DIR / "latest").read_text().strip() == "step-0000010"

    again = train(long, resume="latest", show_progress=False)  # the run the user means: finished, nothing to do
    assert again.steps == 10 and again.checkpoint.name == "step-0000010"
    assert (run / "metrics.jsonl").read_text() == before

    fresh = train(short, show_progress=False, overwrite=True)  # explicit: the old run goes, whole
    assert fresh.steps == 4 and _steps(run) == [2, 4]
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]


def test_the_cli_refuses_a_reused_folder_in_one_line(tmp_path):
    out = tmp_path / "reuse"
    args = ["pretrain", "--recipe", "albef", "--no-evaluate", *TINY, "train.max_steps=3", f"output_dir={out}"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"run folder: {out}" in first.output and "checkpoint: " in first.output
    second = runner.invoke(app, [*args[:-2], "train.max_steps=2", f"output_dir={out}"])
    assert second.exit_code == 2 and "already holds a run" in second.output and "Traceback" not in second.output
    both = runner.invoke(app, [*args, "--resume", "latest", "--overwrite"])
    assert both.exit_code == 2 and "give one of them" in both.output


def test_latest_is_the_source_of_truth_and_pruning_goes_by_step(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (5, 6):
        ckpt.save_checkpoint(tmp_path, step, model, {"x": 1}, "a: 1\n", {}, keep=0)
    ckpt.atomic_write_text(tmp_path / ckpt.CKPT_DIR / "latest", "step-0000005\n")
    assert ckpt.resolve_checkpoint("latest", tmp_path).name == "step-0000005"
    assert ckpt.resolve_checkpoint(str(tmp_path)).name == "step-0000005"
    (tmp_path / ckpt.CKPT_DIR / "latest").unlink()  # lost pointer: the highest complete step
    assert ckpt.resolve_checkpoint("latest", tmp_path).name == "step-0000006"
    # a step past 9,999,999 has a longer name: by name it would sort first and be pruned
    big = ckpt.save_checkpoint(tmp_path, 10_000_000, model, {"x": 1}, "a: 1\n", {}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000006", big.name]


def test_the_next_checkpoint_removes_what_a_killed_write_left(tmp_path):
    """A SIGKILL inside a checkpoint write or inside latest's atomic update leaves a temp folder or file; the
    run's next checkpoint removes them (one process writes a run's checkpoints) and touches nothing else."""
    model = torch.nn.Linear(2, 2)
    ckpt.save_checkpoint(tmp_path, 1, model, {"x": 1}, "a: 1\n", {}, keep=0)
    root = tmp_path / ckpt.CKPT_DIR
    (root / "step-0000009.tmp").mkdir()
    (root / "step-0000009.tmp" / "model.safetensors").write_bytes(b"half")
    (root / ".latest.k1ll3d.tmp").write_text("step-00")
    ckpt.save_checkpoint(tmp_path, 2, model, {"x": 1}, "a: 1\n", {}, keep=0)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000001", "step-0000002"]


# --------------------------------------------------------------------------------------------
# 3. Settings that would fail late fail first, in one line
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("train.ckpt_every=0", "'train.ckpt_every': 0; must be >= 1"),
    ("train.log_every=0", "'train.log_every': 0; must be >= 1"),
    ("data.crop_scale_min=0", "'data.crop_scale_min': 0.0; must be in (0, 1]"),
    ("train.max_steps=0", "'train.max_steps': 0; must be >= 1"),
    ("eval.itm_k=0", "'eval.itm_k': 0; must be >= 1"),
    ("model.vision.heads=5", "model.vision.width=32 must be a multiple of model.vision.heads=5"),
    ("model.vision.patch_size=0", "'model.vision.patch_size': 0; must be >= 1"),  # was a ZeroDivisionError
])
def test_settings_that_crashed_later_are_one_line_errors_up_front(tmp_path, override, expected):
    small = ["--no-evaluate", *TINY, f"output_dir={tmp_path}"]  # were the check missing: a short run, not the README's
    result = runner.invoke(app, ["pretrain", "--recipe", "albef", *small, override])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


@pytest.mark.parametrize("body, expected", [
    ("objectives: {name: itc}\n", "'objectives' must be a list"),
    ("model: [tiny]\nobjectives: [{name: itc}]\n", "'model' must be a mapping of settings, got a list"),
    ("objectives: [itc]\n", "objectives entry 0 must be a mapping with a 'name'"),
    ("objectives: [{name: itc, params: [1]}]\n", "'params' must be a mapping"),
    ("train: 3\nobjectives: [{name: itc}]\n", "'train' must be a mapping"),
])
def test_a_recipe_of_the_wrong_shape_is_a_one_line_error(tmp_path, body, expected):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(body)
    result = runner.invoke(app, ["pretrain", "--recipe", str(recipe), "--no-evaluate", *TINY, f"output_dir={tmp_path}"])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------------------------
# 4. Resume edges
# --------------------------------------------------------------------------------------------
def test_resume_survives_a_torn_metrics_line(tmp_path):
    cfg = tiny_config(tmp_path, "albef", *FP32, "train.max_steps=4")
    train(cfg, show_progress=False, stop_after=2)
    run = Path(cfg.output_dir)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 4.1')  # kill -9 mid-write
    train(cfg, resume="latest", show_progress=False)
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]


def test_resuming_a_run_that_ran_out_of_time_trains_nothing(tmp_path):
    """A time budget ends a run before the step count it was sized to; that run is finished: resuming
    it (to evaluate again, say) must not train one more step (it did: the saved schedule said 100000)."""
    cfg = tiny_config(tmp_path, "clip", *FP32, "train.time_budget=1", "train.max_steps=100000")
    first = train(cfg, show_progress=False)
    run = Path(cfg.output_dir)
    metrics, weights = (run / "metrics.jsonl").read_text(), _weights(run)
    again = train(cfg, resume="latest", show_progress=False)
    assert again.steps == first.steps and again.checkpoint == first.checkpoint
    assert (run / "metrics.jsonl").read_text() == metrics and _same_weights(_weights(run), weights) == 0


def test_resume_with_other_settings_is_refused_and_names_them(tmp_path):
    cfg = tiny_config(tmp_path, "albef", *FP32, "train.max_steps=3")
    train(cfg, show_progress=False)
    longer = tiny_config(tmp_path, "albef", *FP32, "train.max_steps=9", "train.lr=2e-3", "eval.num_images=5")
    with pytest.raises(ConfigError, match=r"train.lr=0.002 \(the run has 0.001\), train.max_steps=9 \(the run has 3\)"):
        train(longer, resume="latest", show_progress=False)
    harmless = tiny_config(tmp_path, "albef", *FP32, "train.max_steps=3", "eval.num_images=5", "train.log_every=7")
    assert train(harmless, resume="latest", show_progress=False).steps == 3


# --------------------------------------------------------------------------------------------
# 5. Honest data reporting
# --------------------------------------------------------------------------------------------
class _HalfBroken(torch.utils.data.Dataset):
    """Every entry whose index is in ``bad`` is unreadable (None), as a missing image is."""

    def __init__(self, n: int, bad: set[int]):
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return None if i in self.bad else {"i": i}


def test_the_bad_fraction_counts_sampled_entries_not_retries():
    """Half the entries unreadable: about half the sampled entries are reported bad (before: retries
    that hit bad entries too were counted as samples, 84% was reported for 50%)."""
    n = 400
    bad = set(np.random.default_rng(0).choice(n, n // 2, replace=False).tolist())
    batches = StepBatches(_HalfBroken(n, bad), 40, 0, DistInfo(), collate=lambda items: {"items": items})
    bad_count = seen = 0
    for d in range(20):
        out = batches[d]
        assert all(item["i"] not in bad for item in out["items"])  # every slot got a readable stand-in
        bad_count += out["num_bad"]
        seen += out["num_seen"]
    assert seen == 800 and 0.45 < bad_count / seen < 0.55, bad_count / seen


def test_dropped_and_unreadable_data_reach_the_console_and_results_md(tmp_path):
    from maskvlp.data.synthetic import SyntheticWorld, export_albef_json
    from maskvlp.config import WorldConfig

    world = SyntheticWorld(WorldConfig(seed=3, image_size=32, train_scenes=40, test_scenes=10))
    train_json, _ = export_albef_json(world, "train", tmp_path / "train")
    _, test_json = export_albef_json(world, "test", tmp_path / "test")
    entries = json.loads(train_json.read_text())
    (train_json.parent / entries[0]["image"]).unlink()
    entries.append({"image": entries[1]["image"], "caption": ["  ", ""]})  # every caption empty
    train_json.write_text(json.dumps(entries))
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--recipe", "albef", *TINY, "train.max_steps=4",
                                 "eval.compare_random_init=false", "data.source=json", f"data.train_json=[{train_json}]",
                                 f"data.image_root={train_json.parent}", "data.max_bad_fraction=0.5",
                                 f"eval.test_json={test_json}", f"eval.image_root={test_json.parent}", f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    report = (out / "eval" / "results.md").read_text()
    for text in (result.output, report):
        assert "1 entries dropped at load: every caption empty" in text
        assert "sampled entries had an unreadable image and were replaced" in text
    assert f"results: {out / 'eval' / 'results.md'}" in result.output.replace("\n", "")


def test_progress_without_a_terminal_prints_whole_lines(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(mlog, "console", Console(file=buffer, width=40))  # not a terminal, narrow
    description = "trained ITM re-rank (k=8, 1000 images, 5000 captions)"
    with mlog.task_progress(description, 100, every_s=0.0) as advance:
        advance(50)
        advance(100)
    lines = buffer.getvalue().splitlines()
    assert lines == [f"{description}: 50/100 (0 s)", f"{description}: 100/100 (0 s)",
                     f"{description}: 100/100 done in 0 s"]
    buffer.seek(0)
    buffer.truncate()
    bar = mlog.TrainProgress(1000, True)  # a time budget ends the run at step 17 of the 1000 it was sized to
    for step in range(1, 18):
        bar.update(step, f"loss {5 - step / 10:.1f}")
    bar.close()
    assert buffer.getvalue().splitlines() == ["train 1/1000 loss 4.9", "train 17/1000 loss 3.3"]


# --------------------------------------------------------------------------------------------
# 7. Metrics say what they measure
# --------------------------------------------------------------------------------------------
def test_grad_norm_is_the_real_norm_when_clipping_is_off(tmp_path):
    cfg = tiny_config(tmp_path, "albef", *FP32, "train.max_steps=4", "train.log_every=2", "train.grad_clip=0")
    train(cfg, show_progress=False)
    rows = _rows(Path(cfg.output_dir))
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["grad_norm"] > 0 and np.isfinite(r["grad_norm"]) for r in rows)


def test_a_non_finite_metric_is_written_as_json_null(tmp_path):
    logger = mlog.MetricsLogger(tmp_path, True, tensorboard=False)
    logger.log(1, {"loss": 1.0, "acc": float("nan")})
    logger.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 1.0, "acc": None}


# --------------------------------------------------------------------------------------------
# Fault injection: SIGKILL anywhere, resume each time, same weights as no interruption
# --------------------------------------------------------------------------------------------
CHILD = r"""
import os, signal, sys, threading
mode, at, args = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
calls = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def nth_call():
    calls[0] += 1
    return calls[0] == int(at)

import maskvlp.engine.checkpoint as ckpt
import maskvlp.engine.logging as mlog
if mode == "checkpoint":  # half of model.safetensors written, then killed
    real_save = ckpt.save_model
    def save_model(module, path):
        if nth_call():
            with open(path, "wb") as f:
                f.write(b"\0" * 1000)
            die()
        real_save(module, path)
    ckpt.save_model = save_model
elif mode == "latest":  # the checkpoint folder renamed into place, `latest` not yet updated
    real_write = ckpt.atomic_write_text
    def atomic_write_text(path, text):
        if path.name == "latest" and nth_call():
            die()
        real_write(path, text)
    ckpt.atomic_write_text = atomic_write_text
elif mode == "metrics":  # half a line written and flushed, then killed
    real_log = mlog.MetricsLogger.log
    def log(self, step, metrics):
        if nth_call():
            self.file.write('{"step": %d, "loss": 1.2' % step)
            self.file.flush()
            die()
        real_log(self, step, metrics)
    mlog.MetricsLogger.log = log
elif mode == "random":  # at a random moment after training starts (the first metrics line)
    real_log = mlog.MetricsLogger.log
    def log(self, step, metrics):
        calls[0] += 1
        if calls[0] == 1:
            threading.Timer(at, die).start()
        real_log(self, step, metrics)
    mlog.MetricsLogger.log = log
from maskvlp.cli import main
sys.argv = ["maskvlp", *args]
main()
"""


def test_sigkill_at_random_moments_then_resume_equals_no_interruption(tmp_path):
    """Killed with SIGKILL inside a checkpoint write, between a checkpoint and its `latest`, inside a
    metrics line, and at random moments; each time resumed as a user would (`--resume latest` when a
    checkpoint exists, else the same command again). The end: the uninterrupted run's weights and one
    metrics line per step with its losses; then a shorter run in that folder is refused, leaving it whole."""
    steps = 8
    common = [*TINY, *FP32, f"train.max_steps={steps}", "train.ckpt_every=2", "train.keep_checkpoints=2"]
    straight = tiny_config(tmp_path / "straight", "albef", *common)
    train(straight, show_progress=False)
    run = tmp_path / "killed"
    args = ["pretrain", "--recipe", "albef", "--no-evaluate", *common, f"output_dir={run}"]
    rng = random.Random(0)
    # each placed kill happens before the run can end (traced in docs/failures.md); the timed ones may not
    placed = [("checkpoint", 2), ("latest", 1), ("metrics", 2), ("checkpoint", 1), ("metrics", 3)]
    kills = [*placed, *[("random", round(rng.uniform(0.05, 0.5), 3)) for _ in range(3)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    codes: list[int] = []
    for mode, at in [*kills, ("none", 0)]:
        resume = ["--resume", "latest"] if ckpt.latest_checkpoint(run) is not None else []
        child = subprocess.run([sys.executable, "-c", CHILD, mode, str(at), *args, *resume],
                               env=env, capture_output=True, text=True, timeout=300)
        assert child.returncode in (0, -9), (mode, child.returncode, child.stderr[-2000:])
        codes.append(child.returncode)
    assert codes[:len(placed)] == [-9] * len(placed) and codes[-1] == 0, codes
    assert _same_weights(_weights(run), _weights(Path(straight.output_dir))) <= 1e-6
    rows, ref = _rows(run), {r["step"]: r["loss"] for r in _rows(Path(straight.output_dir))}
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(abs(r["loss"] - ref[r["step"]]) <= 1e-6 * max(1.0, abs(ref[r["step"]])) for r in rows)
    assert not list((run / ckpt.CKPT_DIR).glob("*.tmp"))

    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "tensorboard" not in p.parts}
    shorter = subprocess.run([sys.executable, "-m", "maskvlp.cli", *args[:-1], "train.max_steps=4", f"output_dir={run}"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert shorter.returncode == 2 and "already holds a run" in shorter.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "tensorboard" not in p.parts} == before
