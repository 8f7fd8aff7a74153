"""Frame index figures: per container/codec the mode chosen, exactness and clips/s of each reader; check-videos
quick vs full on corrupted copies (what each mode catches, files/s).

Files (written from the same index-coded frames, ``--size`` x 4/3, ``--frames`` frames at 25 fps): h264 mp4
lossless and lossy with B-frames, MPEG-4 Part 2 AVI without B-frames (UCF101 style), with B-frames one VOP per chunk,
with B-frames as a DivX packed bitstream (HMDB51 style), the same with a Latin-1 title, and a variable-frame-rate
mkv with duplicated timestamps. For every file and backend ``--clips`` random 16-frame clips are read through
``RobustVideoReader`` and compared with a full sequential PyAV decode (frames exact: every clip equal, pixel for
pixel for PyAV, by the frames' index codes for decord, whose colour conversion differs); clips/s is the median
over 3 runs of those reads, the reader's index cached after the first (figures from a loaded 2-core machine are
noisy; compare rows within one run). ``index ms`` is the one-off cost of building the index at the first read.

Corrupted copies (``fixture_videos.corrupted_copies``) of a faststart h264 mp4 and a packed DivX AVI: truncated 50 %
and 5 %, zero bytes, 4 KB of random bytes in the middle, the index removed, a text file renamed; each is checked
in quick and full mode and the verdicts are printed side by side.

Usage::

    python tools/bench_frame_index.py [--size 120] [--frames 120] [--clips 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.video.decoding import DecoderBackend, DecodeSettings, RobustVideoReader  # noqa: E402
from datamodules.video.decoding.check import check_video  # noqa: E402
from datamodules.video.decoding.fixture_videos import (  # noqa: E402
    corrupted_copies,
    decode_every_frame,
    index_code_frames,
    read_index_code,
    set_latin1_title,
    write_mpeg4_avi,
    write_vfr_mkv,
)
from datamodules.video.synthetic import write_video  # noqa: E402

CLIP = 16


def make_files(folder: Path, frames: np.ndarray) -> dict[str, Path]:
    """One file per container/codec case (see the module docstring)."""
    stamps = [40 * (i - i % 2) for i in range(len(frames))]  # pairs of frames share a timestamp
    title = "café Übung"
    return {
        "h264 mp4 lossless": write_video(folder / "lossless.mp4", frames, lossless=True, gop=25),
        "h264 mp4 B-frames": write_video(folder / "bframes.mp4", frames, gop=25),
        "mpeg4 avi, no B": write_mpeg4_avi(folder / "no_b.avi", frames, b_frames=0, gop=25),
        "mpeg4 avi, B unpacked": write_mpeg4_avi(folder / "unpacked.avi", frames, packed=False, gop=25),
        "mpeg4 avi, B packed": write_mpeg4_avi(folder / "packed.avi", frames, gop=25),
        "packed + Latin-1 title": set_latin1_title(write_mpeg4_avi(folder / "latin1.avi", frames, title=title), title),
        "h264 mkv VFR dup stamps": write_vfr_mkv(folder / "vfr.mkv", frames, stamps),
    }


def exactness_table(files: dict[str, Path], clips: int) -> None:
    """Mode, exactness and clips/s per file and backend."""
    print(f"{'file':<26}{'index mode':<14}{'index ms':>9}  {'backend':<8}{'exact':>6}{'clips/s':>9}")
    rng = np.random.default_rng(0)
    for name, path in files.items():
        truth = decode_every_frame(path)  # (N, H, W, 3)
        starts = [int(s) for s in rng.integers(0, len(truth) - CLIP + 1, size=clips)]
        for backend in (DecoderBackend.PYAV, DecoderBackend.DECORD):
            reader = RobustVideoReader(DecodeSettings(backend=backend))
            begin = time.perf_counter()
            index = reader.frame_index(path)
            index_ms = 1000 * (time.perf_counter() - begin)
            exact, rates = True, []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # decord's "read with PyAV" notice
                for _ in range(3):
                    begin = time.perf_counter()
                    for start in starts:
                        indices = list(range(start, start + CLIP))
                        clip = reader.read(path, lambda n, fps, indices=indices: indices)
                        if clip is None:
                            exact = False
                            continue
                        same = read_index_code(clip.frames).tolist() == read_index_code(truth[indices]).tolist()
                        if backend is DecoderBackend.PYAV or path in reader._pyav_only:
                            same = same and np.array_equal(clip.frames, truth[indices])
                        exact = exact and same
                    rates.append(clips / (time.perf_counter() - begin))
            via = " (PyAV)" if str(path) in reader._pyav_only else ""
            print(
                f"{name:<26}{index.mode.value:<14}{index_ms:>9.1f}  {backend.value:<8}{'yes' if exact else 'NO':>6}"
                f"{statistics.median(rates):>9.1f}{via}"
            )


def check_table(folder: Path, frames: np.ndarray) -> None:
    """Verdicts of quick and full mode on corrupted copies, and files/s of each mode."""
    mp4 = write_video(folder / "src" / "h264.mp4", frames, gop=25, faststart=True)
    avi = write_mpeg4_avi(folder / "src" / "divx.avi", frames, gop=25)
    files = [mp4, avi, *corrupted_copies(mp4, folder / "bad").values(), *corrupted_copies(avi, folder / "bad").values()]
    verdicts: dict[bool, list[str]] = {}
    rates = {}
    for full in (False, True):
        reader = RobustVideoReader()
        begin = time.perf_counter()
        checks = [check_video(path, reader, full=full) for path in files]
        rates[full] = len(files) / (time.perf_counter() - begin)
        verdicts[full] = [f"{c.verdict.value} {c.bad_share:.0%}" if c.bad_frames else c.verdict.value for c in checks]
    print(f"\n{'file':<26}{'quick':<26}{'full':<26}")
    for path, quick, full_verdict in zip(files, verdicts[False], verdicts[True]):
        print(f"{path.name:<26}{quick:<26}{full_verdict:<26}")
    print(f"files/s: quick {rates[False]:.1f}, full {rates[True]:.1f} ({len(files)} files, {len(frames)} frames each)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=120, help="frame height (width is 4/3 of it), even")
    parser.add_argument("--frames", type=int, default=120, help="frames per file (at most 256)")
    parser.add_argument("--clips", type=int, default=30, help="random clips per file and backend")
    args = parser.parse_args(argv)
    frames = index_code_frames(args.frames, args.size, args.size * 4 // 3)
    noise = np.random.default_rng(1).integers(-10, 11, frames.shape)
    frames = np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{args.frames} frames {args.size}x{args.size * 4 // 3}, {args.clips} random {CLIP}-frame clips a file")
        exactness_table(make_files(folder, frames), args.clips)
        check_table(folder, frames)


if __name__ == "__main__":
    main()
