"""Two-stream streaming of a live video: incremental flow equals extracted flow; fused scores equal offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cv2.optflow")

from datamodules.flow.extraction import IncrementalFlow, extract_video_flow
from datamodules.flow.methods import FlowMethod, FlowSettings, TVL1Params
from datamodules.flow.schema import FlowFile
from datamodules.flow.synthetic_motion import WaveTexture
from datamodules.flow.transforms import FrameTransformSettings
from datamodules.video.synthetic import write_video
from vidrec.models.two_stream import StreamResNet
from vidrec.streaming.two_stream import TwoStreamStreaming
from vidrec.streaming.video import read_frames


def moving_video(path: Path, frames: int = 10, height: int = 40, width: int = 48) -> np.ndarray:
    """A texture moving by (2, -1) px a frame, written losslessly; returns the frames."""
    texture = WaveTexture(np.random.default_rng(3), wavelengths=(6.0, 16.0))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    grey = np.stack([np.clip(texture(xx - 2 * t, yy + t), 0, 255) for t in range(frames)]).astype(np.uint8)
    rgb = np.stack([grey, np.roll(grey, 3, axis=2), 255 - grey], axis=-1)
    write_video(path, rgb, lossless=True)
    return rgb


@pytest.mark.parametrize(
    "settings",
    [
        FlowSettings(method=FlowMethod.DIS, short_side=32),
        FlowSettings(method=FlowMethod.TVL1, short_side=None, tvl1=TVL1Params.fast(), compute_scale=0.5),
    ],
    ids=["dis-resized", "tvl1-half-scale"],
)
def test_streamed_flow_equals_the_extracted_flow(tmp_path: Path, settings: FlowSettings) -> None:
    moving_video(tmp_path / "v.mp4")
    assert extract_video_flow(tmp_path / "v.mp4", tmp_path / "v.h5", settings) == 9
    with FlowFile(tmp_path / "v.h5") as stored:
        expected = stored.read_fields(0, 9)  # (9, 2, h, w) uint8
    live = IncrementalFlow(settings)
    fields = [live.push(f.rgb) for f in read_frames(tmp_path / "v.mp4")]
    assert fields[0] is None  # the first frame has no predecessor
    np.testing.assert_array_equal(np.stack([f for f in fields[1:] if f is not None]), expected)
    live.reset()
    assert live.push(np.zeros((40, 48, 3), np.uint8)) is None


def test_two_stream_streams_each_frame_once_and_equals_the_offline_window(tmp_path: Path) -> None:
    rgb_frames = moving_video(tmp_path / "v.mp4", frames=12)
    settings = FlowSettings(method=FlowMethod.DIS, short_side=32)
    extract_video_flow(tmp_path / "v.mp4", tmp_path / "v.h5", settings)
    torch.manual_seed(0)
    L, W = 3, 6
    rgb_net = StreamResNet(num_classes=4, in_channels=3, dropout=0.0)
    flow_net = StreamResNet(num_classes=4, in_channels=2 * L, dropout=0.0)
    transform = FrameTransformSettings(crop_size=24, short_side=32)
    live = TwoStreamStreaming(
        rgb_net,
        flow_net,
        stack_length=L,
        flow_settings=settings,
        rgb_transform=transform,
        flow_transform=transform,
        window=W,
        rgb_weight=1.0,
        flow_weight=1.5,
    )
    # offline: the data module's transforms of the stored fields and of the frames, the fused window model
    with FlowFile(tmp_path / "v.h5") as stored:
        fields = live.prepare_flow(stored.read_fields(0, 11)).transpose(0, 1)[None]  # (1, 2, 11, S, S)
    frames = live.prepare_rgb(rgb_frames).transpose(0, 1)[None]  # (1, 3, 12, S, S)
    reports = 0
    for t, frame in enumerate(read_frames(tmp_path / "v.mp4")):
        out = live.push(frame.rgb)
        assert out.frame == t and out.ready == (t >= W - 1)
        if out.ready:
            with torch.no_grad():
                offline = live.model({"rgb": frames[:, :, t - W + 1 : t + 1], "flow": fields[:, :, t - W + 1 : t]})
            torch.testing.assert_close(out.result.logits, offline, atol=1e-5, rtol=1e-4)
            p = 0.4 * out.result.members["rgb"][0].exp() + 0.6 * out.result.members["flow"][0].exp()
            torch.testing.assert_close(out.scores, p, atol=1e-5, rtol=1e-4)  # weighted mean of softmax, 1 : 1.5
            reports += 1
    assert reports == 12 - W + 1
    assert "input 'flow': window 5" in str(live.describe())
    with pytest.raises(ValueError, match="window=3 frames hold 2 flow fields, fewer than one stack of 3"):
        TwoStreamStreaming(
            rgb_net, flow_net, stack_length=L, flow_settings=settings, rgb_transform=transform,
            flow_transform=transform, window=3,
        )  # fmt: skip
