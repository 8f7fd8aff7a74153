"""RAFT as a flow method: weights from a local file only, the schema and quantisation of every other method."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cv2.optflow")

from torchvision.models.optical_flow import raft_small

from datamodules.flow.extraction import IncrementalFlow, extract_video_flow, to_gray_short_side
from datamodules.flow.methods import FlowMethod, FlowSettings, build_estimator, load_raft
from datamodules.flow.schema import FlowFile, quantize, verify_flow_file
from datamodules.flow.synthetic_motion import WaveTexture
from datamodules.video.decoding import DecodeSettings, RobustVideoReader
from datamodules.video.synthetic import write_video


@pytest.fixture(scope="module")
def raft_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised raft_small saved as a plain state_dict (no trained weights here: no downloads)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return path


def tiny_video(path: Path, frames: int = 4, height: int = 24, width: int = 32) -> Path:
    texture = WaveTexture(np.random.default_rng(0), wavelengths=(6.0, 16.0))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    grey = np.stack([np.clip(texture(xx - 2 * t, yy), 0, 255) for t in range(frames)]).astype(np.uint8)
    return write_video(path, np.repeat(grey[..., None], 3, axis=-1), lossless=True)


def test_raft_fields_follow_the_schema_and_quantisation(tmp_path: Path, raft_weights: Path) -> None:
    video = tiny_video(tmp_path / "v.mp4")
    settings = FlowSettings(
        method=FlowMethod.RAFT, raft_weights=str(raft_weights), raft_updates=2, short_side=None, device="cpu"
    )
    out = tmp_path / "v.h5"
    assert extract_video_flow(video, out, settings) == 3
    header = verify_flow_file(out)
    assert (header.method, header.size, header.video_frames) == ("raft", (24, 32), 4)
    assert header.params["raft"] == {"weights": str(raft_weights), "small": True, "updates": 2}
    assert FlowSettings.from_dict(header.params).as_dict() == settings.as_dict()  # round-trips (device aside)
    with FlowFile(out) as flow:
        stored = flow.read_fields(0, 3)
    assert stored.dtype == np.uint8 and stored.shape == (3, 2, 24, 32)

    # the same frames through the estimator, quantised with the fixed bound, are what the file holds
    clip = RobustVideoReader(DecodeSettings()).read(video, lambda n, fps: list(range(n)))
    assert clip is not None
    gray = to_gray_short_side(clip.frames, None)
    estimator = build_estimator(settings)
    raw = estimator(gray[0], gray[1])
    assert raw.dtype == np.float32 and raw.shape == (24, 32, 2) and np.isfinite(raw).all()
    np.testing.assert_array_equal(stored[0], quantize(raw.transpose(2, 0, 1), settings.bound))

    live = IncrementalFlow(settings)  # a live stream gives the stored field
    assert live.push(clip.frames[0]) is None
    np.testing.assert_array_equal(live.push(clip.frames[1]), stored[0])


def test_raft_weights_must_be_a_local_state_dict_of_the_chosen_model(tmp_path: Path, raft_weights: Path) -> None:
    with pytest.raises(ValueError, match="needs raft_weights"):
        FlowSettings(method=FlowMethod.RAFT)
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth.*never downloaded"):
        build_estimator(FlowSettings(method=FlowMethod.RAFT, raft_weights=str(missing), device="cpu"))

    state = torch.load(raft_weights, weights_only=True)
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(1)
    mismatched = tmp_path / "mismatched.pth"
    torch.save(state, mismatched)
    with pytest.raises(
        ValueError, match=r"mismatched.pth does not fit torchvision's raft_small: 1 missing.*--raft-large"
    ):
        load_raft(mismatched, small=True)
    with pytest.raises(ValueError, match="raft_small_random.pth does not fit torchvision's raft_large"):
        load_raft(raft_weights, small=False)

    pickled = tmp_path / "pickled.pth"
    torch.save(argparse.Namespace(weights=1), pickled)  # loading it would need code: refused
    with pytest.raises(ValueError, match="pickled.pth is not a loadable tensor state_dict"):
        load_raft(pickled)

    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": torch.load(raft_weights, weights_only=True)}, wrapped)
    assert load_raft(wrapped).training is False  # a checkpoint-style wrapper is unwrapped
