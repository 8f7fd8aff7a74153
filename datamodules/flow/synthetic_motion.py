"""A synthetic motion-only action set: classes differ in motion alone, never in what a single frame shows.

It tests the claim of two-stream ConvNets (Simonyan & Zisserman, 2014) that the temporal stream sees what the
spatial stream cannot: an RGB frame of any class is drawn from the same appearance distribution, so a spatial stream
must stay near chance, a flow stream can be near perfect, and late fusion should be at least as good as flow.

Every video: a smooth random background texture, and a disc of another smooth random texture (radius 15-25% of
the frame) that either **translates** right/left/up/down at an integer speed (wrapping around the frame: torus
motion, so the disc's position in any single frame is uniform over the frame whatever the class) or **rotates**
clockwise/anticlockwise in place at a random position (the texture is isotropic noise, so a rotated disc looks like
any other). Speed, texture, phase and position are drawn per video; every frame gets pixel noise. Generation is
deterministic from ``seed`` (each video seeded by ``(seed, class, video)``).

Horizontal flips swap right/left and clockwise/anticlockwise: train on this set with ``horizontal_flip: false``.

Layout written (UCF101's, as ``datamodules.video.synthetic``): ``<out>/<Class>/v_<Class>_g<GG>_c01.mp4`` and
``<out>/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt``; every fourth group is a test video.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.video.synthetic import SyntheticSummary, write_video

__all__ = ["MOTION_CLASSES", "MotionSettings", "generate_motion_set", "render_motion"]

MOTION_CLASSES = (
    "DiscMovingRight",
    "DiscMovingLeft",
    "DiscMovingDown",
    "DiscMovingUp",
    "DiscRotatingClockwise",
    "DiscRotatingAnticlockwise",
)
_DIRECTIONS = {"Right": (1, 0), "Left": (-1, 0), "Down": (0, 1), "Up": (0, -1)}


@dataclass
class MotionSettings:
    """What to generate.

    Attributes:
        num_classes: how many of ``MOTION_CLASSES`` (in order: the four translations first).
        videos_per_class: videos per class; every fourth is in the test list.
        frames: frames per video.
        size: frame height and width (even).
        fps: frame rate written in the container.
        noise: standard deviation of the per-frame pixel noise (0-255 scale).
        seed: generation seed.
        workers: processes writing videos in parallel (the output does not depend on it).
    """

    num_classes: int = 6
    videos_per_class: int = 24
    frames: int = 24
    size: int = 64
    fps: int = 25
    noise: float = 4.0
    seed: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(MOTION_CLASSES):
            raise ValueError(f"num_classes must be in 2..{len(MOTION_CLASSES)}, got {self.num_classes}")
        if self.size % 2 or self.size < 32:
            raise ValueError(f"size must be even and >= 32, got {self.size}")
        if self.videos_per_class < 4 or self.frames < 2:
            raise ValueError(f"need videos_per_class >= 4 and frames >= 2, got {self.videos_per_class}, {self.frames}")


def _smooth_texture(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Isotropic random texture ``(size, size)`` in [0, 255]: white noise low-passed by a Gaussian (via FFT)."""
    noise = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    gain = np.exp(-2 * (np.pi * sigma_px) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * gain))
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-9)
    return np.clip(128 + 50 * smooth, 0, 255)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``image (S, S)`` at float coordinates, wrapping around the borders."""
    s = image.shape[0]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    a = image[y0 % s, x0 % s] * (1 - fx) + image[y0 % s, (x0 + 1) % s] * fx
    b = image[(y0 + 1) % s, x0 % s] * (1 - fx) + image[(y0 + 1) % s, (x0 + 1) % s] * fx
    return a * (1 - fy) + b * fy


def render_motion(class_name: str, rng: np.random.Generator, frames: int, size: int, noise: float) -> np.ndarray:
    """One video of ``class_name`` as uint8 ``(T, S, S, 3)`` (grey content, three equal channels)."""
    if class_name not in MOTION_CLASSES:
        raise KeyError(f"unknown motion class {class_name!r}; expected one of {MOTION_CLASSES}")
    background = _smooth_texture(rng, size, rng.uniform(1.0, 2.0))
    texture = _smooth_texture(rng, size, rng.uniform(1.0, 2.0))
    radius = rng.uniform(0.15, 0.25) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = rng.uniform(0, size, size=2)  # disc centre at t = 0 (uniform: any phase of the torus)
    video = np.empty((frames, size, size), dtype=np.float64)
    if class_name.startswith("DiscMoving"):
        dx, dy = _DIRECTIONS[class_name.removeprefix("DiscMoving")]
        speed = int(rng.integers(1, 4))  # pixels a frame
        for t in range(frames):
            px, py = cx + dx * speed * t, cy + dy * speed * t
            ox = (xx - px + size / 2) % size - size / 2  # offset to the disc centre on the torus
            oy = (yy - py + size / 2) % size - size / 2
            inside = ox**2 + oy**2 <= radius**2
            video[t] = np.where(inside, _bilinear(texture, xx - dx * speed * t, yy - dy * speed * t), background)
    else:
        omega = rng.uniform(0.15, 0.25) * (1 if class_name == "DiscRotatingClockwise" else -1)
        ox = (xx - cx + size / 2) % size - size / 2
        oy = (yy - cy + size / 2) % size - size / 2
        inside = ox**2 + oy**2 <= radius**2
        for t in range(frames):
            c, s = np.cos(-omega * t), np.sin(-omega * t)  # image y points down: +omega is clockwise on screen
            sx, sy = cx + c * ox - s * oy, cy + s * ox + c * oy  # where the texture point came from
            video[t] = np.where(inside, _bilinear(texture, sx, sy), background)
    video += rng.standard_normal(video.shape) * noise
    grey = np.clip(np.rint(video), 0, 255).astype(np.uint8)  # (T, S, S)
    return np.repeat(grey[..., None], 3, axis=-1)  # (T, S, S, 3)


def _write_one(job: tuple[Path, int, int, MotionSettings]) -> None:
    path, label, video, settings = job
    rng = np.random.default_rng([settings.seed, label, video])
    frames = render_motion(MOTION_CLASSES[label], rng, settings.frames, settings.size, settings.noise)
    write_video(path, frames, fps=settings.fps, preset="ultrafast")


def generate_motion_set(out: str | Path, settings: MotionSettings | None = None) -> SyntheticSummary:
    """Write the motion-only set in the UCF101 layout (split 1) under ``out``; counts and wall time."""
    settings = settings or MotionSettings()
    start = time.perf_counter()
    root = Path(out)
    annotations = root / "ucfTrainTestlist"
    annotations.mkdir(parents=True, exist_ok=True)
    names = MOTION_CLASSES[: settings.num_classes]
    jobs = [(label, video) for label in range(len(names)) for video in range(settings.videos_per_class)]
    relatives = [f"{names[c]}/v_{names[c]}_g{v + 1:02d}_c01.mp4" for c, v in jobs]
    arguments = [(root / rel, c, v, settings) for rel, (c, v) in zip(relatives, jobs)]
    if settings.workers > 1:
        with ProcessPoolExecutor(settings.workers) as pool:
            list(pool.map(_write_one, arguments, chunksize=4))
    else:
        for argument in arguments:
            _write_one(argument)
    train = [f"{rel} {c + 1}" for rel, (c, v) in zip(relatives, jobs) if (v + 1) % 4]
    test = [rel for rel, (c, v) in zip(relatives, jobs) if (v + 1) % 4 == 0]
    (annotations / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (annotations / "trainlist01.txt").write_text("".join(line + "\n" for line in train))
    (annotations / "testlist01.txt").write_text("".join(line + "\n" for line in test))
    return SyntheticSummary(root, annotations, len(train), len(test), time.perf_counter() - start)
