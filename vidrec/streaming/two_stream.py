"""Two-stream ConvNets on a live video, frame by frame, with incremental optical flow.

Simonyan & Zisserman, "Two-Stream Convolutional Networks for Action Recognition in Videos" (2014), run as a stream.
For each new native frame ``t``::

    frame t (H, W, 3) uint8 ─┬─► resize + centre crop + normalise ─► (3, S, S) ─► RGB member: ResNet once ─┐
                             │                                                                          │
                             └─► gray, short side ─► flow(frame t-1 cached, frame t) ─► quantise (bound)  │
                                   ─► v / bound, centre crop, resize ─► (2, S, S) ─► flow member:        │
                                   last L fields stacked ─► ResNet once ────────────────────────────────┤
                                                                                                        ▼
                 window of the last W frames: mean RGB softmax of W frames, mean flow softmax of W - L stacks
                 (buffers of per-position scores) ─► weighted mean (w_rgb : w_flow) ─► fused scores

so a hop of one frame costs one flow field, one run of each network and two buffer updates, where recomputing the
window costs ``W - 1`` fields, ``W`` RGB runs and ``W - L`` flow runs (``tools/bench_two_stream_streaming.py``).

Exactness, both asserted by ``tests/streaming/test_two_stream_streaming.py``:

* the flow is computed from the cached previous frame only, with the extractor's ``FlowSettings`` and quantisation
  (``datamodules.flow.extraction.IncrementalFlow``), so each streamed field equals the field ``vidrec data flow``
  stores for the same two frames;
* the fused scores equal the offline ``two_stream_window`` model on the window's frames and stored fields.

The members run in ``vidrec.streaming.multi.MultiInputStreaming`` (RGB: step k at frame k; flow: field k at frame
``k + 1``), built from the two checkpoints' deployment specs (:meth:`TwoStreamStreaming.from_checkpoints`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.models.two_stream import two_stream_window
from vidrec.spec import DeploymentSpec
from vidrec.streaming.multi import InputClock, MultiInputDescription, MultiInputStreaming, MultiStepResult
from vidrec.two_stream_spec import TwoStreamSpec

__all__ = ["DEFAULT_WINDOW", "TwoStreamFrameResult", "TwoStreamStreaming", "two_stream_settings"]

DEFAULT_WINDOW = 25  # frames pooled per report: the papers' 25 test frames per video, here a sliding window


@dataclass
class TwoStreamFrameResult:
    """What one new frame gave.

    Attributes:
        frame: Index of the frame in the stream (from 0 after a reset).
        result: The fused and per-stream logits (``ready`` once ``window`` frames have arrived).
        flow_ms: Time to compute, quantise and prepare the new flow field.
        rgb_ms: Time to prepare the frame for the RGB network.
        step_ms: Time of both networks' steps, buffers and fusion.
        field: The new quantised flow field, uint8 ``(2, h, w)`` (None for the first frame).
    """

    frame: int
    result: MultiStepResult
    flow_ms: float
    rgb_ms: float
    step_ms: float
    field: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        """True when the window is full and the fused scores are reported."""
        return bool(self.result.ready[0])

    @property
    def scores(self) -> Tensor:
        """``(K,)`` fused class probabilities."""
        return self.result.logits[0].softmax(0)


def two_stream_settings(rgb: DeploymentSpec, flow: DeploymentSpec) -> dict[str, Any]:
    """The streaming settings of an RGB / flow checkpoint pair from their deployment specs.

    Returns ``{"stack_length", "flow", "rgb_transform", "flow_transform"}``: the flow stack length L, the extractor's
    ``FlowSettings`` and each stream's ``FrameTransformSettings`` (crop, short side, normalisation, flow mean).

    Raises:
        ValueError: a spec was not written by ``TwoStreamDataModule`` for that input, or the two disagree on classes.
    """
    from datamodules.flow.methods import FlowSettings
    from datamodules.flow.transforms import FlowMean, FrameTransformSettings

    parts: dict[str, TwoStreamSpec] = {}
    for name, spec in (("rgb", rgb), ("flow", flow)):
        info = spec.two_stream
        if info is None or info.input != name:
            found = "no two-stream spec" if info is None else f"a two-stream spec of input {info.input!r}"
            raise ValueError(
                f"the {name} checkpoint's deployment spec has {found}, expected input {name!r} "
                f"(train it with TwoStreamDataModule, input: {name}; --checkpoint takes the RGB stream, "
                "--flow-checkpoint the flow stream)"
            )
        parts[name] = info
    if list(rgb.class_names) != list(flow.class_names):
        raise ValueError("the RGB and flow checkpoints were trained on different class lists")
    crop = int(rgb.frame_size[0])
    rgb_transform = FrameTransformSettings(
        crop_size=crop,
        short_side=int(rgb.short_side),
        mean=tuple(float(v) for v in rgb.normalization.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in rgb.normalization.std),  # type: ignore[arg-type]
    )
    flow_crop = int(flow.frame_size[0])
    flow_transform = FrameTransformSettings(
        crop_size=flow_crop,
        short_side=int(parts["flow"].transform_short_side),
        flow_mean=FlowMean(parts["flow"].flow_mean),
    )
    if crop != flow_crop:
        raise ValueError(f"the RGB stream takes {crop}x{crop} crops but the flow stream {flow_crop}x{flow_crop}")
    return {
        "stack_length": int(flow.window),
        "flow": FlowSettings.from_dict(parts["flow"].flow, "flow checkpoint: spec.two_stream.flow"),
        "rgb_transform": rgb_transform,
        "flow_transform": flow_transform,
    }


class TwoStreamStreaming:
    """A spatial and a temporal stream on one live video: push frames, get fused window scores per frame.

    Args:
        rgb: The spatial stream (``StreamResNet`` on ``(N, 3, S, S)``).
        flow: The temporal stream (``StreamResNet`` on ``(N, 2L, S, S)``).
        stack_length: L, flow fields per stack.
        flow_settings: The extractor's ``FlowSettings`` (as the flow checkpoint was trained on).
        rgb_transform: ``FrameTransformSettings`` of the RGB stream (short side, crop, mean/std).
        flow_transform: ``FrameTransformSettings`` of the flow stream (crop, flow mean subtraction).
        window: Frames per reported window (>= L + 1).
        rgb_weight: Weight of the RGB scores.
        flow_weight: Weight of the flow scores.
        **kwargs: ``StreamingClassifier`` arguments of both members (``backend``, ``device``). The offline
            ``model`` (``two_stream_window``, which also fuses the members' logits) is moved to ``device`` too.
    """

    def __init__(
        self,
        rgb: nn.Module,
        flow: nn.Module,
        *,
        stack_length: int,
        flow_settings: Any,
        rgb_transform: Any,
        flow_transform: Any,
        window: int = DEFAULT_WINDOW,
        rgb_weight: float = 1.0,
        flow_weight: float = 1.5,
        **kwargs: Any,
    ) -> None:
        from datamodules.flow.extraction import IncrementalFlow

        if window < stack_length + 1:
            raise ValueError(
                f"TwoStreamStreaming: window={window} frames hold {window - 1} flow fields, fewer than one stack of "
                f"{stack_length}; use a window of at least {stack_length + 1}"
            )
        self.window, self.stack_length = int(window), int(stack_length)
        self.rgb_transform, self.flow_transform = rgb_transform, flow_transform
        self.device = torch.device(kwargs.get("device", "cpu"))
        self.model = two_stream_window(rgb, flow, stack_length, rgb_weight, flow_weight).eval().to(self.device)
        size = (int(rgb_transform.crop_size), int(rgb_transform.crop_size))
        self.runtime = MultiInputStreaming(
            self.model,
            windows={"rgb": self.window, "flow": self.window - 1},
            clocks={"rgb": InputClock(1, 0), "flow": InputClock(1, 1)},  # field k joins frames k and k + 1
            member_kwargs={
                "rgb": {"frame_shape": size, "in_channels": 3},
                "flow": {"frame_shape": size, "in_channels": 2},
            },
            **kwargs,
        )
        self.flow = IncrementalFlow(flow_settings)
        self.frames = 0

    @classmethod
    def from_checkpoints(cls, rgb: Any, flow: Any, window: int = DEFAULT_WINDOW, **kwargs: Any) -> TwoStreamStreaming:
        """From two loaded ``vidrec fit`` checkpoints (``vidrec.tasks.LoadedClassifier``), configured by their specs.

        ``kwargs``: ``rgb_weight``, ``flow_weight`` and ``StreamingClassifier`` arguments.
        """
        settings = two_stream_settings(rgb.require_spec(), flow.require_spec())
        return cls(
            rgb.model,
            flow.model,
            stack_length=settings["stack_length"],
            flow_settings=settings["flow"],
            rgb_transform=settings["rgb_transform"],
            flow_transform=settings["flow_transform"],
            window=window,
            **kwargs,
        )

    def describe(self) -> MultiInputDescription:
        """The two members, their windows and engines, and the fusion."""
        return self.runtime.describe()

    def reset(self) -> None:
        """A new video: forget the cached frame and both streams' buffers."""
        self.runtime.reset()
        self.flow.reset()
        self.frames = 0

    def prepare_rgb(self, frames: np.ndarray) -> Tensor:
        """uint8 ``(K, H, W, 3)`` native frames -> ``(K, 3, S, S)``: the data module's resize and centre crop."""
        from datamodules.flow.transforms import crop_boxes, transform_rgb
        from datamodules.video.decoding import resize_short_side

        frames = resize_short_side(frames, int(self.rgb_transform.short_side))  # (K, h, w, 3)
        box = crop_boxes(self.rgb_transform, frames.shape[1], frames.shape[2], 1)[0]
        return transform_rgb(frames, box, self.rgb_transform)

    def prepare_flow(self, fields: np.ndarray) -> Tensor:
        """uint8 ``(K, 2, h, w)`` stored fields -> ``(K, 2, S, S)`` in units of the bound, centre crop (per field, as
        a stack of L is transformed: crop, resize and gain act on each field alone)."""
        from datamodules.flow.transforms import crop_boxes, transform_flow

        box = crop_boxes(self.flow_transform, fields.shape[-2], fields.shape[-1], 1)[0]
        return transform_flow(fields[:, None], box, self.flow_transform)  # (K, 1, 2, h, w) -> (K, 2, S, S)

    def push(self, rgb: np.ndarray) -> TwoStreamFrameResult:
        """One new native frame, uint8 ``(H, W, 3)``: its flow field, one step of each stream, the fused window."""
        t0 = time.perf_counter()
        field = self.flow.push(rgb)
        inputs: dict[str, Tensor] = {}
        if field is not None:
            inputs["flow"] = self.prepare_flow(field[None]).transpose(0, 1)[None]  # (1, 2, 1, S, S)
        t1 = time.perf_counter()
        inputs["rgb"] = self.prepare_rgb(rgb[None]).transpose(0, 1)[None]  # (1, 3, 1, S, S)
        t2 = time.perf_counter()
        with torch.inference_mode():
            result = self.runtime.step(inputs)
        t3 = time.perf_counter()
        frame, self.frames = self.frames, self.frames + 1
        return TwoStreamFrameResult(frame, result, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, field)


# --------------------------------------------------------------------------------------------------------------------
# `vidrec stream` / `vidrec evaluate-streaming` of an RGB + flow checkpoint pair (--flow-checkpoint)


def _load_pair(args: argparse.Namespace) -> tuple[Any, Any, TwoStreamStreaming]:
    from vidrec.streaming.command import PRECISIONS
    from vidrec.streaming.devices import run_device
    from vidrec.tasks import load_checkpoint  # type: ignore[attr-defined]

    rgb, flow = load_checkpoint(args.checkpoint), load_checkpoint(args.flow_checkpoint)
    live = TwoStreamStreaming.from_checkpoints(
        rgb,
        flow,
        window=getattr(args, "window", None) or DEFAULT_WINDOW,
        rgb_weight=getattr(args, "rgb_weight", 1.0),
        flow_weight=getattr(args, "flow_weight", 1.5),
        backend=getattr(args, "backend", "compiled"),
        device=run_device(args),
        dtype=PRECISIONS[getattr(args, "precision", "fp32")],
    )
    if getattr(args, "verbose", False):
        print(live.describe(), file=sys.stderr)
    return rgb, flow, live


def run_stream(args: argparse.Namespace, out: TextIO) -> dict[str, Any]:
    """``vidrec stream --checkpoint RGB --flow-checkpoint FLOW --input VIDEO``: one line per frame once a window is
    full: frame, time, fused class and probability, each stream's class, the latency and the flow's share of it."""
    from vidrec.streaming.video import read_frames

    rgb, _, live = _load_pair(args)
    if args.input in (None, "-"):
        raise ValueError("a two-stream pair streams from --input VIDEO_FILE, /dev/videoN or an rtsp:// / http:// URL")
    names = list(rgb.class_names)
    if args.format == "table":
        print(f"{'frame':>8} {'t':>10} {'class':<24} {'prob':>6} {'latency_ms':>10} {'flow_ms':>8}", file=out)
    emitted, frames, started = 0, 0, time.perf_counter()
    for frame in read_frames(args.input, max_frames=args.max_samples):
        if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
            break
        frames += 1
        res = live.push(frame.rgb)
        if not res.ready:
            continue
        probs = res.scores
        k = int(probs.argmax())
        latency = res.flow_ms + res.rgb_ms + res.step_ms
        row = {"stream": str(args.input), "frame": frame.index, "t": frame.time, "class": names[k]}
        row.update(probability=float(probs[k]), latency_ms=latency, flow_ms=res.flow_ms)
        row.update({f"{n}_class": names[int(v[0].argmax())] for n, v in res.result.members.items()})
        emitted += 1
        if args.format == "json":
            print(json.dumps(row), file=out, flush=True)
        else:
            line = f"{frame.index:>8} {frame.time:>10.3f} {names[k]:<24} {float(probs[k]):>6.3f} {latency:>10.3f}"
            print(f"{line} {res.flow_ms:>8.3f}", file=out, flush=True)
    summary = {"frames": frames, "predictions": emitted, "seconds": time.perf_counter() - started}
    print("summary: " + json.dumps(summary), file=sys.stderr, flush=True)
    return summary


def evaluate_two_stream_streaming(
    rgb: Any, flow: Any, live: TwoStreamStreaming, data: str | None = None, max_videos: int | None = None
) -> dict[str, Any]:
    """Stream the test videos of the RGB checkpoint's split frame by frame and compare with the offline windows.

    Offline: ``live.model`` on the window's frames and on the fields of the stored flow files (the flow checkpoint's
    ``flow_root``), prepared by the data module's transforms. Reports the largest fused logit difference, whether
    every streamed field equals the stored one, window and video accuracy (mean window softmax per video) of both
    sides, and per-frame times.
    """
    import importlib

    from datamodules.flow.schema import FlowFile, flow_path
    from datamodules.video.layouts import Split
    from vidrec.streaming.video import read_frames

    spec, fspec = rgb.require_spec(), flow.require_spec()
    source = spec.data_source
    module, _, name = str(source["class_path"]).rpartition(".")
    init = dict(source.get("init_args") or {})
    if data:
        init["root"] = data
        init.pop("annotation_dir", None)  # the layout's default under the new root
    dm = getattr(importlib.import_module(module), name)(**init)
    flow_root = (fspec.data_source.get("init_args") or {}).get("flow_root")
    videos = list(dm._index(Split.TEST).items)[:max_videos]
    deltas, fields_equal, windows, off_ok, str_ok, vid_off, vid_str, scored, compared = [], True, 0, 0, 0, 0, 0, 0, 0
    frame_ms: list[float] = []
    flow_ms: list[float] = []
    w = live.window
    for path, label in videos:
        live.reset()
        raw: list[np.ndarray] = []
        streamed: list[Tensor] = []
        live_fields: list[np.ndarray] = []
        for frame in read_frames(path):
            raw.append(frame.rgb)
            res = live.push(frame.rgb)
            frame_ms.append(res.flow_ms + res.rgb_ms + res.step_ms)
            flow_ms.append(res.flow_ms)
            if res.field is not None:
                live_fields.append(res.field)
            if res.ready:
                streamed.append(res.result.logits[0])
        if not streamed:
            continue
        fields = np.stack(live_fields)  # (T - 1, 2, h, w) uint8
        stored_path = flow_path(flow_root, dm.video_id(Path(path))) if flow_root else None
        if stored_path is not None and stored_path.is_file():  # the offline side reads what `vidrec test` read
            with FlowFile(stored_path) as stored:
                on_disk = stored.read_fields(0, stored.num_fields)
            fields_equal = fields_equal and on_disk.shape == fields.shape and bool(np.array_equal(on_disk, fields))
            fields = on_disk
            compared += 1
        x_rgb = live.prepare_rgb(np.stack(raw)).transpose(0, 1)[None].to(live.device)  # (1, 3, T, S, S)
        x_flow = live.prepare_flow(fields).transpose(0, 1)[None].to(live.device)  # (1, 2, T - 1, S, S)
        with torch.inference_mode():
            offline = torch.cat(
                [
                    live.model({"rgb": x_rgb[:, :, t - w + 1 : t + 1], "flow": x_flow[:, :, t - w + 1 : t]})
                    for t in range(w - 1, x_rgb.shape[2])
                ]
            ).cpu()
        stream = torch.stack(streamed)
        deltas.append(float((stream - offline).abs().max()))
        windows += len(stream)
        off_ok += int((offline.argmax(1) == label).sum())
        str_ok += int((stream.argmax(1) == label).sum())
        vid_off += int(int(offline.softmax(1).mean(0).argmax()) == label)
        vid_str += int(int(stream.softmax(1).mean(0).argmax()) == label)
        scored += 1
    if not scored:
        raise ValueError(f"no test video has {w} frames (the window)")
    return {
        "modality": "two_stream",
        "window_frames": w,
        "stack_length": live.stack_length,
        "videos": scored,
        "windows": windows,
        "offline": {"window_accuracy": off_ok / windows, "video_accuracy": vid_off / scored},
        "streaming": {"window_accuracy": str_ok / windows, "video_accuracy": vid_str / scored},
        "max_abs_logit_delta": max(deltas),
        "streamed_flow_equals_stored": fields_equal if compared else None,
        "videos_with_stored_flow": compared,
        "streaming_ms_per_frame_median": float(np.median(frame_ms)),
        "flow_ms_per_frame_median": float(np.median(flow_ms)),
        "class_names": list(rgb.class_names),
        "device": str(live.device),
        "streaming_dtype": str(live.runtime.members["rgb"].dtype).removeprefix("torch."),
    }


def run_evaluate_streaming(args: argparse.Namespace) -> dict[str, Any]:
    """``vidrec evaluate-streaming --checkpoint RGB --flow-checkpoint FLOW``: writes ``streaming_eval.json``."""
    rgb, flow, live = _load_pair(args)
    report = evaluate_two_stream_streaming(rgb, flow, live, args.data, getattr(args, "max_videos", None))
    report.update(checkpoint=str(args.checkpoint), flow_checkpoint=str(args.flow_checkpoint))
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "streaming_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {target / 'streaming_eval.json'}", file=sys.stderr)
    return report
