"""Serving many live streams through one batched ``StreamingClassifier``.

``StreamMultiplexer`` maps stream ids to runtime slots, buffers each stream's samples until a full hop is there, steps
all streams that have a hop ready in one batch, and turns logits into ``Prediction`` records.

Policies (also in ``vidrec stream --help``):

* **Warm-up**: a stream predicts only once it has seen ``window`` samples since it started or was reset.
* **Gaps**: consecutive timestamps of a stream normally differ by one sample period ``1 / sampling_rate``. Jitter is
  ignored: samples are used in arrival order whatever their spacing. A jump of more than ``gap_factor`` sample periods
  forward, or of more than ``gap_factor`` periods backwards (a restarted sender), resets the stream: the complete hops
  buffered before the gap are stepped first (their predictions come with the next ``flush``, so the output does not
  depend on how the input was batched), then its state and the incomplete hop are dropped and it warms up again from
  the first sample after the gap.
* **Idle eviction**: a stream that sent nothing for ``idle_timeout`` seconds (wall clock) is removed and its slot
  freed; if it comes back it starts afresh.
* **Capacity**: slots grow by doubling up to ``max_streams``. When the table is full, ``full_table`` decides for a
  sample of a new stream: ``REFUSE`` (default) drops it, counted as ``stream_table_full_samples``, so live streams
  are never displaced by a client inventing ids (they free their slots after ``idle_timeout``); ``EVICT_IDLEST``
  evicts the least recently active stream (counted in ``evicted``) to make room, so new streams always get in.
* **Per-sender rate limit** (``vidrec.streaming.limits``, off unless set): a TCP connection or UDP source address
  sending more than its lines/s or bytes/s (beyond a burst) has its excess lines dropped before they are parsed,
  counted as ``rate_limited_lines`` (``rate_limited_senders`` senders in the summary), or is disconnected; every other
  sender keeps its own budget, so one flood cannot take the consumer's time from the other streams.
* **Smoothing**: with ``smoothing = k > 1`` the reported class and probability are those of the mean of the class
  probabilities of the last k hops (reset with the stream).
"""

from __future__ import annotations

import enum
import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vidrec.streaming.runtime import StreamingClassifier
from vidrec.streaming.sources import DropReason, EventKind, Source, SourceEvent

__all__ = [
    "FullTablePolicy",
    "Prediction",
    "ServerStats",
    "SourceFailed",
    "StreamMultiplexer",
    "RateLimitedLog",
    "serve",
]

_log = logging.getLogger("vidrec.streaming")


