"""Live sample sources for ``vidrec stream``: stdin/text files, UDP, TCP and replay of an HDF5 recording.

Line formats (one sample per line; blank lines and lines starting with ``#`` are skipped):

* CSV: ``timestamp,ch1,...,chC`` or ``stream_id,timestamp,ch1,...,chC``.
* JSON: ``{"stream": "a", "t": 1.23, "x": [ch1, ..., chC]}`` (``stream`` optional).

A line without a stream id belongs to the source's default stream: ``stdin`` for standard input, the sender's
``host:port`` for UDP and TCP. Every source runs in its own daemon thread and puts ``SourceEvent``s on a bounded queue
(backpressure instead of unbounded memory). A line that does not parse (wrong field count, non-numbers, non-finite
values) becomes a ``malformed`` event: counted and dropped by the consumer, never a crash.
"""

from __future__ import annotations

import enum
import json
import queue
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

__all__ = [
    "Record",
    "EventKind",
    "SourceEvent",
    "MalformedLine",
    "parse_line",
    "Source",
    "TextSource",
    "UDPSource",
    "TCPSource",
    "ReplaySource",
]


@dataclass
class Record:
    """One sample of one stream."""

    stream: str
    timestamp: float
    values: np.ndarray  # (C,) float32
    arrival: float  # time.monotonic() when the sample was read


class EventKind(enum.Enum):
    """What a ``SourceEvent`` carries."""

    RECORDS = "records"
    MALFORMED = "malformed"
    END = "end"  # the source is exhausted (end of file, end of replay)


@dataclass
class SourceEvent:
    """An item on the source queue."""

    kind: EventKind
    records: list[Record] | None = None
    reason: str = ""


class MalformedLine(ValueError):
    """A line that is not a sample in one of the accepted formats."""


def _finite(values: Iterable[object], line: str) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float32)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise MalformedLine(f"non-numeric value in {line[:80]!r}") from err
    if not np.isfinite(arr).all():
        raise MalformedLine(f"non-finite value in {line[:80]!r}")
    return arr


def parse_line(line: str, num_channels: int, default_stream: str, arrival: float | None = None) -> Record | None:
    """Parse one text line into a ``Record``; None for blank and comment lines.

    Raises:
        MalformedLine: the line is in neither format or has the wrong number of channels.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    arrival = time.monotonic() if arrival is None else arrival
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise MalformedLine(f"invalid JSON {text[:80]!r}: {err.msg}") from err
        if not isinstance(obj, dict) or "t" not in obj or "x" not in obj or not isinstance(obj["x"], list):
            raise MalformedLine(f"JSON sample needs keys 't' and 'x' (a list): {text[:80]!r}")
        values = _finite(obj["x"], text)
        stamp = _finite([obj["t"]], text)
        stream = str(obj.get("stream", default_stream))
    else:
        fields = [f.strip() for f in text.split(",")]
        if len(fields) == num_channels + 1:
            stream = default_stream
            stamp = _finite(fields[:1], text)
            values = _finite(fields[1:], text)
        elif len(fields) == num_channels + 2:
            stream = fields[0] or default_stream
            stamp = _finite(fields[1:2], text)
            values = _finite(fields[2:], text)
        else:
            raise MalformedLine(
                f"expected {num_channels + 1} or {num_channels + 2} comma-separated fields "
                f"([stream_id,]timestamp,{num_channels} channels), got {len(fields)}: {text[:80]!r}"
            )
    if values.shape[0] != num_channels:
        raise MalformedLine(f"expected {num_channels} channel values, got {values.shape[0]}: {text[:80]!r}")
    return Record(stream=stream, timestamp=float(stamp[0]), values=values, arrival=arrival)


class Source:
    """Base of sources: a daemon thread that puts ``SourceEvent``s on a queue until stopped or exhausted."""

    def __init__(self, num_channels: int) -> None:
        self.num_channels = num_channels
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[SourceEvent] | None = None

    def start(self, events: queue.Queue[SourceEvent]) -> None:
        """Start the reading thread, putting events on ``events``."""
        self._queue = events
        self._open()
        self._thread = threading.Thread(target=self._run_guarded, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to finish and wait up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def _open(self) -> None:
        """Acquire resources (sockets) in the caller's thread, so errors surface in ``start``."""

    def _close(self) -> None:
        """Release resources."""

    def _run_guarded(self) -> None:
        try:
            self._run()
        finally:
            self._put(SourceEvent(EventKind.END))

    def _run(self) -> None:
        raise NotImplementedError

    def _put(self, event: SourceEvent) -> None:
        assert self._queue is not None
        while not self._stop.is_set():
            try:
                self._queue.put(event, timeout=0.1)
                return
            except queue.Full:
                continue

    def _emit_lines(self, lines: Iterable[str], default_stream: str) -> None:
        """Parse lines and put one RECORDS event plus one MALFORMED event per bad line."""
        now = time.monotonic()
        records: list[Record] = []
        for line in lines:
            try:
                rec = parse_line(line, self.num_channels, default_stream, now)
            except MalformedLine as err:
                self._put(SourceEvent(EventKind.MALFORMED, reason=str(err)))
                continue
            if rec is not None:
                records.append(rec)
        if records:
            self._put(SourceEvent(EventKind.RECORDS, records=records))


