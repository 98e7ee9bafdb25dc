"""`maskvlp ablate`: every combination trained and evaluated alike, summarised, and resumable."""
from __future__ import annotations

import json

import pytest

from conftest import TINY
from maskvlp.ablate import finetune_tasks, parse_seeds, run_ablation, table_order
from maskvlp.config import ConfigError, load_config, to_yaml


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("2") == [0, 1] and parse_seeds("0,3") == [0, 3] and parse_seeds("5,") == [5]
    for bad in ("0", "x", "1,1", ","):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_table_order_puts_requested_runs_first_then_the_recipe_order():
    found = [("semmim", "minilm", 0), ("albef", "minilm", 1), ("clip", "scratch", 0), ("mine", "scratch", 0),
             ("albef", "scratch", 0), ("albef", "minilm", 0), ("composite", "scratch", 1)]
    assert table_order(found, [("composite", "scratch", 1), ("mlim", "scratch", 0)]) == [
        ("composite", "scratch", 1),  # requested (the mlim run is not in the folder)
        ("clip", "scratch", 0), ("albef", "scratch", 0), ("albef", "minilm", 0), ("albef", "minilm", 1),
        ("semmim", "minilm", 0), ("mine", "scratch", 0)]  # a user's own recipe after the known ones


def test_ablation_table_spread_and_reuse(tmp_path):
    out = tmp_path / "ablate"
    overrides = [*TINY, "train.max_steps=2", "eval.itm_k=2"]
    summary = run_ablation(["clip", "albef"], ["scratch"], [0, 1], 0, str(out), overrides, show_progress=False)
    assert set(summary) == {"clip / scratch / itc", "albef / scratch / itc", "albef / scratch / itm k=2",
                            "albef / scratch / mlm"}  # mlm: binding scored by the MLM head (no retrieval)
    assert "img_r1" not in summary["albef / scratch / mlm"] and "binding_colour" in summary["albef / scratch / mlm"]
    entry = summary["albef / scratch / itm k=2"]
    assert entry["seeds"] == 2 and len(entry["img_r1"]["values"]) == 2
    assert entry["steps"]["values"] == [2, 2]  # read back from each run's metrics.jsonl
    values = entry["binding_colour"]["values"]
    assert abs(entry["binding_colour"]["spread"] - (max(values) - min(values))) < 1e-9
    mean = sum(values) / 2  # standard error of two values: sample sd / sqrt(2) = |a - b| / 2
    assert entry["binding_colour"]["se"] == pytest.approx(abs(values[0] - values[1]) / 2) and entry["binding_colour"]["mean"] == pytest.approx(mean)
    # step time, and its ratio to albef's (albef's own is 1)
    assert entry["s_per_step"]["mean"] > 0 and entry["step_vs_albef"] == pytest.approx(1.0)
    clip = summary["clip / scratch / itc"]
    assert clip["step_vs_albef"] == pytest.approx(clip["s_per_step"]["mean"] / entry["s_per_step"]["mean"])
    table = (out / "ablation.md").read_text()
    assert "| albef | scratch | itm k=2 |" in table and " ± " in table
    assert (out / "ablation.png").stat().st_size > 1000
    assert json.loads((out / "ablation.json").read_text()).keys() == summary.keys()
    stamp = (out / "clip-scratch-s1" / "eval" / "results.json").stat().st_mtime_ns
    piece = run_ablation(["clip"], ["scratch"], [1], 0, str(out), overrides, show_progress=False)  # finished: reused
    assert (out / "clip-scratch-s1" / "eval" / "results.json").stat().st_mtime_ns == stamp
    # the table still covers every finished run in the folder, the requested ones first
    assert list(piece) == ["clip / scratch / itc", *[k for k in summary if not k.startswith("clip")]]
    assert piece["clip / scratch / itc"]["seeds"] == 2 and piece["albef / scratch / itm k=2"] == entry
    assert "| albef | scratch | itm k=2 |" in (out / "ablation.md").read_text()
    # a run trained to another length is left out of the table, not averaged in
    other = run_ablation(["clip"], ["scratch"], [2], 0, str(out), overrides, show_progress=False, steps=1)
    assert set(other) == {"clip / scratch / itc"} and other["clip / scratch / itc"]["seeds"] == 1
    # a finished run made with other settings is never reused as this setting's row
    with pytest.raises(ConfigError, match="a finished run with other settings.*train.weight_decay"):
        run_ablation(["clip"], ["scratch"], [1], 0, str(out), [*overrides, "train.weight_decay=0.5"], show_progress=False)


