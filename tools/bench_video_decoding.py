"""Decoder benchmark: random contiguous clips scaled to a short side, per CPU core, on h264 mp4s and on DivX AVIs.

Measures, with ``torch.set_num_threads(1)`` and one decoder thread, clips per wall second and clips per CPU second
(the per-core figure, robust to other load on the machine), runs interleaved, of:

* ``decord``             decord 0.6 ``VideoReader(width, height)``: scaling inside the decoder (swscale)
* ``decord+resize``      decord at native size, then ``torchvision.transforms.v2.functional.resize`` (antialias)
* ``vidrec-native``      ``RobustVideoReader`` (decode thread, time bound, frame index, timestamp check) with PyAV,
                         fast probe, skipped non-reference frames, at native size + torch resize; malloc untouched
* ``vidrec-pyav-noskip`` the same without skipping non-reference frames (``skip_nonref=False``)
* ``vidrec-pyav-plain``  the same with the full probe too (``fast_probe=False``; the decoder drain stays on)
* ``vidrec-decord``      ``RobustVideoReader`` with decord + torch resize
* ``pyav``               PyAV seek + decode + ``frame.reformat`` scaling (no reader, full probe, no skipping)
* ``torchcodec``         if importable (it needs system FFmpeg libraries)
* ``vidrec-default``     the datamodule's path: ``read(..., short_side=128)``, exact frames resized by torch in the
                         reader, glibc malloc thresholds fixed (``retain_freed_mb=64``)
* ``vidrec-sws``         the same with ``scale_in_decoder=True``: one swscale call converts and scales each frame
* ``decord@retain``, ``pyav@retain``, ``vidrec-native@retain``: those rows with the malloc thresholds fixed
* ``baseline:vidrec-default``, ``baseline:vidrec-decord`` (with ``--baseline ROOT``): the reader of another
  checkout (e.g. the main branch) on the same clips, interleaved with the rows above: a before/after in one run

Every row runs in a process of its own (spawned, as a DataLoader worker holds one reader): glibc's dynamic malloc
thresholds depend on what the process allocated before, and the reader's fixed thresholds are process-wide. Rows
marked ``@retain`` and ``vidrec-default`` fix them; the others leave glibc's defaults. The parent sends every
measurement to one process in turn, so runs stay interleaved. Each reading opens the file (as the dataset does per
item); a reader caches each file's header facts and frame index after its first read. Figures are medians over
``--runs`` runs of ``--clips`` clips, with the lowest and highest run. decord2 (the maintained fork) installs as the
same ``decord`` module, so it cannot be measured beside decord 0.6 in one environment; point a separate venv's
python at this script to measure it there.

The B-frame AVI table reads MPEG-4 Part 2 AVIs in DivX packed bitstream (as HMDB51 ships; written by
``fixture_videos.write_mpeg4_avi`` from the same frames) with the reader (frames addressed in decode order) and
decord, and counts clips that differ from a full sequential decode (the reader must give 0; decord's own index is
not trusted, which is why ``vidrec-decord`` reads these files with PyAV).

Then correctness checks: on a lossless video (libx264rgb, qp 0) every frame from decord, PyAV and the reader is
compared with the frames written (max abs difference, expected 0), and the reader's swscale-scaled frames with
torch's resize of the written frames (max and mean abs difference, not 0: a stated option); on the benchmark videos
(lossy, with B-frames) 200 random clips from the reader's default path are compared with a plain sequential PyAV
decode of the whole video (clips that differ, expected 0), the swscale-scaled clips with torch's resize of those
frames, and the frames the decoder output per clip are counted with and without skipping.

Usage::

    python tools/bench_video_decoding.py [--videos DIR] [--clips 40] [--runs 7] [--gop 50] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.video.decoding import (  # noqa: E402
    DecoderBackend,
    DecodeSettings,
    RobustVideoReader,
    open_video,
    short_side_size,
)
from datamodules.video.decoding.fixture_videos import decode_every_frame, write_mpeg4_avi  # noqa: E402
from datamodules.video.synthetic import write_video  # noqa: E402

ClipReader = Callable[[Path, int], np.ndarray]  # (path, start frame) -> frames (T, h, w, 3)


def make_test_videos(
    folder: Path, count: int, seconds: float, gop: int, seed: int = 0, avi: bool = False
) -> list[Path]:
    """320x240 25 fps videos: a drifting textured background with moving blocks and mild noise; h264 mp4s, or
    (``avi``) the same frames as MPEG-4 Part 2 with 2 B-frames in DivX packed-bitstream AVIs."""
    rng = np.random.default_rng(seed)
    frames_per_video = int(seconds * 25)
    pan = 2 * frames_per_video  # the texture drifts 2 px per frame
    yy, xx = np.mgrid[0:240, 0 : 320 + pan].astype(np.float32)
    paths = []
    for v in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        texture = np.stack(
            [128 + 90 * np.sin(xx / (11 + 4 * c) + phase[c]) * np.cos(yy / (17 + 3 * c)) for c in range(3)], axis=-1
        )  # (240, 320 + pan, 3)
        frames = np.empty((frames_per_video, 240, 320, 3), np.uint8)
        for t in range(frames_per_video):
            noise = rng.integers(-6, 7, size=(240, 320, 1), dtype=np.int16)
            frames[t] = np.clip(texture[:, 2 * t : 2 * t + 320] + noise, 0, 255)
            x0 = int(40 + 200 * (t / frames_per_video))
            frames[t, 80:140, x0 : x0 + 50] = (255, 40, 40)
        if avi:
            paths.append(write_mpeg4_avi(folder / f"bench_{v}.avi", frames, fps=25, gop=gop))
        else:
            paths.append(write_video(folder / f"bench_{v}.mp4", frames, fps=25, gop=gop))
    return paths


def target_size(short_side: int) -> tuple[int, int]:
    """(height, width) of a 320x240 frame scaled to ``short_side``, as torchvision's resize computes it."""
    return short_side_size(240, 320, short_side)


