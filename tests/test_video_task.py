"""Video-text retrieval as a task: SCL's encoder fine-tuned on clips (ITC + ITM), the MSR-VTT protocol at T frames
and on the first frame alone, motion twins, real video files in MSR-VTT's layouts, zero-shot from an image model."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import TINY
from maskvlp.engine.trainer import train
from maskvlp.finetuning import evaluate_task_checkpoint, finetune_and_evaluate, prepare

VIDEO_TINY = [*TINY, "task.train_clips=24", "task.frames=2", "train.precision=fp32", "eval.num_images=8",
              "data.world.clip_frames=4"]


def _cfg(tmp_path: Path, source: str = "none", *extra: str):
    return prepare("video_retrieval", source, [*VIDEO_TINY, f"output_dir={tmp_path / 'video'}", *extra], size="tiny")


def test_video_retrieval_finetunes_on_clips_and_reports_both_frame_counts(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.model.vision.max_frames == 2 and [o.name for o in cfg.objectives] == ["itc", "itm"]
    result, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert result.steps == 6
    for split in ("test", "heldout"):
        for frames in (2, 1):
            row = rows[f"fine-tuned T={frames} · {split} · itc"]
            assert row["n"] == 8 and 0 <= row["img_r1"] <= 100 and row["img_medr"] >= 1
            assert 0 <= row["binding_motion"] <= 100
        # the first frames of twins are the same pixels: one frame cannot tell them apart, exactly chance
        assert rows[f"fine-tuned T=1 · {split} · itc"]["twins"] == 50.0
        assert rows[f"fine-tuned T=1 · {split} · itm k=3"]["twins"] == 50.0


def test_video_retrieval_on_msrvtt_files_skips_a_video_that_does_not_decode(tmp_path):
    from maskvlp.config import WorldConfig
    from maskvlp.data.synthetic import SyntheticWorld, task_export

    world = SyntheticWorld(WorldConfig(image_size=32, train_scenes=24, test_scenes=8, clip_frames=4))
    files = task_export.export_msrvtt(world, tmp_path / "files", train_clips=12, test_clips=8)
    broken = tmp_path / "files" / "videos" / "video12.mp4"  # the first test video, cut in half
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    cfg = _cfg(tmp_path, "none", "task.source=files", "train.max_steps=2", f"task.train_files=[{files['data']}]",
               f"task.test_files=[{files['jsfusion']}]", f"task.twins_file={files['twins']}",
               f"task.train_image_root={tmp_path / 'files' / 'videos'}",
               f"task.test_image_root={tmp_path / 'files' / 'videos'}")
    result, rows = finetune_and_evaluate(cfg, show_progress=False)
    assert result.steps == 2
    assert rows["fine-tuned T=2 · test · itc"]["n"] == 7
    notes = " ".join(json.loads((Path(cfg.output_dir) / "eval" / "results.json").read_text())["notes"])
    assert "test: 1 of 8 videos skipped: could not be decoded" in notes
    assert rows["fine-tuned T=1 · test · itc"]["twins"] == 50.0  # 3 intact twin pairs, identical first frames


def test_a_pretrained_image_model_reads_clips_zero_shot(tmp_path):
    from maskvlp.config import load_config

    pre = load_config("albef", "tiny", [*TINY, "train.max_steps=2", f"output_dir={tmp_path / 'pre'}"])
    train(pre, show_progress=False)
    rows = evaluate_task_checkpoint(tmp_path / "pre", ["eval.num_images=8", "task.frames=2",
                                                       "data.world.clip_frames=4"],
                                    str(tmp_path / "zs"), show_progress=False, task="video_retrieval")
    assert {"pre-trained (no fine-tuning) T=2 · test · itc", "pre-trained (no fine-tuning) T=1 · test · itc"} <= set(rows)
    cfg = _cfg(tmp_path, str(tmp_path / "pre"), "train.max_steps=1")
    assert cfg.model.vision.max_frames == 2 and cfg.task.init_recipe == "albef"
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.trainer import text_specials
    from maskvlp.finetuning import _job_for

    job, _ = _job_for(cfg, False)
    weights = job.build_module(cfg, text_specials(load_tokenizer()), True).state_dict()
    # the temporal embedding starts fresh, and its EMA copy starts equal to it (distillation reads the teacher)
    assert torch.equal(weights["model.vision.temporal_embed"], weights["model.teacher.models.vision.temporal_embed"])
    finetune_and_evaluate(cfg, evaluate=False, show_progress=False)


def test_twin_training_clips_share_a_first_frame_and_are_batched_beside_their_twin(tmp_path):
    from maskvlp.distributed import DistInfo
    from maskvlp.engine.batches import StepBatches
    from maskvlp.tasks.video_retrieval import reverse_motion, training_set

    cfg = _cfg(tmp_path, "none", "task.train_twins=true", "task.train_clips=8")
    data = training_set(cfg)
    assert len(data) == 8 and data.pairs().tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    for a, b in data.pairs():
        assert (data.clips[a][0] == data.clips[b][0]).all() and not (data.clips[a] == data.clips[b]).all()
        assert data.captions_of(b) == [reverse_motion(c) for c in data.captions_of(a)]
    batches = StepBatches(data, 4, seed=0, dist=DistInfo(), collate=lambda items: {"index": [i["index"] for i in items]})
    first = batches[0]["index"]
    assert first[0] // 2 == first[1] // 2 and first[2] // 2 == first[3] // 2
    plain = training_set(_cfg(tmp_path, "none", "task.train_clips=8"))
    assert plain.pairs() is None
