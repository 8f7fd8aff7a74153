"""``check-videos``: a verdict per file, from a quick look (header, first and last frames) or a full decode.

Quick mode opens the file, builds its frame index (packet timestamps; MPEG-4 Part 2 files are decoded once) and
reads the first frame and the last two through :class:`RobustVideoReader`, as training would: it finds unreadable
files, lying headers and missing ends (truncation), not damage in the middle. Full mode decodes every frame with
the decoder told to reject bitstream errors it would otherwise conceal, and counts corrupt packets, decode errors,
frames flagged corrupt, timestamp faults and the real frame count.

Verdicts (:class:`Verdict`): ``ok``; ``repaired_index`` (every frame decodes, but timestamps or the header's frame
count are wrong: the frame index addresses the frames, see ``frame_index.py``); ``damaged_readable`` with the share
of bad frames (training keeps the readable frames, or skips the file with ``DamagedPolicy.SKIP``); ``unreadable``.
"""

from __future__ import annotations

import enum
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from datamodules.video.decoding.frame_index import FrameIndex, IndexMode, build_frame_index
from datamodules.video.decoding.reader import RobustVideoReader

__all__ = ["Verdict", "VideoCheck", "check_video", "write_report", "TSV_COLUMNS"]

TSV_COLUMNS = ("path", "verdict", "bad_share", "frames", "header_frames", "bad_frames", "index_mode", "detail")


class Verdict(enum.Enum):
    """What a user should know about one file (see the module docstring)."""

    OK = "ok"
    REPAIRED_INDEX = "repaired_index"
    DAMAGED_READABLE = "damaged_readable"
    UNREADABLE = "unreadable"


@dataclass
class VideoCheck:
    """The result of checking one file.

    Attributes:
        path: the file.
        verdict: ok / repaired_index / damaged_readable / unreadable.
        frames: frames that decode (readable ones; 0 when unreadable).
        header_frames: frame count the header claims.
        bad_frames: frames expected but not readable (lost packets, decode errors, corrupt frames).
        index_mode: how the frame index addresses the frames ("" when unreadable).
        detail: the reasons, one line.
        seconds: time the check took.
    """

    path: str
    verdict: Verdict
    frames: int
    header_frames: int
    bad_frames: int
    index_mode: str
    detail: str
    seconds: float = 0.0

    @property
    def bad_share(self) -> float:
        """Share of the expected frames that are not readable (1.0 when unreadable)."""
        expected = self.frames + self.bad_frames
        return 1.0 if self.verdict is Verdict.UNREADABLE else self.bad_frames / max(expected, 1)

    def row(self) -> str:
        """The TSV line of this check (columns :data:`TSV_COLUMNS`)."""
        fields = (
            self.path,
            self.verdict.value,
            f"{self.bad_share:.3f}",
            str(self.frames),
            str(self.header_frames),
            str(self.bad_frames),
            self.index_mode,
            " ".join(self.detail.replace("\t", " ").split()),
        )
        return "\t".join(fields)


def _index_repairs(index: FrameIndex) -> list[str]:
    """What the frame index corrects in a file whose frames all decode."""
    notes = []
    if index.mode is IndexMode.DECODE_ORDER:
        notes.append(f"addressed in decode order: {index.reason}")
    if index.header_frames != index.num_frames:
        notes.append(f"header claims {index.header_frames} frames, {index.num_frames} present")
    return notes


def _unreadable(path: str, reason: str, start: float) -> VideoCheck:
    return VideoCheck(path, Verdict.UNREADABLE, 0, 0, 0, "", reason, time.perf_counter() - start)


def check_video(path: str | Path, reader: RobustVideoReader, full: bool = False) -> VideoCheck:
    """Check one file: quick (header, first and last frames through ``reader``) or ``full`` (every frame).

    Files given up on are listed in ``reader.quarantine``; the reader's warnings are silenced (the verdict says it).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _check(path, reader, full)


def _check(path: str | Path, reader: RobustVideoReader, full: bool) -> VideoCheck:
    start = time.perf_counter()
    key = str(path)
    if not os.path.exists(key):
        return _unreadable(key, "file not found", start)
    if os.path.getsize(key) == 0:
        reader._give_up(key, "zero-byte file")
        return _unreadable(key, "zero-byte file", start)
    if not full:
        clip = reader.read(key, lambda count, fps: [0])
        if clip is not None:  # the end, read on its own (a clip from 0 to the end would decode the whole file)
            clip = reader.read(key, lambda count, fps: sorted({max(count - 2, 0), count - 1}))
        if clip is None:
            return _unreadable(key, reader.quarantine.entries[-1][1] if reader.quarantine.entries else "", start)
        index = reader.frame_index(key)
        readable = clip.num_frames
        lost = index.header_frames - index.num_frames if index.header_exact else 0
        bad = max(lost, 0) + index.num_frames - readable
        notes = [] if readable == index.num_frames else [f"only the first {readable} frames decode"]
        notes += [f"{lost} frames the header lists are absent"] if lost > 0 else []
    else:
        try:
            index = build_frame_index(key, decode=True, strict=True, num_threads=reader.settings.num_threads)
        except Exception as error:  # any failure to open or demux is the verdict, with its reason
            reader._give_up(key, f"{type(error).__name__}: {error}")
            return _unreadable(key, f"{type(error).__name__}: {error}", start)
        if index.num_frames == 0:
            reason = f"no frame decodes ({index.decode_errors} decode errors, {index.packets} packets)"
            reader._give_up(key, reason)
            return _unreadable(key, reason, start)
        expected = max(index.packets, index.header_frames if index.header_exact else 0)
        readable = index.num_frames - index.corrupt_frames
        bad = expected - readable
        notes = []
        if index.header_exact and index.header_frames > index.packets:
            notes.append(f"{index.header_frames - index.packets} frames the header lists have no packet")
        if index.decode_errors:
            notes.append(f"{index.decode_errors} decode errors")
        if index.corrupt_frames:
            notes.append(f"{index.corrupt_frames} frames flagged corrupt")
    if bad > 0:
        verdict = Verdict.DAMAGED_READABLE
    else:
        notes = _index_repairs(index)
        verdict = Verdict.REPAIRED_INDEX if notes else Verdict.OK
    return VideoCheck(
        key,
        verdict,
        readable,
        index.header_frames,
        max(bad, 0),
        index.mode.value,
        "; ".join(notes),
        time.perf_counter() - start,
    )


def write_report(path: str | Path, checks: list[VideoCheck]) -> Path:
    """Write the checks as a TSV with a header line (columns :data:`TSV_COLUMNS`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(TSV_COLUMNS) + "\n")
        for check in checks:
            f.write(check.row() + "\n")
    return path