def decord_scaled(frames: int, short_side: int) -> ClipReader:
    import decord

    height, width = target_size(short_side)

    def read(path: Path, start: int) -> np.ndarray:
        reader = decord.VideoReader(str(path), width=width, height=height, num_threads=1)
        return reader.get_batch(list(range(start, start + frames))).asnumpy()

    return read


def decord_then_resize(frames: int, short_side: int) -> ClipReader:
    import decord

    def read(path: Path, start: int) -> np.ndarray:
        reader = decord.VideoReader(str(path), num_threads=1)
        clip = torch.from_numpy(reader.get_batch(list(range(start, start + frames))).asnumpy())  # (T, H, W, 3)
        return F.resize(clip.permute(0, 3, 1, 2), [short_side], antialias=True).numpy()  # (T, 3, h, w)

    return read


_MALLOC_UNTOUCHED = DecodeSettings(retain_freed_mb=None)  # glibc's dynamic malloc thresholds left alone


def vidrec_reader(frames: int, short_side: int, settings: DecodeSettings | None = None) -> ClipReader:
    """The reader at native size, then the transforms' torch resize in the caller."""
    reader = RobustVideoReader(settings or _MALLOC_UNTOUCHED)

    def read(path: Path, start: int) -> np.ndarray:
        clip = reader.read(path, lambda n, fps: list(range(start, start + frames)))
        if clip is None:
            raise RuntimeError(f"vidrec reader could not read {path}")
        video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
        return F.resize(video, [short_side], antialias=True).numpy()

    return read


def vidrec_short_side(frames: int, short_side: int, settings: DecodeSettings | None = None) -> ClipReader:
    """The reader asked for the short side, as the datamodule reads now (the transform's resize is then a no-op)."""
    reader = RobustVideoReader(settings or DecodeSettings())

    def read(path: Path, start: int) -> np.ndarray:
        clip = reader.read(path, lambda n, fps: list(range(start, start + frames)), short_side=short_side)
        if clip is None:
            raise RuntimeError(f"vidrec reader could not read {path}")
        return clip.frames  # (T, h, w, 3)

    return read


