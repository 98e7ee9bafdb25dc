"""Grounding as a task: fine-tuned like retrieval (ITC + ITM, no boxes), scored by the Grad-CAM map's top box,
on the synthetic world and on files in ALBEF's RefCOCO+ layout; a pre-trained checkpoint's own maps; resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine.trainer import train
from maskvlp.finetuning import _job_for, evaluate_task_checkpoint, finetune_and_evaluate, prepare

GROUNDING_TINY = [*TINY, "task.train_scenes=40", "train.precision=fp32", "eval.num_images=10"]
FLOORS = ("random_box", "largest_box", "centre_box")


def _cfg(tmp_path: Path, source: str = "none", *extra: str):
    return prepare("grounding", source, [*GROUNDING_TINY, f"output_dir={tmp_path / 'grounding'}", *extra], size="tiny")


def test_grounding_finetunes_on_the_world_and_reports_accuracy_beside_the_floors(tmp_path):
    cfg = _cfg(tmp_path)
    assert [o.name for o in cfg.objectives] == ["itc", "itm"] and not cfg.data.hflip
    result, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert result.steps == 6
    assert set(rows) == {"fine-tuned · test", "fine-tuned · heldout"}
    for row in rows.values():
        assert row["n"] == 10 and 0 <= row["accuracy"] <= 100
        assert all(0 <= row[f] <= 100 for f in FLOORS)
        assert 0 < row["random_box"] < 50  # every scene has 3+ objects and distractor boxes, one of them right
    assert (Path(cfg.output_dir) / "eval" / "results.md").is_file()
    from PIL import Image

    with Image.open(Path(cfg.output_dir) / "eval" / "grounding_examples.png") as picture:  # maps a person can check
        assert picture.width > 300 and picture.height > 300


def test_grounding_resumes_exactly(tmp_path):
    """Killed after step 3 and resumed: the same losses and weights (fp32, within 1e-6) as one straight run."""
    straight = _cfg(tmp_path / "a")
    finetune_and_evaluate(straight, evaluate=False, show_progress=False)
    broken = _cfg(tmp_path / "b")
    job, _ = _job_for(broken, False)
    assert train(broken, show_progress=False, stop_after=3, job=job).steps == 3
    finetune_and_evaluate(broken, resume="latest", evaluate=False, show_progress=False)
    losses = []
    for run in (straight, broken):
        rows = [json.loads(line) for line in (Path(run.output_dir) / "metrics.jsonl").read_text().splitlines()]
        losses.append({r["step"]: r["loss"] for r in rows if "loss" in r})
    assert sorted(losses[0]) == sorted(losses[1]) == [1, 2, 3, 4, 5, 6]
    for step, loss in losses[0].items():
        assert abs(loss - losses[1][step]) <= 1e-6 * max(1.0, abs(loss)), step
    wa, wb = (load_file(str(ckpt.resolve_checkpoint("latest", Path(r.output_dir)) / "model.safetensors"))
              for r in (straight, broken))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=0), key


def test_grounding_from_a_pretrained_run_shows_the_starts_own_maps(tmp_path):
    from maskvlp.config import load_config

    pre = load_config("albef", "tiny", [*TINY, "train.max_steps=2", f"output_dir={tmp_path / 'pre'}"])
    train(pre, show_progress=False)
    cfg = _cfg(tmp_path, str(tmp_path / "pre"), "train.max_steps=2")
    assert cfg.task.init_recipe == "albef" and cfg.model == pre.model
    _, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert {"fine-tuned · test", "zero-shot (start) · test"} <= set(rows)
    # a pre-trained checkpoint alone: its own ITM maps, no fine-tuning
    alone = evaluate_task_checkpoint(tmp_path / "pre", ["eval.num_images=10"], str(tmp_path / "zs"),
                                     show_progress=False, task="grounding")
    assert alone["pre-trained (no fine-tuning) · test"]["accuracy"] == rows["zero-shot (start) · test"]["accuracy"]


def test_grounding_runs_end_to_end_on_albefs_refcoco_files(tmp_path):
    """ALBEF's layout as written from the world (refcoco+_train.json, refcoco+_test.json, the REFER folder with
    refs(unc).p, instances.json and dets.json); a deleted test image is skipped and counted."""
    from maskvlp.config import WorldConfig
    from maskvlp.data.synthetic import SyntheticWorld, export_refcoco

    world = SyntheticWorld(WorldConfig(image_size=32, train_scenes=24, test_scenes=8))
    files = export_refcoco(world, tmp_path / "files", train_scenes=24, test_scenes=8)
    test_entries = json.loads(files["test"].read_text())
    (tmp_path / "files" / test_entries[0]["image"]).unlink()
    cfg = _cfg(tmp_path, "none", "task.source=files", "train.max_steps=2",
               f"task.train_files=[{files['train']}]", f"task.test_files=[{files['test']},{files['heldout']}]",
               f"task.train_image_root={tmp_path / 'files'}", f"task.test_image_root={tmp_path / 'files'}",
               f"task.refer_dir={tmp_path / 'files'}")
    result, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert result.steps == 2
    assert set(rows) == {"fine-tuned · test", "fine-tuned · heldout"}  # the splits the refs name
    assert rows["fine-tuned · test"]["n"] == 7 and rows["fine-tuned · heldout"]["n"] == 8
    notes = " ".join(json.loads((Path(cfg.output_dir) / "eval" / "results.json").read_text())["notes"])
    assert "test: 1 of 8 expressions skipped: unreadable image" in notes


@pytest.mark.parametrize("bad", ["task.box_alpha=-1", "task.train_scenes=0"])
def test_bad_grounding_settings_are_refused(tmp_path, bad):
    from maskvlp.config import ConfigError

    with pytest.raises(ConfigError):
        _cfg(tmp_path, "none", bad)


def test_api_ground_picks_the_box_the_evaluation_picks(tmp_path):
    """model.ground() on a fine-tuned checkpoint chooses, per expression, the candidate the evaluation chose."""
    import maskvlp
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.tasks import grounding

    cfg = _cfg(tmp_path, "none", "train.max_steps=2")
    finetune_and_evaluate(cfg, evaluate=False, show_progress=False)
    model = maskvlp.load(cfg.output_dir)
    (test, _) = grounding.evaluation_sets(model.config)
    examples = test.examples[:5]
    pictures = [test.images.picture(e.image) for e in examples]
    chosen = model.ground(pictures, [e.text for e in examples], [e.candidates for e in examples])
    expected, _ = grounding.predict(model.module, examples, test.images, load_tokenizer(), model.config)
    assert [examples[i].candidates[c] for i, c in enumerate(chosen)] == [expected[e.ref_id][0] for e in examples]


def test_a_start_without_an_itm_head_fine_tunes_and_says_it_has_no_maps_of_its_own(tmp_path):
    """mlim trains no ITM: fine-tuning gives it one (its single stream read by Grad-CAM), and its own maps are
    a note in the report, not a crash; evaluating the pre-trained run alone is a one-line error."""
    from maskvlp.config import ConfigError, load_config

    pre = load_config("mlim", "tiny", [*TINY, "train.max_steps=1", f"output_dir={tmp_path / 'pre'}"])
    train(pre, show_progress=False)
    cfg = _cfg(tmp_path, str(tmp_path / "pre"), "train.max_steps=2")
    assert cfg.model.fusion.mode == "merged"
    _, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert "fine-tuned · test" in rows and not any(name.startswith("zero-shot") for name in rows)
    report = (tmp_path / "grounding" / "eval" / "results.md").read_text()
    assert "the mlim start has no ITM head" in report
    with pytest.raises(ConfigError, match="fine-tune it first"):
        evaluate_task_checkpoint(tmp_path / "pre", ["eval.num_images=10"], str(tmp_path / "zs"), show_progress=False,
                                 task="grounding")
