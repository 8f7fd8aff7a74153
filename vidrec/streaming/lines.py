"""The line formats of live samples, the events sources emit, and why input gets dropped.

One sample per line; blank lines and lines starting with ``#`` are skipped:

* CSV: ``timestamp,ch1,...,chC`` or ``stream_id,timestamp,ch1,...,chC``.
* JSON: ``{"stream": "a", "t": 1.23, "x": [ch1, ..., chC]}`` (``stream`` optional).

Timestamps are parsed as float64 (Unix-epoch seconds keep microseconds; float32 kept only steps of 128 s), channel
values as float32. ``parse_line`` raises nothing but ``MalformedLine``, whatever the line holds: JSON nested 20,000
deep, a 5,000-digit number, a 400-digit integer, binary garbage or a stream id over ``max_id_length`` characters.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_ID_LENGTH",
    "DropReason",
    "EventKind",
    "MalformedLine",
    "Record",
    "SourceEvent",
    "finite_numbers",
    "load_json_line",
    "parse_line",
]

MAX_ID_LENGTH = 128  # characters of a stream id (longer ids are dropped: 4,096 ids of 64 KiB cost 0.4 GB)


@dataclass
class Record:
    """One sample of one stream."""

    stream: str
    timestamp: float  # sender time in seconds, parsed as float64
    values: np.ndarray  # (C,) float32
    arrival: float  # time.monotonic() when the sample was read


class EventKind(enum.Enum):
    """What a ``SourceEvent`` carries."""

    RECORDS = "records"
    MALFORMED = "malformed"  # one unparseable line (same as DROPPED with DropReason.MALFORMED)
    DROPPED = "dropped"  # ``count`` units of input dropped for ``drop``
    ERROR = "error"  # the source thread failed; ``reason`` says why (the server stops with an error)
    END = "end"  # the source is exhausted (end of file, end of replay)


class DropReason(enum.Enum):
    """Why input was dropped; the value is the key in the server summary's ``drops`` (its unit in the name)."""

    MALFORMED = "malformed_lines"  # not a sample in an accepted format
    LONG_STREAM_ID = "long_stream_id_lines"  # stream id over max_id_length characters
    OVERSIZED_LINE = "oversized_lines"  # TCP line over max_line bytes
    REFUSED_CONNECTION = "refused_connections"  # TCP connection over max_connections (accepted and closed)
    IDLE_CONNECTION = "idle_connections"  # TCP connection silent for connection_idle_timeout (closed)
    ACCEPT_FAILED = "accept_failures"  # accept() failed (EMFILE, ENFILE, ENOBUFS, ...)
    UDP_KERNEL_DROP = "udp_kernel_dropped_datagrams"  # datagrams lost in the kernel (receive buffer full)
    STREAM_TABLE_FULL = "stream_table_full_samples"  # samples of new streams refused (max_streams live)
    UNPROCESSED_AT_STOP = "unprocessed_at_stop_samples"  # samples still queued when the server stopped
    RATE_LIMITED = "rate_limited_lines"  # lines of a sender over its lines/s or bytes/s limit (vidrec.streaming.limits)
    RATE_LIMITED_CONNECTION = "rate_limited_connections"  # TCP connections closed for going over it (DISCONNECT)


@dataclass
class SourceEvent:
    """An item on the source queue."""

    kind: EventKind
    records: list[Record] | None = None
    reason: str = ""
    drop: DropReason | None = None  # DROPPED / MALFORMED: the reason's category
    count: int = 1  # DROPPED: how many units were dropped

    @property
    def drop_reason(self) -> DropReason:
        """The drop category of a MALFORMED or DROPPED event."""
        return self.drop or DropReason.MALFORMED


class MalformedLine(ValueError):
    """A line that is not a sample in one of the accepted formats (``drop`` says which rule it broke)."""

    def __init__(self, message: str, drop: DropReason = DropReason.MALFORMED) -> None:
        super().__init__(message)
        self.drop = drop


_NUMBER_ERRORS = (TypeError, ValueError, OverflowError)


