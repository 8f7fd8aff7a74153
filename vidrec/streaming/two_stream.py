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

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.models.two_stream import two_stream_window
from vidrec.spec import DeploymentSpec
from vidrec.streaming.multi import InputClock, MultiInputDescription, MultiInputStreaming, MultiStepResult

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
    """

    frame: int
    result: MultiStepResult
    flow_ms: float
    rgb_ms: float
    step_ms: float

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

    parts = {}
    for name, spec in (("rgb", rgb), ("flow", flow)):
        info = spec.data_source.get("two_stream")
        if not isinstance(info, dict) or info.get("input") != name:
            raise ValueError(
                f"the {name} checkpoint's deployment spec has no data_source.two_stream with input {name!r} "
                "(train it with TwoStreamDataModule, input: " + name + ")"
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
        short_side=int(parts["flow"].get("transform_short_side", max(flow_crop, int(flow.short_side or flow_crop)))),
        flow_mean=FlowMean(parts["flow"].get("flow_mean", FlowMean.NONE.value)),
    )
    if crop != flow_crop:
        raise ValueError(f"the RGB stream takes {crop}x{crop} crops but the flow stream {flow_crop}x{flow_crop}")
    return {
        "stack_length": int(flow.window),
        "flow": FlowSettings.from_dict(parts["flow"]["flow"], "flow checkpoint: spec.data_source.two_stream.flow"),
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
        **kwargs: ``StreamingClassifier`` arguments of both members (``backend``, ``device``).
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
        self.model = two_stream_window(rgb, flow, stack_length, rgb_weight, flow_weight).eval()
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
        return TwoStreamFrameResult(frame, result, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
