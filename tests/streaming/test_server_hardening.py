"""Hostile and unlucky input for the live server: a malformed-input corpus, a low fd limit, UDP losses, limits.

Every network test binds to 127.0.0.1 and is bounded in time.
"""

from __future__ import annotations

import io
import json
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from vidrec.streaming import StreamingClassifier, StreamMultiplexer, serve
from vidrec.streaming.server import FullTablePolicy, Prediction, SourceFailed
from vidrec.streaming.sources import (
    DropReason,
    EventKind,
    MalformedLine,
    SourceEvent,
    TCPSource,
    TextSource,
    UDPSource,
    parse_line,
)

WINDOW, HOP, RATE = 36, 4, 50.0
CLASSES = ["a", "b", "c"]
ROOT = Path(__file__).resolve().parents[2]

# each line once stopped the server (RecursionError, ValueError of the int-string limit, OverflowError)
KILLER_LINES = [
    '{"t": 1, "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
    '{"t": ' + "1" * 5_000 + ', "x": [1, 2, 3]}',
    '{"t": 1, "x": [' + "9" * 400 + ", 1, 2]}",
]
MALFORMED_CORPUS = [
    *KILLER_LINES,
    '{"stream": ' + "[" * 5_000 + "]" * 5_000 + ', "t": 1, "x": [1, 2, 3]}',
    '{"t": 1, "x": [1, 2, 3], "pad": ' + "{" * 30_000,
    '{"t": NaN, "x": [1, 2, 3]}',
    '{"t": 1, "x": [Infinity, 2, 3]}',
    '{"t": 1, "x": [1e39, 2, 3]}',  # finite in float64, overflows float32
    '{"t": 1e400, "x": [1, 2, 3]}',
    '{"t": 1, "x": [[1], 2, 3]}',
    '{"t": 1, "x": [{"a": 1}, 2, 3]}',
    '{"t": 1, "x": [true, 2, 3]}',
    '{"t": 1, "x": "123"}',
    '{"t": [1], "x": [1, 2, 3]}',
    '{"stream": {"a": 1}, "t": 1, "x": [1, 2, 3]}',
    '{"t": 1, "x": [1, 2, 3, 4]}',
    "{" + '"t": 1, ' * 10_000,
    "s," + "1" * 5_000 + ",1,2,3",
    "s,0," + "9" * 400 + ",2,3",
    "\x00\x01\x02\xff\xfe",
    "\ufffd" * 1000,
    "s,0,1,2," + "," * 5000,
    "a" * 200 + ",0,1,2,3",  # stream id over max_id_length
]


def _mux(model: nn.Module, **kw: object) -> StreamMultiplexer:
    rt = StreamingClassifier(model, WINDOW, HOP, capacity=2)
    kwargs: dict = dict(sampling_rate=RATE, idle_timeout=30.0)
    kwargs.update(kw)
    return StreamMultiplexer(rt, CLASSES, **kwargs)


def _lines(stream: str, x: np.ndarray, t0: float = 0.0) -> list[str]:
    return [f"{stream},{t0 + t / RATE!r}," + ",".join(f"{v:.6f}" for v in x[:, t]) for t in range(x.shape[1])]


@pytest.mark.parametrize("line", MALFORMED_CORPUS, ids=range(len(MALFORMED_CORPUS)))
def test_every_corpus_line_is_a_malformed_line_and_nothing_else(line: str) -> None:
    with pytest.raises(MalformedLine):
        parse_line(line, 3, "d")


def test_a_long_stream_id_is_dropped_with_its_own_reason() -> None:
    with pytest.raises(MalformedLine) as err:
        parse_line("a" * 129 + ",0,1,2,3", 3, "d")
    assert err.value.drop is DropReason.LONG_STREAM_ID
    assert parse_line("a" * 128 + ",0,1,2,3", 3, "d") is not None


def test_epoch_timestamps_keep_their_milliseconds() -> None:
    t = 1_764_633_600.02  # 2025-12-02 in Unix seconds
    rec = parse_line(f"s,{t!r},1,2,3", 3, "d")
    assert rec is not None and rec.timestamp == t
    rec = parse_line(json.dumps({"t": t, "x": [1, 2, 3]}), 3, "d")
    assert rec is not None and rec.timestamp == t


