"""Video for video-text retrieval: SCL's frame sampling, real video files (PyAV), the world's motion
clips and twins, and MSR-VTT files written by the exporter and read back in all three layouts."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from maskvlp.config import WorldConfig
from maskvlp.data.datasets import DataFormatError
from maskvlp.data.synthetic import COLOURS, DIRECTIONS, SyntheticWorld, export_msrvtt
from maskvlp.data.synthetic.motion import OPPOSITE, clip_scenes
from maskvlp.data.synthetic.scenes import _apart
from maskvlp.data.tasks.msrvtt_files import read_msrvtt, read_twins
from maskvlp.data.video import _decode, read_video, sample_frame_indices, write_video


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(seed=5, image_size=64, captions_per_scene=5, max_objects=4))


# --------------------------------------------------------------------------------------------
# Frame sampling
# --------------------------------------------------------------------------------------------
def test_uniform_sampling_takes_segment_middles():
    assert sample_frame_indices(8, 4) == [1, 3, 5, 7]
    assert sample_frame_indices(10, 5, "uniform") == [1, 3, 5, 7, 9]
    assert sample_frame_indices(8, 8) == list(range(8))
    assert sample_frame_indices(1, 3) == [0, 0, 0]
    short = sample_frame_indices(3, 8)
    assert len(short) == 8 and short == sorted(short) and set(short) == {0, 1, 2}


def test_random_sampling_draws_one_frame_per_segment():
    rng = np.random.default_rng(0)
    seen = set()
    for total, frames in [(8, 4), (30, 8), (9, 4), (3, 8), (1, 4), (100, 1)]:
        for _ in range(20):
            idx = sample_frame_indices(total, frames, "random", rng)
            assert len(idx) == frames and idx == sorted(idx) and all(0 <= i < total for i in idx)
            for k, i in enumerate(idx):
                start, end = k * total // frames, (k + 1) * total // frames
                assert start <= i < max(end, start + 1)
            if (total, frames) == (30, 8):
                seen.update(idx)
    assert len(seen) > 20  # really random, not the middles
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)
    with pytest.raises(ValueError):
        sample_frame_indices(8, 4, "random")  # no rng
    with pytest.raises(ValueError):
        sample_frame_indices(8, 4, "middle")


# --------------------------------------------------------------------------------------------
# Video files
# --------------------------------------------------------------------------------------------
def _painted(frames: int = 8, height: int = 48, width: int = 64) -> np.ndarray:
    """Flat frames, each a different colour (so frame order can be read back)."""
    out = np.zeros((frames, height, width, 3), np.uint8)
    for k in range(frames):
        out[k] = (20 + 28 * k, 200 - 20 * k, 90 + 10 * (k % 3))
    return out


@pytest.mark.parametrize("suffix,tolerance", [(".mp4", 20), (".webm", 3)])
def test_write_read_round_trip(tmp_path: Path, suffix: str, tolerance: int):
    frames = _painted()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=4)
    assert path == tmp_path / f"clip{suffix}" and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp left
    back = read_video(path, 8)
    assert back is not None and back.shape == frames.shape and back.dtype == np.uint8
    centre = (slice(None), slice(8, 40), slice(8, 56))
    assert np.abs(back[centre].astype(int) - frames[centre]).max() <= tolerance
    means = back[centre].reshape(8, -1, 3).mean(axis=1)
    order = [int(np.argmin(np.abs(means[k] - frames[:, 0, 0]).sum(axis=1))) for k in range(8)]
    assert order == list(range(8))
    four = read_video(path, 4, size=32)
    assert four is not None and four.shape == (4, 32, 32, 3)
    assert np.abs(four[:, 16, 16].astype(int) - frames[[1, 3, 5, 7], 0, 0]).max() <= tolerance  # middles


def test_write_video_rejects_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "clip.gif", np.zeros((2, 32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_bad_files_give_none_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    noise = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    for suffix in (".mp4", ".webm"):
        data = write_video(tmp_path / f"full{suffix}", noise).read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        out = read_video(cut, 4)
        assert out is None or out.shape == (4, 64, 64, 3)
    # a cut webm still decodes its first frames: the sample comes from what decoded
    partial = _decode(tmp_path / "cut.webm")
    assert 0 < len(partial) < 16
    assert read_video(tmp_path / "cut.webm", 4).shape == (4, 64, 64, 3)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="maskvlp.data.video"):
        assert read_video(junk, 4) is None
        assert read_video(tmp_path / "missing.mp4", 4) is None
    assert len(caplog.records) == 2 and "junk.mp4" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------------------------
# Motion clips
# --------------------------------------------------------------------------------------------
def _positions(world: SyntheticWorld, clip) -> np.ndarray:
    return np.array([(s.objects[clip.mover].x, s.objects[clip.mover].y) for s in clip_scenes(clip.scene, world.clip_frames)])


def _pixel_box(obj, size: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = obj.bbox
    return slice(max(0, int(y0 * size) - 1), int(np.ceil(y1 * size)) + 1), slice(max(0, int(x0 * size) - 1), int(np.ceil(x1 * size)) + 1)


_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def test_clip_moves_its_mover_the_captioned_way(world: SyntheticWorld):
    size, matte = world.cfg.image_size, 0
    directions = set()
    for index in range(12):
        clip = world.motion_clip("train", index)
        directions.add(clip.direction)
        frames = world.render_clip(clip)
        assert frames.shape == (world.clip_frames, size, size, 3) and frames.dtype == np.uint8
        pos = _positions(world, clip)
        shift = pos[-1] - pos[0]
        step = np.array(_STEP[clip.direction])
        assert 0.3 <= float(shift @ step) <= 0.36 and abs(float(shift @ step[::-1])) < 1e-9
        assert np.allclose(np.diff(pos, axis=0), shift / (world.clip_frames - 1))  # linear in time
        scenes = clip_scenes(clip.scene, world.clip_frames)
        for scene in scenes:
            x0, y0, x1, y1 = scene.objects[clip.mover].bbox
            assert 0 <= x0 and x1 <= 1 and 0 <= y0 and y1 <= 1
            assert all(_apart(scene.objects[clip.mover], o) for k, o in enumerate(scene.objects) if k != clip.mover)
        # only the mover changes: outside its boxes at frame 0 and t, pixels are identical
        for t in range(1, world.clip_frames):
            keep = np.ones((size, size), bool)
            for scene in (scenes[0], scenes[t]):
                keep[_pixel_box(scene.objects[clip.mover], size)] = False
            assert np.array_equal(frames[0][keep], frames[t][keep])
            assert not np.array_equal(frames[0], frames[t])
        # find a matte mover by its colour along its path: it goes the caption's way
        obj = clip.scene.objects[clip.mover]
        if obj.material == "matte":
            matte += 1
            band = np.zeros((size, size), bool)
            for scene in scenes:
                band[_pixel_box(scene.objects[clip.mover], size)] = True
            close = np.abs(frames.astype(int) - np.array(COLOURS[obj.colour])).max(axis=-1) <= 14
            centroids = [np.argwhere(close[t] & band).mean(axis=0)[::-1] / size for t in (0, -1)]
            assert float((centroids[1] - centroids[0]) @ step) > 0.25
        words = {"left": "left", "right": "right", "up": "up", "down": "down"}
        assert len(clip.captions) == world.cfg.captions_per_scene
        for caption in clip.captions:
            assert obj.shape in caption and words[clip.direction] in caption
            assert not any(words[d] in caption.split() or f"{d}wards" in caption for d in DIRECTIONS if d != clip.direction)
    assert matte >= 2 and len(directions) >= 3


def test_fewer_frames_sample_the_same_motion(world: SyntheticWorld):
    clip = world.motion_clip("val", 3)
    full, four = world.render_clip(clip), world.render_clip(clip, frames=4)
    assert four.shape[0] == 4 and np.array_equal(four[0], full[0]) and np.array_equal(four[-1], full[-1])


def test_twins_share_the_first_frame_and_move_apart(world: SyntheticWorld):
    swap = {"left": "right", "right": "left", "up": "down", "down": "up", "upwards": "downwards", "downwards": "upwards"}
    for index in range(6):
        a, b = world.motion_twin("test", index)
        assert b.direction == OPPOSITE[a.direction] and a.mover == b.mover and a.clip_id != b.clip_id
        assert a.scene.objects[a.mover].x == b.scene.objects[b.mover].x and a.scene.objects[a.mover].y == b.scene.objects[b.mover].y
        assert [o for k, o in enumerate(a.scene.objects) if k != a.mover] == [o for k, o in enumerate(b.scene.objects) if k != b.mover]
        fa, fb = world.render_clip(a), world.render_clip(b)
        assert np.array_equal(fa[0], fb[0]) and not np.array_equal(fa[-1], fb[-1])
        assert [" ".join(swap.get(w, w) for w in c.split()) for c in a.captions] == list(b.captions)
        other = world.motion_clip("test", index)
        assert other.scene.objects != a.scene.objects  # twin pair `index` is not clip `index`


def test_heldout_movers_and_seen_train_pairs(world: SyntheticWorld):
    held = world.heldout_pairs
    for index in range(8):
        clip = world.motion_clip("heldout", index)
        mover = clip.scene.objects[clip.mover]
        assert (mover.colour, mover.shape) in held
        a, _ = world.motion_twin("heldout", index)
        assert (a.scene.objects[a.mover].colour, a.scene.objects[a.mover].shape) in held
        for split in ("train", "test"):
            assert all((o.colour, o.shape) not in held for o in world.motion_clip(split, index).scene.objects)


def test_clips_are_deterministic_across_worlds(world: SyntheticWorld):
    again = SyntheticWorld(WorldConfig(seed=5, image_size=64, captions_per_scene=5, max_objects=4))
    for index in (0, 7):
        assert again.motion_clip("train", index) == world.motion_clip("train", index)
        assert again.motion_twin("heldout", index) == world.motion_twin("heldout", index)
        clip = world.motion_clip("train", index)
        assert np.array_equal(again.render_clip(clip), world.render_clip(clip))
    other = SyntheticWorld(WorldConfig(seed=6, image_size=64))
    assert other.motion_clip("train", 0) != world.motion_clip("train", 0)


# --------------------------------------------------------------------------------------------
# MSR-VTT export and readers
# --------------------------------------------------------------------------------------------
def test_export_msrvtt_reads_back_in_all_layouts(world: SyntheticWorld, tmp_path: Path):
    paths = export_msrvtt(world, tmp_path, train_clips=3, test_clips=4)
    videos = tmp_path / "videos"
    assert sorted(p.name for p in videos.iterdir()) == [f"video{k}.mp4" for k in range(7)]
    official = read_msrvtt(paths["data"], videos)
    assert len(official) == 7 * world.cfg.captions_per_scene
    assert {r.video_id for r in official if r.split == "train"} == {"video0", "video1", "video2"}
    test = read_msrvtt(paths["data"], videos, split="test")
    assert {r.video_id for r in test} == {"video3", "video4", "video5", "video6"}
    assert {(r.video_id, r.twin) for r in test} == {("video3", "video4"), ("video4", "video3"), ("video5", "video6"), ("video6", "video5")}
    assert all(Path(r.video).is_file() for r in official)
    assert read_twins(paths["twins"]) == [("video3", "video4"), ("video5", "video6")]
    first = {r.video_id: r.caption for r in reversed(test)}
    jsfusion = read_msrvtt(paths["jsfusion"], videos)
    assert [r.video_id for r in jsfusion] == ["video3", "video4", "video5", "video6"]
    assert all(r.caption == first[r.video_id] and r.split == "test" and Path(r.video).is_file() for r in jsfusion)
    header, row = paths["jsfusion"].read_text().splitlines()[:2]
    assert header == "key,vid_key,video_id,sentence" and row.startswith("ret0,msr3,video3,")
    listed = read_msrvtt([paths["train"], paths["test"]], tmp_path)
    assert [(r.video, r.caption, r.video_id, r.twin) for r in listed] == [(r.video, r.caption, r.video_id, r.twin) for r in official]
    # the files are real videos of the clips, and twins start alike
    a, b = (read_video(videos / f"video{k}.mp4", 8) for k in (3, 4))
    assert a.shape == (8, 64, 64, 3) and np.abs(a[0].astype(int) - b[0]).max() <= 2
    assert np.abs(a[-1].astype(int) - b[-1]).max() > 50
    data = json.loads(paths["data"].read_text())
    assert [v["id"] for v in data["videos"]] == list(range(7)) and len({s["sen_id"] for s in data["sentences"]}) == 35


def test_export_webm_is_found_by_the_reader(world: SyntheticWorld, tmp_path: Path):
    paths = export_msrvtt(world, tmp_path, train_clips=1, test_clips=2, suffix=".webm")
    records = read_msrvtt(paths["data"], tmp_path / "videos")
    assert {Path(r.video).name for r in records} == {"video0.webm", "video1.webm", "video2.webm"}
    with pytest.raises(ValueError, match="even"):
        export_msrvtt(world, tmp_path, train_clips=0, test_clips=3)


_OFFICIAL_VIDEO = {"video_id": "video0", "split": "train", "id": 0}
_BAD_FILES = [
    ("MSRVTT_data.json", {"videos": {}, "sentences": []}, ['"videos"']),
    ("MSRVTT_data.json", {"videos": [_OFFICIAL_VIDEO, {"split": "test"}], "sentences": []}, ["videos entry 1", '"video_id"']),
    ("MSRVTT_data.json", {"videos": [_OFFICIAL_VIDEO], "sentences": [{"video_id": "video0", "caption": "a"},
                                                                     {"video_id": "video0", "caption": 3}]},
     ["sentences entry 1", '"caption"']),
    ("MSRVTT_data.json", {"videos": [_OFFICIAL_VIDEO], "sentences": [{"video_id": "video9", "caption": "a"}]},
     ["sentences entry 0", '"video_id"', "video9"]),
    ("MSRVTT_data.json", {"videos": [_OFFICIAL_VIDEO, _OFFICIAL_VIDEO], "sentences": []}, ["videos entry 1", "twice"]),
    ("list.json", [{"video": "a.mp4", "caption": "x"}, {"caption": "y"}], ["entry 1", '"video"']),
    ("list.json", [{"video": "a.mp4", "caption": 7}], ["entry 0", '"caption"']),
    ("list.json", 42, ["got a int"]),
    ("test.csv", "key,vid_key,video_id,caption\nret0,msr1,video1,a dog\n", ["line 1", '"sentence"']),
    ("test.csv", "key,vid_key,video_id,sentence\nret0,msr1,video1,a dog\nret1,msr2,video2\n", ["line 3", "fields"]),
    ("test.csv", "key,vid_key,video_id,sentence\nret0,msr1,,a dog\n", ["line 2", '"video_id"']),
]


@pytest.mark.parametrize("name,content,expected", _BAD_FILES)
def test_bad_annotation_files_name_file_entry_and_field(tmp_path: Path, name: str, content, expected: list[str]):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataFormatError) as err:
        read_msrvtt(path, tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for part in expected:
        assert part in message


def test_bad_twins_file(tmp_path: Path):
    path = tmp_path / "twins.json"
    path.write_text(json.dumps([["video1", "video2"], ["video3"]]))
    with pytest.raises(DataFormatError, match="entry 1"):
        read_twins(path)