def vidrec_sws(frames: int, short_side: int) -> ClipReader:
    return vidrec_short_side(frames, short_side, DecodeSettings(scale_in_decoder=True))


def vidrec_pyav_noskip(frames: int, short_side: int) -> ClipReader:
    return vidrec_reader(frames, short_side, DecodeSettings(skip_nonref=False, retain_freed_mb=None))


def vidrec_pyav_plain(frames: int, short_side: int) -> ClipReader:
    settings = DecodeSettings(fast_probe=False, skip_nonref=False, retain_freed_mb=None)
    return vidrec_reader(frames, short_side, settings)


def vidrec_decord(frames: int, short_side: int) -> ClipReader:
    return vidrec_reader(frames, short_side, DecodeSettings(backend=DecoderBackend.DECORD, retain_freed_mb=None))


def pyav_scaled(frames: int, short_side: int) -> ClipReader:
    import av

    height, width = target_size(short_side)

    def read(path: Path, start: int) -> np.ndarray:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            assert stream.time_base is not None, f"no time base in {path}"
            time_base = float(stream.time_base)
            container.seek(int(start / 25.0 / time_base), stream=stream, backward=True)
            out = []
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                index = int(round(frame.pts * time_base * 25.0))
                if index >= start:
                    out.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
                if len(out) == frames:
                    break
        return np.stack(out)  # (T, h, w, 3)

    return read


def torchcodec_scaled(frames: int, short_side: int) -> ClipReader:
    from torchcodec.decoders import VideoDecoder

    def read(path: Path, start: int) -> np.ndarray:
        decoder = VideoDecoder(str(path), seek_mode="approximate", num_ffmpeg_threads=1)
        batch = decoder.get_frames_in_range(start, start + frames).data  # (T, 3, H, W)
        return F.resize(batch, [short_side], antialias=True).numpy()

    return read


# Row name -> (reader factory name, whether its process fixes the malloc thresholds as the reader does).
ROWS: dict[str, tuple[str, bool]] = {
    "decord": ("decord_scaled", False),
    "decord+resize": ("decord_then_resize", False),
    "vidrec-native": ("vidrec_reader", False),
    "vidrec-pyav-noskip": ("vidrec_pyav_noskip", False),
    "vidrec-pyav-plain": ("vidrec_pyav_plain", False),
    "vidrec-decord": ("vidrec_decord", False),
    "pyav": ("pyav_scaled", False),
    "torchcodec": ("torchcodec_scaled", False),
    "vidrec-default": ("vidrec_short_side", True),
    "vidrec-sws": ("vidrec_sws", True),
    "vidrec-native@retain": ("vidrec_reader", True),
    "decord@retain": ("decord_scaled", True),
    "pyav@retain": ("pyav_scaled", True),
    "baseline:vidrec-default": ("vidrec_short_side", True),
    "baseline:vidrec-decord": ("vidrec_decord", False),
}
AVI_ROWS = ["decord", "vidrec-decord", "vidrec-default", "vidrec-sws"]  # rows of the B-frame AVI table


def _import_baseline(root: str) -> None:
    """Replace this process's ``datamodules`` and the factories' reader classes with those of checkout ``root``."""
    for module in [m for m in sys.modules if m == "datamodules" or m.startswith("datamodules.")]:
        del sys.modules[module]
    sys.path.insert(0, root)
    from datamodules.video import decoding

    globals().update(
        RobustVideoReader=decoding.RobustVideoReader,
        DecodeSettings=decoding.DecodeSettings,
        DecoderBackend=decoding.DecoderBackend,
    )
    globals()["_MALLOC_UNTOUCHED"] = decoding.DecodeSettings(retain_freed_mb=None)