class RateLimitedLog:
    """Logs a warning at most once per ``interval`` seconds per key, with the count of suppressed ones."""

    def __init__(self, interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str) -> bool:
        """Warn unless ``key`` warned less than ``interval`` seconds ago; returns whether it was logged."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        extra = self._suppressed.pop(key, 0)
        suffix = f" ({extra} similar warnings suppressed)" if extra else ""
        _log.warning("%s%s", message, suffix)
        self._last[key] = now
        return True


@dataclass
class Prediction:
    """One prediction of one stream at the end of a hop."""

    stream: str  # stream id
    timestamp: float  # sender timestamp of the last sample of the window
    class_index: int
    class_name: str
    probability: float  # probability of class_index (smoothed when smoothing > 1)
    latency_ms: float  # wall time from the arrival of the window's last sample to this prediction

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict (``stream``, ``t``, ``class``, ``prob``, ``latency_ms``)."""
        return {
            "stream": self.stream,
            "t": self.timestamp,
            "class": self.class_name,
            "prob": round(self.probability, 6),
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass
class ServerStats:
    """Counters of a serving session."""

    streams_seen: int = 0
    samples: int = 0
    predictions: int = 0
    malformed: int = 0  # lines / packets dropped by the parser
    gap_resets: int = 0
    evicted: int = 0
    rejected_samples: int = 0  # samples of new streams refused because max_streams are live
    rate_limited_senders: int = 0  # senders that went over their rate limit at least once
    drops: dict[DropReason, int] = field(default_factory=dict)  # every drop, by reason (units in the reason's name)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def count_drop(self, reason: DropReason, count: int = 1) -> None:
        """Count ``count`` units of input dropped for ``reason``."""
        self.drops[reason] = self.drops.get(reason, 0) + count
        if reason is DropReason.MALFORMED:
            self.malformed += count
        elif reason is DropReason.STREAM_TABLE_FULL:
            self.rejected_samples += count

    def summary(self) -> dict[str, object]:
        """The counters (``drops`` by reason, every reason listed) plus the median and 95th percentile latency."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        return {
            "streams_seen": self.streams_seen,
            "samples": self.samples,
            "predictions": self.predictions,
            "dropped_malformed": self.malformed,
            "gap_resets": self.gap_resets,
            "evicted": self.evicted,
            "rejected_samples": self.rejected_samples,
            "rate_limited_senders": self.rate_limited_senders,
            "udp_kernel_dropped_datagrams": self.drops.get(DropReason.UDP_KERNEL_DROP, 0),
            "drops": {r.value: self.drops.get(r, 0) for r in DropReason},
            "median_latency_ms": float(np.median(lat)) if lat.size else None,
            "p95_latency_ms": float(np.percentile(lat, 95)) if lat.size else None,
        }


@dataclass
class _Stream:
    slot: int
    last_timestamp: float | None = None
    last_arrival: float = 0.0
    rows: list[np.ndarray] = field(default_factory=list)  # buffered samples, each (C,)
    timestamps: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    probs: deque[np.ndarray] = field(default_factory=deque)


class FullTablePolicy(enum.Enum):
    """What a sample of a new stream gets when ``max_streams`` streams are live."""

    REFUSE = "refuse"  # drop the sample (counted); live streams keep their slots until idle_timeout
    EVICT_IDLEST = "evict-idlest"  # evict the least recently active stream and take its slot


class StreamMultiplexer:
    """Routes samples of many streams into a batched runtime and emits per-hop predictions.

    Args:
        runtime: The batched streaming runtime (its capacity grows on demand).
        class_names: Names of the K classes.
        sampling_rate: Nominal sampling rate in Hz (for the gap policy).
        gap_factor: A timestamp jump of more than this many sample periods resets the stream.
        idle_timeout: Seconds without samples after which a stream is evicted.
        smoothing: Number of hops whose probabilities are averaged (1 = none).
        max_streams: Upper bound on live streams (memory bound).
        full_table: Policy for a new stream when ``max_streams`` are live (see the module docstring).
        clock: Wall clock for arrival times and eviction (``time.monotonic``).
    """

    def __init__(
        self,
        runtime: StreamingClassifier,
        class_names: list[str],
        *,
        sampling_rate: float,
        gap_factor: float = 5.0,
        idle_timeout: float = 30.0,
        smoothing: int = 1,
        max_streams: int = 4096,
        full_table: FullTablePolicy = FullTablePolicy.REFUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sampling_rate <= 0 or gap_factor <= 0 or idle_timeout <= 0 or smoothing < 1 or max_streams < 1:
            raise ValueError(
                "expected sampling_rate > 0, gap_factor > 0, idle_timeout > 0, smoothing >= 1, max_streams >= 1; got "
                f"{sampling_rate}, {gap_factor}, {idle_timeout}, {smoothing}, {max_streams}"
            )
        self.runtime = runtime
        self.class_names = class_names
        self.gap_seconds = gap_factor / sampling_rate
        self.idle_timeout = idle_timeout
        self.smoothing = smoothing
        self.max_streams = max_streams
        self.full_table = FullTablePolicy(full_table)
        self.clock = clock
        self._pending: list[Prediction] = []  # predictions of hops stepped by push (before a gap reset)
        self.stats = ServerStats()
        self._streams: dict[str, _Stream] = {}
        self._free: list[int] = list(range(runtime.capacity - 1, -1, -1))
        self.log = RateLimitedLog(clock=clock)

    @property
    def streams(self) -> list[str]:
        """Ids of the live streams."""
        return list(self._streams)

    def _allocate(self, stream_id: str) -> _Stream | None:
        if not self._free:
            cap = self.runtime.capacity
            if cap >= self.max_streams:
                if self.full_table is FullTablePolicy.REFUSE or not self._streams:
                    return None
                idlest = min(self._streams, key=lambda sid: self._streams[sid].last_arrival)
                self.log.warn(
                    "evict-idlest", f"max_streams={self.max_streams} live: evicted {idlest!r} for {stream_id!r}"
                )
                self.remove(idlest)
                self.stats.evicted += 1
            else:
                new_cap = min(2 * cap, self.max_streams)
                self.runtime.grow(new_cap)
                self._free = list(range(new_cap - 1, cap - 1, -1))
        slot = self._free.pop()
        self.runtime.reset([slot])
        stream = _Stream(slot=slot)
        self._streams[stream_id] = stream
        self.stats.streams_seen += 1
        return stream

    def _reset(self, stream: _Stream) -> None:
        self.runtime.reset([stream.slot])
        stream.rows.clear()
        stream.timestamps.clear()
        stream.arrivals.clear()
        stream.probs.clear()

    def remove(self, stream_id: str) -> None:
        """Forget a stream and free its slot (no error when it is unknown)."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self.runtime.reset([stream.slot])
            self._free.append(stream.slot)

    def push(self, stream_id: str, timestamp: float, values: np.ndarray, arrival: float | None = None) -> None:
        """Buffer one sample ``values`` (C,) of ``stream_id`` taken at sender time ``timestamp``."""
        arrival = self.clock() if arrival is None else arrival
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._allocate(stream_id)
            if stream is None:
                self.stats.count_drop(DropReason.STREAM_TABLE_FULL)
                self.log.warn("capacity", f"max_streams={self.max_streams} streams are live; dropping {stream_id!r}")
                return
        if stream.last_timestamp is not None and abs(timestamp - stream.last_timestamp) > self.gap_seconds:
            self.stats.gap_resets += 1
            self.log.warn(
                "gap",
                f"stream {stream_id!r}: timestamp jumped from {stream.last_timestamp} to {timestamp} "
                f"(> {self.gap_seconds:.4g} s); state reset",
            )
            if len(stream.rows) >= self.runtime.hop:  # complete hops before the gap are stepped, not dropped
                self._pending.extend(self._step([(stream_id, stream)]))
            self._reset(stream)
        stream.last_timestamp = timestamp
        stream.last_arrival = arrival
        stream.rows.append(values)
        stream.timestamps.append(timestamp)
        stream.arrivals.append(arrival)
        self.stats.samples += 1

    def flush(self) -> list[Prediction]:
        """Step every stream with at least one full hop buffered (repeatedly); return the ready predictions."""
        out, self._pending = self._pending, []
        out.extend(self._step(list(self._streams.items())))
        return out

    def _step(self, candidates: list[tuple[str, _Stream]]) -> list[Prediction]:
        """Step the full hops of ``candidates`` (batched over streams, repeatedly); return the predictions."""
        hop = self.runtime.hop
        out: list[Prediction] = []
        while True:
            ready = [(sid, s) for sid, s in candidates if len(s.rows) >= hop]
            if not ready:
                return out
            # n x hop x (C,) -> (n, C, hop)
            chunk = np.stack([np.stack(s.rows[:hop], axis=1) for _, s in ready]).astype(np.float32, copy=False)
            result = self.runtime.step(chunk, [s.slot for _, s in ready])
            probs = torch.softmax(result.logits.float(), dim=1).numpy()  # (n, K)
            now = self.clock()
            for i, (sid, s) in enumerate(ready):
                ts, arrival = s.timestamps[hop - 1], s.arrivals[hop - 1]
                del s.rows[:hop], s.timestamps[:hop], s.arrivals[:hop]
                if not result.ready[i]:
                    continue
                s.probs.append(probs[i])
                while len(s.probs) > self.smoothing:
                    s.probs.popleft()
                p = np.mean(s.probs, axis=0) if self.smoothing > 1 else probs[i]
                k = int(np.argmax(p))
                latency = (now - arrival) * 1000.0
                out.append(Prediction(sid, ts, k, self.class_names[k], float(p[k]), latency))
                self.stats.predictions += 1
                self.stats.latencies_ms.append(latency)

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Remove streams idle for more than ``idle_timeout`` seconds; returns their ids."""
        now = self.clock() if now is None else now
        idle = [sid for sid, s in self._streams.items() if now - s.last_arrival > self.idle_timeout]
        for sid in idle:
            self.remove(sid)
        self.stats.evicted += len(idle)
        return idle


def serve(
    source: Source,
    mux: StreamMultiplexer,
    emit: Callable[[Prediction], None],
    *,
    max_seconds: float | None = None,
    max_samples: int | None = None,
    evict_every: float = 0.5,
) -> ServerStats:
    """Run ``source`` through ``mux`` until the source ends, a bound is reached or Ctrl-C; returns the stats.

    Dropped input (malformed lines, refused connections, kernel UDP drops, ...) is counted in ``mux.stats.drops`` by
    reason, with a rate-limited warning per reason. SIGINT (KeyboardInterrupt) stops the loop cleanly: the source is
    stopped and the stats returned.

    Raises:
        SourceFailed: the source's thread failed (the message says why); the source is stopped first.
    """
    events: queue.Queue[SourceEvent] = queue.Queue(maxsize=4096)
    start = time.monotonic()
    last_evict = start
    source.start(events)
    failure: str | None = None
    try:
        ended = False
        while not ended:
            try:
                batch = [events.get(timeout=0.05)]
            except queue.Empty:
                batch = []
            while len(batch) < 256:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            for event in batch:
                if event.kind is EventKind.END:
                    ended = True
                elif event.kind is EventKind.ERROR:
                    ended, failure = True, event.reason
                elif event.kind in (EventKind.MALFORMED, EventKind.DROPPED):
                    reason = event.drop_reason
                    mux.stats.count_drop(reason, event.count)
                    mux.log.warn(reason.value, f"dropped input ({reason.value}): {event.reason}")
                else:
                    for rec in event.records or []:
                        if max_samples is not None and mux.stats.samples >= max_samples:
                            ended = True
                            break
                        mux.push(rec.stream, rec.timestamp, rec.values, rec.arrival)
            for pred in mux.flush():
                emit(pred)
            now = time.monotonic()
            if now - last_evict >= evict_every:
                mux.evict_idle(now)
                last_evict = now
            if max_samples is not None and mux.stats.samples >= max_samples:
                ended = True
            if max_seconds is not None and now - start >= max_seconds:
                ended = True
    except KeyboardInterrupt:
        _log.info("interrupted; shutting down")
    finally:
        source.stop()
        left = 0  # samples read but not served: counted, not silently lost
        while True:
            try:
                event = events.get_nowait()
            except queue.Empty:
                break
            left += len(event.records or []) if event.kind is EventKind.RECORDS else 0
        if left:
            mux.stats.count_drop(DropReason.UNPROCESSED_AT_STOP, left)
        limits = getattr(source, "sender_limits", None)
        if limits is not None:
            mux.stats.rate_limited_senders = len(limits.limited_senders)
    if failure is not None:
        raise SourceFailed(failure)
    return mux.stats


class SourceFailed(RuntimeError):
    """The live source's thread failed: the server stopped instead of serving nothing."""