class TextSource(Source):
    """Lines from a text stream (standard input by default) or a file; ends at end of file."""

    def __init__(self, num_channels: int, stream: TextIO | None = None, path: str | Path | None = None) -> None:
        super().__init__(num_channels)
        self._path = Path(path) if path is not None else None
        self._stream = stream
        self._owned: TextIO | None = None

    def _open(self) -> None:
        if self._path is not None:
            self._owned = self._path.open("r", encoding="utf-8", errors="replace")
        self._text = self._owned or self._stream or sys.stdin

    def _close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def _run(self) -> None:
        for line in self._text:
            if self._stop.is_set():
                return
            self._emit_lines([line], "stdin")


class UDPSource(Source):
    """Datagrams on ``host:port`` (port 0 picks a free port, see ``address``); one datagram = one or more lines."""

    def __init__(self, num_channels: int, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(num_channels)
        self.host, self.port = host, port
        self._sock: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self._sock is not None, "start() the source first"
        return self._sock.getsockname()[:2]

    def _open(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.1)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return  # socket closed by stop()
            text = data.decode("utf-8", errors="replace")
            self._emit_lines(text.splitlines(), f"{addr[0]}:{addr[1]}")


class TCPSource(Source):
    """Many concurrent TCP connections on ``host:port``; newline-delimited lines keyed by stream id.

    Served by one thread with ``selectors``; a line without a stream id belongs to its connection (``host:port``).
    """

    def __init__(self, num_channels: int, host: str = "127.0.0.1", port: int = 0, max_line: int = 65536) -> None:
        super().__init__(num_channels)
        self.host, self.port, self.max_line = host, port, max_line
        self._server: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self._server is not None, "start() the source first"
        return self._server.getsockname()[:2]

    def _open(self) -> None:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((self.host, self.port))
        self._server.listen(128)
        self._server.setblocking(False)

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _run(self) -> None:
        assert self._server is not None
        sel = selectors.DefaultSelector()
        sel.register(self._server, selectors.EVENT_READ, None)
        buffers: dict[socket.socket, bytearray] = {}
        names: dict[socket.socket, str] = {}
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.1):
                    if key.data is None:
                        conn, addr = self._server.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                        buffers[conn], names[conn] = bytearray(), f"{addr[0]}:{addr[1]}"
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    try:
                        data = conn.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    buf = buffers[conn]
                    if data:
                        buf.extend(data)
                    cut = buf.rfind(b"\n")
                    if not data:  # peer closed: the last line may lack its newline
                        cut = len(buf)
                    if cut >= 0:
                        lines = bytes(buf[:cut]).decode("utf-8", errors="replace").splitlines()
                        del buf[: cut + 1]
                        self._emit_lines(lines, names[conn])
                    if len(buf) > self.max_line:
                        self._put(SourceEvent(EventKind.MALFORMED, reason=f"line over {self.max_line} bytes"))
                        buf.clear()
                    if not data:
                        sel.unregister(conn)
                        conn.close()
                        del buffers[conn], names[conn]
        finally:
            for conn in list(buffers):
                sel.unregister(conn)
                conn.close()
            sel.close()

    def _run_guarded(self) -> None:
        # a server never ends on its own: no END event, only stop()
        self._run()


class ReplaySource(Source):
    """Replays recordings of a ``vidrec.timeseries/1`` HDF5 file as live streams at ``speed`` x real time.

    Each recording is one stream (its id), all played concurrently from time 0; timestamps are sample index /
    sampling rate. ``speed=0`` replays as fast as the consumer takes the samples.

    Args:
        num_channels: Channels the model expects (checked against the file).
        path: HDF5 file written by ``datamodules.timeseries.schema.write_recordings``.
        recording_ids: Recordings to play (default: the official test split if the file has one, else all).
        speed: Replay speed factor (1 = real time).
        chunk: Samples per stream per event.
    """

    def __init__(
        self,
        num_channels: int,
        path: str | Path,
        recording_ids: list[str] | None = None,
        speed: float = 1.0,
        chunk: int = 8,
    ) -> None:
        super().__init__(num_channels)
        from datamodules.timeseries.schema import read_recordings

        if speed < 0:
            raise ValueError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
        info, recordings = read_recordings(path)
        if info.num_channels != num_channels:
            raise ValueError(f"{path}: recordings have {info.num_channels} channels, the model expects {num_channels}")
        if recording_ids:
            by_id = {r.id: r for r in recordings}
            missing = [i for i in recording_ids if i not in by_id]
            if missing:
                raise ValueError(f"{path}: no recording {missing}; available: {', '.join(by_id)}")
            recordings = [by_id[i] for i in recording_ids]
        elif any(r.split == "test" for r in recordings):
            recordings = [r for r in recordings if r.split == "test"]
        self.recordings = recordings
        self.sampling_rate = info.sampling_rate
        self.speed = speed
        self.chunk = chunk

    def _run(self) -> None:
        start = time.monotonic()
        lengths = [len(r.labels) for r in self.recordings]
        pos = [0] * len(self.recordings)
        rate = self.sampling_rate * self.speed
        while not self._stop.is_set() and any(p < n for p, n in zip(pos, lengths)):
            records: list[Record] = []
            now = time.monotonic()
            for i, rec in enumerate(self.recordings):
                # samples due by now (real-time pacing), at most `chunk` per event
                due = int((now - start) * rate) + 1 if rate > 0 else pos[i] + self.chunk
                end = min(due, lengths[i], pos[i] + self.chunk)
                records.extend(Record(rec.id, t / self.sampling_rate, rec.samples[t], now) for t in range(pos[i], end))
                pos[i] = max(pos[i], end)
            if records:
                self._put(SourceEvent(EventKind.RECORDS, records=records))
            elif rate > 0:
                next_due = start + (min(p for p, n in zip(pos, lengths) if p < n)) / rate
                time.sleep(min(0.05, max(0.0, next_due - time.monotonic())))