def test_epoch_timestamps_give_exact_times_and_no_spurious_gap_resets(tiny_model: nn.Module, tmp_path: Path) -> None:
    # float32 timestamps lost everything below 128 s: a reset every 128 s of sender time and wrong `t` values
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3600)).astype(np.float32)  # 72 s at 50 Hz: crosses a float32 step (128 s) at 64 s
    t0 = 1_764_633_600.0
    path = tmp_path / "epoch.csv"
    path.write_text("\n".join(_lines("s", x, t0)) + "\n")
    mux = _mux(tiny_model)
    got: list[Prediction] = []
    serve(TextSource(3, path=path), mux, got.append, max_seconds=60)
    assert mux.stats.gap_resets == 0
    assert len(got) == (3600 - WINDOW) // HOP + 1
    assert got[-1].timestamp == t0 + 3599 / RATE


def test_gap_reset_steps_the_complete_hops_first(tiny_model: nn.Module) -> None:
    # the output must not depend on how the input was batched into flush() calls
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 200)).astype(np.float32)
    stamps = [t / RATE for t in range(100)] + [100.0 + t / RATE for t in range(100)]  # a jump at sample 100

    def run(flush_every: int) -> list[tuple[float, int]]:
        mux = _mux(tiny_model)
        out: list[Prediction] = []
        for t in range(200):
            mux.push("s", stamps[t], x[:, t])
            if (t + 1) % flush_every == 0:
                out.extend(mux.flush())
        out.extend(mux.flush())
        return [(p.timestamp, p.class_index) for p in out]

    one_batch, per_hop = run(1000), run(HOP)
    assert one_batch == per_hop
    assert len(one_batch) == 2 * ((100 - WINDOW) // HOP + 1)  # 17 before the jump, 17 after


def test_killer_lines_over_tcp_do_not_stop_the_good_streams(tiny_model: nn.Module) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 44)).astype(np.float32)
    source = TCPSource(3, "127.0.0.1", 0)
    mux = _mux(tiny_model)
    got: list[Prediction] = []

    def send() -> None:
        while source._server is None:
            time.sleep(0.01)
        bad = socket.create_connection(source.address, timeout=5)
        good = socket.create_connection(source.address, timeout=5)
        for line in MALFORMED_CORPUS:
            bad.sendall(line.encode("utf-8", errors="surrogateescape") + b"\n")
        time.sleep(0.2)  # the killer lines are read before the good samples
        for line in _lines("good", x):
            good.sendall(line.encode() + b"\n")
        bad.close()
        good.close()

    threading.Thread(target=send, daemon=True).start()
    serve(source, mux, got.append, max_samples=44, max_seconds=30)
    assert mux.stats.samples == 44 and len(got) == 3
    assert sum(mux.stats.drops.values()) == len(MALFORMED_CORPUS)  # the longest ones as oversized lines


def test_killer_datagrams_over_udp_do_not_end_the_server(tiny_model: nn.Module) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    source = UDPSource(3, "127.0.0.1", 0)
    mux = _mux(tiny_model)
    got: list[Prediction] = []

    def send() -> None:
        while source._sock is None:
            time.sleep(0.01)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for line in KILLER_LINES:
            sock.sendto(line.encode(), source.address)
        time.sleep(0.2)
        for line in _lines("u", x):
            sock.sendto(line.encode(), source.address)
            time.sleep(0.001)
        sock.close()

    threading.Thread(target=send, daemon=True).start()
    serve(source, mux, got.append, max_samples=40, max_seconds=20)
    assert mux.stats.samples == 40 and len(got) == 2 and mux.stats.malformed == len(KILLER_LINES)


