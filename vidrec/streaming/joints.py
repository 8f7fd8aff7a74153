"""Live joint frames for ``vidrec stream`` of skeleton checkpoints: the line formats and the anchored runtime.

One frame per line (blank lines and ``#`` comments skipped), P = V * C values a body (NTU: 25 joints x 3 = 75):

* CSV: ``v1,...,vN``, ``timestamp,v1,...,vN`` or ``stream_id,timestamp,v1,...,vN`` with N = P (one body) or any
  multiple of P up to M bodies (NTU checkpoints: 75 or 150 values). Joint-major: ``x, y, z`` of joint 0, then
  joint 1, ..., body 0 first, as ``.skeleton`` files list them.
* JSON: ``{"stream": "a", "t": 1.23, "x": [v1, ..., vN]}`` or ``{"joints": [[x, y, z], ...]}`` (``(V, C)`` one body,
  or ``(bodies, V, C)``); ``stream`` and ``t`` optional.

Missing bodies are zero (the data module's two-body padding). A line without a timestamp is the next frame of its
stream: its timestamp is ``frame index / rate`` (frames taken in order, no gap resets). Every malformed line
(wrong count, non-numeric or non-finite value, a long stream id, bad JSON) raises ``MalformedLine`` and is counted and
dropped by the source, never a crash.

``AnchoredRuntime`` wraps the ``StreamingClassifier`` of a skeleton checkpoint: each stream (slot) is anchored at
its first frame showing the main actor (``vidrec.skeleton_spec``), re-anchored when the server resets the slot.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidrec.skeleton_spec import AnchoredJoints, SkeletonSpec
from vidrec.streaming.lines import (
    MAX_ID_LENGTH,
    DropReason,
    MalformedLine,
    Record,
    finite_numbers,
    load_json_line,
)
from vidrec.streaming.runtime import StepResult, StreamingClassifier

__all__ = ["AnchoredRuntime", "JointLineParser", "skeleton_stream_runtime"]

_MAX_COUNTED_STREAMS = 65536  # streams whose frame counter is kept (least recently seen forgotten first)


class JointLineParser:
    """Parses joint-frame lines into ``Record``s of ``M * V * C`` values (a source's ``parser``).

    Args:
        spec: The checkpoint's skeleton spec (bodies, joints, coordinates).
        rate: Frames per second, for lines without a timestamp.
    """

    def __init__(self, spec: SkeletonSpec, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"joint frames: rate must be > 0, got {rate}")
        self.spec, self.rate = spec, float(rate)
        self.per_body = spec.values_per_body
        self._frames: OrderedDict[str, int] = OrderedDict()

    def accepted_counts(self) -> list[int]:
        """Numbers of values a frame may have: one to M bodies."""
        return [k * self.per_body for k in range(1, self.spec.bodies + 1)]

    def _pad(self, values: np.ndarray, text: str) -> np.ndarray:
        if values.size not in self.accepted_counts():
            raise MalformedLine(
                f"expected {' or '.join(map(str, self.accepted_counts()))} joint values "
                f"({self.spec.joints} joints x {len(self.spec.coords)} coordinates a body), got {values.size}: "
                f"{text[:80]!r}"
            )
        out = np.zeros(self.spec.num_channels, np.float32)
        out[: values.size] = values
        return out

    def _next_time(self, stream: str) -> float:
        n = self._frames.pop(stream, -1) + 1
        self._frames[stream] = n
        while len(self._frames) > _MAX_COUNTED_STREAMS:
            self._frames.popitem(last=False)
        return n / self.rate

    def __call__(
        self, line: str, default_stream: str, arrival: float | None = None, max_id_length: int = MAX_ID_LENGTH
    ) -> Record | None:
        """One line -> a ``Record`` (None for blank and comment lines); raises only ``MalformedLine``."""
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        arrival = time.monotonic() if arrival is None else arrival
        stamp: float | None = None
        if text.startswith("{"):
            stream, stamp, values = self._json(text, default_stream)
        else:
            fields = [f.strip() for f in text.split(",")]
            extra = len(fields) % self.per_body
            if extra > 2 or len(fields) < self.per_body:
                raise MalformedLine(
                    f"expected [stream_id,][timestamp,] and {' or '.join(map(str, self.accepted_counts()))} joint "
                    f"values, got {len(fields)} fields: {text[:80]!r}"
                )
            stream = (fields[0] or default_stream) if extra == 2 else default_stream
            if extra >= 1:
                stamp = float(finite_numbers(fields[extra - 1 : extra], text, np.float64)[0])
            values = finite_numbers(fields[extra:], text, np.float32)
        if len(stream) > max_id_length:
            raise MalformedLine(
                f"stream id of {len(stream)} characters (max_id_length={max_id_length}): {stream[:40]!r}...",
                DropReason.LONG_STREAM_ID,
            )
        values = self._pad(values, text)
        return Record(stream, self._next_time(stream) if stamp is None else stamp, values, arrival)

    def _json(self, text: str, default_stream: str) -> tuple[str, float | None, np.ndarray]:
        obj = load_json_line(text)
        if not isinstance(obj, dict) or ("x" in obj) == ("joints" in obj):
            raise MalformedLine(f"JSON joint frame needs exactly one of 'x' (flat list) or 'joints': {text[:80]!r}")
        raw = obj.get("x", obj.get("joints"))
        if "joints" in obj:
            raw = _flatten(raw, text, len(self.spec.coords))
        if not isinstance(raw, list):
            raise MalformedLine(f"JSON 'x' must be a list of numbers: {text[:80]!r}")
        values = finite_numbers(raw, text, np.float32)
        stamp = float(finite_numbers([obj["t"]], text, np.float64)[0]) if "t" in obj else None
        raw_stream = obj.get("stream", default_stream)
        if not isinstance(raw_stream, (str, int, float)) or isinstance(raw_stream, bool):
            raise MalformedLine(f"JSON 'stream' must be a string or a number: {text[:80]!r}")
        if isinstance(raw_stream, float) and raw_stream.is_integer() and abs(raw_stream) < 1e15:
            raw_stream = int(raw_stream)  # integers were parsed as floats (parse_int): stream 7 is "7", not "7.0"
        return str(raw_stream), stamp, values


def _flatten(raw: Any, text: str, coords: int) -> list[Any]:
    """``(V, C)`` or ``(bodies, V, C)`` nested lists -> a flat list (rows of exactly ``coords`` values)."""
    if not isinstance(raw, list) or not raw:
        raise MalformedLine(f"JSON 'joints' must be a non-empty (V, C) or (bodies, V, C) list: {text[:80]!r}")
    bodies = raw if isinstance(raw[0], list) and raw[0] and isinstance(raw[0][0], list) else [raw]
    flat: list[Any] = []
    for body in bodies:
        if not isinstance(body, list):
            raise MalformedLine(f"JSON 'joints': a body must be a list of joints: {text[:80]!r}")
        for joint in body:
            if not isinstance(joint, list) or len(joint) != coords:
                raise MalformedLine(f"JSON 'joints': each joint needs {coords} coordinates: {text[:80]!r}")
            flat.extend(joint)
    return flat


class AnchoredRuntime:
    """A ``StreamingClassifier`` whose chunks are anchored per slot first (``vidrec.skeleton_spec.AnchoredJoints``).

    Offers what the stream server uses (``step``, ``reset``, ``grow``, ``capacity``, ``hop``, ``window``,
    ``in_channels``, ...); everything else is the wrapped runtime's.

    Args:
        runtime: The skeleton checkpoint's runtime.
        spec: Its skeleton spec.
    """

    def __init__(self, runtime: StreamingClassifier, spec: SkeletonSpec) -> None:
        if spec.normalize_scale:
            raise ValueError(
                "this skeleton checkpoint was trained with normalize_scale (each clip divided by its mean spine "
                "length over the whole clip), which a live stream cannot know; retrain with normalize_scale: false"
            )
        if spec.num_channels != runtime.in_channels:
            raise ValueError(f"skeleton spec has {spec.num_channels} channels, the model {runtime.in_channels}")
        self.runtime, self.spec = runtime, spec
        self.anchors = AnchoredJoints(spec, runtime.capacity)
        self.line_parser: JointLineParser | None = None  # the source's parser (set by skeleton_stream_runtime)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def grow(self, capacity: int) -> None:
        """Grow the runtime and the anchors."""
        self.runtime.grow(capacity)
        self.anchors.grow(self.runtime.capacity)

    def reset(self, slots: Sequence[int] | np.ndarray | None = None) -> None:
        """Reset the slots' model state and anchors (they re-anchor on their next frame with the main actor)."""
        self.runtime.reset(slots)
        self.anchors.reset(slots)

    def step(self, chunk: np.ndarray, slots: Sequence[int] | np.ndarray | None = None) -> StepResult:
        """Anchor ``chunk`` ``(n, M * V * C, hop)`` of raw joint frames, then step the runtime."""
        idx = np.arange(chunk.shape[0]) if slots is None else np.asarray(slots, dtype=np.int64)
        if self.spec.anchored:
            chunk = self.anchors(np.asarray(chunk, np.float32), idx)
        return self.runtime.step(chunk, slots)


def skeleton_stream_runtime(runtime: StreamingClassifier, spec: Any, source: str) -> AnchoredRuntime:
    """The anchored runtime and joint-line parser of a skeleton checkpoint for ``vidrec stream``.

    Args:
        runtime: The checkpoint's streaming runtime.
        spec: Its ``DeploymentSpec`` (modality SKELETON, with ``skeleton``).
        source: The ``--source`` (``replay`` reads time-series HDF5 files and is refused).
    """
    import warnings

    if source == "replay":
        raise ValueError(
            "--source replay reads vidrec.timeseries/1 files; stream skeleton joint frames on stdin/udp/tcp"
        )
    if spec.skeleton is None:
        raise ValueError("the checkpoint's skeleton deployment spec has no joint layout (spec.skeleton)")
    if spec.skeleton.length_mode == "resample":
        warnings.warn(
            f"this skeleton model was trained on clips resampled to {spec.window} frames; live frames arrive at "
            f"their native rate ({spec.rate:g} fps), which matches training only for clips of about {spec.window} "
            "frames",
            stacklevel=2,
        )
    wrapped = AnchoredRuntime(runtime, spec.skeleton)
    wrapped.line_parser = JointLineParser(spec.skeleton, spec.rate)
    return wrapped
