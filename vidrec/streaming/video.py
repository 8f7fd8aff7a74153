"""Streaming video checkpoints: frames read one at a time with PyAV, streamed clip by clip (``vidrec stream`` and
``vidrec evaluate-streaming`` of a video checkpoint).

A video source is a file, a camera device (``/dev/video0``, opened through v4l2) or a network stream (``rtsp://``,
``http(s)://``), all opened by PyAV (FFmpeg) and decoded in order. Each native frame goes through:

    native frame uint8 (H, W, 3)
      -> FrameSampler        keep the clip frames: every ``frame_stride``-th frame, or resampled to ``rate`` fps
      -> FramePreprocessor   short side resize, centre crop, [0, 1], per-channel normalisation (the test transform)
      -> (3, crop, crop) float32, one time step of StreamingClassifier(frame_shape=(crop, crop), hop=1)

After its first ``window`` clip frames a stream reports, at every new clip frame, the logits of the clip of the last
``window`` clip frames, equal to the offline model on the stacked clip of the same frames. ``evaluate_video_streaming``
checks exactly that on the test videos of the checkpoint's split (``max |streamed - offline|`` logits) and scores
both sides against the video labels.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from vidrec.spec import DeploymentSpec, Modality

__all__ = [
    "FramePreprocessor",
    "FrameSampler",
    "VideoFrame",
    "evaluate_video_streaming",
    "read_frames",
    "run_evaluate_streaming",
    "run_stream",
    "videos_of_test_split",
]


@dataclass
class VideoFrame:
    """One decoded native frame: its index in the stream, its time in seconds and its RGB pixels (H, W, 3) uint8."""

    index: int
    time: float
    rgb: np.ndarray


def _is_device(source: str) -> bool:
    return source.startswith("/dev/video") or source.isdigit()


def read_frames(source: str | Path, *, max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Decode a video file, camera device or RTSP/HTTP URL frame by frame with PyAV.

    Args:
        source: A path, ``/dev/videoN`` or ``N`` (a camera, v4l2), or an ``rtsp://`` / ``http(s)://`` URL.
        max_frames: Stop after this many native frames.

    Raises:
        FileNotFoundError: a local file that does not exist.
        ValueError: the source has no video stream.
    """
    from datamodules.video.decoding.frame_index import (
        open_container,
    )  # metadata that is not UTF-8 is read, as in training

    text = str(source)
    if _is_device(text):
        container = open_container(f"/dev/video{text}" if text.isdigit() else text, format="v4l2")
    elif "://" in text:
        container = open_container(text, options={"rtsp_transport": "tcp"} if text.startswith("rtsp") else {})
    else:
        if not Path(text).is_file():
            raise FileNotFoundError(f"video {text} does not exist")
        container = open_container(text)
    with container:
        if not container.streams.video:
            raise ValueError(f"{text}: no video stream")
        stream = container.streams.video[0]
        base = stream.time_base
        for i, frame in enumerate(container.decode(stream)):
            if max_frames is not None and i >= max_frames:
                return
            seconds = float(frame.pts * base) if frame.pts is not None and base is not None else float(i)
            yield VideoFrame(i, seconds, frame.to_ndarray(format="rgb24"))


class FrameSampler:
    """Which native frames are clip frames: the datamodule's ``floor(k * step)`` positions (``ClipTiming.step``).

    ``step`` is ``frame_stride``, or ``native_fps / rate`` when the spec resamples to a frame rate; with ``step < 1``
    a native frame is emitted more than once, as the offline clip repeats it.
    """

    def __init__(self, spec: DeploymentSpec, native_fps: float | None) -> None:
        if spec.rate > 0:
            if not native_fps:
                raise ValueError(f"the model resamples video to {spec.rate} fps but the source reports no frame rate")
            self.step = Fraction(native_fps).limit_denominator(1001) / Fraction(spec.rate).limit_denominator(1001)
        else:
            self.step = Fraction(spec.frame_stride)
        self._next = Fraction(0)

    def copies(self, index: int) -> int:
        """How many clip frames native frame ``index`` gives (frames must come in order)."""
        n = 0
        while math.floor(self._next) <= index:
            if math.floor(self._next) == index:
                n += 1
            self._next += self.step
        return n