def _measure_worker(
    connection: Connection, name: str, frames: int, short_side: int, baseline: str | None = None
) -> None:
    """Child process: build the reader of row ``name``, then time each list of ``(path, start)`` the parent sends."""
    torch.set_num_threads(1)
    if name.startswith("baseline:"):
        assert baseline is not None, "baseline rows need --baseline"
        _import_baseline(baseline)
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    factory, retain = ROWS[name]
    if retain:
        from datamodules.video.decoding import retain_freed_memory

        retain_freed_memory(DecodeSettings().retain_freed_mb or 64)  # before anything allocates (the reader also would)
    read = globals()[factory](frames, short_side)
    while (jobs := connection.recv()) is not None:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        begin, cpu_begin = time.perf_counter(), time.process_time()
        for path, start in jobs:
            clip = read(path, start)
            assert len(clip) == frames, (name, path, start, clip.shape)
        wall, cpu = time.perf_counter() - begin, time.process_time() - cpu_begin
        connection.send((wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))


def measure(
    names: list[str],
    videos: list[Path],
    num_frames: list[int],
    frames: int,
    short_side: int,
    clips: int,
    runs: int,
    baseline: str | None = None,
) -> dict[str, tuple[float, float, float, float, float]]:
    """Per row: median clips per wall second, median, lowest and highest clips per CPU second over ``runs`` runs,
    and the median of page faults (minor) a clip.

    Runs are interleaved (every row reads the same ``clips`` clips in each run, in a rotating order), so a change
    of load on the machine hits all rows alike. The CPU-second figure (all threads of the measuring process) is the
    per-core cost even when other processes compete for the cores.
    """
    context = multiprocessing.get_context("spawn")  # fresh processes: malloc as glibc starts it
    workers: dict[str, tuple[Connection, Any]] = {}
    for name in names:
        parent, child = context.Pipe()
        process = context.Process(target=_measure_worker, args=(child, name, frames, short_side, baseline))
        process.start()
        workers[name] = (parent, process)
    try:
        rng = np.random.default_rng(0)
        for name in names:  # warm-up (imports, first open)
            workers[name][0].send([(videos[0], 0)])
            workers[name][0].recv()
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpu_rates: dict[str, list[float]] = {name: [] for name in names}
        faults: dict[str, list[float]] = {name: [] for name in names}
        for run in range(runs):
            picks = [int(v) for v in rng.integers(0, len(videos), size=clips)]
            jobs = [(videos[v], int(rng.integers(0, num_frames[v] - frames + 1))) for v in picks]
            for name in names[run % len(names) :] + names[: run % len(names)]:
                connection = workers[name][0]
                connection.send(jobs)
                wall, cpu, run_faults = connection.recv()
                rates[name].append(clips / wall)
                cpu_rates[name].append(clips / cpu)
                faults[name].append(run_faults / clips)
    finally:
        for connection, process in workers.values():
            connection.send(None)
            process.join(timeout=30)
    return {
        name: (
            statistics.median(rates[name]),
            statistics.median(cpu_rates[name]),
            min(cpu_rates[name]),
            max(cpu_rates[name]),
            statistics.median(faults[name]),
        )
        for name in names
    }


def correctness(folder: Path, short_side: int) -> tuple[dict[str, int], tuple[int, float]]:
    """Max abs difference to the written frames on a lossless 320x240 video, per decoder; and (max, mean) abs
    difference of the reader's swscale-scaled frames to torch's resize of the written frames."""
    import av
    import decord

    truth = np.random.default_rng(1).integers(0, 256, size=(30, 240, 320, 3), dtype=np.uint8)
    path = write_video(folder / "lossless.mp4", truth, fps=25, lossless=True, gop=10)
    reader = decord.VideoReader(str(path), num_threads=1)
    decoded = {"decord": reader.get_batch(list(range(30))).asnumpy()}
    with av.open(str(path)) as container:
        decoded["pyav"] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    for name, settings in (
        ("vidrec-default", DecodeSettings()),
        ("vidrec-decord", DecodeSettings(DecoderBackend.DECORD)),
    ):
        vidrec = RobustVideoReader(settings).read(path, fixed_clip(list(range(30))))
        assert vidrec is not None, f"{name} could not read {path}"
        decoded[name] = vidrec.frames
    diffs = {name: int(np.abs(frames.astype(np.int16) - truth).max()) for name, frames in decoded.items()}
    diffs["decord-vs-pyav"] = int(np.abs(decoded["decord"].astype(np.int16) - decoded["pyav"]).max())
    sws = RobustVideoReader(DecodeSettings(scale_in_decoder=True))
    scaled = sws.read(path, fixed_clip(list(range(30))), short_side)
    assert scaled is not None, f"vidrec-sws could not read {path}"
    difference = np.abs(scaled.frames.astype(np.int16) - torch_short_side(truth, short_side))
    return diffs, (int(difference.max()), float(difference.mean()))


