"""Flow extraction: the quantisation, known motion recovered, the schema, resuming, and bad videos never fatal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("cv2.optflow")

from datamodules.flow.extraction import ExtractionStatus, extract_flow, extract_video_flow, find_videos
from datamodules.flow.methods import FlowMethod, FlowSettings, TVL1Params
from datamodules.flow.schema import FlowFile, FlowFileError, dequantize, flow_path, quantize, verify_flow_file
from datamodules.flow.synthetic_motion import WaveTexture
from datamodules.video.decoding import QuarantineLog
from datamodules.video.synthetic import write_video


def shifting_video(path: Path, frames: int = 6, size: int = 48, dx: int = 2, dy: int = -1) -> Path:
    """A texture translating by (dx, dy) pixels a frame, written losslessly."""
    texture = WaveTexture(np.random.default_rng(0), wavelengths=(6.0, 16.0))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    grey = np.stack([np.clip(texture(xx - dx * t, yy - dy * t), 0, 255) for t in range(frames)]).astype(np.uint8)
    return write_video(path, np.repeat(grey[..., None], 3, axis=-1), lossless=True)


def test_quantisation_is_linear_with_a_fixed_bound() -> None:
    v = np.array([-25.0, -20.0, -10.0, 0.0, 10.0, 20.0, 25.0])
    q = quantize(v, 20.0)
    assert q.tolist() == [0, 0, 64, 128, 191, 255, 255]  # 0 -> 128, +-bound -> 255 / 0, beyond saturates
    inside = np.linspace(-20, 20, 101)
    assert np.abs(dequantize(quantize(inside, 20.0), 20.0) - inside).max() <= 20 / 255 + 1e-6  # half a level
    assert np.allclose(dequantize(255 - quantize(inside, 20.0), 20.0), -dequantize(quantize(inside, 20.0), 20.0))


@pytest.mark.parametrize("method", [FlowMethod.DIS, FlowMethod.FARNEBACK, FlowMethod.TVL1])
def test_known_translation_is_recovered_and_stored_by_the_schema(tmp_path: Path, method: FlowMethod) -> None:
    video = shifting_video(tmp_path / "v.mp4")
    settings = FlowSettings(method=method, short_side=None, tvl1=TVL1Params.fast())
    out = tmp_path / "v.h5"
    assert extract_video_flow(video, out, settings) == 5
    header = verify_flow_file(out)
    assert (header.video_frames, header.size, header.method, header.bound) == (6, (48, 48), method.value, 20.0)
    assert header.params == settings.as_dict()
    with FlowFile(out) as flow, h5py.File(out) as raw:
        fields = dequantize(flow.read_fields(0, 5), header.bound)  # (5, 2, H, W) pixels
        assert raw["frame_indices"][:].tolist() == [[i, i + 1] for i in range(5)]
        assert json.loads(raw.attrs["params"]) == settings.as_dict()
    inner = fields[:, :, 8:-8, 8:-8]  # away from the borders, where texture enters and leaves
    assert np.median(inner[:, 0]) == pytest.approx(2.0, abs=0.25)
    assert np.median(inner[:, 1]) == pytest.approx(-1.0, abs=0.25)


def test_compute_scale_returns_full_size_displacements(tmp_path: Path) -> None:
    video = shifting_video(tmp_path / "v.mp4", size=64, dx=4, dy=0)
    extract_video_flow(video, tmp_path / "v.h5", FlowSettings(short_side=None, compute_scale=0.5))
    with FlowFile(tmp_path / "v.h5") as flow:
        fields = dequantize(flow.read_fields(0, flow.num_fields), 20.0)
    assert fields.shape[-2:] == (64, 64)
    assert np.median(fields[:, 0, 12:-12, 12:-12]) == pytest.approx(4.0, abs=0.5)


def test_a_collection_resumes_and_bad_videos_are_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    shifting_video(root / "a" / "good.mp4")
    shifting_video(root / "a" / "good2.mp4")
    one = root / "b" / "one_frame.mp4"
    shifting_video(one, frames=1)
    (root / "b" / "empty.mp4").write_bytes(b"")
    (root / "b" / "text.avi").write_text("not a video")
    truncated = shifting_video(root / "b" / "truncated.mp4")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    out = tmp_path / "flow"
    settings = FlowSettings(short_side=32)
    with pytest.warns(RuntimeWarning, match="skipping"):
        summary = extract_flow(root, out, settings, progress=False)
    assert (summary.done, summary.failed) == (2, 4)
    listed = dict(QuarantineLog.read(out / "quarantine.tsv"))
    assert set(listed) == {str(root / "b" / n) for n in ("one_frame.mp4", "empty.mp4", "text.avi", "truncated.mp4")}
    assert "one_frame.mp4: 1 decodable frame(s); optical flow needs at least two" in listed[str(one)]
    assert not list(out.rglob("*.partial"))
    assert verify_flow_file(flow_path(out, "a/good")).size == (32, 32)

    # a second run skips verified files, redoes a half-written one and one made with other parameters
    (out / "a" / "good2.h5").rename(out / "a" / "good2.h5.partial")
    with h5py.File(out / "a" / "good.h5", "r+") as f:
        f.attrs["params"] = json.dumps({"method": "farneback"})
    videos = [(i, p) for i, p in find_videos(root) if i.startswith("a/")]
    with pytest.warns(RuntimeWarning, match="made with other parameters"):
        again = extract_flow(root, out, settings, videos=videos, progress=False)
    assert {o.video_id: o.status for o in again.outcomes} == {
        "a/good": ExtractionStatus.DONE,
        "a/good2": ExtractionStatus.DONE,
    }
    assert not (out / "a" / "good2.h5.partial").exists()
    third = extract_flow(root, out, settings, videos=videos, progress=False)
    assert third.skipped == 2 and third.done == 0


def test_half_written_file_fails_verification_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "v.h5"
    extract_video_flow(shifting_video(tmp_path / "v.mp4"), out, FlowSettings(short_side=None))
    with h5py.File(out, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(FlowFileError, match=f"{out}: attribute 'complete' is not set"):
        verify_flow_file(out)
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(FlowFileError, match="not a readable HDF5 file"):
        verify_flow_file(out)


@pytest.mark.slow
def test_worker_processes_give_the_same_files(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for k in range(3):
        shifting_video(root / f"v{k}.mp4", dx=k + 1)
    extract_flow(root, tmp_path / "one", FlowSettings(short_side=None), workers=1, progress=False)
    extract_flow(root, tmp_path / "two", FlowSettings(short_side=None), workers=2, progress=False)
    for k in range(3):
        with FlowFile(tmp_path / "one" / f"v{k}.h5") as a, FlowFile(tmp_path / "two" / f"v{k}.h5") as b:
            assert np.array_equal(a.read_fields(0, a.num_fields), b.read_fields(0, b.num_fields))
    assert os.path.exists(tmp_path / "two" / "v0.h5")