class FramePreprocessor:
    """One native frame -> one normalised clip frame, with the test transform of the data module.

    It runs ``EvalClipTransform`` (short side resize, centre crop, ``ChannelNormalization``) on a one-frame clip, so
    every streamed frame equals the frame of an offline clip pixel for pixel.
    """

    def __init__(self, spec: DeploymentSpec) -> None:
        from datamodules.video.transforms import EvalClipTransform, TransformSettings

        if spec.modality is not Modality.VIDEO or len(spec.frame_size) != 2:
            raise ValueError(f"a video deployment spec with frame_size (H, W) is needed, got {spec.modality.value}")
        crop = int(spec.frame_size[0])
        side = spec.short_side or crop
        settings = TransformSettings(
            crop_size=crop,
            train_short_side=side,
            test_short_side=side,
            mean=tuple(spec.normalization.mean.tolist()),  # type: ignore[arg-type]
            std=tuple(spec.normalization.std.tolist()),  # type: ignore[arg-type]
        )
        self._transform = EvalClipTransform(settings)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> float32 (3, crop, crop)."""
        return self._transform(rgb[None])[:, 0]  # (3, 1, crop, crop) -> (3, crop, crop)


def _native_fps(source: str | Path) -> float | None:
    from datamodules.video.decoding.frame_index import open_container

    text = str(source)
    if _is_device(text) or "://" in text:
        return None
    with open_container(text) as container:
        rate = container.streams.video[0].average_rate if container.streams.video else None
        return float(rate) if rate else None


def clip_frames(spec: DeploymentSpec, source: str | Path, *, max_frames: int | None = None) -> Iterator[torch.Tensor]:
    """The normalised clip frames ``(3, crop, crop)`` of a source, in order."""
    sampler = FrameSampler(spec, _native_fps(source) if spec.rate > 0 else None)
    prepare = FramePreprocessor(spec)
    for frame in read_frames(source, max_frames=max_frames):
        n = sampler.copies(frame.index)
        if n:
            x = prepare(frame.rgb)
            for _ in range(n):
                yield x


def videos_of_test_split(spec: DeploymentSpec, root: str | None = None) -> list[tuple[Path, int]]:
    """``(path, label)`` of the test videos of the checkpoint's split, from the data module the spec names."""
    source = spec.data_source
    if not source.get("class_path"):
        raise ValueError("the checkpoint's deployment spec names no video data module (data_source); pass --input")
    module, _, name = str(source["class_path"]).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = dict(source.get("init_args") or {})
    if root:
        args["root"] = root
    dm = cls(**args)
    from datamodules.video.layouts import Split

    if list(dm.class_names) != list(spec.class_names):
        raise ValueError(f"{args.get('root')}: classes differ from the checkpoint's ({len(spec.class_names)} classes)")
    return list(dm._index(Split.TEST).items)


