"""Robust reader: exact frames on lossless video, quarantine of bad files, frame-count clamp, time bound; the PyAV fast
path (fast probe, skipped non-reference frames, decoder drain, cached facts) returns the frames of a full decode."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.video import decoding
from datamodules.video.decoding import (
    DecoderBackend,
    DecodeSettings,
    IndexMode,
    QuarantineLog,
    RobustVideoReader,
    VideoFacts,
    find_decodable_frame_count,
    open_video,
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
    with pytest.warns(RuntimeWarning, match="only the first [0-9]+ of 60 frames decode"):
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
    real_open = decoding.backends.open_video

    def open_or_hang(path, backend, num_threads=1, **options):
        if Path(path) == hang:
            time.sleep(3)  # stands in for a decoder stuck in FFmpeg
        return real_open(path, backend, num_threads, **options)

    monkeypatch.setattr(decoding.backends, "open_video", open_or_hang)
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


# --------------------------------------------------------------------------------------------------------------------
# PyAV fast path


def _drifting_texture(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth texture panning 2 px a frame plus a moving block: x264 codes it with B-frames (lossy) or P-frames."""
    yy, xx = np.mgrid[0:height, 0 : width + 2 * num_frames].astype(np.float32)
    texture = np.stack([128 + 90 * np.sin(xx / (5 + 2 * c)) * np.cos(yy / (7 + c)) for c in range(3)], axis=-1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = np.clip(texture[:, 2 * t : 2 * t + width], 0, 255)
        frames[t, 10:20, t % (width - 10) : t % (width - 10) + 10] = (250, 30, 30)
    return frames


def _full_decode(path: Path) -> tuple[np.ndarray, str]:
    """Every frame (T, H, W, 3) of a plain sequential PyAV decode, and the picture types ("I", "P", "B")."""
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    types = "".join(av.video.frame.PictureType(f.pict_type).name for f in frames)
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), types


def _nonref_frame_count(path: Path) -> tuple[int, int]:
    """(frames decoded with skip_frame NONREF, all frames): fewer when the stream has non-reference frames."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        kept = sum(1 for _ in container.decode(stream))
    with av.open(str(path)) as container:
        return kept, sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def bframe_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A lossy x264 (veryfast, gop 12) mp4 with non-reference B-frames, and its frames from a full decode."""
    path = write_video(tmp_path_factory.mktemp("bframes") / "b.mp4", _drifting_texture(60), gop=12)
    frames, types = _full_decode(path)
    kept, total = _nonref_frame_count(path)
    assert "B" in types and kept < total == 60, (types, kept)  # the premise of the skip tests
    return path, frames


CLIPS = [
    list(range(0, 16)),  # from a key frame
    list(range(5, 21)),  # starts mid-GOP, on a B-frame
    list(range(30, 46)),
    list(range(44, 60)),  # to the last frame (decoder drained at the end of the stream)
    list(range(7, 39, 2)),  # strided: non-reference frames between clip frames are skipped too
    [50, 55, 59, 59, 59],  # repeated last frame, as short videos give
]


@pytest.mark.parametrize("indices", CLIPS, ids=[f"clip{i}" for i in range(len(CLIPS))])
def test_fast_pyav_path_matches_full_decode_on_bframes(bframe_video: tuple[Path, np.ndarray], indices) -> None:
    path, truth = bframe_video
    for settings in (
        DecodeSettings(),
        DecodeSettings(backend=DecoderBackend.PYAV, fast_probe=False, skip_nonref=False),
    ):
        reader = RobustVideoReader(settings)
        clip = reader.read(path, _fixed(indices))
        assert clip is not None
        np.testing.assert_array_equal(clip.frames, truth[indices])
        np.testing.assert_allclose(clip.timestamps, np.asarray(indices) / 25.0, atol=1e-6)
        assert reader.timestamp_mismatches == 0


def test_economical_decode_skips_nonref_preroll_and_stops_at_the_clip(bframe_video: tuple[Path, np.ndarray]) -> None:
    path, truth = bframe_video
    indices = list(range(44, 48))  # key frames every 12: a 8-frame pre-roll from frame 36, B-frames among it
    economical = open_video(path, DecoderBackend.PYAV)
    plain = open_video(path, DecoderBackend.PYAV, settings=DecodeSettings(skip_nonref=False))
    assert economical._skip_nonref and not plain._skip_nonref  # type: ignore[attr-defined]
    np.testing.assert_array_equal(economical.read(indices)[0], truth[indices])
    np.testing.assert_array_equal(plain.read(indices)[0], truth[indices])
    assert plain.decoded_frames == 12  # type: ignore[attr-defined]  # frames 36..47: drained at 47, nothing past it
    assert economical.decoded_frames < plain.decoded_frames  # type: ignore[attr-defined]
    undrained = open_video(path, DecoderBackend.PYAV, settings=DecodeSettings(skip_nonref=False))
    frames, _, missing = undrained._decode(indices, economical=False)  # type: ignore[attr-defined]
    assert not missing
    np.testing.assert_array_equal(frames, truth[indices])
    assert undrained.sent_packets > plain.sent_packets  # type: ignore[attr-defined]  # later packets push frames out


