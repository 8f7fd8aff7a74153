"""Synthetic action videos: moving, growing/shrinking and rotating shapes, written in the UCF101 layout.

Each class is a motion that needs time to be recognised (one frame does not tell "growing" from "shrinking"):
squares moving left/right/up/down, circles growing/shrinking, bars rotating clockwise/anticlockwise; every class has
a partner with the reverse motion. Every video draws its own background colour, a shape colour one brightness offset
lighter or darker on every channel, shape size, start position, speed, a static distractor rectangle of a random
colour and pixel noise, so the task is not solvable from colour or position. Generation is deterministic from
``seed`` (each video has its own generator seeded by ``(seed, class, video)``).

Mirror-image classes (left/right, clockwise/anticlockwise) swap under a horizontal flip: train with
``horizontal_flip: false``.

Layout written (as UCF101's): ``<out>/<Class>/v_<Class>_g<GG>_c01.mp4``, ``<out>/ucfTrainTestlist/classInd.txt``,
``trainlist01.txt`` and ``testlist01.txt``; every fourth group is in the test list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticSettings",
    "SyntheticSummary",
    "write_video",
    "render_action",
    "generate_synthetic_actions",
]

SYNTHETIC_CLASSES = (
    "SquareMovingLeft",
    "SquareMovingRight",
    "CircleGrowing",
    "CircleShrinking",
    "BarRotatingClockwise",
    "BarRotatingAnticlockwise",
    "SquareMovingUp",
    "SquareMovingDown",
)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    lossless: bool = False,
    faststart: bool = False,
    gop: int | None = None,
    preset: str = "veryfast",
) -> Path:
    """Write uint8 RGB frames ``(T, H, W, 3)`` as an h264 mp4 with PyAV.

    Args:
        path: output file (parents are created).
        frames: uint8 ``(T, H, W, 3)``; H and W must be even unless ``lossless``.
        fps: frame rate.
        lossless: encode with libx264rgb at qp 0 (decoded frames equal ``frames`` exactly); else libx264 yuv420p.
        faststart: put the index (moov atom) before the data, as streaming servers do.
        gop: key-frame interval; None leaves the encoder default.
        preset: x264 speed preset ("ultrafast" writes and decodes fastest, files are larger).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        codec_options: dict[str, object] = {"qp": "0"} if lossless else {"crf": "20"}
        codec_options["preset"] = preset
        if gop is not None:
            codec_options["g"] = str(gop)
        stream.options = codec_options
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@dataclass
class SyntheticSettings:
    """What to generate.

    Attributes:
        num_classes: how many of ``SYNTHETIC_CLASSES`` (taken in order).
        videos_per_class: videos per class; every fourth is in the test list.
        frames: frames per video.
        size: frame height and width (even).
        fps: frame rate written in the container.
        noise: standard deviation of the Gaussian pixel noise (0-255 scale).
        seed: generation seed.
        workers: processes writing videos in parallel (the output does not depend on it).
    """

    num_classes: int = 8
    videos_per_class: int = 100
    frames: int = 32
    size: int = 64
    fps: int = 25
    noise: float = 12.0
    seed: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(f"num_classes must be in 1..{len(SYNTHETIC_CLASSES)}, got {self.num_classes}")
        if self.size % 2 or self.size < 16:
            raise ValueError(f"size must be even and >= 16 (h264 yuv420p), got {self.size}")
        if self.videos_per_class < 1 or self.frames < 2:
            raise ValueError(f"need videos_per_class >= 1 and frames >= 2, got {self.videos_per_class}, {self.frames}")


@dataclass
class SyntheticSummary:
    """What was written: the data root, counts and wall time."""

    root: Path
    annotation_dir: Path
    train_videos: int
    test_videos: int
    seconds: float


def _square_masks(rng: np.random.Generator, t: np.ndarray, size: int, direction: tuple[int, int]) -> np.ndarray:
    half = rng.uniform(0.08, 0.16) * size
    travel = rng.uniform(0.35, 0.6) * size  # distance covered over the video
    speed = travel / max(len(t) - 1, 1)
    along0 = rng.uniform(half, size - half - travel)  # start so the square stays inside
    across = rng.uniform(half, size - half)
    dx, dy = direction
    moving = along0 + speed * t if dx + dy > 0 else size - along0 - speed * t
    cx = moving if dx else np.full_like(t, across)
    cy = moving if dy else np.full_like(t, across)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (np.abs(xx - cx[:, None, None]) <= half) & (np.abs(yy - cy[:, None, None]) <= half)  # (T, S, S)