def test_interrupted_run_resumes_from_its_checkpoint_and_other_settings_are_refused(tmp_path):
    from maskvlp.engine.trainer import train

    out = tmp_path / "ablate"
    overrides = [*TINY, "train.ckpt_every=2", "eval.itm_k=2"]
    straight = run_ablation(["clip"], ["scratch"], [0], 0, str(tmp_path / "straight"), overrides,
                            show_progress=False, steps=4)
    # the same run "killed" after step 2's checkpoint, before its evaluation
    cfg = load_config("clip", None, [*overrides, "train.max_steps=4", "model.text.init=scratch", "train.seed=0",
                                     "train.time_budget=0", f"output_dir={out / 'clip-scratch-s0'}",
                                     "eval.compare_random_init=false"])
    assert train(cfg, show_progress=False, stop_after=2).steps == 2
    first_ckpt = out / "clip-scratch-s0" / "checkpoints" / "step-0000002" / "model.safetensors"
    stamp = first_ckpt.stat().st_mtime_ns
    resumed = run_ablation(["clip"], ["scratch"], [0], 0, str(out), overrides, show_progress=False, steps=4)
    losses = [json.loads(line)["loss"] for line in (out / "clip-scratch-s0" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["loss"] for line in
                (tmp_path / "straight" / "clip-scratch-s0" / "metrics.jsonl").read_text().splitlines()]
    assert first_ckpt.stat().st_mtime_ns == stamp  # continued from step 2, not restarted (which rewrites it)
    assert len(losses) == 4 and losses == pytest.approx(expected, abs=1e-6)  # and equal to the straight run
    assert resumed["clip / scratch / itc"]["img_r1"]["mean"] == pytest.approx(straight["clip / scratch / itc"]["img_r1"]["mean"])
    # an unfinished run made with other settings is neither continued nor deleted
    other = out / "other"
    train(load_config("clip", None, [*overrides, "train.max_steps=4", f"output_dir={other / 'clip-scratch-s0'}"]),
          show_progress=False, stop_after=2)
    with pytest.raises(ConfigError, match="other settings"):
        run_ablation(["clip"], ["scratch"], [0], 0, str(other), overrides, show_progress=False, steps=4)
    assert (other / "clip-scratch-s0" / "checkpoints").is_dir()


def test_ablation_fine_tunes_tasks_from_every_run_and_tabulates_them(tmp_path):
    """--tasks vqa: each fused run gets a VQA fine-tune in <run>/tasks/vqa (the run's seed), its figures in a
    second table; clip (no fusion) is skipped; a second call reuses the fine-tunes."""
    out = tmp_path / "ablate"
    overrides = [*TINY, "train.max_steps=2", "eval.itm_k=2"]
    task_overrides = ["task.questions_per_scene=3", "train.precision=fp32", "train.time_budget=0", "train.max_steps=2"]
    summary = run_ablation(["albef"], ["scratch"], [0, 1], 0, str(out), overrides, show_progress=False,
                           tasks=["vqa"], task_overrides=task_overrides)
    tasks = summary["albef / scratch / tasks"]
    assert tasks["seeds"] == 2 and len(tasks["VQA acc"]["values"]) == 2 and "VQA held-out pairs" in tasks
    for seed in (0, 1):
        saved = (out / f"albef-scratch-s{seed}" / "tasks" / "vqa" / "config.yaml").read_text()
        assert f"seed: {seed}" in saved and "init_recipe: albef" in saved
    table = (out / "ablation.md").read_text()
    assert "Fine-tuned from each run" in table and "| albef | scratch | " in table.split("Fine-tuned")[1]
    stamp = (out / "albef-scratch-s1" / "tasks" / "vqa" / "eval" / "results.json").stat().st_mtime_ns
    again = run_ablation(["albef"], ["scratch"], [1], 0, str(out), overrides, show_progress=False,
                         tasks=["vqa"], task_overrides=task_overrides)
    assert (out / "albef-scratch-s1" / "tasks" / "vqa" / "eval" / "results.json").stat().st_mtime_ns == stamp
    assert again["albef / scratch / tasks"] == tasks
    with pytest.raises(ConfigError, match="a finished run with other settings.*train.lr"):  # never silently reused
        run_ablation(["albef"], ["scratch"], [1], 0, str(out), overrides, show_progress=False,
                     tasks=["vqa"], task_overrides=[*task_overrides, "train.lr=5e-4"])
    # a dual encoder (no fusion encoder) has no fused task to fine-tune: skipped, nothing written
    dual = tmp_path / "dual" / "clip-scratch-s0"
    dual.mkdir(parents=True)
    (dual / "config.yaml").write_text(to_yaml(load_config("clip", None, [*overrides, "model.fusion.depth=0"])))
    finetune_tasks(dual, 0, ["vqa"], task_overrides, show_progress=False)
    assert not (dual / "tasks").exists()
    with pytest.raises(ConfigError, match="--tasks retrieval"):
        run_ablation(["albef"], ["scratch"], [1], 0, str(out), overrides, show_progress=False, tasks=["retrieval"])
