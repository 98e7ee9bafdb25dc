"""Video-text retrieval as a recipe: pre-training's ITC + ITM on (clip, caption) pairs through SCL's flexible
vision encoder (a clip is T frames; a picture is one), evaluated with the MSR-VTT protocol (one caption
per test video, R@1/5/10 and median rank, ITC and ITC + ITM re-rank) at T frames and at T = 1 (the same
model on the first frame only: what a clip adds over a picture).

Motion twins (the world's, or ``task.twins_file``) are pairs of clips with the same first frame and
opposite motions: for each twin's caption, is its own clip scored above its twin (text -> video among the
two; a tie counts half, so a model that sees one frame sits exactly at 50%)? ``binding_motion`` asks the
converse: is a clip's caption scored above the same caption with its direction reversed?
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from maskvlp.config import ConfigError, RunConfig
from maskvlp.data.datasets import PretrainDataset
from maskvlp.data.retrieval_sets import RetrievalSet, _index_captions
from maskvlp.data.tasks.examples import VideoCaption
from maskvlp.data.tasks.msrvtt_files import read_msrvtt, read_twins
from maskvlp.data.tokenizer import Tokenizer
from maskvlp.data.transforms import to_tensor
from maskvlp.data.video import read_video, sample_frame_indices
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.eval.retrieval import encode_images, encode_texts, evaluate_retrieval, itm_scorer
from maskvlp.tasks.common import status, synthetic_test_splits, world_for

_REVERSE = {"left": "right", "right": "left", "up": "down", "down": "up", "upwards": "downwards",
            "downwards": "upwards", "leftwards": "rightwards", "rightwards": "leftwards"}


def reverse_motion(text: str) -> str:
    """The caption with every direction word reversed ("moves left" -> "moves right")."""
    return re.sub(r"\b(" + "|".join(_REVERSE) + r")\b", lambda m: _REVERSE[m.group(1)], text)


def _clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) normalised."""
    return torch.stack([to_tensor(f) for f in frames])


class VideoTrainSet(PretrainDataset):
    """Clips with their captions; an item is ``task.frames`` frames (SCL: one random frame per segment, drawn
    per (seed, epoch, clip) so resuming is exact) and one caption. ``clips`` are rendered frames (synthetic)
    or video files, decoded when the item is read (an unreadable one gives None: replaced and counted).
    With ``twins`` (pairs of item indices) the engine batches each clip beside its motion twin."""

    def __init__(self, clips: np.ndarray | Sequence[str], captions: Sequence[Sequence[str]], frames: int,
                 sampling: str, image_size: int, seed: int = 0, twins: np.ndarray | None = None):
        super().__init__(seed)
        self.clips, self.captions = clips, [list(c) for c in captions]
        self.frames, self.sampling, self.image_size = frames, sampling, image_size
        self.twins = twins

    def pairs(self) -> np.ndarray | None:
        return self.twins

    def __len__(self) -> int:
        return len(self.captions)

    def captions_of(self, index: int) -> Sequence[str]:
        return self.captions[index]

    def image_key_of(self, index: int) -> int:
        return index

    def __getitem__(self, index: int) -> dict | None:
        rng = self.rng(index)
        text = self.captions[index][int(rng.integers(len(self.captions[index])))]
        clip = self.clips[index]
        if isinstance(clip, str):
            frames = read_video(clip, self.frames, self.sampling, rng, size=self.image_size)
            if frames is None:
                return None
        else:
            frames = clip[sample_frame_indices(len(clip), self.frames, self.sampling, rng)]
        return {"image": _clip_tensor(frames), "text": text, "image_key": index, "index": index}


