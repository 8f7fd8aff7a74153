"""Serving: sources, malformed input, gaps, idle eviction, restarts, many TCP streams, the stream command."""

from __future__ import annotations

import argparse
import io
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidrec.spec import DeploymentSpec
from vidrec.streaming import StreamingClassifier, StreamMultiplexer, serve
from vidrec.streaming import command as stream_command
from vidrec.streaming.sources import MalformedLine, TCPSource, TextSource, UDPSource, parse_line

WINDOW, HOP, RATE = 36, 4, 50.0
CLASSES = ["a", "b", "c"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _mux(model: nn.Module, clock: FakeClock | None = None, **kw: object) -> StreamMultiplexer:
    rt = StreamingClassifier(model, WINDOW, HOP, capacity=2)
    kwargs: dict = dict(sampling_rate=RATE, idle_timeout=5.0)
    kwargs.update(kw)
    if clock is not None:
        kwargs["clock"] = clock
    return StreamMultiplexer(rt, CLASSES, **kwargs)


def _offline_classes(model: nn.Module, x: np.ndarray, ends: list[int]) -> list[int]:
    with torch.no_grad():
        wins = torch.stack([torch.from_numpy(x[:, e - WINDOW : e]) for e in ends])
        return model(wins).argmax(1).tolist()


def test_parse_line_formats_and_errors() -> None:
    r = parse_line("s1,0.5,1,2,3", 3, "d")
    assert r is not None and r.stream == "s1" and r.timestamp == 0.5 and r.values.tolist() == [1, 2, 3]
    r = parse_line("0.5,1,2,3", 3, "d")
    assert r is not None and r.stream == "d"
    r = parse_line('{"stream": "j", "t": 2, "x": [1, 2, 3]}', 3, "d")
    assert r is not None and r.stream == "j" and r.timestamp == 2.0
    assert parse_line("  ", 3, "d") is None and parse_line("# comment", 3, "d") is None
    for bad in ["1,2", "s,0,1,x,3", "0,1,2,nan", '{"t": 1}', "{bad json", '{"t": 1, "x": [1, 2]}']:
        with pytest.raises(MalformedLine):
            parse_line(bad, 3, "d")


def test_restarted_stream_warms_up_again_and_matches_offline(tiny_model: nn.Module) -> None:
    clock = FakeClock()
    mux = _mux(tiny_model, clock)
    x = np.random.default_rng(0).standard_normal((3, 120)).astype(np.float32)
    got = []
    for t in range(120):
        clock.now = t / RATE
        stamp = t / RATE if t < 50 else (t - 50) / RATE  # the sender restarts at sample 50 (time goes back to 0)
        mux.push("s", stamp, x[:, t])
        got += [(p, t + 1) for p in mux.flush()]  # (prediction, window end in x)
    assert mux.stats.gap_resets == 1
    ends = [e for _, e in got]
    # before: windows end at 36..48; samples 48, 49 (an incomplete hop) are dropped by the reset; after: a full
    # window of new samples is needed again (50 + 36 = 86)
    assert ends == [36, 40, 44, 48] + list(range(86, 121, HOP))
    assert [p.class_index for p, _ in got] == _offline_classes(tiny_model, x, ends)


def test_gap_reset_then_exact_predictions(tiny_model: nn.Module) -> None:
    clock = FakeClock()
    mux = _mux(tiny_model, clock)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 120)).astype(np.float32)
    preds = []
    for t in range(120):
        clock.now = t / RATE
        stamp = t / RATE + (10.0 if t >= 40 else 0.0)  # gap before sample 40
        mux.push("s", stamp, x[:, t])
        preds += mux.flush()
    assert mux.stats.gap_resets == 1
    ends = [round((p.timestamp - (10.0 if p.timestamp > 5 else 0.0)) * RATE) + 1 for p in preds]
    assert ends == [36, 40] + list(range(40 + WINDOW, 121, HOP))
    after = [(p, e) for p, e in zip(preds, ends) if e > 40]
    expected = _offline_classes(tiny_model, x, [e for _, e in after])
    assert [p.class_index for p, _ in after] == expected
    assert mux.stats.predictions == len(preds) and all(p.latency_ms >= 0 for p in preds)