def finite_numbers(values: Iterable[object], line: str, dtype: type[np.floating]) -> np.ndarray:
    """The values as a ``dtype`` array, or ``MalformedLine`` naming the line: booleans, nested lists, ``None``,
    non-numbers, non-finite values and values beyond ``dtype``'s range are refused."""
    values = list(values)
    if any(isinstance(v, bool) for v in values):  # JSON true/false are no measurements
        raise MalformedLine(f"non-numeric value (a boolean where a number belongs) in {line[:80]!r}")
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)  # type: ignore[arg-type]
    except _NUMBER_ERRORS as err:
        raise MalformedLine(f"non-numeric value in {line[:80]!r}") from err
    if not np.isfinite(arr).all():
        raise MalformedLine(f"non-finite value in {line[:80]!r}")
    if arr.size and float(np.abs(arr).max()) > float(np.finfo(dtype).max):  # finite in float64, not in float32
        raise MalformedLine(f"value out of range in {line[:80]!r}")
    return arr.astype(dtype)


def load_json_line(text: str) -> Any:
    """``json.loads`` of an untrusted line, every failure a ``MalformedLine``.

    Integers are parsed as floats: a 5,000-digit integer becomes inf (refused by ``finite_numbers``), not a
    ValueError of Python's int-string limit; NaN/Infinity constants are refused.
    """
    try:
        return json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise MalformedLine(f"invalid JSON {text[:80]!r}: {err.msg}") from err
    except RecursionError as err:
        raise MalformedLine(f"JSON nested too deep: {text[:80]!r}") from err
    except _NUMBER_ERRORS as err:
        raise MalformedLine(f"invalid JSON {text[:80]!r}: {err}") from err


def _reject_constant(name: str) -> float:
    raise ValueError(f"JSON constant {name} is not a finite number")


def parse_line(
    line: str,
    num_channels: int,
    default_stream: str,
    arrival: float | None = None,
    max_id_length: int = MAX_ID_LENGTH,
) -> Record | None:
    """Parse one text line into a ``Record``; None for blank and comment lines.

    Never raises anything but ``MalformedLine``, whatever the line holds (deep nesting, huge numbers, binary).

    Raises:
        MalformedLine: the line is in neither format, has the wrong number of channels, a value that is not a
            finite number, or a stream id longer than ``max_id_length``.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    arrival = time.monotonic() if arrival is None else arrival
    if text.startswith("{"):
        obj = load_json_line(text)
        if not isinstance(obj, dict) or "t" not in obj or "x" not in obj or not isinstance(obj["x"], list):
            raise MalformedLine(f"JSON sample needs keys 't' and 'x' (a list): {text[:80]!r}")
        if len(obj["x"]) != num_channels:
            raise MalformedLine(f"expected {num_channels} channel values, got {len(obj['x'])}: {text[:80]!r}")
        values = finite_numbers(obj["x"], text, np.float32)
        stamp = finite_numbers([obj["t"]], text, np.float64)
        raw_stream = obj.get("stream", default_stream)
        if not isinstance(raw_stream, (str, int, float)) or isinstance(raw_stream, bool):
            raise MalformedLine(f"JSON 'stream' must be a string or a number: {text[:80]!r}")
        stream = str(raw_stream)
    else:
        fields = [f.strip() for f in text.split(",")]
        if len(fields) == num_channels + 1:
            stream = default_stream
            stamp = finite_numbers(fields[:1], text, np.float64)
            values = finite_numbers(fields[1:], text, np.float32)
        elif len(fields) == num_channels + 2:
            stream = fields[0] or default_stream
            stamp = finite_numbers(fields[1:2], text, np.float64)
            values = finite_numbers(fields[2:], text, np.float32)
        else:
            raise MalformedLine(
                f"expected {num_channels + 1} or {num_channels + 2} comma-separated fields "
                f"([stream_id,]timestamp,{num_channels} channels), got {len(fields)}: {text[:80]!r}"
            )
    if len(stream) > max_id_length:
        raise MalformedLine(
            f"stream id of {len(stream)} characters (max_id_length={max_id_length}): {stream[:40]!r}...",
            DropReason.LONG_STREAM_ID,
        )
    if values.shape[0] != num_channels:
        raise MalformedLine(f"expected {num_channels} channel values, got {values.shape[0]}: {text[:80]!r}")
    return Record(stream=stream, timestamp=float(stamp[0]), values=values, arrival=arrival)