_LOW_FD_SERVER = textwrap.dedent(
    """
    import importlib.util, json, queue, resource, sys, time

    # the source modules alone (numpy only): the child starts in a fraction of a second, without torch
    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    load("vidrec.streaming.lines", sys.argv[1] + "/lines.py")
    load("vidrec.streaming.limits", sys.argv[1] + "/limits.py")
    sources = load("vidrec.streaming.sources", sys.argv[1] + "/sources.py")
    DropReason, EventKind, TCPSource = sources.DropReason, sources.EventKind, sources.TCPSource

    resource.setrlimit(resource.RLIMIT_NOFILE, (40, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    source = TCPSource(3, "127.0.0.1", 0)
    events = queue.Queue()
    source.start(events)
    print(source.address[1], flush=True)
    sys.stdin.readline()  # the parent has flooded, closed, then sent good lines
    samples, failures, deadline = 0, 0, time.monotonic() + 10
    while samples < 8 and time.monotonic() < deadline:
        try:
            event = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if event.kind is EventKind.RECORDS:
            samples += len(event.records)
        elif event.drop is DropReason.ACCEPT_FAILED:
            failures += event.count
    alive = source._thread.is_alive()
    source.stop()
    print(json.dumps({"samples": samples, "accept_failures": failures, "alive": alive}), flush=True)
    """
)