def test_idle_stream_is_evicted_and_slot_reused(tiny_model: nn.Module) -> None:
    clock = FakeClock()
    mux = _mux(tiny_model, clock, idle_timeout=2.0)
    for t in range(10):
        mux.push("quiet", t / RATE, np.zeros(3, np.float32))
        mux.push("busy", t / RATE, np.ones(3, np.float32))
    clock.now = 1.5
    mux.push("busy", 10 / RATE, np.ones(3, np.float32))
    assert mux.evict_idle() == []
    mux.flush()
    clock.now = 2.5
    assert mux.evict_idle() == ["quiet"]
    assert mux.streams == ["busy"] and mux.stats.evicted == 1
    mux.push("new", 0.0, np.zeros(3, np.float32))
    assert mux.runtime.capacity == 2  # the freed slot was reused, no growth
    assert sorted(mux.runtime.samples_seen.tolist()) == [0, 8]  # busy kept its 2 hops; the reused slot was reset


def test_capacity_grows_then_rejects(tiny_model: nn.Module) -> None:
    mux = _mux(tiny_model, max_streams=3)
    for i in range(4):
        mux.push(f"s{i}", 0.0, np.zeros(3, np.float32))
    assert mux.runtime.capacity == 3 and mux.stats.rejected_samples == 1 and len(mux.streams) == 3


def _csv_lines(stream: str, x: np.ndarray) -> list[str]:
    return [f"{stream},{t / RATE:.4f}," + ",".join(f"{v:.6f}" for v in x[:, t]) for t in range(x.shape[1])]


def test_malformed_lines_are_counted_and_dropped(tiny_model: nn.Module, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 44)).astype(np.float32)
    lines = _csv_lines("s", x)
    bad = ["garbage", "s,0.1,1,2", "s,x,1,2,3", '{"t": 1', "s,0.2,1,2,inf"]
    for i, b in enumerate(bad):
        lines.insert(5 + 7 * i, b)
    text = tmp_path / "in.csv"
    text.write_text("\n".join(lines) + "\n")
    mux = _mux(tiny_model)
    got = []
    stats = serve(TextSource(3, path=text), mux, got.append, max_seconds=20)
    assert stats.malformed == len(bad) and stats.samples == 44
    assert [round(p.timestamp * RATE) + 1 for p in got] == [36, 40, 44]
    assert [p.class_index for p in got] == _offline_classes(tiny_model, x, [36, 40, 44])


def test_many_streams_over_tcp(tiny_model: nn.Module) -> None:
    n_streams, length = 12, 44
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((n_streams, 3, length)).astype(np.float32)
    source = TCPSource(3, "127.0.0.1", 0)
    mux = _mux(tiny_model)
    got: list = []

    import threading

    def send_all() -> None:
        while not hasattr(source, "_server") or source._server is None:
            time.sleep(0.01)
        host, port = source.address
        conns = [socket.create_connection((host, port), timeout=5) for _ in range(4)]
        for t in range(length):  # interleave streams over 4 connections
            for s in range(n_streams):
                line = f"tcp{s},{t / RATE:.4f}," + ",".join(f"{v:.6f}" for v in xs[s, :, t]) + "\n"
                conns[s % 4].sendall(line.encode())
        for c in conns:
            c.close()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    serve(source, mux, got.append, max_samples=n_streams * length, max_seconds=30)
    sender.join(5)
    assert mux.stats.streams_seen == n_streams and mux.stats.samples == n_streams * length
    for s in range(n_streams):
        mine = [p for p in got if p.stream == f"tcp{s}"]
        assert [p.class_index for p in mine] == _offline_classes(tiny_model, xs[s], [36, 40, 44])


def test_udp_datagrams_with_several_lines(tiny_model: nn.Module) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    source = UDPSource(3, "127.0.0.1", 0)
    mux = _mux(tiny_model)
    got: list = []
    import threading

    def send() -> None:
        while source._sock is None:
            time.sleep(0.01)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lines = _csv_lines("u", x)
        for i in range(0, 40, 8):  # 8 lines per datagram
            sock.sendto(("\n".join(lines[i : i + 8])).encode(), source.address)
            time.sleep(0.005)
        sock.sendto(b"not,a,sample", source.address)
        sock.close()

    threading.Thread(target=send, daemon=True).start()
    serve(source, mux, got.append, max_samples=40, max_seconds=10)
    assert mux.stats.samples == 40
    assert [p.class_index for p in got] == _offline_classes(tiny_model, x, [36, 40])


