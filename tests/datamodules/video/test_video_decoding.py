"""Robust reader: exact frames on lossless video, quarantine of bad files, frame-count clamp, time bound."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.video import decoding
from datamodules.video.decoding import (
    DecoderBackend,
    DecodeSettings,
    QuarantineLog,
    RobustVideoReader,
    find_decodable_frame_count,
)
from datamodules.video.synthetic import write_video


def _fixed(indices: list[int]):
    return lambda num_frames, fps: indices


@pytest.mark.parametrize("backend", [DecoderBackend.DECORD, DecoderBackend.PYAV])
def test_lossless_frames_and_timestamps_are_exact(lossless_video: tuple[Path, np.ndarray], backend) -> None:
    path, frames = lossless_video
    reader = RobustVideoReader(DecodeSettings(backend=backend))
    indices = [3, 4, 5, 6, 17, 19]
    clip = reader.read(path, _fixed(indices))
    assert clip is not None
    assert clip.num_frames == len(frames) and clip.fps == pytest.approx(25.0)
    np.testing.assert_array_equal(clip.frames, frames[indices])
    np.testing.assert_allclose(clip.timestamps, np.asarray(indices) / 25.0, atol=1e-6)
    assert reader.timestamp_mismatches == 0 and reader.quarantine.entries == []


def test_timestamp_mismatch_is_reported(lossless_video: tuple[Path, np.ndarray]) -> None:
    path, _ = lossless_video
    reader = RobustVideoReader()
    clip = reader.read(path, _fixed([0, 1]))
    assert clip is not None
    clip.timestamps = clip.timestamps + 0.1  # pretend the decoder returned frames 2.5 periods late
    with pytest.warns(RuntimeWarning, match="timestamps off their index"):
        reader._check_timestamps(str(path), clip)
    assert reader.timestamp_mismatches == 2


def _bad_files(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    corrupt = bytearray(data)
    corrupt[: len(data) // 2] = b"\xff" * (len(data) // 2)  # headers destroyed
    files = {
        "zero": folder / "zero.mp4",
        "truncated": folder / "truncated.mp4",
        "corrupt": folder / "corrupt.mp4",
        "not_video": folder / "notes.mp4",
    }
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["corrupt"].write_bytes(bytes(corrupt))
    files["not_video"].write_text("this is a text file, not a video\n" * 20)
    return files


@pytest.mark.parametrize("backend", [DecoderBackend.DECORD, DecoderBackend.PYAV])
def test_bad_files_are_quarantined_and_good_ones_still_load(
    tmp_path: Path, lossless_video: tuple[Path, np.ndarray], backend
) -> None:
    good, frames = lossless_video
    bad = _bad_files(tmp_path, good)
    log = tmp_path / "logs" / "quarantine.tsv"
    reader = RobustVideoReader(DecodeSettings(backend=backend), quarantine_path=log)
    for kind, path in bad.items():
        with pytest.warns(RuntimeWarning, match="skipping unreadable video"):
            assert reader.read(path, _fixed([0, 1])) is None, kind
        assert reader.is_quarantined(path)
    clip = reader.read(good, _fixed([0, 1]))
    assert clip is not None
    np.testing.assert_array_equal(clip.frames, frames[:2])
    rows = QuarantineLog.read(log)
    assert [Path(p) for p, _ in rows] == list(bad.values())
    assert "zero-byte" in rows[0][1]
    assert all(reason for _, reason in rows)
    assert reader.read(bad["zero"], _fixed([0])) is None  # refused at once, not logged twice
    assert len(QuarantineLog.read(log)) == 4


def test_find_decodable_frame_count() -> None:
    for header, real in [(100, 100), (100, 63), (100, 1), (100, 0), (7, 6), (1, 1)]:
        probes: list[int] = []

        def decodes(i: int, real: int = real, probes: list[int] = probes) -> bool:
            probes.append(i)
            return i < real

        assert find_decodable_frame_count(decodes, header) == real
        assert len(probes) <= 2 * int(np.ceil(np.log2(header + 1))) + 1


def test_header_that_over_reports_frames_is_clamped(tmp_path: Path) -> None:
    # A faststart mp4 whose data tail is zeroed: the index still lists 60 frames, only the first ones decode.
    t = np.arange(60)
    frames = np.zeros((60, 64, 64, 3), np.uint8)
    for i in t:
        frames[i, 10:30, i : i + 20] = 200
    path = write_video(tmp_path / "tail.mp4", frames, faststart=True, gop=10)
    data = bytearray(path.read_bytes())
    cut = int(len(data) * 0.8)
    data[cut:] = bytes(len(data) - cut)
    path.write_bytes(bytes(data))
    reader = RobustVideoReader(quarantine_path=tmp_path / "q.tsv")
    with pytest.warns(RuntimeWarning, match="header reports 60 frames but only"):
        clip = reader.read(path, lambda n, fps: list(range(n - 4, n)))
    assert clip is not None
    assert 0 < clip.num_frames < 60
    assert clip.indices == list(range(clip.num_frames - 4, clip.num_frames))
    assert not (tmp_path / "q.tsv").exists()


def test_hanging_read_times_out_and_is_quarantined(
    tmp_path: Path, lossless_video: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _ = lossless_video
    hang = tmp_path / "hang.mp4"
    hang.write_bytes(good.read_bytes())
    real_open = decoding.open_video

    def open_or_hang(path, backend, num_threads=1):
        if Path(path) == hang:
            time.sleep(3)  # stands in for a decoder stuck in FFmpeg
        return real_open(path, backend, num_threads)

    monkeypatch.setattr(decoding, "open_video", open_or_hang)
    reader = RobustVideoReader(DecodeSettings(timeout_s=0.3), quarantine_path=tmp_path / "q.tsv")
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="timeout"):
        assert reader.read(hang, _fixed([0])) is None
    assert time.perf_counter() - start < 2.0
    assert reader.read(good, _fixed([0])) is not None  # a fresh thread serves the next read
    assert QuarantineLog.read(tmp_path / "q.tsv") == [(str(hang), "timeout: read did not finish within 0.3 s")]


def test_reader_pickles_without_its_thread(lossless_video: tuple[Path, np.ndarray]) -> None:
    import pickle

    path, _ = lossless_video
    reader = RobustVideoReader()
    assert reader.read(path, _fixed([0])) is not None
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._thread is None
    assert copy.read(path, _fixed([1])) is not None


def test_torchcodec_backend_needs_the_package() -> None:
    if DecoderBackend.TORCHCODEC in decoding.available_backends():
        pytest.skip("torchcodec is installed")
    with pytest.raises(ImportError, match="torchcodec"):
        decoding.open_video("x.mp4", DecoderBackend.TORCHCODEC)