def test_pyav_default_is_exact_on_lossless_video_with_preroll(tmp_path: Path) -> None:
    truth = _drifting_texture(40)
    path = write_video(tmp_path / "lossless_gop12.mp4", truth, lossless=True, gop=12)
    assert "P" in _full_decode(path)[1]  # key frames every 12: clips mid-GOP need a pre-roll
    reader = RobustVideoReader()
    assert reader.settings.backend is DecoderBackend.PYAV
    for indices in ([9, 10, 11, 12, 13], list(range(23, 39))):
        clip = reader.read(path, _fixed(indices))
        assert clip is not None
        np.testing.assert_array_equal(clip.frames, truth[indices])


def test_fast_probe_gives_the_full_probe_facts(bframe_video: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = bframe_video
    fast = open_video(path, DecoderBackend.PYAV, settings=DecodeSettings(fast_probe=True))
    full = open_video(path, DecoderBackend.PYAV, settings=DecodeSettings(fast_probe=False))
    assert fast.facts == VideoFacts(60, 25.0, 0.0, fast_probe=True)  # type: ignore[attr-defined]
    assert full.facts == VideoFacts(60, 25.0, 0.0, fast_probe=False)  # type: ignore[attr-defined]
    mkv = write_video(tmp_path / "clip.mkv", _drifting_texture(20), lossless=True)  # not mp4: full probe
    video = open_video(mkv, DecoderBackend.PYAV)
    assert not video.facts.fast_probe and video.fps == pytest.approx(25.0)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(video.read([3, 4])[0], _drifting_texture(20)[3:5])


def test_metadata_cache_serves_the_second_read(bframe_video: tuple[Path, np.ndarray]) -> None:
    path, truth = bframe_video
    reader = RobustVideoReader()
    seen: list[tuple[int, float]] = []

    def choose(num_frames: int, fps: float) -> list[int]:
        seen.append((num_frames, fps))
        return list(range(20, 36))

    first = reader.read(path, choose)
    assert reader._facts[str(path)] == VideoFacts(60, 25.0, 0.0, fast_probe=True)
    second = reader.read(path, choose)
    assert first is not None and second is not None
    np.testing.assert_array_equal(second.frames, first.frames)
    np.testing.assert_array_equal(second.frames, truth[20:36])
    index = reader.frame_index(path)
    assert index.mode is IndexMode.PTS and index.num_frames == 60 and not index.decoded  # h264: packets only
    reader._indexes[str(path)] = dataclasses.replace(index, num_frames=50)  # the cache, not the file, is used
    assert reader.read(path, choose) is not None
    assert seen == [(60, 25.0), (60, 25.0), (50, 25.0)]


class _ClipsOf(torch.utils.data.Dataset):
    """Clip [0, 1] of each video through one shared reader (as the video dataset does)."""

    def __init__(self, reader: RobustVideoReader, paths: list[Path]) -> None:
        self.reader, self.paths = reader, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        clip = self.reader.read(self.paths[index], _fixed([0, 1]))
        assert clip is not None
        return clip.frames


def test_forked_workers_read_after_the_main_process_did(bframe_video: tuple[Path, np.ndarray]) -> None:
    # The main process reads first (its decode thread holds PyAV objects), then DataLoader workers fork. A swscale
    # context with a thread pool surviving into a child hung there when freed; a hang fails here via the timeout.
    path, truth = bframe_video
    reader = RobustVideoReader()
    assert reader.read(path, _fixed([0, 1])) is not None
    loader = torch.utils.data.DataLoader(_ClipsOf(reader, [path] * 4), batch_size=2, num_workers=2, timeout=60)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        np.testing.assert_array_equal(batch.numpy(), np.stack([truth[:2]] * 2))


# --------------------------------------------------------------------------------------------------------------------
# Frames at a short side (the transforms' resize) and the malloc thresholds


def _torch_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """The transforms' resize of exact frames: uint8 (T, H, W, 3) -> (T, h, w, 3), antialiased bilinear."""
    from torchvision.transforms.v2 import functional as F

    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
    return F.resize(video, [short_side], antialias=True).permute(0, 2, 3, 1).numpy()  # (T, h, w, 3)


@pytest.mark.parametrize("height,width,short_side", [(240, 320, 128), (320, 240, 128), (48, 64, 32), (25, 31, 7)])
def test_short_side_size_is_torchvisions(height: int, width: int, short_side: int) -> None:
    resized = _torch_short_side(np.zeros((1, height, width, 3), np.uint8), short_side)
    assert decoding.short_side_size(height, width, short_side) == resized.shape[1:3]


# Tolerances of swscale's bilinear scaling against torch's antialiased resize of the exact frames. RGB source
# (lossless libx264rgb) of this texture, measured: 48 -> 32 max 2, mean 0.16; 48 -> 24 (exactly 2x, where the two
# filters differ most at the block's sharp edges) max 27, mean 0.49, 99th percentile 7; 48 -> 16 max 9, mean 0.43.
# yuv420p h264 differs more at colour edges (the exact conversion repeats chroma samples, swscale interpolates them).
@pytest.mark.parametrize("short_side,max_difference", [(32, 3), (24, 32), (16, 12)])
def test_scaled_in_decoder_is_close_to_torch_resize_of_the_exact_frames_on_lossless_video(
    tmp_path: Path, short_side: int, max_difference: int
) -> None:
    truth = _drifting_texture(40)  # (40, 48, 64, 3)
    path = write_video(tmp_path / "lossless_gop12.mp4", truth, lossless=True, gop=12)
    indices = list(range(23, 39))
    reader = RobustVideoReader(DecodeSettings(scale_in_decoder=True))
    clip = reader.read(path, _fixed(indices), short_side=short_side)
    assert clip is not None and clip.frames.dtype == np.uint8 and clip.frames.flags.c_contiguous
    expected = _torch_short_side(truth[indices], short_side)
    assert clip.frames.shape == expected.shape == (16, short_side, short_side * 4 // 3, 3)
    difference = np.abs(clip.frames.astype(np.int16) - expected)
    assert difference.max() <= max_difference, difference.max()
    assert difference.mean() <= 0.6 and np.percentile(difference, 99) <= 8, (difference.mean(), difference.max())
    np.testing.assert_allclose(clip.timestamps, np.asarray(indices) / 25.0, atol=1e-6)
    native = reader.read(path, _fixed(indices))  # the same reader, no short side: still the exact frames
    assert native is not None
    np.testing.assert_array_equal(native.frames, truth[indices])


@pytest.mark.parametrize("indices", [CLIPS[1], CLIPS[5]], ids=["mid-gop", "repeated-last"])
def test_scaled_in_decoder_on_bframe_h264(bframe_video: tuple[Path, np.ndarray], indices: list[int]) -> None:
    path, truth = bframe_video  # yuv420p, 48 x 64: a 2x downscale of a fine texture, measured mean 3.0
    clip = RobustVideoReader(DecodeSettings(scale_in_decoder=True)).read(path, _fixed(indices), short_side=24)
    assert clip is not None
    expected = _torch_short_side(truth[indices], 24)
    assert clip.frames.shape == expected.shape == (len(indices), 24, 32, 3)
    difference = np.abs(clip.frames.astype(np.int16) - expected)
    assert difference.mean() <= 4.0, difference.mean()
    for row, index in enumerate(indices):  # a repeated index gives the same pixels in every row
        np.testing.assert_array_equal(clip.frames[row], clip.frames[indices.index(index)])


@pytest.mark.parametrize("backend", [DecoderBackend.PYAV, DecoderBackend.DECORD])
def test_short_side_without_decoder_scaling_is_the_torch_resize_exactly(
    bframe_video: tuple[Path, np.ndarray], backend: DecoderBackend
) -> None:
    path, truth = bframe_video
    indices = CLIPS[2]
    reader = RobustVideoReader(DecodeSettings(backend=backend, scale_in_decoder=False))
    clip = reader.read(path, _fixed(indices), short_side=24)
    assert clip is not None
    native = reader.read(path, _fixed(indices))
    assert native is not None
    np.testing.assert_array_equal(clip.frames, _torch_short_side(native.frames, 24))
    if backend is DecoderBackend.PYAV:
        np.testing.assert_array_equal(native.frames, truth[indices])


def test_decord_with_decoder_scaling_still_returns_the_short_side(bframe_video: tuple[Path, np.ndarray]) -> None:
    path, _ = bframe_video  # decord has no swscale pass here: the reader resizes with torch instead
    clip = RobustVideoReader(DecodeSettings(backend=DecoderBackend.DECORD, scale_in_decoder=True)).read(
        path, _fixed([1, 2, 3]), short_side=24
    )
    assert clip is not None and clip.frames.shape == (3, 24, 32, 3)


def test_retain_freed_memory_applies_once_per_process() -> None:
    import os

    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    assert decoding.retain_freed_memory(64)
    assert decoding.memory._malloc_tuned[os.getpid()] == 64
    assert decoding.retain_freed_memory(64)  # already applied: nothing to do
    with pytest.raises(ValueError, match="retain_freed_mb"):
        DecodeSettings(retain_freed_mb=0)
