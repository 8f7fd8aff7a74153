"""Bounded soak of the live server on 127.0.0.1: good streams beside hostile and unlucky clients.

A child process serves a TCP and a UDP source (``vidrec.streaming.serve``, one ``StreamMultiplexer`` each, a
random-weight ``resnet1d_tiny`` on 3 channels, window 64, hop 8, 50 Hz) for ``--seconds``; this process drives, over
loopback only:

* good streams: ``--good`` TCP streams (over 4 connections) and ``--good`` UDP streams, 50 samples/s each, real time;
* a malformed client: lines that once stopped the server (JSON nested 20,000 deep, a 5,000-digit timestamp, a
  400-digit integer), binary garbage, wrong field counts, non-finite values, 200-character stream ids;
* an oversized client: a TCP line that never ends (chunks of 64 KiB, no newline);
* slow clients: TCP connections that send one byte every half second;
* idle clients: TCP connections that send nothing (closed by the server after ``--connection-idle-timeout``), more of
  them than ``--max-connections`` allows (the rest refused);
* flooding clients: a TCP client that invents a new stream id for every sample (fills the stream table, whose
  policy refuses new streams) at ``--id-flood`` samples/s, and a UDP sender at ``--udp-flood`` datagrams/s.

It prints predictions served to the good streams (total, fewest for one stream, expected), every drop by reason,
samples and streams seen, the server's peak RSS and CPU time, and exits with status 1 when a good stream starves
(fewer than ``--min-fraction`` of its expected predictions). Figures on a loaded machine are noisy.

The defaults fit what one loaded core serves; raise ``--id-flood`` / ``--udp-flood`` past the server's parsing
capacity and the good streams starve (the sources share one queue: a flood delays everyone), which is what the
exit status reports. ``--sender-lines-per-second N`` gives each TCP connection and UDP address a budget of N lines/s
(``vidrec.streaming.limits``): the floods' excess is dropped before it is parsed.

Usage: ``python tools/soak_stream.py [--seconds 30] [--good 8] [--id-flood 1000] [--udp-flood 1000] [--no-attack]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

RATE, WINDOW, HOP, CHANNELS = 50.0, 64, 8, 3
MALFORMED = [
    '{"t": 1, "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
    '{"t": ' + "1" * 5_000 + ', "x": [1, 2, 3]}',
    '{"t": 1, "x": [' + "9" * 400 + ", 1, 2]}",
    "\x00\x01\x02garbage\xff",
    "1,2",
    "s,0,nan,1,2",
    "a" * 200 + ",0,1,2,3",
]


# ----------------------------------------------------------------------------------------------- server (child)
def _serve(args: argparse.Namespace) -> None:
    import logging

    import torch

    from vidrec.models import build_model
    from vidrec.streaming import StreamingClassifier, StreamMultiplexer, serve
    from vidrec.streaming.limits import SenderLimit
    from vidrec.streaming.sources import TCPSource, UDPSource

    logging.getLogger("vidrec.streaming").setLevel(logging.ERROR)  # drops are in the summary, by reason
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet1d_tiny", in_channels=CHANNELS, num_classes=3).eval()
    limit = SenderLimit(lines_per_second=args.sender_lines_per_second)
    tcp = TCPSource(
        CHANNELS,
        "127.0.0.1",
        0,
        max_connections=args.max_connections,
        connection_idle_timeout=args.connection_idle_timeout,
        sender_limit=limit,
    )
    udp = UDPSource(CHANNELS, "127.0.0.1", 0, sender_limit=limit)
    results: dict[str, dict[str, object]] = {}

    def run(name: str, source: TCPSource | UDPSource) -> None:
        runtime = StreamingClassifier(model, WINDOW, HOP, capacity=64)
        mux = StreamMultiplexer(
            runtime, ["a", "b", "c"], sampling_rate=RATE, idle_timeout=5.0, max_streams=args.max_streams
        )
        served: Counter[str] = Counter()
        stats = serve(source, mux, lambda p: served.update([p.stream]), max_seconds=args.seconds)
        results[name] = {"summary": stats.summary(), "served": dict(served)}

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("tcp", tcp), ("udp", udp))]
    for t in threads:
        t.start()
    while tcp._server is None or udp._sock is None:
        time.sleep(0.01)
    print(f"PORTS {tcp.address[1]} {udp.address[1]}", flush=True)
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)


# ---------------------------------------------------------------------------------------------- clients (parent)
def _sample(stream: str, t: int) -> str:
    return f"{stream},{t / RATE:.2f}," + ",".join(f"{random.gauss(0, 1):.4f}" for _ in range(CHANNELS))


def _good_tcp(port: int, ids: list[str], stop: threading.Event, sent: Counter[str]) -> None:
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    start, t = time.monotonic(), 0
    while not stop.is_set():
        while t < (time.monotonic() - start) * RATE:
            for i, sid in enumerate(ids):
                conns[i % 4].sendall((_sample(sid, t) + "\n").encode())
                sent[sid] += 1
            t += 1
        time.sleep(0.005)
    for c in conns:
        c.close()


def _good_udp(port: int, ids: list[str], stop: threading.Event, sent: Counter[str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start, t = time.monotonic(), 0
    while not stop.is_set():
        while t < (time.monotonic() - start) * RATE:
            for sid in ids:
                sock.sendto(_sample(sid, t).encode(), ("127.0.0.1", port))
                sent[sid] += 1
            t += 1
        time.sleep(0.005)
    sock.close()


def _malformed(tcp: int, udp: int, stop: threading.Event) -> None:
    conn = socket.create_connection(("127.0.0.1", tcp), timeout=5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while not stop.is_set():
        for line in MALFORMED:
            conn.sendall(line.encode("utf-8", errors="replace") + b"\n")
            sock.sendto(line.encode("utf-8", errors="replace")[:60_000], ("127.0.0.1", udp))
        stop.wait(0.1)
    conn.close()
    sock.close()


def _oversized(port: int, stop: threading.Event) -> None:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    chunk = b"9" * 65536
    while not stop.is_set():
        conn.sendall(chunk)  # a line that never ends: dropped every max_line bytes
        stop.wait(0.05)
    conn.close()


def _slow(port: int, stop: threading.Event, n: int = 8) -> None:
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    line = (_sample("slow", 0) + "\n").encode()
    i = 0
    while not stop.is_set():
        for c in conns:
            try:
                c.sendall(line[i % len(line) : i % len(line) + 1])
            except OSError:
                pass
        i += 1
        stop.wait(0.5)
    for c in conns:
        c.close()


def _idle(port: int, stop: threading.Event, n: int) -> None:
    conns = []
    for _ in range(n):
        try:
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    stop.wait()
    for c in conns:
        c.close()


def _flood_ids(port: int, stop: threading.Event, rate: float) -> None:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    start, k = time.monotonic(), 0
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        if due > k:
            conn.sendall("".join(_sample(f"flood{j}", 0) + "\n" for j in range(k, due)).encode())
            k = due
        time.sleep(0.01)
    conn.close()


def _flood_udp(port: int, stop: threading.Event, rate: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start, n = time.monotonic(), 0
    while not stop.is_set():
        while n < (time.monotonic() - start) * rate:
            sock.sendto(_sample("udpflood", n).encode(), ("127.0.0.1", port))
            n += 1
        time.sleep(0.002)
    sock.close()


def _drive(args: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--serve", *sys.argv[1:]]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("PORTS"):
        child.kill()
        print(f"server did not start: {line!r}", file=sys.stderr)
        return 2
    tcp, udp = map(int, line.split()[1:])
    served_from = time.monotonic()
    stop = threading.Event()
    sent: Counter[str] = Counter()
    tcp_ids = [f"tcp{i}" for i in range(args.good)]
    udp_ids = [f"udp{i}" for i in range(args.good)]
    clients = [
        threading.Thread(target=_good_tcp, args=(tcp, tcp_ids, stop, sent)),
        threading.Thread(target=_good_udp, args=(udp, udp_ids, stop, sent)),
    ]
    for c in clients:
        c.start()
    time.sleep(1.0)  # the good streams are live before the attack starts
    attackers = [
        threading.Thread(target=_flood_ids, args=(tcp, stop, args.id_flood)),
        threading.Thread(target=_flood_udp, args=(udp, stop, args.udp_flood)),
        threading.Thread(target=_malformed, args=(tcp, udp, stop)),
        threading.Thread(target=_oversized, args=(tcp, stop)),
        threading.Thread(target=_slow, args=(tcp, stop)),
        threading.Thread(target=_idle, args=(tcp, stop, args.max_connections)),  # the last: fills the table
    ]
    for a in attackers if not args.no_attack else []:
        a.start()
        time.sleep(0.05)  # connected in this order
    client_stop = served_from + args.seconds - args.drain  # the server has `drain` seconds to catch up
    while time.monotonic() < client_stop:
        time.sleep(0.1)
    stop.set()
    for t in clients + attackers:
        if t.ident is not None:  # started
            t.join(10)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    results = json.loads(out.strip().splitlines()[-1])

    def expected(sid: str) -> int:
        return max(0, (sent[sid] - WINDOW) // HOP + 1)

    starving = []
    attack = "no attackers" if args.no_attack else f"attackers on, UDP flood {args.udp_flood:g}/s"
    print(
        f"soak: {args.seconds:g} s on 127.0.0.1, {args.good} good TCP + {args.good} good UDP streams "
        f"at {RATE:g} Hz, {attack}"
    )
    for name, ids in (("tcp", tcp_ids), ("udp", udp_ids)):
        served = results[name]["served"]
        summary = results[name]["summary"]
        got = [int(served.get(sid, 0)) for sid in ids]
        want = [expected(sid) for sid in ids]
        starving += [sid for sid, g, w in zip(ids, got, want) if g < args.min_fraction * w]
        print(
            f"{name}: predictions to good streams {sum(got)} of {sum(want)} expected "
            f"(fewest for one stream {min(got)} of {min(want)}); all predictions {summary['predictions']}, "
            f"samples {summary['samples']}, streams seen {summary['streams_seen']}, gap resets {summary['gap_resets']}"
        )
        drops = {k: v for k, v in summary["drops"].items() if v}
        print(f"{name}: drops by reason {json.dumps(drops)}")
    print(
        f"server: peak RSS {usage.ru_maxrss / 1024:.0f} MiB, CPU {usage.ru_utime + usage.ru_stime:.1f} s "
        f"({100 * (usage.ru_utime + usage.ru_stime) / args.seconds:.0f}% of one core), exit status {status >> 8}"
    )
    if starving:
        print(f"STARVED good streams: {', '.join(starving)}", file=sys.stderr)
        return 1
    return 0 if status == 0 else 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=30.0, help="duration of the soak")
    p.add_argument("--good", type=int, default=8, help="good streams per protocol")
    p.add_argument("--udp-flood", type=float, default=1000.0, help="datagrams/s of the UDP flood (one stream)")
    p.add_argument("--id-flood", type=float, default=1000.0, help="TCP samples/s, each for a new stream id")
    p.add_argument("--max-streams", type=int, default=512, help="server: stream table size per source")
    p.add_argument("--max-connections", type=int, default=128, help="server: TCP connections")
    p.add_argument("--connection-idle-timeout", type=float, default=5.0, help="server: TCP idle seconds")
    p.add_argument(
        "--sender-lines-per-second", type=float, default=0.0, help="server: lines/s per sender (0: no limit)"
    )
    p.add_argument("--min-fraction", type=float, default=0.5, help="a good stream starves below this share")
    p.add_argument("--drain", type=float, default=3.0, help="seconds between the clients' stop and the server's")
    p.add_argument("--no-attack", action="store_true", help="good streams only (the baseline)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # room for the idle clients' sockets
    if args.serve:
        _serve(args)
        return 0
    return _drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
