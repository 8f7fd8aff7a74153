"""On-disk contract for optical flow: ``vidrec.flow/1``, one HDF5 file per video (beside ``vidrec.timeseries/1``).

A flow root mirrors the video tree: the flow of ``<video root>/<id>.<ext>`` is ``<flow root>/<id>.h5`` (``id`` is the
video's path relative to its root without the extension, e.g. ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01``)::

    /                                   root attributes
        schema         str              "vidrec.flow/1"
        complete       bool             written last; a file without it (or False) is half-written
        source         str              the video file the flow was computed from
        video_frames   int              decodable frames of that video (N); there are N - 1 fields
        fps            float            the video's average frame rate
        bound          float            quantisation bound B in pixels (default 20)
        method         str              extractor: "tvl1", "dis", "farneback" or "raft"
        params         str (JSON)       every parameter of the extractor (FlowSettings.as_dict())
        source_size    int[2]           (height, width) of the decoded frames
        size           int[2]           (height, width) of the stored fields (short side resized)
    /flow              uint8 (N-1, 2, H, W)   field i: displacement from frame i to frame i+1, channel 0 = x
                                        (rightwards), 1 = y (downwards), in pixels of the stored size, quantised
                                        linearly: q = clip(round(v * 127.5 / B + 127.5), 0, 255); so 128 means no
                                        motion and v = (q - 127.5) * B / 127.5. Chunked one field per chunk,
                                        compressed (the ``compression`` attribute of the dataset says how)
    /frame_indices     int32 (N-1, 2)   the (first, second) video frame index of every field

The bound is fixed and linear, as mmaction2's and denseflow's JPEG flow is, and not a per-frame min-max: that
would throw the size of the motion away. Motion beyond +-B pixels a frame saturates.

Reading: :func:`open_flow` verifies a file against the schema and returns a :class:`FlowFile`;
:meth:`FlowFile.read_fields` reads consecutive fields with one slice (no fancy indexing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "SCHEMA",
    "FlowFileError",
    "FlowFile",
    "FlowHeader",
    "dequantize",
    "flow_path",
    "open_flow",
    "quantize",
    "verify_flow_file",
]

SCHEMA = "vidrec.flow/1"


class FlowFileError(ValueError):
    """A file does not follow the ``vidrec.flow/1`` schema; the message names the file and the key."""


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Float displacements (pixels) to uint8 with the fixed linear bound: ``0 -> 128``, ``+-bound -> 255 / 0``."""
    q = np.rint(flow * (127.5 / bound) + 127.5)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 fields back to float32 pixels (the inverse of :func:`quantize` up to half a level)."""
    return (q.astype(np.float32) - np.float32(127.5)) * np.float32(bound / 127.5)


def flow_path(flow_root: str | Path, video_id: str) -> Path:
    """Where the flow of the video ``video_id`` (its path relative to the video root, no extension) lives."""
    return Path(flow_root) / f"{video_id}.h5"


@dataclass(frozen=True)
class FlowHeader:
    """The root attributes of a flow file.

    Attributes:
        source: the video the flow was computed from.
        video_frames: decodable frames of that video (the file holds ``video_frames - 1`` fields).
        fps: the video's frame rate.
        bound: quantisation bound in pixels.
        method: extractor name.
        params: every extractor parameter.
        source_size: (height, width) of the decoded frames.
        size: (height, width) of the stored fields.
    """

    source: str
    video_frames: int
    fps: float
    bound: float
    method: str
    params: dict[str, Any]
    source_size: tuple[int, int]
    size: tuple[int, int]

    def attributes(self) -> dict[str, Any]:
        """The root attributes to write (without ``complete``)."""
        return {
            "schema": SCHEMA,
            "source": self.source,
            "video_frames": self.video_frames,
            "fps": self.fps,
            "bound": self.bound,
            "method": self.method,
            "params": json.dumps(self.params, sort_keys=True),
            "source_size": np.asarray(self.source_size, dtype=np.int64),
            "size": np.asarray(self.size, dtype=np.int64),
        }


def _header(path: Path, attrs: Any) -> FlowHeader:
    def get(key: str) -> Any:
        if key not in attrs:
            raise FlowFileError(f"{path}: root attribute {key!r} is missing (schema {SCHEMA})")
        return attrs[key]

    schema = get("schema")
    if (schema.decode() if isinstance(schema, bytes) else str(schema)) != SCHEMA:
        raise FlowFileError(f"{path}: attribute 'schema' is {schema!r}, expected {SCHEMA!r}")
    try:
        params = json.loads(str(get("params")))
    except json.JSONDecodeError as error:
        raise FlowFileError(f"{path}: attribute 'params' is not JSON ({error})") from None
    return FlowHeader(
        source=str(get("source")),
        video_frames=int(get("video_frames")),
        fps=float(get("fps")),
        bound=float(get("bound")),
        method=str(get("method")),
        params=params,
        source_size=(int(get("source_size")[0]), int(get("source_size")[1])),
        size=(int(get("size")[0]), int(get("size")[1])),
    )


def verify_flow_file(path: str | Path) -> FlowHeader:
    """Check a flow file against the schema (complete, shapes agree with the header); its header, else raise.

    Raises:
        FlowFileError: naming the file and the key that is missing or inconsistent.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get("complete", False)):
                raise FlowFileError(f"{path}: attribute 'complete' is not set: the file is half-written")
            header = _header(path, f.attrs)
            for key in ("flow", "frame_indices"):
                if key not in f:
                    raise FlowFileError(f"{path}: dataset {key!r} is missing (schema {SCHEMA})")
            fields = header.video_frames - 1
            expected = (fields, 2, *header.size)
            if f["flow"].shape != expected or f["flow"].dtype != np.uint8:
                raise FlowFileError(
                    f"{path}: dataset 'flow' is {f['flow'].dtype} {f['flow'].shape}, expected uint8 {expected} "
                    f"(video_frames = {header.video_frames})"
                )
            if f["frame_indices"].shape != (fields, 2):
                raise FlowFileError(
                    f"{path}: dataset 'frame_indices' has shape {f['frame_indices'].shape}, expected ({fields}, 2)"
                )
    except OSError as error:  # truncated or not HDF5 at all
        raise FlowFileError(f"{path}: not a readable HDF5 file ({error})") from None
    return header


class FlowFile:
    """An open, verified flow file; read consecutive fields with :meth:`read_fields`. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.header = verify_flow_file(self.path)
        self._file = h5py.File(self.path, "r")
        self._flow = self._file["flow"]

    @property
    def num_fields(self) -> int:
        """Number of stored fields (``video_frames - 1``)."""
        return int(self._flow.shape[0])

    def read_fields(self, start: int, stop: int) -> np.ndarray:
        """uint8 fields ``start:stop`` as ``(stop - start, 2, H, W)``; the range must lie inside the file."""
        if not 0 <= start < stop <= self.num_fields:
            raise IndexError(f"{self.path}: fields {start}:{stop} outside 0:{self.num_fields}")
        return np.asarray(self._flow[start:stop])

    def close(self) -> None:
        """Close the HDF5 file."""
        self._file.close()

    def __enter__(self) -> FlowFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_flow(path: str | Path) -> FlowFile:
    """Open and verify the flow file ``path`` (:class:`FlowFileError` naming the file when it is not valid)."""
    return FlowFile(path)