def _circle_masks(rng: np.random.Generator, t: np.ndarray, size: int, growing: bool) -> np.ndarray:
    small, large = rng.uniform(0.06, 0.14) * size, rng.uniform(0.28, 0.4) * size
    radius = small + (large - small) * t / max(len(t) - 1, 1)
    if not growing:
        radius = radius[::-1]
    cx, cy = rng.uniform(0.35, 0.65, size=2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius[:, None, None] ** 2  # (T, S, S)


def _bar_masks(rng: np.random.Generator, t: np.ndarray, size: int, clockwise: bool) -> np.ndarray:
    length, width = rng.uniform(0.5, 0.8) * size, rng.uniform(0.08, 0.14) * size
    turn = rng.uniform(0.4, 0.9) * np.pi  # total rotation over the video (< pi: no aliasing of the bar's symmetry)
    angle = rng.uniform(0, np.pi) + (1 if clockwise else -1) * turn * t / max(len(t) - 1, 1)
    cx, cy = rng.uniform(0.4, 0.6, size=2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ux, uy = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]  # image y points down: +angle is clockwise
    along = (xx - cx) * ux + (yy - cy) * uy
    across = -(xx - cx) * uy + (yy - cy) * ux
    return (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)  # (T, S, S)


_RENDERERS: dict[str, Callable[[np.random.Generator, np.ndarray, int], np.ndarray]] = {
    "SquareMovingLeft": lambda r, t, s: _square_masks(r, t, s, (-1, 0)),
    "SquareMovingRight": lambda r, t, s: _square_masks(r, t, s, (1, 0)),
    "SquareMovingUp": lambda r, t, s: _square_masks(r, t, s, (0, -1)),
    "SquareMovingDown": lambda r, t, s: _square_masks(r, t, s, (0, 1)),
    "CircleGrowing": lambda r, t, s: _circle_masks(r, t, s, True),
    "CircleShrinking": lambda r, t, s: _circle_masks(r, t, s, False),
    "BarRotatingClockwise": lambda r, t, s: _bar_masks(r, t, s, True),
    "BarRotatingAnticlockwise": lambda r, t, s: _bar_masks(r, t, s, False),
}


def render_action(class_name: str, rng: np.random.Generator, frames: int, size: int, noise: float) -> np.ndarray:
    """One video of ``class_name`` as uint8 ``(T, S, S, 3)``."""
    if class_name not in _RENDERERS:
        raise KeyError(f"unknown synthetic class {class_name!r}; expected one of {SYNTHETIC_CLASSES}")
    t = np.arange(frames, dtype=np.float32)
    mask = _RENDERERS[class_name](rng, t, size)[..., None]  # (T, S, S, 1)
    background = rng.uniform(40, 215, size=3).astype(np.float32)
    # The shape differs from the background by one brightness offset on all channels (darker on a light background,
    # lighter on a dark one): a clear luminance edge whatever the hue. Independent per-channel contrasts make
    # colour-invariant edge features hard to learn from a few hundred clips (measured, see the config).
    brightness = rng.uniform(80, 150) * (1.0 if background.mean() < 128 else -1.0)
    foreground = np.clip(background + np.float32(brightness), 0, 255)  # (3,)
    video = np.where(mask, foreground, background)  # (T, S, S, 3) float32
    # A static distractor rectangle of a third colour.
    y0, x0 = rng.integers(0, size * 3 // 4, size=2)
    h, w = rng.integers(size // 10, size // 4, size=2)
    video[:, y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
    video += rng.standard_normal(size=(*video.shape[:3], 1), dtype=np.float32) * np.float32(noise)  # grey noise
    return np.clip(video, 0, 255, out=video).astype(np.uint8)


def _write_one(job: tuple[Path, int, int, SyntheticSettings]) -> None:
    path, label, video, settings = job
    rng = np.random.default_rng([settings.seed, label, video])  # per video: independent of order and workers
    frames = render_action(SYNTHETIC_CLASSES[label], rng, settings.frames, settings.size, settings.noise)
    write_video(path, frames, fps=settings.fps, preset="ultrafast")


def generate_synthetic_actions(out: str | Path, settings: SyntheticSettings | None = None) -> SyntheticSummary:
    """Write the synthetic action set in the UCF101 layout (split 1) under ``out``.

    Returns:
        The root, annotation folder, train/test counts and the wall time in seconds.
    """
    settings = settings or SyntheticSettings()
    start = time.perf_counter()
    root = Path(out)
    annotations = root / "ucfTrainTestlist"
    annotations.mkdir(parents=True, exist_ok=True)
    class_names = SYNTHETIC_CLASSES[: settings.num_classes]
    jobs = [(label, video) for label in range(len(class_names)) for video in range(settings.videos_per_class)]
    relatives = [f"{class_names[c]}/v_{class_names[c]}_g{v + 1:02d}_c01.mp4" for c, v in jobs]
    arguments = [(root / rel, c, v, settings) for rel, (c, v) in zip(relatives, jobs)]
    if settings.workers > 1:
        with ProcessPoolExecutor(settings.workers) as pool:
            list(pool.map(_write_one, arguments, chunksize=8))
    else:
        for argument in arguments:
            _write_one(argument)
    # Group g is video g - 1 of its class; every fourth group is a test video.
    train_lines = [f"{rel} {c + 1}" for rel, (c, v) in zip(relatives, jobs) if (v + 1) % 4]
    test_lines = [rel for rel, (c, v) in zip(relatives, jobs) if (v + 1) % 4 == 0]
    (annotations / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(class_names)))
    (annotations / "trainlist01.txt").write_text("".join(line + "\n" for line in train_lines))
    (annotations / "testlist01.txt").write_text("".join(line + "\n" for line in test_lines))
    return SyntheticSummary(root, annotations, len(train_lines), len(test_lines), time.perf_counter() - start)
