"""Decoder benchmark: random contiguous clips from 320x240 h264 videos, scaled to a short side, per CPU core.

Measures, single process with ``torch.set_num_threads(1)`` and one decoder thread, clips per wall second and clips per
CPU second of the process (the per-core figure, robust to other load on the machine), runs interleaved, of:

* ``decord``            decord 0.6 ``VideoReader(width, height)``: scaling inside the decoder (swscale)
* ``decord+resize``     decord at native size, then ``torchvision.transforms.v2.functional.resize`` (antialias)
* ``vidrec-reader``     the datamodule's default path: ``RobustVideoReader`` (decode thread, time bound, timestamp
                        check) with PyAV, fast probe and skipped non-reference frames outside the clip, + torch resize
* ``vidrec-pyav-noskip`` the same without skipping non-reference frames (``skip_nonref=False``)
* ``vidrec-pyav-plain`` the same with the full probe too (``fast_probe=False``; the decoder drain stays on)
* ``vidrec-decord``     ``RobustVideoReader`` with decord (the default before PyAV's fast path) + torch resize
* ``pyav``              PyAV seek + decode + ``frame.reformat`` scaling (no reader, full probe, no skipping)
* ``torchcodec``        if importable (it needs system FFmpeg libraries)

Each reading opens the file (as the dataset does per item). Figures are medians over ``--runs`` runs of ``--clips``
clips. decord2 (the maintained fork) installs as the same ``decord`` module, so it cannot be measured beside decord
0.6 in one environment; point ``--python`` of a separate venv at this script to measure it there.

Then correctness checks: on a lossless video (libx264rgb, qp 0) every frame from decord, PyAV and the reader is
compared with the frames written (max abs difference, expected 0); on the benchmark videos (lossy, with B-frames) 200
random clips from the reader's default path are compared with a plain sequential PyAV decode of the whole video
(clips that differ, expected 0), and the frames the decoder output per clip are counted with and without skipping.

Usage::

    python tools/bench_video_decoding.py [--videos DIR] [--clips 40] [--runs 7] [--gop 50]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.video.decoding import DecoderBackend, DecodeSettings, RobustVideoReader, open_video  # noqa: E402
from datamodules.video.synthetic import write_video  # noqa: E402

ClipReader = Callable[[Path, int], np.ndarray]  # (path, start frame) -> frames (T, h, w, 3)


def make_test_videos(folder: Path, count: int, seconds: float, gop: int, seed: int = 0) -> list[Path]:
    """320x240 25 fps h264 videos: a drifting textured background with moving blocks and mild noise."""
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
        paths.append(write_video(folder / f"bench_{v}.mp4", frames, fps=25, gop=gop))
    return paths


def target_size(short_side: int) -> tuple[int, int]:
    """(height, width) of a 320x240 frame scaled to ``short_side``."""
    return short_side, int(round(320 * short_side / 240))


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


def vidrec_reader(frames: int, short_side: int, settings: DecodeSettings | None = None) -> ClipReader:
    reader = RobustVideoReader(settings or DecodeSettings())

    def read(path: Path, start: int) -> np.ndarray:
        clip = reader.read(path, lambda n, fps: list(range(start, start + frames)))
        if clip is None:
            raise RuntimeError(f"vidrec reader could not read {path}")
        video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
        return F.resize(video, [short_side], antialias=True).numpy()

    return read


def vidrec_pyav_noskip(frames: int, short_side: int) -> ClipReader:
    return vidrec_reader(frames, short_side, DecodeSettings(backend=DecoderBackend.PYAV, skip_nonref=False))


def vidrec_pyav_plain(frames: int, short_side: int) -> ClipReader:
    settings = DecodeSettings(backend=DecoderBackend.PYAV, fast_probe=False, skip_nonref=False)
    return vidrec_reader(frames, short_side, settings)


def vidrec_decord(frames: int, short_side: int) -> ClipReader:
    return vidrec_reader(frames, short_side, DecodeSettings(backend=DecoderBackend.DECORD))


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


def measure(
    readers: dict[str, ClipReader], videos: list[Path], num_frames: list[int], frames: int, clips: int, runs: int
) -> dict[str, tuple[float, float]]:
    """Per reader, median clips per wall second and per CPU second (all threads of this process) over ``runs`` runs.

    Runs are interleaved (every reader reads the same ``clips`` clips in each run, in a rotating order), so a change
    of load on the machine hits all readers alike. The CPU-second figure is the per-core cost even when other
    processes compete for the cores.
    """
    rng = np.random.default_rng(0)
    for read in readers.values():
        read(videos[0], 0)  # warm-up (imports, first open)
    rates: dict[str, list[float]] = {name: [] for name in readers}
    cpu_rates: dict[str, list[float]] = {name: [] for name in readers}
    names = list(readers)
    for run in range(runs):
        jobs = [int(v) for v in rng.integers(0, len(videos), size=clips)]
        starts = [int(rng.integers(0, num_frames[v] - frames + 1)) for v in jobs]
        for name in names[run % len(names) :] + names[: run % len(names)]:
            begin, cpu_begin = time.perf_counter(), time.process_time()
            for v, s in zip(jobs, starts):
                clip = readers[name](videos[v], s)
                assert len(clip) == frames, (name, videos[v], s, clip.shape)
            rates[name].append(clips / (time.perf_counter() - begin))
            cpu_rates[name].append(clips / (time.process_time() - cpu_begin))
    return {name: (statistics.median(rates[name]), statistics.median(cpu_rates[name])) for name in names}


def correctness(folder: Path) -> dict[str, int]:
    """Max abs difference to the written frames on a lossless 320x240 video, per decoder."""
    import av
    import decord

    truth = np.random.default_rng(1).integers(0, 256, size=(30, 240, 320, 3), dtype=np.uint8)
    path = write_video(folder / "lossless.mp4", truth, fps=25, lossless=True, gop=10)
    reader = decord.VideoReader(str(path), num_threads=1)
    decoded = {"decord": reader.get_batch(list(range(30))).asnumpy()}
    with av.open(str(path)) as container:
        decoded["pyav"] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    for name, settings in (
        ("vidrec-reader", DecodeSettings()),
        ("vidrec-decord", DecodeSettings(DecoderBackend.DECORD)),
    ):
        vidrec = RobustVideoReader(settings).read(path, lambda n, fps: list(range(30)))
        assert vidrec is not None, f"{name} could not read {path}"
        decoded[name] = vidrec.frames
    diffs = {name: int(np.abs(frames.astype(np.int16) - truth).max()) for name, frames in decoded.items()}
    diffs["decord-vs-pyav"] = int(np.abs(decoded["decord"].astype(np.int16) - decoded["pyav"]).max())
    return diffs


def fixed_clip(indices: list[int]) -> Callable[[int, float], list[int]]:
    """A clip chooser that always answers ``indices``."""
    return lambda num_frames, fps: indices


def bframe_correctness(videos: list[Path], frames: int, clips: int = 200) -> tuple[int, float, float]:
    """Clips of the default reader differing from a full decode; mean decoder frames a clip (skip, no skip)."""
    import av

    truth = []
    for path in videos:
        with av.open(str(path)) as container:
            truth.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))  # (N, H, W, 3)
    reader = RobustVideoReader()
    rng = np.random.default_rng(1)
    differing = 0
    decoded = {True: 0, False: 0}
    for _ in range(clips):
        v = int(rng.integers(0, len(videos)))
        indices = list(range(start := int(rng.integers(0, len(truth[v]) - frames + 1)), start + frames))
        clip = reader.read(videos[v], fixed_clip(indices))
        if clip is None or not np.array_equal(clip.frames, truth[v][indices]):
            differing += 1
        for skip in (True, False):
            video = open_video(videos[v], DecoderBackend.PYAV, settings=DecodeSettings(skip_nonref=skip))
            video.read(indices)
            decoded[skip] += video.decoded_frames  # type: ignore[attr-defined]
    return differing, decoded[True] / clips, decoded[False] / clips


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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
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
        readers: dict[str, Callable[[int, int], ClipReader]] = {
            "decord": decord_scaled,
            "decord+resize": decord_then_resize,
            "vidrec-reader": vidrec_reader,
            "vidrec-pyav-noskip": vidrec_pyav_noskip,
            "vidrec-pyav-plain": vidrec_pyav_plain,
            "vidrec-decord": vidrec_decord,
            "pyav": pyav_scaled,
        }
        if importlib.util.find_spec("torchcodec") is not None:
            readers["torchcodec"] = torchcodec_scaled
        print(
            f"\nrandom contiguous {args.frames}-frame clips -> short side {args.short_side}, 1 thread, "
            f"median of {args.runs} interleaved runs x {args.clips} clips (decord {decord.__version__})"
        )
        print(f"{'decoder':<20}{'clips/wall s':>14}{'clips/CPU s':>13}{'CPU ms/clip':>13}")
        made = {name: make(args.frames, args.short_side) for name, make in readers.items()}
        for name, (rate, cpu_rate) in measure(made, videos, num_frames, args.frames, args.clips, args.runs).items():
            print(f"{name:<20}{rate:>14.1f}{cpu_rate:>13.1f}{1000 / cpu_rate:>13.1f}")
        if "torchcodec" not in readers:
            print("torchcodec: not installed (its wheels need system FFmpeg libraries, absent here)")
        print("decord2: not measured (installs as the same 'decord' module; needs a separate venv)")
        print("\ncorrectness on a lossless (libx264rgb qp 0) 320x240 video, 30 frames: max abs diff")
        for name, diff in correctness(folder).items():
            print(f"  {name:<16}{diff}")
        differing, skip_frames, full_frames = bframe_correctness(videos, args.frames)
        print(
            f"\nreader default path vs a full sequential PyAV decode, 200 random clips of the benchmark videos "
            f"(B-frames): {differing} differ; decoder output {skip_frames:.1f} frames a clip skipping "
            f"non-reference frames, {full_frames:.1f} without"
        )


if __name__ == "__main__":
    main()
