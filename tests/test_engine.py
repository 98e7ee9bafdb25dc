"""The training engine: exact resume, 2-process = 1-process, atomic checkpoints, budgets, divergence."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, tiny_config
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine.optim import lr_factor
from maskvlp.engine.trainer import TrainingDiverged, _calibrated_total, _calibration_due, train


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.resolve_checkpoint("latest", run_dir) / "model.safetensors"))


def test_resume_equals_an_uninterrupted_run(tmp_path):
    # the queue on, so its contents and pointer must survive the resume too
    base = ["train.precision=fp32", "train.max_steps=6", "objectives.itc.params.queue=true"]
    straight = tiny_config(tmp_path / "a", "albef", *base)
    train(straight, show_progress=False)
    broken = tiny_config(tmp_path / "b", "albef", *base)
    first = train(broken, show_progress=False, stop_after=3)  # "killed" after step 3's checkpoint
    assert first.steps == 3
    train(broken, resume="latest", show_progress=False)
    again = train(broken, resume="latest", show_progress=False)  # a finished run: nothing to do
    assert again.steps == 6 and again.checkpoint is not None and again.checkpoint.name == "step-0000006"
    a, b = _losses(Path(straight.output_dir)), _losses(Path(broken.output_dir))
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6 * max(1.0, abs(a[step])), (step, a[step], b[step])
    wa, wb = _weights(Path(straight.output_dir)), _weights(Path(broken.output_dir))
    assert wa.keys() == wb.keys()
    assert any("queue" in k for k in wa) and any("teacher" in k for k in wa)
    for key in wa:
        assert torch.allclose(wa[key].float(), wb[key].float(), atol=1e-6, rtol=0), key


@pytest.mark.parametrize("recipe,extra", [("albef", []), ("mlim", []), ("mamo", []), ("simla", []), ("composite", []),
                                          ("clip", ["model.text.depth=2", "model.fusion.depth=0",
                                                    "objectives.itc.params.text_negatives=swap"])])
def test_two_gloo_processes_match_one_process(tmp_path, recipe, extra):
    """Same global batch over 2 ranks (gloo) and over 1 process: the same losses on the first steps.

    Masks, hard negatives and keyword votes are drawn from global-batch noise, contrastive and
    completion losses gather across ranks, and prototype centres average over ranks, so every
    recipe must give the rank count's losses (composite covers SCL and SemMIM's MIM; clip with
    caption twins covers ITC's twin columns, which ranks hold in different numbers)."""
    common = [*TINY, "train.precision=fp32", "train.max_steps=3", "train.threads=1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one = tmp_path / "one"
    two = tmp_path / "two"
    cli = [sys.executable, "-m", "maskvlp.cli", "pretrain", "--recipe", recipe, "--no-evaluate"]
    subprocess.run([*cli, *common, f"output_dir={one}"], check=True, env=env, capture_output=True, timeout=300)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "maskvlp.cli", "pretrain", "--recipe", recipe, "--no-evaluate", *common,
                          f"output_dir={two}"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-4 * max(1.0, abs(a[step])), (step, a[step], b[step])


def test_latest_ignores_incomplete_checkpoints(tmp_path):
    root = tmp_path / ckpt.CKPT_DIR
    (root / "step-0000009.tmp").mkdir(parents=True)  # a write that was killed
    (root / "step-0000008").mkdir()  # a folder without state.pt
    (root / "step-0000008" / "model.safetensors").write_bytes(b"")
    model = torch.nn.Linear(2, 2)
    path = ckpt.save_checkpoint(tmp_path, 5, model, {"x": 1}, "a: 1\n", {}, keep=2)
    assert ckpt.resolve_checkpoint("latest", tmp_path) == path
    assert (root / "latest").read_text().strip() == "step-0000005"
    ckpt.save_checkpoint(tmp_path, 6, model, {"x": 1}, "a: 1\n", {}, keep=1)
    assert not path.exists(), "old checkpoints beyond `keep` are pruned"
    with pytest.raises(ckpt.CheckpointError):
        ckpt.resolve_checkpoint("latest", tmp_path / "nowhere")


def test_a_failed_checkpoint_write_is_a_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    """A full disk (torch.save's "iostream error") mid-write: a CheckpointError saying so, no temp folder
    left, and the previous checkpoint still the latest."""
    model = torch.nn.Linear(2, 2)
    first = ckpt.save_checkpoint(tmp_path, 5, model, {"x": 1}, "a: 1\n", {}, keep=2)

    def disk_full(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(ckpt.CheckpointError, match="could not write checkpoint .*step-0000006.*iostream error.*GiB free"):
        ckpt.save_checkpoint(tmp_path, 6, model, {"x": 1}, "a: 1\n", {}, keep=2)
    assert sorted(p.name for p in (tmp_path / ckpt.CKPT_DIR).iterdir()) == ["latest", "step-0000005"]
    assert ckpt.resolve_checkpoint("latest", tmp_path) == first


def test_non_finite_losses_stop_the_run_without_a_checkpoint(tmp_path, monkeypatch):
    from maskvlp.engine.pretrainer import Pretrainer

    original = Pretrainer.forward

    def poisoned(self, batch, step, micro=0):
        loss, metrics = original(self, batch, step, micro)
        return loss * float("nan"), metrics

    monkeypatch.setattr(Pretrainer, "forward", poisoned)
    cfg = tiny_config(tmp_path, "albef", "train.max_nonfinite=2", "train.ckpt_every=1")
    with pytest.raises(TrainingDiverged):
        train(cfg, show_progress=False)
    assert ckpt.list_checkpoints(Path(cfg.output_dir)) == []


def test_time_budget_ends_training(tmp_path):
    cfg = tiny_config(tmp_path, "clip", "train.time_budget=2", "train.max_steps=100000")
    result = train(cfg, show_progress=False)
    assert 0 < result.steps < 100000
    assert result.checkpoint is not None and result.checkpoint.name == f"step-{result.steps:07d}"


def test_calibration_ignores_a_stall_and_follows_a_lasting_change():
    """The wall-clock budget becomes a step count from the median recent step time: a one-off stall at
    calibration (a checkpoint write, another job's burst) must not end the run early, while a lasting
    slow-down re-fits the schedule at the next tenth of the run."""
    tc = SimpleNamespace(time_budget=60.0, max_steps=10**6)
    times = [0.1] * 60
    times[40:45] = [3.0] * 5  # a 14.5 s stall just before the second calibration
    total = _calibrated_total(60, 100, tc, sum(times), times)
    assert total == 60 + int((60.0 - sum(times)) / 0.1)  # the stall's own time is spent, its speed ignored
    mean_based = 60 + int((60.0 - sum(times)) / (sum(times[5:]) / 55))
    assert mean_based < 200 < total
    assert _calibrated_total(61, total, tc, sum(times) + 0.1, times + [0.1]) == total  # not due
    assert _calibration_due(60, total) and _calibration_due(90, 455) and not _calibration_due(91, 455)
    slower = times + [0.4] * 30  # the machine is now shared for good
    refit = _calibrated_total(90, total, tc, sum(slower), slower)
    assert refit == 90 + int((60.0 - sum(slower)) / 0.4) < total


def test_two_gloo_processes_end_a_time_budget_together(tmp_path):
    """Each rank times its own steps; they must agree on the schedule and on when the budget is spent,
    or one rank steps once more and waits forever in a collective."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "maskvlp.cli", "pretrain", "--recipe", "clip", "--no-evaluate", *TINY,
                          "model.text.depth=2", "model.fusion.depth=0", "train.time_budget=4", "train.max_steps=100000",
                          "train.threads=1", f"output_dir={tmp_path}"], env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    steps = sorted(_losses(tmp_path))
    assert steps and steps[-1] < 100000
    assert ckpt.resolve_checkpoint("latest", tmp_path).name == f"step-{steps[-1]:07d}"


def test_gradient_accumulation_runs_and_counts_samples(tmp_path):
    cfg = tiny_config(tmp_path, "albef", "train.grad_accum=2", "train.max_steps=2")
    result = train(cfg, show_progress=False)
    assert result.steps == 2 and result.samples == 16


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    values = [lr_factor(s, 100, 10, 0.05) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:]))
    assert lr_factor(100, 100, 10, 0.05) == pytest.approx(0.05)


def test_bf16_autocast_trains_and_auto_resolves_by_hardware(tmp_path):
    from maskvlp.engine.precision import cpu_has_amx_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_amx_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    cfg = tiny_config(tmp_path, "albef", "train.precision=bf16", "train.max_steps=2")
    result = train(cfg, show_progress=False)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
