"""Per-sender rate limits of the network sources: token buckets of lines and bytes per second.

A sender is a TCP connection or a UDP source address (``host:port``). Each has two buckets that refill
continuously at ``lines_per_second`` and ``bytes_per_second`` up to ``burst_seconds`` worth of tokens. A chunk of
lines from a sender (what one ``recv`` completed, or one datagram) is admitted line by line in order while both
buckets hold a token for the line (a line costs one line and ``len(line) + 1`` bytes); the rest of the chunk is the
excess: dropped before it is parsed, counted as ``rate_limited_lines``, and under ``DISCONNECT`` a TCP sender is
closed as well. A flooding sender thus costs the consumer at most its limit, and the other senders' lines are
admitted whatever it sends: the limit is per sender, never shared.

The table of senders is bounded (``max_senders``, least recently seen evicted first), so senders that invent
addresses cannot grow it; an evicted sender comes back with full buckets.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Admission", "LimitPolicy", "SenderBuckets", "SenderLimit"]


class LimitPolicy(enum.Enum):
    """What happens to a sender over its limit."""

    DROP = "drop"  # its excess lines are dropped (counted); it stays connected
    DISCONNECT = "disconnect"  # as DROP, and a TCP connection is closed (UDP senders cannot be: DROP)


@dataclass(frozen=True)
class SenderLimit:
    """Rate limit of each sender.

    Attributes:
        lines_per_second: Lines a sender may send per second on average (0: no limit).
        bytes_per_second: Bytes a sender may send per second on average, newlines included (0: no limit).
        burst_seconds: Bucket size, in seconds of the rates: how long a sender may run above them.
        policy: DROP or DISCONNECT.
        max_senders: Senders tracked at once (least recently seen evicted first).
    """

    lines_per_second: float = 0.0
    bytes_per_second: float = 0.0
    burst_seconds: float = 1.0
    policy: LimitPolicy = LimitPolicy.DROP
    max_senders: int = 65536

    def __post_init__(self) -> None:
        if self.lines_per_second < 0 or self.bytes_per_second < 0:
            raise ValueError(
                f"sender rate limits must be >= 0 (0: none), got {self.lines_per_second} lines/s and "
                f"{self.bytes_per_second} bytes/s"
            )
        if self.burst_seconds <= 0 or self.max_senders < 1:
            raise ValueError(
                f"burst_seconds must be > 0 and max_senders >= 1, got {self.burst_seconds}, {self.max_senders}"
            )

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self.lines_per_second > 0 or self.bytes_per_second > 0


@dataclass
class Admission:
    """The part of a chunk a sender may send now."""

    lines: list[str]  # admitted, in order
    dropped: int  # lines over the limit
    disconnect: bool  # the sender is over its limit under DISCONNECT


@dataclass
class _Bucket:
    lines: float
    bytes: float
    stamp: float


class SenderBuckets:
    """The token buckets of every sender (one source thread uses it; not thread-safe).

    Args:
        limit: The per-sender limit.
        clock: Seconds, monotonic (injectable for tests).
    """

    def __init__(self, limit: SenderLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.limited_senders: set[str] = set()  # senders that went over their limit at least once (bounded)

    def _bucket(self, sender: str, now: float) -> _Bucket:
        lim = self.limit
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = _Bucket(lim.lines_per_second * lim.burst_seconds, lim.bytes_per_second * lim.burst_seconds, now)
            self._buckets[sender] = bucket
            while len(self._buckets) > lim.max_senders:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(sender)
            dt = max(0.0, now - bucket.stamp)
            bucket.lines = min(lim.lines_per_second * lim.burst_seconds, bucket.lines + dt * lim.lines_per_second)
            bucket.bytes = min(lim.bytes_per_second * lim.burst_seconds, bucket.bytes + dt * lim.bytes_per_second)
            bucket.stamp = now
        return bucket

    def admit(self, sender: str, lines: Sequence[str]) -> Admission:
        """Admit the leading lines of ``lines`` that ``sender``'s buckets allow now; the rest is dropped."""
        lim = self.limit
        if not lim.active or not lines:
            return Admission(list(lines), 0, False)
        bucket = self._bucket(sender, self.clock())
        admitted = 0
        for line in lines:
            cost = len(line) + 1
            if lim.lines_per_second > 0 and bucket.lines < 1:
                break
            if lim.bytes_per_second > 0 and bucket.bytes < cost:
                break
            bucket.lines -= 1
            bucket.bytes -= cost
            admitted += 1
        dropped = len(lines) - admitted
        if dropped and len(self.limited_senders) < lim.max_senders:
            self.limited_senders.add(sender)
        return Admission(list(lines[:admitted]), dropped, bool(dropped) and lim.policy is LimitPolicy.DISCONNECT)
