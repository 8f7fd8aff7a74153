"""The NTU ``.skeleton`` reader, writer, the folder converter and its bad-input handling."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from datamodules.skeleton.ntu_convert import EmptySkeletonError, convert_ntu_folder, skeleton_file_to_sample
from datamodules.skeleton.ntu_format import (
    SkeletonFormatError,
    parse_sample_name,
    read_skeleton_file,
    write_skeleton_file,
)
from datamodules.skeleton.protocols import ntu_missing_skeletons
from datamodules.skeleton.schema import read_skeleton_info


def _body(rng: np.random.Generator, x: float = 0.0) -> np.ndarray:
    """A standing body: 25 joints spread 0.4 m wide and 1.6 m tall, 3 m from the camera."""
    joints = np.stack([rng.uniform(-0.2, 0.2, 25) + x, np.linspace(-0.9, 0.7, 25), np.full(25, 3.0)], 1)
    return joints + rng.normal(0, 0.01, joints.shape)


def _write(path: Path, frames: int = 20, bodies: int = 1, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    per_frame, truth = [], []
    for _ in range(frames):
        js = [_body(rng, 0.8 * b) for b in range(bodies)]
        truth.append(js)
        per_frame.append([(f"7205759403790{b}", j) for b, j in enumerate(js)])
    write_skeleton_file(path, per_frame)
    return [np.stack(t) for t in truth]


def test_sample_names_are_parsed_and_bad_names_refused() -> None:
    n = parse_sample_name("/data/S017C003P020R002A060.skeleton")
    assert (n.setup, n.camera, n.performer, n.replication, n.action) == (17, 3, 20, 2, 60)
    with pytest.raises(ValueError, match="SsssCcccPpppRrrrAaaa"):
        parse_sample_name("clip_0001.skeleton")


def test_written_files_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "S001C001P001R001A001.skeleton"
    truth = _write(path, frames=15, bodies=2)
    text = path.read_text().splitlines()
    assert text[0] == "15" and text[1] == "2" and len(text[2].split()) == 10 and text[3] == "25"
    assert len(text[4].split()) == 12
    sk = read_skeleton_file(path)
    assert sk.num_frames == 15 and len(sk.bodies) == 2 and (sk.bodies_per_frame == 2).all()
    np.testing.assert_allclose(sk.bodies[0].joints, np.stack([t[0] for t in truth]), atol=1e-6)
    np.testing.assert_array_equal(sk.bodies[1].frames, np.arange(15))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines[:40], "truncated"),
        (lambda lines: lines[:3] + ["24"] + lines[4:], "expected 25 joints, got 24"),
        (lambda lines: lines[:5] + ["0.1 abc 3.0 1 2 3 4 0 1 0 0 2"] + lines[6:], "non-numeric"),
        (lambda lines: lines[:5] + ["0.1 0.2"] + lines[6:], "12 values"),
        (lambda lines: ["twenty"] + lines[1:], "frame count"),
    ],
)
def test_broken_files_raise_errors_naming_file_and_line(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "S001C001P001R001A001.skeleton"
    _write(path, frames=3)
    path.write_text("\n".join(mutate(path.read_text().splitlines())) + "\n")
    with pytest.raises(SkeletonFormatError, match=message) as err:
        read_skeleton_file(path)
    assert str(path) in str(err.value) and "line" in str(err.value)


def test_a_file_without_any_body_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "S001C001P001R001A001.skeleton"
    write_skeleton_file(path, [[] for _ in range(10)])
    with pytest.raises(EmptySkeletonError, match="no body is tracked in any of its 10 frames"):
        skeleton_file_to_sample(path)


def test_folder_conversion_goes_past_broken_files_and_lists_them(tmp_path: Path) -> None:
    root = tmp_path / "skeletons"
    root.mkdir()
    _write(root / "S001C001P001R001A001.skeleton", frames=20)
    _write(root / "S001C002P002R001A002.skeleton", frames=20, bodies=2)
    broken = root / "S001C001P003R001A001.skeleton"
    _write(broken, frames=5)
    broken.write_text("\n".join(broken.read_text().splitlines()[:30]))
    write_skeleton_file(root / "S001C001P004R001A002.skeleton", [[] for _ in range(8)])
    missing_name = sorted(ntu_missing_skeletons(ntu60_only=True))[0]  # on the official list
    _write(root / f"{missing_name}.skeleton", frames=20)
    report = convert_ntu_folder(root, tmp_path / "out.h5", num_classes=60)
    assert report.written == 2
    reasons = dict(report.skipped)
    assert "truncated" in reasons[str(broken)]
    assert "no body" in reasons[str(root / "S001C001P004R001A002.skeleton")]
    assert "missing skeletons" in reasons[str(root / f"{missing_name}.skeleton")]
    info = read_skeleton_info(tmp_path / "out.h5")
    assert [s.name for s in info.samples] == ["S001C001P001R001A001", "S001C002P002R001A002"]
    assert info.samples[1].label == 1 and info.samples[1].camera == 2 and info.samples[1].performer == 2
    assert len(info.skipped) == 3 and info.class_names[0] == "drink water"
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["samples/S001C002P002R001A002"].shape == (2, 20, 25, 3)


def test_official_missing_lists_have_the_published_sizes() -> None:
    assert len(ntu_missing_skeletons()) == 535
    assert len(ntu_missing_skeletons(ntu60_only=True)) == 302
    assert "S001C002P005R002A008" in ntu_missing_skeletons(ntu60_only=True)
