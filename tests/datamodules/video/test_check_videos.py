"""check-videos: verdicts of quick and full mode on corrupted copies, the TSV report, the summary and the exit status;
the damaged-file policies of the reader (readable frames with one warning per file, or skip)."""

from __future__ import annotations

import argparse
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from datamodules.video.command import add_parser
from datamodules.video.decoding import DamagedPolicy, DecodeSettings, QuarantineLog, RobustVideoReader
from datamodules.video.decoding.check import TSV_COLUMNS, Verdict
from datamodules.video.decoding.fixture_videos import (
    corrupted_copies,
    decode_every_frame,
    index_code_frames,
    read_index_code,
    write_mpeg4_avi,
    write_vfr_mkv,
)
from datamodules.video.synthetic import write_video


def _noisy_frames() -> np.ndarray:
    """(60, 96, 128, 3) index-coded frames with pixel noise: files large enough for 4 KB of damage to be local."""
    frames = index_code_frames(60, 96, 128)
    noise = np.random.default_rng(1).integers(-20, 20, frames.shape)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of good files (h264 mp4, packed DivX AVI, VFR mkv) and their corrupted copies."""
    folder = tmp_path_factory.mktemp("check")
    frames = _noisy_frames()
    mp4 = write_video(folder / "good" / "h264.mp4", frames, gop=12, faststart=True)
    avi = write_mpeg4_avi(folder / "good" / "divx.avi", frames)
    write_vfr_mkv(folder / "good" / "vfr.mkv", frames[:40], [0, 0, 80, 80] + [200 + 40 * i for i in range(36)])
    corrupted_copies(mp4, folder / "bad")
    corrupted_copies(avi, folder / "bad")
    for good in (folder / "good").iterdir():
        shutil.copy(good, folder / "bad" / good.name)
    return folder / "bad"


# file -> (quick verdict, full verdict)
EXPECTED = {
    "h264.mp4": (Verdict.OK, Verdict.OK),
    "divx.avi": (Verdict.REPAIRED_INDEX, Verdict.REPAIRED_INDEX),
    "vfr.mkv": (Verdict.REPAIRED_INDEX, Verdict.REPAIRED_INDEX),
    "h264_truncated_50.mp4": (Verdict.DAMAGED_READABLE, Verdict.DAMAGED_READABLE),
    "h264_truncated_5.mp4": (Verdict.DAMAGED_READABLE, Verdict.DAMAGED_READABLE),
    "h264_random_4k.mp4": (Verdict.OK, Verdict.DAMAGED_READABLE),  # damage in the middle: only a full decode sees it
    "h264_no_index.mp4": (Verdict.UNREADABLE, Verdict.UNREADABLE),
    "h264_zero_byte.mp4": (Verdict.UNREADABLE, Verdict.UNREADABLE),
    "h264_text_renamed.mp4": (Verdict.UNREADABLE, Verdict.UNREADABLE),
    "divx_truncated_50.avi": (Verdict.DAMAGED_READABLE, Verdict.DAMAGED_READABLE),
    "divx_truncated_5.avi": (Verdict.DAMAGED_READABLE, Verdict.DAMAGED_READABLE),
    "divx_random_4k.avi": (Verdict.DAMAGED_READABLE, Verdict.DAMAGED_READABLE),
    "divx_no_index.avi": (Verdict.REPAIRED_INDEX, Verdict.REPAIRED_INDEX),  # FFmpeg rebuilds the AVI index
    "divx_zero_byte.avi": (Verdict.UNREADABLE, Verdict.UNREADABLE),
    "divx_text_renamed.avi": (Verdict.UNREADABLE, Verdict.UNREADABLE),
}


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _report(path: Path) -> dict[str, dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert tuple(lines[0].split("\t")) == TSV_COLUMNS
    rows = [dict(zip(TSV_COLUMNS, line.split("\t"))) for line in lines[1:]]
    return {Path(row["path"]).name: row for row in rows}


@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
def test_check_videos_verdicts_report_and_exit_status(
    corrupted: Path, tmp_path: Path, full: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    report, quarantine = tmp_path / "report.tsv", tmp_path / "quarantine.tsv"
    argv = ["check-videos", "folder", "--root", str(corrupted), "--report", str(report)]
    argv += ["--quarantine", str(quarantine)] + (["--full"] if full else [])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the report says it all; no warning per file
        assert _run(argv) == 1  # unreadable files present
    rows = _report(report)
    assert {name: Verdict(row["verdict"]) for name, row in rows.items()} == {
        name: verdicts[full] for name, verdicts in EXPECTED.items()
    }
    for name, row in rows.items():
        share = float(row["bad_share"])
        assert (share == 0) == (Verdict(row["verdict"]) in (Verdict.OK, Verdict.REPAIRED_INDEX)), name
        assert row["detail"] or Verdict(row["verdict"]) is Verdict.OK, name
    assert 0.4 < float(rows["h264_truncated_50.mp4"]["bad_share"]) < 0.7
    assert float(rows["divx_truncated_5.avi"]["bad_share"]) < 0.2
    unreadable = sorted(n for n, (q, f) in EXPECTED.items() if (f if full else q) is Verdict.UNREADABLE)
    assert sorted(Path(p).name for p, _ in QuarantineLog.read(quarantine)) == unreadable
    out = capsys.readouterr().out
    assert "files/s" in out and f"unreadable{len(unreadable):>15}" in out.replace("  ", " " * 2)


def test_check_videos_exit_status_is_zero_without_unreadable_files(corrupted: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for name in ("h264.mp4", "divx.avi", "h264_truncated_5.mp4"):
        shutil.copy(corrupted / name, good / name)
    assert (
        _run(
            [
                "check-videos",
                "folder",
                "--root",
                str(good),
                "--quarantine-damaged",
                "--quarantine",
                str(tmp_path / "q.tsv"),
            ]
        )
        == 0
    )
    assert [Path(p).name for p, _ in QuarantineLog.read(tmp_path / "q.tsv")] == ["h264_truncated_5.mp4"]


def test_truncated_file_keeps_its_readable_frames_with_one_warning(corrupted: Path, tmp_path: Path) -> None:
    path = corrupted / "divx_truncated_50.avi"
    truth = read_index_code(decode_every_frame(path))  # the reference for a damaged file too: what a full decode emits
    reader = RobustVideoReader(quarantine_path=tmp_path / "q.tsv")
    workers = [reader] + [pickle.loads(pickle.dumps(reader)) for _ in range(2)]  # DataLoader workers' copies
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for worker in workers:
            for _ in range(3):
                clip = worker.read(path, lambda count, fps: list(range(max(count - 4, 0), count)))
                assert clip is not None
                assert read_index_code(clip.frames).tolist() == truth[clip.indices].tolist()
    index = reader.frame_index(path)
    assert 0 < index.num_frames < 60 and index.header_frames == 60
    notices = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(notices) <= 1, [str(w.message) for w in notices]
    assert not (tmp_path / "q.tsv").exists()


def test_damaged_policy_skip_quarantines_the_file(corrupted: Path, tmp_path: Path) -> None:
    path = corrupted / "h264_truncated_5.mp4"  # the header lists 60 frames; 54 survive the cut
    settings = DecodeSettings(damaged=DamagedPolicy.SKIP)
    reader = RobustVideoReader(settings, quarantine_path=tmp_path / "q.tsv")
    with pytest.warns(RuntimeWarning, match="skipping unreadable video"):
        assert reader.read(path, lambda count, fps: [count - 1]) is None
    [(listed, reason)] = QuarantineLog.read(tmp_path / "q.tsv")
    assert listed == str(path) and "damaged" in reason
    readable = RobustVideoReader(quarantine_path=tmp_path / "other.tsv")
    with pytest.warns(RuntimeWarning, match="clips are taken from those"):
        clip = readable.read(path, lambda count, fps: [count - 1])
    assert clip is not None and clip.num_frames < 60
    np.testing.assert_array_equal(clip.frames, decode_every_frame(path)[clip.indices])
