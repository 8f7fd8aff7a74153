"""Live sample sources for ``vidrec stream``: stdin/text files, UDP, TCP and replay of an HDF5 recording.

Line formats and events: ``vidrec.streaming.lines`` (re-exported here). A line without a stream id belongs to the
source's default stream: ``stdin`` for standard input, the sender's ``host:port`` for UDP and TCP. Every source runs
in its own daemon thread and puts ``SourceEvent``s on a bounded queue (backpressure instead of unbounded memory).

Hostile input never stops a source: a line that does not parse (wrong field count, non-numbers, non-finite or
overflowing values, JSON nested too deep, a stream id longer than ``max_id_length``) becomes a ``DROPPED`` event with
its ``DropReason``: counted and dropped by the consumer. The network sources also count what they refuse or lose:
TCP lines over ``max_line`` bytes, connections over ``max_connections``, connections idle for
``connection_idle_timeout`` seconds (closed), failed ``accept()`` calls (EMFILE: the pending connection is accepted
on a reserve descriptor and closed, so the backlog drains instead of spinning), and UDP datagrams the kernel dropped
because the receive buffer was full (Linux ``SO_RXQ_OVFL``). An unexpected error in a source thread is reported as an
``ERROR`` event, so the server fails loudly instead of serving nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vidrec.streaming.limits import SenderBuckets, SenderLimit
from vidrec.streaming.lines import (
    MAX_ID_LENGTH,
    DropReason,
    EventKind,
    MalformedLine,
    Record,
    SourceEvent,
    parse_line,
)

__all__ = [
    "Record",
    "EventKind",
    "DropReason",
    "SourceEvent",
    "MalformedLine",
    "parse_line",
    "Source",
    "TextSource",
    "UDPSource",
    "TCPSource",
    "ReplaySource",
    "MAX_ID_LENGTH",
]

_log = logging.getLogger("vidrec.streaming")


class Source:
    """Base of sources: a daemon thread that puts ``SourceEvent``s on a queue until stopped or exhausted.

    Args:
        num_channels: Channel values per sample.
        max_id_length: Longest accepted stream id (characters); longer ones are dropped as ``LONG_STREAM_ID``.
    """

    ends: bool = True  # a file or replay ends; a server runs until stopped

    def __init__(self, num_channels: int, max_id_length: int = MAX_ID_LENGTH) -> None:
        self.num_channels = num_channels
        self.max_id_length = max_id_length
        # (line, default_stream, arrival, max_id_length) -> Record | None; None: ``parse_line`` (skeleton checkpoints
        # set ``vidrec.streaming.joints.JointLineParser`` for joint frames)
        self.parser: Callable[[str, str, float, int], Record | None] | None = None
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
        except Exception as err:  # noqa: BLE001  # reported to the consumer, which stops with this message
            _log.exception("%s failed", type(self).__name__)
            self._put(SourceEvent(EventKind.ERROR, reason=f"{type(self).__name__} failed: {type(err).__name__}: {err}"))
            return
        if self.ends:
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

    def _drop(self, drop: DropReason, reason: str, count: int = 1) -> None:
        self._put(SourceEvent(EventKind.DROPPED, reason=reason, drop=drop, count=count))

    def _parse(self, lines: Iterable[str], default_stream: str, now: float, records: list[Record]) -> None:
        """Parse ``lines`` into ``records``; one DROPPED event per bad line (no line can raise out of here)."""
        for line in lines:
            try:
                if self.parser is not None:
                    rec = self.parser(line, default_stream, now, self.max_id_length)
                else:
                    rec = parse_line(line, self.num_channels, default_stream, now, self.max_id_length)
            except MalformedLine as err:
                self._drop(err.drop, str(err))
                continue
            except Exception as err:  # noqa: BLE001  # a parser bug must not kill the source: count the line
                self._drop(DropReason.MALFORMED, f"unparseable line ({type(err).__name__}: {err}): {line[:80]!r}")
                continue
            if rec is not None:
                records.append(rec)

    def _admit(self, sender: str, lines: list[str]) -> tuple[list[str], bool]:
        """The lines of ``sender`` within its rate limit (the excess counted as ``RATE_LIMITED``), and whether it is
        to be disconnected (``LimitPolicy.DISCONNECT``)."""
        limits: SenderBuckets | None = getattr(self, "sender_limits", None)
        if limits is None:
            return lines, False
        admission = limits.admit(sender, lines)
        if admission.dropped:
            lim = limits.limit
            self._drop(
                DropReason.RATE_LIMITED,
                f"{sender} is over its rate limit ({lim.lines_per_second:g} lines/s, {lim.bytes_per_second:g} bytes/s;"
                f" 0 = none): {admission.dropped} lines dropped",
                admission.dropped,
            )
        return admission.lines, admission.disconnect

    def _emit_lines(self, lines: Iterable[str], default_stream: str) -> None:
        """Parse lines and put one RECORDS event plus one DROPPED event per bad line."""
        records: list[Record] = []
        self._parse(lines, default_stream, time.monotonic(), records)
        if records:
            self._put(SourceEvent(EventKind.RECORDS, records=records))


class TextSource(Source):
    """Lines from a text stream (standard input by default) or a file; ends at end of file."""

    def __init__(
        self,
        num_channels: int,
        stream: TextIO | None = None,
        path: str | Path | None = None,
        max_id_length: int = MAX_ID_LENGTH,
    ) -> None:
        super().__init__(num_channels, max_id_length)
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


# Linux: SO_RXQ_OVFL asks the kernel to attach, to every datagram, the number of datagrams this socket dropped so far
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)


class UDPSource(Source):
    """Datagrams on ``host:port`` (port 0 picks a free port, see ``address``); one datagram = one or more lines.

    The receive buffer is asked for ``receive_buffer`` bytes (the kernel caps it at ``net.core.rmem_max``; the
    granted size is in ``receive_buffer_granted``). On Linux the kernel's drop counter (``SO_RXQ_OVFL``) arrives with
    each datagram; its increase is reported as ``UDP_KERNEL_DROP`` (``kernel_drops`` holds the total). Up to
    ``batch`` datagrams already queued are read per event. ``sender_limit`` caps what each source address may send
    (``vidrec.streaming.limits``; the excess is ``RATE_LIMITED``).
    """

    ends = False

    def __init__(
        self,
        num_channels: int,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        receive_buffer: int = 8 << 20,
        batch: int = 256,
        max_id_length: int = MAX_ID_LENGTH,
        sender_limit: SenderLimit | None = None,
    ) -> None:
        super().__init__(num_channels, max_id_length)
        self.sender_limits = SenderBuckets(sender_limit) if sender_limit is not None and sender_limit.active else None
        self.host, self.port = host, port
        self.receive_buffer, self.batch = receive_buffer, batch
        self.receive_buffer_granted = 0
        self.kernel_drops = 0
        self._drop_counter = False
        self._sock: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self._sock is not None, "start() the source first"
        return self._sock.getsockname()[:2]

    def _open(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        except OSError as err:
            _log.warning("UDP: cannot set a %d-byte receive buffer: %s", self.receive_buffer, err)
        self.receive_buffer_granted = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
            self._drop_counter = True
        except OSError:
            _log.warning("UDP: this system does not report kernel datagram drops (no SO_RXQ_OVFL)")
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.1)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def _receive(self, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        assert self._sock is not None
        data, ancdata, _, addr = self._sock.recvmsg(65536, socket.CMSG_SPACE(4), flags)
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(payload) >= 4:
                total = struct.unpack("I", payload[:4])[0]
                if total > self.kernel_drops:
                    lost, self.kernel_drops = total - self.kernel_drops, total
                    self._drop(DropReason.UDP_KERNEL_DROP, f"kernel dropped {lost} datagrams", lost)
        return data, addr

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                datagrams = [self._receive()]
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return  # socket closed by stop()
                raise
            while len(datagrams) < self.batch:  # drain what is already queued into one event
                try:
                    datagrams.append(self._receive(socket.MSG_DONTWAIT))
                except (BlockingIOError, InterruptedError, TimeoutError):
                    break
            now = time.monotonic()
            records: list[Record] = []
            for data, addr in datagrams:
                sender = f"{addr[0]}:{addr[1]}"
                lines, _ = self._admit(sender, data.decode("utf-8", errors="replace").splitlines())
                self._parse(lines, sender, now, records)
            if records:
                self._put(SourceEvent(EventKind.RECORDS, records=records))


_FD_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass
class _Connection:
    name: str  # host:port of the peer (the default stream id)
    buffer: bytearray
    last_active: float
    discarding: bool = False  # inside a line already dropped as oversized: skip to its newline


class TCPSource(Source):
    """Many concurrent TCP connections on ``host:port``; newline-delimited lines keyed by stream id.

    Served by one thread with ``selectors``; a line without a stream id belongs to its connection (``host:port``).

    Limits: a line longer than ``max_line`` bytes is dropped (``OVERSIZED_LINE``); a connection beyond
    ``max_connections`` is accepted and closed at once (``REFUSED_CONNECTION``); a connection that sent nothing for
    ``connection_idle_timeout`` seconds is closed (``IDLE_CONNECTION``). When ``accept()`` fails because the process
    is out of file descriptors, a reserve descriptor is released to accept the pending connection and close it (the
    client sees a reset instead of a hang, the loop does not spin), and the failure is counted (``ACCEPT_FAILED``).
    ``sender_limit`` caps what each connection may send (``vidrec.streaming.limits``): the excess lines are dropped
    (``RATE_LIMITED``), or under ``DISCONNECT`` the connection is closed (``RATE_LIMITED_CONNECTION``).
    """

    ends = False

    def __init__(
        self,
        num_channels: int,
        host: str = "127.0.0.1",
        port: int = 0,
        max_line: int = 65536,
        *,
        max_connections: int = 1024,
        connection_idle_timeout: float = 60.0,
        max_id_length: int = MAX_ID_LENGTH,
        sender_limit: SenderLimit | None = None,
    ) -> None:
        super().__init__(num_channels, max_id_length)
        self.sender_limits = SenderBuckets(sender_limit) if sender_limit is not None and sender_limit.active else None
        if max_line < 1 or max_connections < 1 or connection_idle_timeout <= 0:
            raise ValueError(
                "TCPSource: expected max_line >= 1, max_connections >= 1, connection_idle_timeout > 0; got "
                f"{max_line}, {max_connections}, {connection_idle_timeout}"
            )
        self.host, self.port, self.max_line = host, port, max_line
        self.max_connections, self.connection_idle_timeout = max_connections, connection_idle_timeout
        self._server: socket.socket | None = None
        self._reserve: int | None = None

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
        self._reserve = os.open(os.devnull, os.O_RDONLY)

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _accept_when_out_of_descriptors(self, err: OSError) -> None:
        """Free the reserve descriptor, accept and close the pending connection, take the reserve back."""
        assert self._server is not None
        self._drop(DropReason.ACCEPT_FAILED, f"accept() failed: {err.strerror} (errno {err.errno})")
        if self._reserve is None:
            return
        os.close(self._reserve)
        self._reserve = None
        try:
            conn, _ = self._server.accept()
            conn.close()
        except OSError:
            pass
        try:
            self._reserve = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._reserve = None  # taken back after a connection closes

    def _run(self) -> None:
        assert self._server is not None
        sel = selectors.DefaultSelector()
        sel.register(self._server, selectors.EVENT_READ, None)
        conns: dict[socket.socket, _Connection] = {}
        accepting = True
        resume_accept = 0.0
        last_sweep = time.monotonic()

        def close(conn: socket.socket) -> None:
            sel.unregister(conn)
            conn.close()
            del conns[conn]
            if self._reserve is None:
                try:
                    self._reserve = os.open(os.devnull, os.O_RDONLY)
                except OSError:
                    pass

        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if not accepting and now >= resume_accept:
                    sel.register(self._server, selectors.EVENT_READ, None)
                    accepting = True
                for key, _ in sel.select(timeout=0.1):
                    if key.data is None:
                        for _ in range(64):  # accept a burst, then serve reads
                            try:
                                conn, addr = self._server.accept()
                            except (BlockingIOError, InterruptedError):
                                break
                            except OSError as err:
                                if err.errno not in _FD_EXHAUSTED:
                                    self._drop(DropReason.ACCEPT_FAILED, f"accept() failed: {err}")
                                    break
                                self._accept_when_out_of_descriptors(err)
                                if self._reserve is None:  # no reserve: stop accepting for a moment
                                    sel.unregister(self._server)
                                    accepting, resume_accept = False, time.monotonic() + 0.1
                                break
                            if len(conns) >= self.max_connections:
                                conn.close()
                                self._drop(
                                    DropReason.REFUSED_CONNECTION,
                                    f"connection from {addr[0]}:{addr[1]} refused: "
                                    f"max_connections={self.max_connections} are open",
                                )
                                continue
                            conn.setblocking(False)
                            sel.register(conn, selectors.EVENT_READ, "conn")
                            conns[conn] = _Connection(f"{addr[0]}:{addr[1]}", bytearray(), time.monotonic())
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    state = conns.get(conn)
                    if state is None:
                        continue
                    try:
                        data = conn.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    buf = state.buffer
                    state.last_active = time.monotonic()
                    if data and state.discarding:
                        end = data.find(b"\n")
                        data_kept = b"" if end < 0 else data[end + 1 :]
                        state.discarding = end < 0
                        buf.extend(data_kept)
                    elif data:
                        buf.extend(data)
                    cut = buf.rfind(b"\n")
                    if not data:  # peer closed: the last line may lack its newline
                        cut = len(buf)
                    if cut >= 0:
                        lines = bytes(buf[:cut]).decode("utf-8", errors="replace").splitlines()
                        del buf[: cut + 1]
                        long_lines = [ln for ln in lines if len(ln) > self.max_line]
                        if long_lines:
                            lines = [ln for ln in lines if len(ln) <= self.max_line]
                            self._drop(
                                DropReason.OVERSIZED_LINE,
                                f"{len(long_lines)} lines over {self.max_line} bytes",
                                len(long_lines),
                            )
                        lines, over = self._admit(state.name, lines)
                        self._emit_lines(lines, state.name)
                        if over and data:
                            self._drop(
                                DropReason.RATE_LIMITED_CONNECTION,
                                f"connection {state.name} closed: over its rate limit",
                            )
                            close(conn)
                            continue
                    if len(buf) > self.max_line:
                        self._drop(DropReason.OVERSIZED_LINE, f"line over {self.max_line} bytes")
                        buf.clear()
                        state.discarding = True
                    if not data:
                        close(conn)
                now = time.monotonic()
                if now - last_sweep >= min(1.0, self.connection_idle_timeout / 4):
                    last_sweep = now
                    for conn, state in list(conns.items()):
                        if now - state.last_active > self.connection_idle_timeout:
                            self._drop(
                                DropReason.IDLE_CONNECTION,
                                f"connection {state.name} idle for {self.connection_idle_timeout:g} s; closed",
                            )
                            close(conn)
        finally:
            for conn in list(conns):
                close(conn)
            sel.close()


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
