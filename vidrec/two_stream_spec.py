"""The two-stream part of a deployment spec: what a stream of a two-stream ConvNet needs beyond the video spec.

A spatial (RGB) or temporal (flow) stream checkpoint written by ``datamodules.flow.TwoStreamDataModule`` carries a
:class:`TwoStreamSpec` in ``DeploymentSpec.two_stream``: which input the stream reads, the flow stack length L, the
short side the data module resized frames (or fields) to before cropping, the flow mean subtraction, and, for flow,
every parameter of the extractor (``datamodules.flow.methods.FlowSettings.as_dict()``), so a live stream computes
the same fields (``vidrec.streaming.two_stream``). Other models have ``two_stream = None``.

Checkpoints written before the field existed stored the same dictionary as ``data_source["two_stream"]``;
:meth:`TwoStreamSpec.from_spec_dict` reads either place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TWO_STREAM_INPUTS", "TwoStreamSpec"]

TWO_STREAM_INPUTS = ("rgb", "flow", "both")
_FLOW_MEANS = ("none", "field")


@dataclass(frozen=True)
class TwoStreamSpec:
    """How a two-stream data module fed a stream.

    Attributes:
        input: ``"rgb"`` (spatial stream), ``"flow"`` (temporal stream) or ``"both"`` (a fused model).
        stack_length: L, flow fields per stack (the temporal stream reads 2L channels).
        transform_short_side: Short side the frames or fields were resized to before the crop.
        flow_mean: Flow mean subtraction: ``"none"`` or ``"field"``.
        flow: The extractor's parameters (``FlowSettings.as_dict()``); required for ``flow`` and ``both``, empty
            for ``rgb``.
    """

    input: str
    stack_length: int
    transform_short_side: int
    flow_mean: str = "none"
    flow: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input not in TWO_STREAM_INPUTS:
            raise ValueError(f"spec.two_stream.input: {self.input!r} is not one of {', '.join(TWO_STREAM_INPUTS)}")
        if int(self.stack_length) < 1:
            raise ValueError(f"spec.two_stream.stack_length must be >= 1, got {self.stack_length}")
        if int(self.transform_short_side) < 1:
            raise ValueError(f"spec.two_stream.transform_short_side must be >= 1, got {self.transform_short_side}")
        if self.flow_mean not in _FLOW_MEANS:
            raise ValueError(f"spec.two_stream.flow_mean: {self.flow_mean!r} is not one of {', '.join(_FLOW_MEANS)}")
        if self.input != "rgb" and not self.flow:
            raise ValueError(f"spec.two_stream: input {self.input!r} needs the extractor's parameters (flow)")

    def to_dict(self) -> dict[str, Any]:
        """Plain types (checkpoint storage)."""
        return {
            "input": str(self.input),
            "stack_length": int(self.stack_length),
            "transform_short_side": int(self.transform_short_side),
            "flow_mean": str(self.flow_mean),
            "flow": dict(self.flow),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "spec.two_stream") -> TwoStreamSpec:
        """Inverse of :meth:`to_dict`; errors name ``where`` and the key."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        missing = [k for k in ("input", "stack_length", "transform_short_side") if k not in d]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}")
        flow = d.get("flow") or {}
        if not isinstance(flow, Mapping):
            raise ValueError(f"{where}.flow: expected the extractor's parameters as a mapping, got {flow!r}")
        try:
            return TwoStreamSpec(
                input=str(d["input"]),
                stack_length=int(d["stack_length"]),
                transform_short_side=int(d["transform_short_side"]),
                flow_mean=str(d.get("flow_mean", "none")),
                flow=dict(flow),
            )
        except ValueError as error:  # the message names the key under spec.two_stream: name it under `where`
            raise ValueError(where + str(error).removeprefix("spec.two_stream")) from None

    @staticmethod
    def from_spec_dict(d: Mapping[str, Any], where: str = "checkpoint") -> TwoStreamSpec | None:
        """The two-stream spec of a stored deployment spec: its ``two_stream`` entry, else (checkpoints written
        before that field) ``data_source["two_stream"]``, else None."""
        if d.get("two_stream") is not None:
            return TwoStreamSpec.from_dict(d["two_stream"], f"{where}: spec.two_stream")
        legacy = (d.get("data_source") or {}).get("two_stream")
        if legacy is None:
            return None
        if isinstance(legacy, Mapping) and "transform_short_side" not in legacy:
            # the earliest of those did not store it: the data module resized to the crop or the stored short side
            crop = int((d.get("frame_size") or [1])[0])
            legacy = {**legacy, "transform_short_side": max(crop, int(d.get("short_side") or crop))}
        return TwoStreamSpec.from_dict(legacy, f"{where}: spec.data_source.two_stream")