@dataclass
class _Loaded:
    model: nn.Module
    class_names: list[str]
    data: dict = field(default_factory=dict)  # the data settings of a checkpoint written before deployment specs

    def require_spec(self) -> DeploymentSpec:
        return DeploymentSpec.from_legacy_metadata(self.data, self.class_names, "x.ckpt")


def test_stream_command_on_stdin_file(tiny_model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mean, std = [0.5, -1.0, 2.0], [2.0, 1.0, 0.5]
    data = dict(
        window=WINDOW, hop=HOP, context=0, sampling_rate=RATE, channel_names=["x", "y", "z"], mean=mean, std=std
    )
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: _Loaded(tiny_model, CLASSES, data))
    rng = np.random.default_rng(5)
    raw = (rng.standard_normal((3, 48)) * 2).astype(np.float32)
    lines = [json.dumps({"stream": "j", "t": t / RATE, "x": raw[:, t].tolist()}) for t in range(48)]
    lines.insert(3, "this is not a sample")
    path = tmp_path / "stdin.txt"
    path.write_text("\n".join(lines) + "\n")
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["stream", "--checkpoint", "x.ckpt", "--source", "stdin", "--input", str(path), "--max-seconds", "20"]
    )
    out = io.StringIO()
    summary = args.func(args, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["dropped_malformed"] == 1 and summary["samples"] == 48 and summary["predictions"] == 4
    norm = (raw - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]
    expected = _offline_classes(tiny_model, norm.astype(np.float32), [36, 40, 44, 48])
    assert [r["class"] for r in rows] == [CLASSES[k] for k in expected]
    assert {"stream", "t", "class", "prob", "latency_ms"} <= set(rows[0])
    assert summary["median_latency_ms"] is not None


def test_stream_command_reports_early_for_a_model_trained_with_edge_filled_context(
    tiny_model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the checkpoint's data settings: a 12-sample labelled window after 24 samples of context, EDGE padding
    data = dict(window=12, hop=HOP, context=WINDOW - 12, context_padding="EDGE", sampling_rate=RATE)
    data.update(channel_names=["x", "y", "z"], mean=[0.0] * 3, std=[1.0] * 3)
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: _Loaded(tiny_model, CLASSES, data))
    raw = np.random.default_rng(6).standard_normal((3, 40)).astype(np.float32)
    path = tmp_path / "stdin.txt"
    path.write_text(
        "".join(json.dumps({"stream": "e", "t": t / RATE, "x": raw[:, t].tolist()}) + "\n" for t in range(40))
    )
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["stream", "--checkpoint", "x.ckpt", "--source", "stdin", "--input", str(path)])
    out = io.StringIO()
    summary = args.func(args, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    ends = list(range(12, 41, HOP))  # from the 12th sample on, not the 36th
    assert summary["predictions"] == len(ends) == 8
    padded = np.concatenate([np.repeat(raw[:, :1], WINDOW - 12, axis=1), raw], axis=1)  # sample t at t + 24
    expected = _offline_classes(tiny_model, padded, [e + WINDOW - 12 for e in ends])
    assert [r["class"] for r in rows] == [CLASSES[k] for k in expected]


def test_stream_verbose_prints_which_engine_runs_which_part(
    tiny_model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = dict(window=WINDOW, hop=HOP, context=0, sampling_rate=RATE, channel_names=["x", "y", "z"])
    data.update(mean=[0.0] * 3, std=[1.0] * 3)
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: _Loaded(tiny_model, CLASSES, data))
    raw = np.random.default_rng(7).standard_normal((3, 40)).astype(np.float32)
    path = tmp_path / "stdin.txt"
    path.write_text("".join(json.dumps({"t": t / RATE, "x": raw[:, t].tolist()}) + "\n" for t in range(40)))
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    argv = ["stream", "--checkpoint", "x.ckpt", "--input", str(path), "--backend", "eager"]
    for verbose in (False, True):
        args = parser.parse_args(argv + (["--verbose"] if verbose else []))
        summary = args.func(args, out=io.StringIO())
        err = capsys.readouterr().err
        assert summary["predictions"] == 2
        described = str(stream_command.build_runtime(_Loaded(tiny_model, CLASSES, data), HOP, "eager").describe())
        assert described.startswith("engine: ")
        assert (described in err) is verbose