def training_set(cfg: RunConfig, show_progress: bool = False) -> VideoTrainSet:
    """The world's clips of moving objects, or MSR-VTT-style annotation files (their train split)."""
    if cfg.task.source == "synthetic":
        world, count = world_for(cfg), cfg.task.train_clips
        with status(show_progress, f"rendering {count:,} training clips"):
            if cfg.task.train_twins:  # twin pairs of the train split, batched together (docs/tasks.md, "Video")
                clips = [clip for k in range(count // 2) for clip in world.motion_twin("train", k)]
            else:
                clips = [world.motion_clip("train", i) for i in range(count)]
            frames = np.stack([world.render_clip(c) for c in clips])
        twins = np.arange(len(clips)).reshape(-1, 2) if cfg.task.train_twins else None
        return VideoTrainSet(frames, [c.captions for c in clips], cfg.task.frames, cfg.task.frame_sampling,
                             cfg.model.vision.image_size, cfg.train.seed, twins)
    if not cfg.task.train_files:
        raise ConfigError("fine-tuning video retrieval on files needs task.train_files=[MSRVTT_data.json] and "
                          "task.train_image_root=<video folder>")
    by_video: dict[str, list[str]] = {}
    for entry in read_msrvtt(cfg.task.train_files, cfg.task.train_image_root, split="train"):
        by_video.setdefault(str(entry.video), []).append(entry.caption)
    return VideoTrainSet(list(by_video), list(by_video.values()), cfg.task.frames, cfg.task.frame_sampling,
                         cfg.model.vision.image_size, cfg.train.seed)


@dataclass
class VideoEvalSet:
    """Test clips, one caption each (MSR-VTT's protocol), the frames to feed (T frames: uniform; T = 1: the
    first frame) and the twin pairs among them (indices)."""

    name: str
    captions: list[str]
    load: Callable[[int, int], torch.Tensor | None]  # (clip index, frames) -> (T, 3, H, W) or None
    twins: list[tuple[int, int]]


def synthetic_eval_set(world, split: str, pairs: int) -> VideoEvalSet:
    """The world's first ``pairs`` motion-twin pairs of ``split``: clips 2k and 2k+1 are twin pair k
    (``world.motion_twin(split, k)``), rendered once; what evaluation and scripts/motion_probe.py read."""
    clips = [clip for k in range(pairs) for clip in world.motion_twin(split, k)]
    frames = [world.render_clip(c) for c in clips]

    def load(index: int, count: int) -> torch.Tensor:
        clip = frames[index]
        picked = clip[:1] if count == 1 else clip[sample_frame_indices(len(clip), count, "uniform")]
        return _clip_tensor(picked)

    return VideoEvalSet(split, [c.captions[0] for c in clips], load,
                        [(2 * k, 2 * k + 1) for k in range(pairs)])


def _file_set(entries: list[VideoCaption], twins_file: str, image_size: int) -> VideoEvalSet:
    firsts: dict[str, VideoCaption] = {}
    for entry in entries:
        firsts.setdefault(entry.video_id, entry)  # one caption per test video (MSR-VTT 1k-A)
    videos = list(firsts.values())
    cache: dict[tuple[int, int], torch.Tensor | None] = {}

    def load(index: int, count: int) -> torch.Tensor | None:
        if (index, count) not in cache:
            mode = "first" if count == 1 else "uniform"
            frames = read_video(str(videos[index].video), count, mode, size=image_size)
            cache[(index, count)] = None if frames is None else _clip_tensor(frames)
        return cache[(index, count)]

    position = {v.video_id: i for i, v in enumerate(videos)}
    twins = [(position[a], position[b]) for a, b in (read_twins(twins_file) if twins_file else [])
             if a in position and b in position]
    return VideoEvalSet("test", [v.caption for v in videos], load, twins)


def evaluation_sets(cfg: RunConfig, show_progress: bool = False) -> list[VideoEvalSet]:
    """``eval.num_images`` test clips (motion twin pairs) of the world's test and held-out splits, or the test
    videos of ``task.test_files``."""
    if cfg.task.source == "synthetic":
        world = world_for(cfg, test_scenes=cfg.eval.num_images)
        with status(show_progress, "rendering the test clips"):
            return [synthetic_eval_set(world, split, max(1, num // 2)) for split, num in
                    synthetic_test_splits(world, cfg.eval.num_images)]
    if not cfg.task.test_files:
        raise ConfigError("evaluating video retrieval on files needs task.test_files=[MSRVTT_JSFUSION_test.csv or "
                          "MSRVTT_data.json] and task.test_image_root=<video folder>")
    entries = read_msrvtt(cfg.task.test_files, cfg.task.test_image_root, split="test")
    return [_file_set(entries, cfg.task.twins_file, cfg.model.vision.image_size)]


def _retrieval_set(eval_set: VideoEvalSet, frames: int) -> tuple[RetrievalSet, list[int]]:
    """The readable clips at ``frames`` frames as a retrieval set, and which clips of the set they are."""
    kept = [i for i in range(len(eval_set.captions)) if eval_set.load(i, frames) is not None]
    texts, txt2img, img2txt = _index_captions([[eval_set.captions[i]] for i in kept])
    probes = [(k, "motion", eval_set.captions[i], reverse_motion(eval_set.captions[i])) for k, i in enumerate(kept)
              if reverse_motion(eval_set.captions[i]) != eval_set.captions[i]]
    clips = [eval_set.load(i, frames) for i in kept]
    rset = RetrievalSet(clips, len(kept), texts, txt2img, img2txt, len(eval_set.captions) - len(kept), None, probes)
    return rset, kept


def twin_accuracy(model, rset: RetrievalSet, twins: Sequence[tuple[int, int]], tokenizer: Tokenizer,
                  cfg: RunConfig) -> dict[str, float]:
    """Text -> video among each twin pair, ``{"itc": %, "itm": %}`` (a tie, equal to float rounding, counts half)."""
    if not twins:
        return {}
    images = encode_images(model, rset.image_batch, rset.num_images, cfg.eval.batch_size)
    texts = encode_texts(model, tokenizer, rset.texts, cfg.model.text.max_len, cfg.eval.batch_size)
    own = torch.tensor([i for a, b in twins for i in (a, b)])
    other = torch.tensor([i for a, b in twins for i in (b, a)])
    text = own  # one caption per clip: caption i belongs to clip i

    def accuracy(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
        mine, theirs = score(own, text).float(), score(other, text).float()
        # identical clips can differ in the last bits when they sit at other rows of a batch: that is a tie
        tie = torch.isclose(mine, theirs, rtol=1e-5, atol=1e-6)
        return 100 * float(((mine > theirs) & ~tie).float().add(0.5 * tie.float()).mean())

    out = {"itc": accuracy(lambda i, t: (images.embed[i] * texts.embed[t]).sum(-1))}
    if model.has_fusion:
        out["itm"] = accuracy(itm_scorer(model, images, texts, cfg.eval.batch_size, "logit"))
    return out


def evaluate(module: Pretrainer, sets: Sequence[VideoEvalSet], tokenizer: Tokenizer, cfg: RunConfig, label: str,
             show_progress: bool = False) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Rows ``"<label> T=<frames> · <split> · itc | itm k=<k>"`` at the task's frames and at T = 1."""
    rows: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    model = module.model
    for eval_set in sets:
        for frames in dict.fromkeys((cfg.task.frames, 1)):
            rset, kept = _retrieval_set(eval_set, frames)
            if frames == cfg.task.frames and rset.skipped_images:
                notes.append(f"{eval_set.name}: {rset.skipped_images:,} of {len(eval_set.captions):,} videos skipped: "
                             "could not be decoded")
            position = {clip: k for k, clip in enumerate(kept)}  # twins whose two clips both decoded
            twins = [(position[a], position[b]) for a, b in eval_set.twins if a in position and b in position]
            found = evaluate_retrieval(model, tokenizer, rset, cfg.eval, cfg.model.text.max_len,
                                       label=f"{label} T={frames}", show_progress=show_progress)
            extra = twin_accuracy(model, rset, twins, tokenizer, cfg)
            for row, metrics in found.items():
                if row == "mlm":
                    continue
                if row.split()[0] in extra:
                    metrics["twins"] = extra[row.split()[0]]
                metrics["n"] = float(rset.num_images)
                rows[f"{label} T={frames} · {eval_set.name} · {row}"] = metrics
    return rows, notes
