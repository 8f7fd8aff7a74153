"""``vidrec stream``, ``vidrec evaluate-streaming`` and ``vidrec export-stream``.

``add_parser(subparsers)`` adds the three subcommands to the ``vidrec`` argparse CLI; each sets ``func`` to a
callable taking the parsed ``argparse.Namespace``. Checkpoints are read with ``vidrec.tasks.load_checkpoint`` (model
in eval mode, class names, and the data settings: window, hop, context, sampling_rate, channel_names, mean, std).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
import torch

from vidrec.streaming.runtime import StepBackend, StreamingClassifier
from vidrec.streaming.server import Prediction, StreamMultiplexer, serve
from vidrec.streaming.sources import ReplaySource, Source, TCPSource, TextSource, UDPSource

__all__ = ["add_parser", "run_stream", "run_evaluate_streaming", "run_export_stream", "load_classifier"]

_log = logging.getLogger("vidrec.streaming")

STREAM_HELP = """Classify live accelerometer/gyroscope streams in real time.

Input lines: CSV `[stream_id,]timestamp,ch1,...,chC` or JSON `{"stream": "a", "t": 1.23, "x": [...]}` (raw,
unnormalised values; the checkpoint's mean/std are applied). Output: one line per stream and hop once a stream has
seen a full window: stream id, timestamp, class, probability, latency (ms from the arrival of the hop's last sample).

Policies: a stream predicts after `window` samples (warm-up); a model trained with edge-filled left context
(context_padding EDGE) predicts after its labelled window alone, the history filled with the first sample. Timestamp
jitter is ignored (samples are taken in arrival order); a jump of more than --gap-factor sample periods forwards or
backwards resets that stream (state dropped, warm-up again). Streams silent for --idle-timeout seconds are evicted.
Malformed lines/packets are counted and dropped with a rate-limited warning. Ctrl-C stops cleanly and prints a
summary on stderr."""


def load_classifier(path: str) -> Any:
    """Load a checkpoint with ``vidrec.tasks.load_checkpoint`` (model, class_names, data settings)."""
    try:
        from vidrec.tasks import load_checkpoint  # type: ignore[attr-defined]
    except ImportError as err:
        raise RuntimeError(f"cannot load {path}: vidrec.tasks.load_checkpoint is not available ({err})") from err
    return load_checkpoint(path)


def _data(loaded: Any, key: str, default: Any = None) -> Any:
    data = getattr(loaded, "data", {}) or {}
    value = data.get(key, default)
    if value is None and default is None:
        raise KeyError(f"checkpoint data settings lack {key!r} (expected keys window, hop, sampling_rate, mean, std)")
    return value


def _window(loaded: Any) -> int:
    """Model input length: the data module's window plus its left context."""
    return int(_data(loaded, "window")) + int(_data(loaded, "context", 0) or 0)


def _first_output(loaded: Any) -> int | None:
    """First report of a stream: the window alone when the model was trained with edge-filled context, else None."""
    if str(_data(loaded, "context_padding", "DROP")).upper() == "EDGE" and int(_data(loaded, "context", 0) or 0) > 0:
        return int(_data(loaded, "window"))
    return None


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _runtime(loaded: Any, hop: int, backend: str, capacity: int = 1, precision: str = "fp32") -> StreamingClassifier:
    mean, std = _data(loaded, "mean", []), _data(loaded, "std", [])
    return StreamingClassifier(
        loaded.model,
        _window(loaded),
        hop,
        capacity=capacity,
        mean=mean if len(mean) else None,
        std=std if len(std) else None,
        backend=StepBackend.parse(backend),
        dtype=PRECISIONS[precision],
        first_output=_first_output(loaded),
    )


_PRECISION_HELP = "streaming step precision: fp32 (exact) or bf16 (approximate, faster at hops >= 8 on AMX CPUs)"


def _make_source(args: argparse.Namespace, channels: int) -> Source:
    if args.source == "stdin":
        return TextSource(channels, path=None if args.input in (None, "-") else args.input)
    if args.source == "udp":
        return UDPSource(channels, args.host, args.port)
    if args.source == "tcp":
        return TCPSource(channels, args.host, args.port)
    if args.source == "replay":
        if not args.data:
            raise ValueError("--source replay needs --data FILE.h5 (a vidrec.timeseries/1 file)")
        return ReplaySource(channels, args.data, args.recording or None, speed=args.speed)
    raise ValueError(f"unknown --source {args.source!r}; expected stdin, udp, tcp or replay")


def _printer(fmt: str, out: TextIO) -> Callable[[Prediction], None]:
    if fmt == "json":
        return lambda p: print(json.dumps(p.as_dict()), file=out, flush=True)
    print(f"{'stream':<22} {'t':>10} {'class':<20} {'prob':>6} {'latency_ms':>10}", file=out, flush=True)
    return lambda p: print(
        f"{p.stream:<22} {p.timestamp:>10.3f} {p.class_name:<20} {p.probability:>6.3f} {p.latency_ms:>10.3f}",
        file=out,
        flush=True,
    )


def run_stream(args: argparse.Namespace, out: TextIO | None = None) -> dict[str, Any]:
    """``vidrec stream``: serve a live source until it ends, a bound is hit or Ctrl-C; returns the summary."""
    out = out or sys.stdout
    loaded = load_classifier(args.checkpoint)
    hop = args.hop or int(_data(loaded, "hop"))
    runtime = _runtime(loaded, hop, args.backend, capacity=min(64, args.max_streams), precision=args.precision)
    mux = StreamMultiplexer(
        runtime,
        list(loaded.class_names),
        sampling_rate=float(_data(loaded, "sampling_rate")),
        gap_factor=args.gap_factor,
        idle_timeout=args.idle_timeout,
        smoothing=args.smooth,
        max_streams=args.max_streams,
    )
    source = _make_source(args, runtime.in_channels)
    where = f" on {args.host}:{args.port}" if args.source in ("udp", "tcp") else ""
    print(f"vidrec stream: reading {args.source}{where}, hop={hop}, window={runtime.window}", file=sys.stderr)
    stats = serve(source, mux, _printer(args.format, out), max_seconds=args.max_seconds, max_samples=args.max_samples)
    summary = stats.summary()
    print("summary: " + json.dumps(summary), file=sys.stderr, flush=True)
    return summary


def run_evaluate_streaming(args: argparse.Namespace) -> dict[str, Any]:
    """``vidrec evaluate-streaming``: offline vs streaming on the test recordings; writes JSON + PNG."""
    from vidrec.streaming.evaluation import EvalRecording, evaluate_streaming, write_report

    loaded = load_classifier(args.checkpoint)
    data_path = args.data or _data(loaded, "path", None)
    if not data_path:
        raise ValueError("give --data FILE.h5 (the checkpoint does not name its data file)")
    from datamodules.timeseries.schema import read_recordings

    info, recordings = read_recordings(data_path)
    if any(r.split == "test" for r in recordings):
        recordings = [r for r in recordings if r.split == "test"]
    mean = np.asarray(_data(loaded, "mean"), dtype=np.float32)[:, None]  # (C, 1)
    std = np.asarray(_data(loaded, "std"), dtype=np.float32)[:, None]  # (C, 1)
    recs = [EvalRecording(r.id, ((r.samples.T - mean) / std).astype(np.float32), r.labels) for r in recordings]
    hop = args.hop or int(_data(loaded, "hop"))
    result = evaluate_streaming(
        loaded.model,
        recs,
        _window(loaded),
        hop,
        list(loaded.class_names),
        sampling_rate=info.sampling_rate,
        dtype=PRECISIONS[args.precision],
        first_output=_first_output(loaded),
    )
    js, png = write_report(result, args.out)
    print(json.dumps(result.report, indent=2))
    print(f"wrote {js} and {png}", file=sys.stderr)
    return result.report


def run_export_stream(args: argparse.Namespace) -> str:
    """``vidrec export-stream``: write the streaming step of a checkpoint's model as ONNX."""
    from vidrec.streaming.export import export_streaming_onnx

    loaded = load_classifier(args.checkpoint)
    hop = args.hop or int(_data(loaded, "hop"))
    path = export_streaming_onnx(loaded.model, _window(loaded), hop, args.out)
    print(f"wrote {path} (window={_window(loaded)}, hop={hop})")
    return str(path)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``stream``, ``evaluate-streaming`` and ``export-stream`` to the ``vidrec`` subcommands."""
    p = subparsers.add_parser(
        "stream", help="classify live sensor streams", description=STREAM_HELP, formatter_class=_Formatter
    )
    p.add_argument("--checkpoint", required=True, help="trained checkpoint (.ckpt)")
    p.add_argument("--source", choices=["stdin", "udp", "tcp", "replay"], default="stdin")
    p.add_argument("--input", default="-", help="stdin source: read this file instead of standard input")
    p.add_argument("--host", default="127.0.0.1", help="udp/tcp: address to bind")
    p.add_argument("--port", type=int, default=9999, help="udp/tcp: port to bind")
    p.add_argument("--data", help="replay: vidrec.timeseries/1 HDF5 file")
    p.add_argument("--recording", action="append", help="replay: recording id (repeatable; default: test split)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1 = real time, 0 = unpaced)")
    p.add_argument("--hop", type=int, default=None, help="samples per prediction (default: the checkpoint's hop)")
    p.add_argument("--smooth", type=int, default=1, help="average class probabilities over the last k hops")
    p.add_argument("--format", choices=["json", "table"], default="json", help="output: JSON lines or a table")
    p.add_argument(
        "--gap-factor", type=float, default=5.0, help="timestamp jump (in sample periods) that resets a stream"
    )
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds of silence before a stream is evicted")
    p.add_argument("--max-streams", type=int, default=4096, help="upper bound on concurrent streams")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--max-samples", type=int, default=None, help="stop after this many samples")
    p.add_argument("--backend", choices=[b.value for b in StepBackend], default="compiled", help="streaming engine")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help=_PRECISION_HELP)
    p.set_defaults(func=run_stream)

    e = subparsers.add_parser(
        "evaluate-streaming",
        help="offline vs streaming on the test recordings",
        description="Classify the test recordings offline (window by window) and streaming (hop by hop) at the same "
        "window ends; report accuracy, macro-F1, agreement, logit deltas, ms and FLOPs per hop/window and decision "
        "latency; write streaming_eval.json and streaming_timeline.png. Windows are labelled with their last sample.",
    )
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", help="vidrec.timeseries/1 HDF5 file (test split used when the file marks one)")
    e.add_argument("--hop", type=int, default=None, help="hop in samples (default: the checkpoint's hop)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help=_PRECISION_HELP)
    e.set_defaults(func=run_evaluate_streaming)

    x = subparsers.add_parser("export-stream", help="export the streaming step to ONNX")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--hop", type=int, default=None)
    x.add_argument("--out", required=True, help="output .onnx file")
    x.set_defaults(func=run_export_stream)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows defaults."""