def evaluate_video_streaming(
    loaded: Any,
    videos: list[tuple[Path, int]],
    *,
    batch_size: int = 16,
    max_frames: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Stream each video frame by frame and compare every streamed clip with the offline clip of the same frames.

    Both sides run on ``device`` (the checkpoint's model is moved there); logits are compared on the CPU. The
    stream steps in ``precision`` (``vidrec.streaming.command.PRECISIONS``), the offline side in the model's dtype.

    Returns a report: clip accuracy of both sides (every clip a stream emits, labelled with its video's label),
    video accuracy (the mean of the clips' softmax, as ``vidrec test`` groups views), the argmax agreement, the
    largest logit difference, and the frames to the first correct streamed decision per video.
    """
    from vidrec.streaming.command import build_runtime

    spec: DeploymentSpec = loaded.require_spec()
    device = torch.device(device)
    model = loaded.model.eval().to(device)
    window = spec.input_length
    clips_off, clips_str, agree, targets, deltas, first_correct = 0, 0, 0, 0, [], []
    video_off, video_str, skipped = 0, 0, 0
    stream_seconds, offline_seconds = 0.0, 0.0
    runtime = build_runtime(loaded, hop=1, precision=precision, device=device)
    for path, label in videos:
        runtime.reset()  # a new stream: warm-up again
        frames: list[torch.Tensor] = []
        streamed: list[torch.Tensor] = []
        t0 = time.perf_counter()
        for x in clip_frames(spec, path, max_frames=max_frames):
            frames.append(x)
            res = runtime.step(x[None, :, None])  # (1, 3, 1, crop, crop)
            if bool(res.ready[0]):
                streamed.append(res.logits[0].float())
        stream_seconds += time.perf_counter() - t0
        if not streamed:
            skipped += 1
            continue
        video = torch.stack(frames, dim=1).to(device)  # (3, T_video, crop, crop)
        t0 = time.perf_counter()
        with torch.inference_mode():
            starts = range(len(frames) - window + 1)
            batches = [
                model(torch.stack([video[:, s : s + window] for s in starts[b : b + batch_size]]))
                for b in range(0, len(starts), batch_size)
            ]
            offline = torch.cat(batches).float().cpu()  # (n, K): clip s covers clip frames [s, s + window)
        offline_seconds += time.perf_counter() - t0
        stream = torch.stack(streamed)  # (n, K)
        deltas.append(float((stream - offline).abs().max()))
        p_off, p_str = offline.argmax(1), stream.argmax(1)
        clips_off += int((p_off == label).sum())
        clips_str += int((p_str == label).sum())
        agree += int((p_off == p_str).sum())
        targets += len(stream)
        video_off += int(int(offline.softmax(1).mean(0).argmax()) == label)
        video_str += int(int(stream.softmax(1).mean(0).argmax()) == label)
        hits = torch.nonzero(p_str == label)
        if len(hits):
            first_correct.append(window + int(hits[0]))
    scored = len(videos) - skipped
    if not scored:
        raise ValueError(f"no test video has {window} clip frames (the clip length)")
    return {
        "modality": "video",
        "clip_frames": window,
        "videos": scored,
        "videos_shorter_than_a_clip": skipped,
        "clips": targets,
        "label_policy": "every clip carries its video's label",
        "offline": {"clip_accuracy": clips_off / targets, "video_accuracy": video_off / scored},
        "streaming": {"clip_accuracy": clips_str / targets, "video_accuracy": video_str / scored},
        "max_abs_logit_delta": max(deltas),
        "argmax_agreement": agree / targets,
        "frames_to_first_correct_decision_median": float(np.median(first_correct)) if first_correct else None,
        "videos_never_decided": scored - len(first_correct),
        "streaming_ms_per_frame": stream_seconds * 1000.0 / max(targets + skipped, 1),
        "offline_ms_per_clip_batched": offline_seconds * 1000.0 / max(targets, 1),
        "class_names": list(spec.class_names),
        "device": str(device),
        "streaming_dtype": str(runtime.dtype).removeprefix("torch."),
    }


def run_evaluate_streaming(args: argparse.Namespace, loaded: Any) -> dict[str, Any]:
    """``vidrec evaluate-streaming`` of a video checkpoint: the test videos of its split; writes the JSON report."""
    spec: DeploymentSpec = loaded.require_spec()
    videos = videos_of_test_split(spec, args.data)
    if getattr(args, "max_videos", None):
        videos = videos[: args.max_videos]
    from vidrec.streaming.devices import run_device

    precision = getattr(args, "precision", "fp32")
    report = evaluate_video_streaming(loaded, videos, device=run_device(args), precision=precision)
    report["checkpoint"] = str(getattr(loaded, "path", ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'streaming_eval.json'}", file=sys.stderr)
    return report


def run_stream(args: argparse.Namespace, loaded: Any, out: TextIO) -> dict[str, Any]:
    """``vidrec stream`` of a video checkpoint: one JSON line (or table row) per clip frame once a clip is full."""
    spec: DeploymentSpec = loaded.require_spec()
    source = args.input
    if source in (None, "-"):
        raise ValueError("a video checkpoint streams from --input VIDEO_FILE, /dev/videoN or an rtsp:// / http:// URL")
    hop = args.hop or 1
    from vidrec.streaming.command import print_engine
    from vidrec.streaming.devices import run_device

    precision = getattr(args, "precision", "fp32")
    runtime = build_video_runtime(loaded, hop, getattr(args, "backend", "torch"), precision, run_device(args))

    print_engine(args, runtime)
    sampler = FrameSampler(spec, _native_fps(source) if spec.rate > 0 else None)
    prepare = FramePreprocessor(spec)
    names = list(loaded.class_names)
    if args.format == "table":
        print(f"{'frame':>8} {'t':>10} {'class':<24} {'prob':>6} {'latency_ms':>10}", file=out, flush=True)
    pending: list[torch.Tensor] = []
    emitted, frames, started = 0, 0, time.perf_counter()
    max_frames = args.max_samples
    for frame in read_frames(source, max_frames=max_frames):
        if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
            break
        frames += 1
        arrived = time.perf_counter()
        for _ in range(sampler.copies(frame.index)):
            pending.append(prepare(frame.rgb))
            if len(pending) < hop:
                continue
            chunk = torch.stack(pending, dim=1)[None]  # (1, 3, hop, crop, crop)
            pending = []
            res = runtime.step(chunk)
            if not bool(res.ready[0]):
                continue
            probs = res.logits[0].float().softmax(0)
            k = int(probs.argmax())
            latency = (time.perf_counter() - arrived) * 1000.0
            row = {"stream": str(source), "frame": frame.index, "t": frame.time, "class": names[k]}
            row.update(probability=float(probs[k]), latency_ms=latency)
            emitted += 1
            if args.format == "json":
                print(json.dumps(row), file=out, flush=True)
            else:
                print(
                    f"{frame.index:>8} {frame.time:>10.3f} {names[k]:<24} {float(probs[k]):>6.3f} {latency:>10.3f}",
                    file=out,
                    flush=True,
                )
    summary = {"frames": frames, "predictions": emitted, "seconds": time.perf_counter() - started}
    print("summary: " + json.dumps(summary), file=sys.stderr, flush=True)
    return summary


def build_video_runtime(
    loaded: Any, hop: int, backend: str = "torch", precision: str = "fp32", device: str | torch.device = "cpu"
) -> Any:
    """The streaming runtime of a video checkpoint (one slot, ``hop`` clip frames per step) on ``device``."""
    from vidrec.streaming.command import build_runtime

    return build_runtime(loaded, hop=hop, backend=backend, precision=precision, device=device)