def torch_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """The transforms' resize: uint8 (T, H, W, 3) -> (T, h, w, 3), antialiased bilinear."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
    return F.resize(video, [short_side], antialias=True).permute(0, 2, 3, 1).numpy()  # (T, h, w, 3)


def fixed_clip(indices: list[int]) -> Callable[[int, float], list[int]]:
    """A clip chooser that always answers ``indices``."""
    return lambda num_frames, fps: indices


def bframe_correctness(
    videos: list[Path], frames: int, short_side: int, clips: int = 200
) -> tuple[int, float, float, int, float]:
    """Clips of the default reader differing from a full decode; mean decoder frames a clip (skip, no skip); max
    and mean abs difference of the swscale-scaled clips to torch's resize of the full decode's frames."""
    import av

    truth = []
    for path in videos:
        with av.open(str(path)) as container:
            truth.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))  # (N, H, W, 3)
    reader = RobustVideoReader()
    scaling = RobustVideoReader(DecodeSettings(scale_in_decoder=True))
    rng = np.random.default_rng(1)
    differing = 0
    decoded = {True: 0, False: 0}
    scaled_max, scaled_sum, scaled_count = 0, 0.0, 0
    for _ in range(clips):
        v = int(rng.integers(0, len(videos)))
        indices = list(range(start := int(rng.integers(0, len(truth[v]) - frames + 1)), start + frames))
        clip = reader.read(videos[v], fixed_clip(indices))
        if clip is None or not np.array_equal(clip.frames, truth[v][indices]):
            differing += 1
        scaled = scaling.read(videos[v], fixed_clip(indices), short_side)
        assert scaled is not None, f"vidrec-sws could not read {videos[v]}"
        difference = np.abs(scaled.frames.astype(np.int16) - torch_short_side(truth[v][indices], short_side))
        scaled_max = max(scaled_max, int(difference.max()))
        scaled_sum, scaled_count = scaled_sum + float(difference.sum()), scaled_count + difference.size
        for skip in (True, False):
            video = open_video(videos[v], DecoderBackend.PYAV, settings=DecodeSettings(skip_nonref=skip))
            video.read(indices)
            decoded[skip] += video.decoded_frames  # type: ignore[attr-defined]
    return differing, decoded[True] / clips, decoded[False] / clips, scaled_max, scaled_sum / scaled_count


def avi_correctness(videos: list[Path], frames: int, clips: int = 100) -> dict[str, int]:
    """Random clips of the AVIs that differ from a full sequential decode: the reader (PyAV, decord) and raw decord."""
    import decord

    truth = [decode_every_frame(path) for path in videos]  # (N, H, W, 3) each
    readers = {
        "vidrec-default": RobustVideoReader(),
        "vidrec-decord": RobustVideoReader(DecodeSettings(backend=DecoderBackend.DECORD)),
    }
    rng = np.random.default_rng(2)
    differing = {"decord": 0, **dict.fromkeys(readers, 0)}
    for _ in range(clips):
        v = int(rng.integers(0, len(videos)))
        indices = list(range(start := int(rng.integers(0, len(truth[v]) - frames + 1)), start + frames))
        for name, reader in readers.items():
            clip = reader.read(videos[v], fixed_clip(indices))
            differing[name] += clip is None or not np.array_equal(clip.frames, truth[v][indices])
        raw = decord.VideoReader(str(videos[v]), num_threads=1).get_batch(indices).asnumpy()
        differing["decord"] += not np.array_equal(raw, truth[v][indices])  # decord's own conversion may differ
    return differing


def _print_rows(results: dict[str, tuple[float, float, float, float, float]]) -> None:
    header = f"{'decoder':<26}{'clips/wall s':>14}{'clips/CPU s':>13}{'lowest':>9}{'highest':>9}{'CPU ms/clip':>13}"
    print(f"{header}{'faults/clip':>13}")
    for name, (rate, cpu_rate, lowest, highest, clip_faults) in results.items():
        print(
            f"{name:<26}{rate:>14.1f}{cpu_rate:>13.1f}{lowest:>9.1f}{highest:>9.1f}{1000 / cpu_rate:>13.1f}"
            f"{clip_faults:>13.0f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=None, help="folder of 320x240 mp4s (default: generate)")
    parser.add_argument("--num-videos", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of generated videos")
    parser.add_argument("--gop", type=int, default=50, help="key-frame interval of generated videos (frames)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--clips", type=int, default=40, help="clips per run")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", default=None, help="another checkout whose reader is measured beside this one")
    parser.add_argument("--no-avi", action="store_true", help="skip the B-frame AVI table")
    parser.add_argument("--rows", nargs="+", default=None, help="measure only these rows of the h264 table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "avi").mkdir()
        if args.videos is None:
            start = time.perf_counter()
            videos = make_test_videos(folder, args.num_videos, args.seconds, args.gop)
            print(
                f"generated {len(videos)} videos 320x240 h264, {args.seconds:g} s at 25 fps, gop {args.gop} "
                f"in {time.perf_counter() - start:.1f} s"
            )
        else:
            videos = sorted(args.videos.glob("*.mp4"))
        num_frames = [len(decord.VideoReader(str(v), num_threads=1)) for v in videos]
        names = [name for name in ROWS if name != "torchcodec" or importlib.util.find_spec("torchcodec") is not None]
        names = [name for name in names if args.baseline is not None or not name.startswith("baseline:")]
        names = [name for name in names if args.rows is None or name in args.rows]
        print(
            f"\nrandom contiguous {args.frames}-frame clips -> short side {args.short_side}, 1 thread, "
            f"median of {args.runs} interleaved runs x {args.clips} clips (decord {decord.__version__})"
        )
        results = measure(names, videos, num_frames, args.frames, args.short_side, args.clips, args.runs, args.baseline)
        _print_rows(results)
        if not args.no_avi:
            avis = make_test_videos(folder / "avi", args.num_videos, args.seconds, args.gop, avi=True)
            avi_frames = [len(decode_every_frame(v)) for v in avis]
            print(
                f"\nB-frame AVIs (MPEG-4 Part 2, 2 B-frames, DivX packed bitstream, gop {args.gop}), same frames and "
                f"clips as above (a reader caches each file's frame index: decoded once, at its first read)"
            )
            _print_rows(measure(AVI_ROWS, avis, avi_frames, args.frames, args.short_side, args.clips, args.runs))
            differing = avi_correctness(avis, args.frames)
            print(
                "clips of 100 differing from a full sequential decode: "
                + ", ".join(f"{name} {count}" for name, count in differing.items())
                + " (raw decord: its own frame index and colour conversion)"
            )
        if "torchcodec" not in names:
            print("torchcodec: not installed (its wheels need system FFmpeg libraries, absent here)")
        print("decord2: not measured (installs as the same 'decord' module; needs a separate venv)")
        print("\ncorrectness on a lossless (libx264rgb qp 0) 320x240 video, 30 frames: max abs diff")
        diffs, (scaled_max, scaled_mean) = correctness(folder, args.short_side)
        for name, diff in diffs.items():
            print(f"  {name:<16}{diff}")
        print(f"  vidrec-sws vs torch resize of the true frames: max {scaled_max}, mean {scaled_mean:.3f}")
        differing, skip_frames, full_frames, bench_max, bench_mean = bframe_correctness(
            videos, args.frames, args.short_side
        )
        print(
            f"\nreader default path vs a full sequential PyAV decode, 200 random clips of the benchmark videos "
            f"(B-frames): {differing} differ; decoder output {skip_frames:.1f} frames a clip skipping "
            f"non-reference frames, {full_frames:.1f} without; vidrec-sws vs torch resize of those frames: "
            f"max {bench_max}, mean {bench_mean:.3f}"
        )


if __name__ == "__main__":
    main()
