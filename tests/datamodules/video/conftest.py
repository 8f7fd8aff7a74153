"""Fixtures for the video data tests: lossless videos with known frames and a tiny synthetic UCF101-layout set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.video.synthetic import SyntheticSettings, SyntheticSummary, generate_synthetic_actions, write_video


def known_frames(num_frames: int = 20, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 where every frame differs (frame t has value t in the first pixel)."""
    frames = np.random.default_rng(seed).integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(num_frames, dtype=np.uint8)
    return frames


@pytest.fixture()
def lossless_video(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A lossless (libx264rgb, qp 0) mp4 at 25 fps and its true frames (T, H, W, 3)."""
    frames = known_frames()
    return write_video(tmp_path / "lossless.mp4", frames, fps=25, lossless=True), frames


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSummary:
    """3 classes x 4 videos (3 train + 1 test each) of 12 frames at 32 x 32."""
    settings = SyntheticSettings(num_classes=3, videos_per_class=4, frames=12, size=32, seed=1)
    return generate_synthetic_actions(tmp_path_factory.mktemp("synthetic"), settings)
