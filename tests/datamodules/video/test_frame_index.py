"""Frame index: every backend and every sampling path returns the frames at the requested display indices, on the
files that break timestamp addressing (MPEG-4 Part 2 B-frames in AVI, packed or not, non-UTF-8 metadata, variable
frame rate with duplicated timestamps) and on the h264 files of the fast path. The reference is an independent full
sequential PyAV decode; the frames carry their own index (a visible code), so a swap cannot pass unseen."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from datamodules.video.dataset import ClipTiming, SamplingMode, VideoClipDataset, clip_frame_indices
from datamodules.video.decoding import (
    DecoderBackend,
    DecodeSettings,
    IndexMode,
    QuarantineLog,
    RobustVideoReader,
    build_frame_index,
)
from datamodules.video.decoding.fixture_videos import (
    decode_every_frame,
    index_code_frames,
    read_index_code,
    set_latin1_title,
    write_mpeg4_avi,
    write_vfr_mkv,
)
from datamodules.video.synthetic import write_video

NUM_FRAMES = 40
VFR_STAMPS_MS = [0, 0, 80, 80, 400, 440, 1000, 1000, 1040, 2000] + [2040 + 40 * i for i in range(30)]
LATIN1_TITLE = "café Übung"

# name -> (expected mode, frames decoded to decide)
FILES = {
    "h264_lossless_mp4": (IndexMode.PTS, False),
    "h264_bframes_mp4": (IndexMode.PTS, False),
    "mpeg4_avi": (IndexMode.PTS, True),  # one VOP per chunk: decoded pts in order, frame 0 stamped one period late
    "mpeg4_avi_no_bframes": (IndexMode.PTS, True),  # UCF101 style
    "mpeg4_avi_packed": (IndexMode.DECODE_ORDER, True),  # DivX packed bitstream (HMDB51 style): stamps swapped
    "mpeg4_avi_packed_latin1": (IndexMode.DECODE_ORDER, True),
    "vfr_mkv": (IndexMode.DECODE_ORDER, True),  # duplicated timestamps
}


@pytest.fixture(scope="module")
def hard_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """Each file of FILES and its frames from a full decode (checked: frame i carries code i)."""
    folder = tmp_path_factory.mktemp("hard_files")
    frames = index_code_frames(NUM_FRAMES)  # (40, 48, 64, 3)
    paths = {
        "h264_lossless_mp4": write_video(folder / "lossless.mp4", frames, lossless=True, gop=12),
        "h264_bframes_mp4": write_video(folder / "bframes.mp4", frames, gop=12),
        "mpeg4_avi": write_mpeg4_avi(folder / "unpacked.avi", frames, packed=False),
        "mpeg4_avi_no_bframes": write_mpeg4_avi(folder / "no_b.avi", frames, b_frames=0),
        "mpeg4_avi_packed": write_mpeg4_avi(folder / "packed.avi", frames),
        "mpeg4_avi_packed_latin1": set_latin1_title(
            write_mpeg4_avi(folder / "latin1.avi", frames, title=LATIN1_TITLE), LATIN1_TITLE
        ),
        "vfr_mkv": write_vfr_mkv(folder / "vfr.mkv", frames, VFR_STAMPS_MS),
    }
    out = {}
    for name, path in paths.items():
        truth = decode_every_frame(path)
        np.testing.assert_array_equal(read_index_code(truth), np.arange(NUM_FRAMES), err_msg=name)
        out[name] = (path, truth)
    return out


def _fixed(indices: list[int]):
    return lambda num_frames, fps: indices


@pytest.mark.parametrize("name", FILES)
def test_frame_index_mode_and_count(hard_files, name: str) -> None:
    path, _ = hard_files[name]
    index = build_frame_index(path)
    mode, decoded = FILES[name]
    assert (index.mode, index.decoded, index.num_frames) == (mode, decoded, NUM_FRAMES), index
    assert index.reason and index.decode_errors == 0
    if mode is IndexMode.DECODE_ORDER:
        assert index.keyframes[0].index == 0 and len(index.keyframes) > 1  # clips seek, not decode from 0


def test_the_premises_of_the_hard_files(hard_files) -> None:
    packed, _ = hard_files["mpeg4_avi_packed"]
    with av.open(str(packed)) as container:
        stamps = [f.pts for f in container.decode(video=0)]
    assert stamps[0] == 1 and any(b < a for a, b in zip(stamps, stamps[1:]))  # shifted by one, neighbours swapped
    with pytest.raises(UnicodeDecodeError):
        av.open(str(hard_files["mpeg4_avi_packed_latin1"][0])).close()
    vfr = build_frame_index(hard_files["vfr_mkv"][0])
    assert vfr.header_frames > 60 and vfr.fps == pytest.approx(39 / 3.2)  # header: 25 fps; real: 40 in 3.2 s


CLIPS = [
    list(range(0, 8)),
    list(range(13, 29)),  # across a key frame, starting mid-GOP
    list(range(30, 40)),  # to the last frame
    list(range(1, 40, 3)),
    [5, 5, 39, 39],  # repeated frames
    [30, 2, 17],  # not in order
]


@pytest.mark.parametrize("backend", [DecoderBackend.PYAV, DecoderBackend.DECORD])
@pytest.mark.parametrize("name", FILES)
def test_every_reader_returns_the_requested_display_indices(hard_files, name: str, backend) -> None:
    path, truth = hard_files[name]
    reader = RobustVideoReader(DecodeSettings(backend=backend))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for indices in CLIPS:
            clip = reader.read(path, _fixed(indices))
            assert clip is not None, reader.quarantine.entries
            assert clip.num_frames == NUM_FRAMES
            assert read_index_code(clip.frames).tolist() == indices, (name, backend, indices)
            if backend is DecoderBackend.PYAV or reader._pyav_only:  # PyAV's pixels are the full decode's
                np.testing.assert_array_equal(clip.frames, truth[indices])
    assert reader.quarantine.entries == []
    assert len([w for w in caught if "read with PyAV" in str(w.message)]) <= 1  # once per file, not per clip
    assert not [w for w in caught if "timestamps off" in str(w.message)]


def test_decode_order_clips_seek_to_the_key_frame_before_them(hard_files) -> None:
    path, truth = hard_files["mpeg4_avi_packed"]
    reader = RobustVideoReader()
    index = reader.frame_index(path)
    video = reader._open(str(path), DecoderBackend.PYAV, index)
    frames, _ = video.read([37, 38])
    np.testing.assert_array_equal(frames, truth[[37, 38]])
    assert video.decoded_frames <= 4  # type: ignore[attr-defined]  # from key frame 36, not from frame 0


def test_vfr_clips_carry_the_files_timestamps(hard_files) -> None:
    path, _ = hard_files["vfr_mkv"]
    clip = RobustVideoReader().read(path, _fixed([0, 1, 2, 3, 9]))
    assert clip is not None
    np.testing.assert_allclose(clip.timestamps, np.asarray([0, 0, 80, 80, 2000]) / 1000)


class _Frames:
    """Transform returning the uint8 frames as a tensor (T, H, W, 3), so items can be checked by their codes."""

    def __call__(self, frames: np.ndarray, crop: int = 0) -> torch.Tensor:
        return torch.from_numpy(frames)


@pytest.mark.parametrize("backend", [DecoderBackend.PYAV, DecoderBackend.DECORD])
def test_random_and_multi_view_sampling_return_exact_frames(hard_files, backend) -> None:
    videos = [(hard_files[name][0], i) for i, name in enumerate(FILES)]
    timing = ClipTiming(frames_per_clip=6, frame_stride=2)
    reader = RobustVideoReader(DecodeSettings(backend=backend))
    train = VideoClipDataset(videos, timing, SamplingMode.TRAIN, _Frames(), reader)
    evaluation = VideoClipDataset(videos, timing, SamplingMode.EVAL, _Frames(), reader, clips_per_video=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # decord's "read with PyAV" notices
        for item in range(len(train)):
            for _ in range(2):
                sample = train[item]
                assert sample["group"] == item
                codes = read_index_code(sample["inputs"].numpy()).tolist()
                index = reader.frame_index(videos[item][0])
                assert codes == clip_frame_indices(codes[0], timing, index.num_frames, index.fps), (item, codes)
        for item in range(len(evaluation)):
            video, clip = divmod(item, 3)
            sample = evaluation[item]
            index = reader.frame_index(videos[video][0])
            expected = evaluation._choose(clip)(index.num_frames, index.fps)
            assert read_index_code(sample["inputs"].numpy()).tolist() == expected, (video, clip)
    assert reader.quarantine.entries == []


def test_quarantine_lists_each_file_once_across_workers_and_epochs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF" + bytes(range(256)) * 16)
    log = tmp_path / "logs" / "quarantine.tsv"
    reader = RobustVideoReader(quarantine_path=log)
    workers = [pickle.loads(pickle.dumps(reader)) for _ in range(3)]  # as DataLoader workers get it, per epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            for worker in workers:
                epoch_copy = pickle.loads(pickle.dumps(worker)) if epoch else worker
                assert epoch_copy.read(bad, _fixed([0])) is None
    assert len(QuarantineLog.read(log)) == 1
    assert len([w for w in caught if "skipping unreadable video" in str(w.message)]) == 1


@pytest.mark.parametrize("name", FILES)
def test_every_start_position_is_exact(hard_files, name: str) -> None:
    # Open GOPs (FFmpeg's MPEG-4 encoder): the B-frames shown before a key frame need the GOP before it; a seek by
    # time in an AVI lands on the key frame after them.
    path, truth = hard_files[name]
    reader = RobustVideoReader()
    for start in range(NUM_FRAMES - 4):
        indices = list(range(start, start + 5))
        clip = reader.read(path, _fixed(indices))
        assert clip is not None, (start, reader.quarantine.entries)
        np.testing.assert_array_equal(clip.frames, truth[indices], err_msg=f"{name} from {start}")
