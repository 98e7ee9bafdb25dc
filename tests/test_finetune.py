"""Fine-tuning as training: VQA, NLVR2 and retrieval runs on the engine (exact resume, gradients reach
exactly the parts a task trains, weights copied from the pre-trained run, the start recorded), and the
Python API on fine-tuned checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from maskvlp.engine import checkpoint as ckpt
from maskvlp.engine.trainer import train
from maskvlp.finetuning import finetune_and_evaluate, prepare

TASK_TINY = [*TINY, "task.questions_per_scene=3", "task.train_pairs=48", "task.test_pairs=12",
             "train.precision=fp32"]


def _cfg(tmp_path: Path, task: str, source: str = "none", *extra: str):
    return prepare(task, source, [*TASK_TINY, f"output_dir={tmp_path / task}", *extra], size="tiny")


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows}


@pytest.mark.parametrize("task", ["vqa", "nlvr2"])
def test_finetuning_resumes_exactly(tmp_path, task):
    """Killed after step 3 and resumed: the same losses and weights (fp32, within 1e-6) as one straight run."""
    straight = _cfg(tmp_path / "a", task)
    finetune_and_evaluate(straight, evaluate=False, show_progress=False)
    broken = _cfg(tmp_path / "b", task)
    from maskvlp.finetuning import _job_for

    job, _ = _job_for(broken, False)
    first = train(broken, show_progress=False, stop_after=3, job=job)
    assert first.steps == 3
    finetune_and_evaluate(broken, resume="latest", evaluate=False, show_progress=False)
    a, b = _losses(Path(straight.output_dir)), _losses(Path(broken.output_dir))
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6 * max(1.0, abs(a[step])), (step, a[step], b[step])
    wa = load_file(str(ckpt.resolve_checkpoint("latest", Path(straight.output_dir)) / "model.safetensors"))
    wb = load_file(str(ckpt.resolve_checkpoint("latest", Path(broken.output_dir)) / "model.safetensors"))
    assert wa.keys() == wb.keys() and any(k.startswith("head.") for k in wa)
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=0), key


def _module_and_batch(tmp_path: Path, task: str):
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.trainer import text_specials
    from maskvlp.finetuning import _job_for

    cfg = _cfg(tmp_path, task)
    job, _ = _job_for(cfg, False)
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    module = job.build_module(cfg, text_specials(tokenizer), True)
    dataset = job.build_dataset(cfg)
    raw = job.collate([dataset[i] for i in range(8)], tokenizer=tokenizer, max_len=cfg.model.text.max_len)
    return module, job.to_batch(raw, torch.device("cpu"), 8, tokenizer.pad_id)


@pytest.mark.parametrize("task", ["vqa", "nlvr2"])
def test_gradients_reach_exactly_the_trained_parts(tmp_path, task):
    """The head, fusion and towers get gradients; the contrastive projections and temperature (which no task
    reads) and the frozen pretrained stem are frozen and get none."""
    module, batch = _module_and_batch(tmp_path, task)
    loss, _ = module(batch, 0)
    loss.backward()
    trained = {n for n, p in module.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in trained) and any(n.startswith("model.fusion.") for n in trained)
    for name, p in module.named_parameters():
        if name.split(".")[1] in ("vision_proj", "text_proj", "temp"):
            assert not p.requires_grad and p.grad is None, name
        elif p.requires_grad and name != "model.vision.mask_token":
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_vqa_loss_falls_on_a_fixed_batch(tmp_path):
    """Eight questions memorised: the loss falls toward its floor (soft targets such as 0.6 have entropy, so
    the floor is the targets' summed binary entropy, not 0) and the top answer earns the batch's best score."""
    module, batch = _module_and_batch(tmp_path, "vqa")
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=3e-3)
    t = batch.targets.clamp(1e-6, 1 - 1e-6)
    floor = float(-(t * t.log() + (1 - t) * (1 - t).log()).sum(1).mean())
    losses, score = [], 0.0
    for _ in range(60):
        loss, metrics = module(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        score = metrics["vqa_score"]
    best = float(batch.targets.max(1).values.mean())
    assert losses[-1] - floor < 0.25 * (losses[0] - floor), (losses[0], losses[-1], floor)
    assert score == pytest.approx(best, abs=1e-6), (score, best)


def test_finetuning_from_a_pretrained_run_copies_its_weights_and_records_it(tmp_path):
    from maskvlp.config import load_config

    pre = load_config("albef", "tiny", [*TINY, "train.max_steps=2", f"output_dir={tmp_path / 'pre'}"])
    result = train(pre, show_progress=False)
    cfg = prepare("vqa", str(tmp_path / "pre"), [*TASK_TINY, f"output_dir={tmp_path / 'vqa'}", "train.max_steps=1",
                                                  "train.lr=1e-3", "train.text_lr=1e-5"])
    assert cfg.task.init_from == str(result.checkpoint) and cfg.task.init_recipe == "albef" and cfg.task.init_step == 2
    assert cfg.model == pre.model  # the model it fine-tunes is the one that was pre-trained
    from maskvlp.finetuning import _job_for
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.trainer import text_specials

    job, _ = _job_for(cfg, False)
    module = job.build_module(cfg, text_specials(load_tokenizer()), True)
    saved = load_file(str(Path(result.checkpoint) / "model.safetensors"))
    own = module.state_dict()
    # safetensors keeps one name of a tied pair: the word embeddings are stored as the MLM decoder
    tied = {"model.text.word_embeddings.weight": "model.mlm_head.decoder.weight"}
    assert "model.text.word_embeddings.weight" not in saved
    towers = [k for k in own if k.startswith(("model.vision.", "model.text.", "model.fusion."))]
    assert towers and all(tied.get(k, k) in saved for k in towers)  # the pre-trained run had every part VQA reads
    for key in towers:
        assert torch.equal(own[key], saved[tied.get(key, key)]), key
    assert not any(k.startswith("head.") for k in saved)  # the head is the one fresh part
    groups = job.build_optimizer(module, cfg).param_groups
    head = {id(p) for p in module.head.parameters()}
    for group in groups:
        is_head = all(id(p) in head for p in group["params"])
        assert group["base_lr"] == (1e-3 if is_head else 1e-5), (group["base_lr"], is_head)


def test_api_answer_and_verify_on_fine_tuned_checkpoints(tmp_path):
    import maskvlp
    from maskvlp.data.synthetic import SyntheticWorld
    from maskvlp.config import WorldConfig

    world = SyntheticWorld(WorldConfig(image_size=32, train_scenes=4, test_scenes=4))
    pictures = [world.render(s) for s in world.scenes("test")]
    for task in ("vqa", "nlvr2"):
        cfg = _cfg(tmp_path, task, "none", "train.max_steps=2")
        finetune_and_evaluate(cfg, evaluate=False, show_progress=False)
        model = maskvlp.load(cfg.output_dir)
        if task == "vqa":
            questions = ["what colour is the circle?", "how many squares are there?", "is there a red star?"]
            batched = model.answer(pictures[:3], questions, batch_size=2)
            assert batched == model.answer(pictures[:3], questions) and all(a in cfg.task.answers for a in batched)
            with pytest.raises(ValueError, match="verify"):
                model.verify([(pictures[0], pictures[1])], ["both images contain a star"])
        else:
            pairs = [(pictures[0], pictures[1]), (pictures[2], pictures[3]), (pictures[1], pictures[0])]
            statements = ["both images contain a star", "the left image has more circles", "there are two squares"]
            verdicts = model.verify(pairs, statements, batch_size=2)
            assert verdicts == model.verify(pairs, statements) and all(isinstance(v, bool) for v in verdicts)
            with pytest.raises(ValueError, match="answer"):
                model.answer(pictures[:1], ["what colour is the circle?"])


def _world(tmp_path: Path):
    from maskvlp.config import WorldConfig
    from maskvlp.data.synthetic import SyntheticWorld

    return SyntheticWorld(WorldConfig(image_size=32, train_scenes=24, test_scenes=8))


def _official_files(tmp_path: Path, task: str, layout: str) -> list[str]:
    """Files in a dataset's own layout, written from the world, with one image deleted from each split."""
    from maskvlp.data.synthetic import task_export

    world, out = _world(tmp_path), tmp_path / "files"
    if task == "vqa" and layout == "official":
        train = list(task_export.export_vqa_v2(world, "train", out))
        test = list(task_export.export_vqa_v2(world, "test", out, subtype="val2014"))
        (out / "train2014" / "COCO_train2014_000000000003.png").unlink()
        (out / "val2014" / "COCO_val2014_000000000001.png").unlink()
        roots = [out, out]
    elif task == "vqa":
        train, test = [task_export.export_albef_vqa(world, "train", out)], [task_export.export_albef_vqa(world, "test", out)]
        first = json.loads(test[0].read_text())[0]["image"]
        (out / first).unlink()
        roots = [out, out]
    elif layout == "official":
        train, test = [task_export.export_nlvr2(world, "train", out, 40)], [task_export.export_nlvr2(world, "test", out, 10)]
        lefts = sorted((out / "images" / "test").glob("*-img0.png"))
        lefts[0].unlink()
        roots = [out / "images" / "train", out / "images" / "test"]
    else:
        train = [task_export.export_albef_nlvr2(world, "train", out, 40)]
        test = [task_export.export_albef_nlvr2(world, "test", out, 10)]
        (out / json.loads(test[0].read_text())[0]["images"][1]).unlink()
        roots = [out, out]
    return [f"task.train_files=[{','.join(map(str, train))}]", f"task.test_files=[{','.join(map(str, test))}]",
            f"task.train_image_root={roots[0]}", f"task.test_image_root={roots[1]}"]


@pytest.mark.parametrize("task,layout", [("vqa", "official"), ("vqa", "albef"), ("nlvr2", "official"),
                                         ("nlvr2", "albef")])
def test_tasks_run_end_to_end_on_files_in_the_datasets_own_layouts(tmp_path, task, layout):
    """Fine-tune and evaluate from files as the datasets ship them: a missing image is skipped and counted,
    never a crash; with a 4-answer vocabulary most questions have no answer in it: left out of training
    (counted), kept in evaluation."""
    settings = _official_files(tmp_path, task, layout)
    extra = ["task.source=files", "train.max_steps=2", *settings] + (["task.num_answers=4"] if task == "vqa" else [])
    cfg = _cfg(tmp_path, task, "none", *extra)
    result, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert result.steps == 2 and rows is not None
    report = json.loads((Path(cfg.output_dir) / "eval" / "results.json").read_text())
    notes = " ".join(report["notes"])
    assert "skipped: unreadable image" in notes, notes
    (row,) = report["results"].values()
    if task == "vqa":
        assert len(cfg.task.answers) == 4 and "left out: no answer in the 4-answer vocabulary" in notes
        assert row["n"] == 8 * 6 - 6  # every test question but the 6 about the deleted picture
        assert 0 <= row["overall"] <= 100
    else:
        assert row["n"] == 9 and 0 <= row["accuracy"] <= 100
    assert result.bad_samples >= (1 if layout == "official" and task == "vqa" else 0)


def test_retrieval_finetunes_on_karpathy_files_and_shows_the_zero_shot_start(tmp_path):
    from maskvlp.config import load_config
    from maskvlp.data.synthetic import export_albef_json, task_export

    world = _world(tmp_path)
    train_json = task_export.export_karpathy_train(world, "train", tmp_path / "files")
    _, test_json = export_albef_json(world, "test", tmp_path / "files")
    pre = load_config("albef", "tiny", [*TINY, "train.max_steps=2", f"output_dir={tmp_path / 'pre'}"])
    train(pre, show_progress=False)
    cfg = prepare("retrieval", str(tmp_path / "pre"),
                  [*TASK_TINY, f"output_dir={tmp_path / 'ret'}", "task.source=files", "train.max_steps=2",
                   f"task.train_files=[{train_json}]", f"task.test_files=[{test_json}]",
                   f"task.train_image_root={tmp_path / 'files'}", f"task.test_image_root={tmp_path / 'files'}"])
    assert [o.name for o in cfg.objectives] == ["itc", "itm"] and cfg.data.source == "json"
    _, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert {"fine-tuned · itc", "zero-shot (start) · itc"} <= set(rows)


def test_a_dual_encoder_start_finetunes_retrieval_with_its_own_itc_and_nothing_fused(tmp_path):
    """From `clip` (no fusion encoder): retrieval trains the start's ITC alone and ranks by it; VQA says in one
    line that it needs a fusion encoder, and takes a fresh one by override."""
    from maskvlp.config import ConfigError, load_config

    dual = [o for o in TASK_TINY if not o.startswith("model.fusion.depth=")]
    pre = load_config("clip", "tiny", [*dual, "train.max_steps=2", f"output_dir={tmp_path / 'pre'}"])
    train(pre, show_progress=False)
    cfg = prepare("retrieval", str(tmp_path / "pre"), [*dual, f"output_dir={tmp_path / 'ret'}", "train.max_steps=2"])
    assert cfg.objectives == pre.objectives and cfg.task.init_recipe == "clip"
    _, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert {"fine-tuned · itc", "zero-shot (start) · itc"} <= set(rows)
    assert not any("itm" in name for name in rows)
    with pytest.raises(ConfigError, match="without a fusion encoder.*model.fusion.depth=2") as err:
        prepare("vqa", str(tmp_path / "pre"), [*dual, f"output_dir={tmp_path / 'vqa'}"])
    assert "\n" not in str(err.value)
    fused = prepare("vqa", str(tmp_path / "pre"), [*dual, f"output_dir={tmp_path / 'vqa'}", "model.fusion.depth=2"])
    assert fused.model.fusion.depth == 2 and fused.model.text.depth == pre.model.text.depth


def test_vqa_on_two_gloo_processes_matches_one_process(tmp_path):
    """torchrun DDP: the same global batch over 2 ranks gives the losses of 1 process (first 3 steps)."""
    import os
    import subprocess
    import sys

    common = [*TASK_TINY, "train.max_steps=3", "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = ["-m", "maskvlp.cli", "finetune", "vqa", "--from", "none", "--size", "tiny", "--no-evaluate", *common]
    one = subprocess.run([sys.executable, *cli, f"output_dir={tmp_path / 'one'}"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cli,
                          f"output_dir={tmp_path / 'two'}"], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-4 * max(1.0, abs(a[step])), (step, a[step], b[step])