def test_tcp_source_survives_running_out_of_file_descriptors(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _LOW_FD_SERVER, str(ROOT / "vidrec/streaming")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        flood = []
        for _ in range(60):  # more connections than the child has descriptors
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        for conn in flood:
            conn.close()
        time.sleep(0.3)
        good = socket.create_connection(("127.0.0.1", port), timeout=5)
        good.sendall("".join(f"g,{t / RATE},1,2,3\n" for t in range(8)).encode())
        child.stdin.write("go\n")
        child.stdin.flush()
        result = json.loads(child.stdout.readline())
        good.close()
    finally:
        child.kill()
        child.wait(5)
    assert result == {"samples": 8, "accept_failures": result["accept_failures"], "alive": True}
    assert result["accept_failures"] > 0


def test_udp_kernel_drops_are_counted_exactly() -> None:
    # a small receive buffer and a consumer that stops taking events: the kernel drops, the source says how many
    source = UDPSource(3, "127.0.0.1", 0, receive_buffer=4096, batch=1)
    events: queue.Queue[SourceEvent] = queue.Queue(maxsize=2)
    source.start(events)
    sent = 0
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for t in range(3000):
            sock.sendto(f"u,{t / RATE},1,2,3".encode(), source.address)
            sent += 1
        received, dropped, deadline = 0, 0, time.monotonic() + 10
        while time.monotonic() < deadline and received + dropped < sent:
            try:
                event = events.get(timeout=0.05)
            except queue.Empty:
                sock.sendto(f"u,{sent / RATE},1,2,3".encode(), source.address)  # carries the drop counter
                sent += 1
                continue
            if event.kind is EventKind.RECORDS:
                received += len(event.records or [])
            elif event.drop is DropReason.UDP_KERNEL_DROP:
                dropped += event.count
        sock.close()
    finally:
        source.stop()
    if not source._drop_counter:
        pytest.skip("this kernel does not report UDP drops (SO_RXQ_OVFL)")
    assert dropped > 0 and received + dropped == sent


def test_tcp_connection_limits_are_enforced_and_counted(tiny_model: nn.Module) -> None:
    source = TCPSource(3, "127.0.0.1", 0, max_connections=2, connection_idle_timeout=0.3)
    mux = _mux(tiny_model)
    done = threading.Event()

    def connect() -> None:
        while source._server is None:
            time.sleep(0.01)
        conns = [socket.create_connection(source.address, timeout=5) for _ in range(4)]
        time.sleep(1.0)  # all four idle: the two accepted ones are closed after 0.3 s
        for conn in conns:
            conn.close()
        done.set()

    threading.Thread(target=connect, daemon=True).start()
    stats = serve(source, mux, lambda p: None, max_seconds=1.5)
    assert done.is_set()
    assert stats.drops[DropReason.REFUSED_CONNECTION] == 2
    assert stats.drops[DropReason.IDLE_CONNECTION] == 2
    assert stats.summary()["drops"]["refused_connections"] == 2  # type: ignore[index]


def test_tcp_oversized_line_is_dropped_alone(tiny_model: nn.Module) -> None:
    source = TCPSource(3, "127.0.0.1", 0, max_line=1000)
    mux = _mux(tiny_model)

    def send() -> None:
        while source._server is None:
            time.sleep(0.01)
        conn = socket.create_connection(source.address, timeout=5)
        conn.sendall(b"s,0,1,2,3\n" + b"9" * 5000)  # a line over max_line, in pieces
        time.sleep(0.1)
        conn.sendall(b"9" * 5000 + b",1,2,3\ns,0.02,1,2,3\n")
        conn.close()

    threading.Thread(target=send, daemon=True).start()
    stats = serve(source, mux, lambda p: None, max_samples=2, max_seconds=10)
    assert stats.samples == 2 and stats.malformed == 0 and stats.drops[DropReason.OVERSIZED_LINE] == 1


def test_full_table_refuses_or_evicts_the_idlest(tiny_model: nn.Module) -> None:
    now = [0.0]
    refuse = _mux(tiny_model, max_streams=2, clock=lambda: now[0])
    evict = _mux(tiny_model, max_streams=2, full_table=FullTablePolicy.EVICT_IDLEST, clock=lambda: now[0])
    for mux in (refuse, evict):
        for sid in ("old", "busy", "new"):
            now[0] += 1.0
            mux.push(sid, 0.0, np.zeros(3, np.float32))
    assert refuse.streams == ["old", "busy"] and refuse.stats.drops[DropReason.STREAM_TABLE_FULL] == 1
    assert refuse.stats.rejected_samples == 1
    assert evict.streams == ["busy", "new"] and evict.stats.evicted == 1


def test_a_failing_source_thread_stops_the_server_with_its_error(tiny_model: nn.Module) -> None:
    # before, a dead reader thread left a server that listened and served nothing (TCP) or exited with status 0 (UDP)
    class Broken(TextSource):
        def _run(self) -> None:
            raise OSError("disk on fire")

    with pytest.raises(SourceFailed, match="Broken failed: OSError: disk on fire"):
        serve(Broken(3, stream=io.StringIO("")), _mux(tiny_model), lambda p: None, max_seconds=10)


def test_sender_buckets_admit_each_sender_its_own_lines_and_bytes_per_second() -> None:
    from vidrec.streaming.limits import LimitPolicy, SenderBuckets, SenderLimit

    now = [0.0]
    buckets = SenderBuckets(SenderLimit(lines_per_second=10, burst_seconds=1.0), clock=lambda: now[0])
    first = buckets.admit("a", [f"l{i}" for i in range(25)])
    assert (len(first.lines), first.dropped, first.disconnect) == (10, 15, False)  # the 1 s burst
    assert first.lines == [f"l{i}" for i in range(10)]  # the leading lines, in order
    assert buckets.admit("b", ["x"] * 4).dropped == 0  # another sender has its own budget
    now[0] = 0.5  # half a second refills 5 lines
    assert len(buckets.admit("a", ["y"] * 8).lines) == 5
    now[0] = 100.0  # refilled up to the burst, not beyond
    assert len(buckets.admit("a", ["z"] * 30).lines) == 10
    assert buckets.limited_senders == {"a"}

    by_bytes = SenderBuckets(SenderLimit(bytes_per_second=100, policy=LimitPolicy.DISCONNECT), clock=lambda: 0.0)
    over = by_bytes.admit("c", ["x" * 39] * 3)  # 40 bytes a line with its newline: two fit in 100
    assert (len(over.lines), over.dropped, over.disconnect) == (2, 1, True)
    unlimited = SenderBuckets(SenderLimit())
    assert unlimited.admit("d", ["x"] * 10_000).dropped == 0
    small = SenderBuckets(SenderLimit(lines_per_second=1, max_senders=2), clock=lambda: 0.0)
    for sender in ("s1", "s2", "s3"):
        small.admit(sender, ["x"])
    assert list(small._buckets) == ["s2", "s3"]  # the least recently seen sender is evicted
    with pytest.raises(ValueError, match="rate limits must be >= 0"):
        SenderLimit(lines_per_second=-1)


def _served_alone(model: nn.Module, lines: list[str]) -> list[tuple[str, int]]:
    """The predictions of ``lines`` pushed straight into a multiplexer (no network, no other sender)."""
    mux, got = _mux(model), []
    for line in lines:
        rec = parse_line(line, 3, "d", 0.0)
        assert rec is not None
        mux.push(rec.stream, rec.timestamp, rec.values)
        got += [(p.stream, p.class_index) for p in mux.flush()]
    return got


@pytest.mark.parametrize("policy", ["drop", "disconnect"])
def test_a_flooding_tcp_sender_is_limited_and_the_others_are_served(tiny_model: nn.Module, policy: str) -> None:
    from vidrec.streaming.limits import LimitPolicy, SenderLimit

    x = np.random.default_rng(8).standard_normal((3, 44)).astype(np.float32)
    flood_lines = _lines("flood", np.random.default_rng(9).standard_normal((3, 20_000)).astype(np.float32))
    limit = SenderLimit(lines_per_second=100, burst_seconds=0.5, policy=LimitPolicy(policy))
    source = TCPSource(3, "127.0.0.1", 0, sender_limit=limit)
    mux = _mux(tiny_model, max_streams=4)
    got: list[Prediction] = []
    sent = threading.Event()

    def send() -> None:
        while source._server is None:
            time.sleep(0.01)
        flood = socket.create_connection(source.address, timeout=5)
        good = socket.create_connection(source.address, timeout=5)
        try:
            flood.sendall(("\n".join(flood_lines) + "\n").encode())  # 20000 lines at once: 200 s of its budget
        except OSError:
            pass  # closed by the server (disconnect)
        for i, line in enumerate(_lines("good", x)):  # 44 lines in 0.44 s: within its own 100 lines/s
            good.sendall(line.encode() + b"\n")
            if i % 4 == 3:
                time.sleep(0.04)
        good.close()
        flood.close()
        sent.set()

    threading.Thread(target=send, daemon=True).start()
    serve(source, mux, got.append, max_seconds=4)
    assert sent.is_set()
    expected = _served_alone(tiny_model, _lines("good", x))
    assert [(p.stream, p.class_index) for p in got if p.stream == "good"] == expected and len(expected) == 3
    summary = mux.stats.summary()
    drops = summary["drops"]
    assert isinstance(drops, dict) and summary["rate_limited_senders"] == 1
    flood_served = sum(1 for p in got if p.stream == "flood")
    assert drops["rate_limited_lines"] > 0 and flood_served <= (50 + 4 * 100) // HOP  # burst + 4 s at the limit
    if policy == "disconnect":
        assert drops["rate_limited_connections"] == 1
    else:
        assert drops["rate_limited_connections"] == 0


def test_a_flooding_udp_sender_is_limited_and_the_others_are_served(tiny_model: nn.Module) -> None:
    from vidrec.streaming.limits import SenderLimit

    x = np.random.default_rng(10).standard_normal((3, 40)).astype(np.float32)
    flood = _lines("flood", np.random.default_rng(11).standard_normal((3, 4000)).astype(np.float32))
    source = UDPSource(3, "127.0.0.1", 0, sender_limit=SenderLimit(lines_per_second=200, burst_seconds=0.5))
    mux = _mux(tiny_model, max_streams=4)
    got: list[Prediction] = []

    def send() -> None:
        while source._sock is None:
            time.sleep(0.01)
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(0, len(flood), 40):
            bad.sendto("\n".join(flood[i : i + 40]).encode(), source.address)
        lines = _lines("good", x)
        for i in range(0, 40, 4):  # 4 lines a datagram, 10 datagrams in 0.3 s
            good.sendto("\n".join(lines[i : i + 4]).encode(), source.address)
            time.sleep(0.03)
        bad.close()
        good.close()

    threading.Thread(target=send, daemon=True).start()
    serve(source, mux, got.append, max_seconds=2.5)
    expected = _served_alone(tiny_model, _lines("good", x))
    assert [(p.stream, p.class_index) for p in got if p.stream == "good"] == expected and len(expected) == 2
    drops = mux.stats.summary()["drops"]
    assert isinstance(drops, dict)
    kernel = drops["udp_kernel_dropped_datagrams"]
    assert drops["rate_limited_lines"] + 40 * kernel >= len(flood) - (100 + 3 * 200)  # all but burst + 2.5 s of it
