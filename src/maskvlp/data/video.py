"""Reading and writing video files (PyAV), and SCL's frame sampling, for video-text retrieval.

SCL's flexible vision encoder reads a clip as T frames: the clip is cut into T equal segments and
one frame is taken from each (the middle one for evaluation, a random one for training). Clips
are short, so a file is decoded once in full and the frames are picked from what decoded; a
missing, foreign or truncated file gives ``None`` (a warning, never an exception), like
:func:`maskvlp.data.datasets.load_image`, so the dataset layer can count and skip it.

Why PyAV and not torchcodec (measured on these machines, CPU only):

* PyAV 18.1's wheel bundles FFmpeg: ``av/`` 32 MB plus ``av.libs/`` 72 MB, ~104 MB installed,
  and decodes and encodes with nothing else on the system.
* torchcodec 0.17's wheel is ~10 MB (23 MB unpacked) because it loads the *system's* FFmpeg
  shared libraries (``libtorchcodec_core{4..9}.so`` link ``libavcodec.so.58`` to ``.63``) at
  run time; these machines have none (``ldconfig -p | grep libavcodec`` is empty), so it cannot
  decode here. (That wheel is also a CUDA build: its import already fails on this CPU-only torch,
  "Could not load this library: libtorchcodec_image.so", for want of libtorch_cuda / libnvrtc.)
* PyAV reading a 64x64, 8-frame clip (open, decode every frame to RGB, sample, stack), median of
  50 while a benchmark job kept both CPU cores busy: mpeg4 .mp4 1.7-2.1 ms (min 1.6 ms), VP9
  .webm 3.3-4.4 ms. Decoding is single-threaded: with FFmpeg's default (one thread per core) the VP9
  median was 44-72 ms on the busy cores (min 3.4 ms); data-loader workers parallelise across
  clips instead.

Writing: ``.mp4`` is MPEG-4 Part 2 at quantiser 1-2 (``qmin``/``qmax``; flat synthetic colours
come back within a few levels, chroma is 4:2:0 so edges blur), ``.webm`` is VP9 lossless in
4:4:4 (within 1 level: only the RGB/YUV rounding), ``.avi`` MPEG-4, ``.mkv`` VP9 lossless.
"""
from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

from maskvlp.data.transforms import resize_square
from maskvlp.files import atomic_write

log = logging.getLogger(__name__)

SAMPLING = ("uniform", "random", "first")
# suffix -> (container format, default codec)
_FORMATS = {".mp4": ("mp4", "mpeg4"), ".avi": ("avi", "mpeg4"), ".webm": ("webm", "libvpx-vp9"),
            ".mkv": ("matroska", "libvpx-vp9")}
_CODEC_SETUP = {  # codec -> (pixel format, encoder options)
    "mpeg4": ("yuv420p", {"qmin": "1", "qmax": "2"}),  # ~ ffmpeg -q:v 2; "qscale" is not an encoder option
    "libvpx-vp9": ("yuv444p", {"lossless": "1"}),
}


def sample_frame_indices(total: int, frames: int, mode: str = "uniform", rng: np.random.Generator | None = None) -> list[int]:
    """``frames`` sorted indices into a ``total``-frame clip, one per equal segment: its middle
    ("uniform", evaluation) or a random frame of it ("random", training; needs ``rng``); "first": the
    clip's first ``frames`` frames (the one-frame baseline reads frame 0). A clip shorter than ``frames``
    repeats frames."""
    if total < 1:
        raise ValueError(f"a clip needs at least one frame, got total={total}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if mode == "uniform":
        return [int((k + 0.5) * total / frames) for k in range(frames)]
    if mode == "first":
        return [min(k, total - 1) for k in range(frames)]
    if mode != "random":
        raise ValueError(f"unknown sampling mode {mode!r}; choose from {SAMPLING}")
    if rng is None:
        raise ValueError("random frame sampling needs an rng")
    starts = [k * total // frames for k in range(frames + 1)]
    return [int(rng.integers(starts[k], max(starts[k] + 1, starts[k + 1]))) for k in range(frames)]


def _decode(path: str | Path) -> list[np.ndarray]:
    """Every frame of the first video stream as RGB that decoded before any error; a warning when
    decoding stopped early or gave nothing."""
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for stream in container.streams.video[:1]:
                stream.codec_context.thread_count = 1  # see the module docstring: FFmpeg's per-core threads starve
                out.extend(frame.to_ndarray(format="rgb24") for frame in container.decode(stream))
    except Exception as err:  # noqa: BLE001 - any decoder failure means "bad sample", never a crash
        log.warning("%s %s after %d frames: %s", "truncated video" if out else "skipping unreadable video", path, len(out), err)
        return out
    if not out:
        log.warning("skipping %s: no decodable video frame", path)
    return out


def read_video(path: str | Path, frames: int, mode: str = "uniform", rng: np.random.Generator | None = None,
               size: int | None = None) -> np.ndarray | None:
    """uint8 [frames, H, W, 3] RGB sampled by :func:`sample_frame_indices` (resized to size x size,
    bicubic, when ``size`` is given), or None when nothing decodes."""
    decoded = _decode(path)
    if not decoded:
        return None
    picked = [decoded[i] for i in sample_frame_indices(len(decoded), frames, mode, rng)]
    if size is not None:
        picked = [np.asarray(resize_square(f, size)) for f in picked]
    return np.stack(picked)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 4, codec: str | None = None) -> Path:
    """Write uint8 [T, H, W, 3] RGB (H and W even) as a real video file, atomically; the container
    and default codec come from the suffix (.mp4, .webm, .avi, .mkv)."""
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(f"{path}: unknown video suffix; choose from {sorted(_FORMATS)}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even (4:2:0 video), got {height}x{width}")
    container_format, default_codec = _FORMATS[path.suffix.lower()]
    codec = codec or default_codec
    pix_fmt, options = _CODEC_SETUP.get(codec, ("yuv420p", {}))

    def write(tmp: Path) -> None:
        # the temp file's suffix is not the video's, so the container format is named explicitly
        with av.open(str(tmp), "w", format=container_format) as container:
            stream = container.add_stream(codec, rate=int(fps), options=dict(options))
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
            container.mux(stream.encode(None))

    return atomic_write(path, write)
