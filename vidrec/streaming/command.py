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

import torch

from vidrec.spec import DeploymentSpec, Modality
from vidrec.streaming.devices import add_device_argument, run_device
from vidrec.streaming.limits import LimitPolicy, SenderLimit
from vidrec.streaming.runtime import StepBackend, StreamingClassifier
from vidrec.streaming.server import FullTablePolicy, Prediction, StreamMultiplexer, serve
from vidrec.streaming.sources import MAX_ID_LENGTH, ReplaySource, Source, TCPSource, TextSource, UDPSource

__all__ = [
    "add_parser",
    "build_runtime",
    "print_engine",
    "load_classifier",
    "run_evaluate_streaming",
    "run_export_stream",
    "run_stream",
    "recordings_of_test_split",
]

_log = logging.getLogger("vidrec.streaming")

STREAM_HELP = """Classify live accelerometer/gyroscope streams in real time.

Input lines: CSV `[stream_id,]timestamp,ch1,...,chC` or JSON `{"stream": "a", "t": 1.23, "x": [...]}` (raw,
unnormalised values; the checkpoint's mean/std are applied). Output: one line per stream and hop once a stream has
seen a full window: stream id, timestamp, class, probability, latency (ms from the arrival of the hop's last sample).

Policies: a stream predicts after `window` samples (warm-up); a model trained with edge-filled left context
(context_padding EDGE) predicts after its labelled window alone, the history filled with the first sample. Timestamp
jitter is ignored (samples are taken in arrival order); a jump of more than --gap-factor sample periods forwards or
backwards resets that stream (state dropped, warm-up again). Streams silent for --idle-timeout seconds are evicted.
Limits: stream ids of at most --max-id-length characters, at most --max-streams live streams (a full table refuses
new streams, or evicts the least recently active one with --full-table evict-idlest), TCP: at most --max-connections
connections, each closed after --connection-idle-timeout seconds of silence, lines of at most 64 KiB; with
--sender-lines-per-second / --sender-bytes-per-second each TCP connection or UDP address may send that much (a burst
of --sender-burst seconds above it), its excess dropped or, with --sender-over-limit disconnect, closed. Everything
dropped (malformed lines, long ids, refused or idle connections, UDP datagrams lost in the kernel) is counted by
reason with a rate-limited warning. Ctrl-C stops cleanly and prints a summary on stderr.

Skeleton checkpoints read joint frames on stdin/udp/tcp: one frame a line, 75 or 150 values (x y z of 25 joints for
one or two bodies), `[stream_id,][timestamp,]v1,...` or JSON `{"stream": "a", "t": 1.2, "x": [...]}` /
`{"joints": [[x, y, z], ...]}`; each stream is centred (and view-aligned) on its first frame showing the main actor,
as training clips were (see vidrec.skeleton_spec).

Video checkpoints read --input (a file, a camera or an RTSP/HTTP URL) frame by frame and print one line per clip
frame once a clip is full: frame index, time, class, probability, latency. Feature heads (TS-LSTM, Temporal-Inception,
mean pool on an extract-features file) read --input too: the file's backbone runs once per sampled frame and the
head streams over the cached features."""


def load_classifier(path: str) -> Any:
    """Load a checkpoint with ``vidrec.tasks.load_checkpoint`` (model, class names, deployment spec)."""
    try:
        from vidrec.tasks import load_checkpoint  # type: ignore[attr-defined]
    except ImportError as err:
        raise RuntimeError(f"cannot load {path}: vidrec.tasks.load_checkpoint is not available ({err})") from err
    return load_checkpoint(path)


def _spec(loaded: Any) -> DeploymentSpec:
    spec: DeploymentSpec = loaded.require_spec()
    return spec


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # fp16: CUDA only (devices.py)


def build_runtime(
    loaded: Any,
    hop: int | None = None,
    backend: str = "compiled",
    capacity: int = 1,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> StreamingClassifier:
    """The streaming runtime of a loaded checkpoint, configured from its deployment spec.

    Args:
        loaded: ``vidrec.tasks.LoadedClassifier``.
        hop: Time steps per step (default: the spec's evaluation hop).
        backend: ``StepBackend`` value.
        capacity: Slots.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        device: Where the model, its state and each chunk live (``vidrec.streaming.devices``).
    """
    spec = _spec(loaded)
    return StreamingClassifier(
        loaded.model,
        spec.input_length,
        hop or spec.eval_hop,
        capacity=capacity,
        backend=StepBackend.parse(backend),
        dtype=PRECISIONS[precision],
        device=device,
        **spec.runtime_kwargs(),
    )


_PRECISION_HELP = (
    "streaming step precision: fp32 (exact), bf16 (approximate, faster at hops >= 8 on AMX CPUs) or fp16 "
    "(approximate, CUDA only)"
)


def recordings_of_test_split(spec: DeploymentSpec, path: str) -> list[str]:
    """Ids of the recordings of ``path`` that belong to the test subjects of the spec's split (file order)."""
    from datamodules.timeseries.schema import read_recordings

    if spec.split is None:
        raise ValueError(
            f"{path}: the checkpoint's deployment spec names no split (written before vidrec stored one); "
            "pick recordings with --recording ID"
        )
    _, recordings = read_recordings(path)
    test = set(spec.split.test_subjects)
    return [r.id for r in recordings if r.subject in test]


def _sender_limit(args: argparse.Namespace) -> SenderLimit:
    return SenderLimit(
        lines_per_second=getattr(args, "sender_lines_per_second", 0.0),
        bytes_per_second=getattr(args, "sender_bytes_per_second", 0.0),
        burst_seconds=getattr(args, "sender_burst", 1.0),
        policy=LimitPolicy(getattr(args, "sender_over_limit", LimitPolicy.DROP.value)),
    )


def _make_source(args: argparse.Namespace, channels: int, spec: DeploymentSpec) -> Source:
    id_limit = getattr(args, "max_id_length", MAX_ID_LENGTH)
    if args.source == "stdin":
        return TextSource(channels, path=None if args.input in (None, "-") else args.input, max_id_length=id_limit)
    if args.source == "udp":
        return UDPSource(channels, args.host, args.port, max_id_length=id_limit, sender_limit=_sender_limit(args))
    if args.source == "tcp":
        return TCPSource(
            channels,
            args.host,
            args.port,
            max_connections=getattr(args, "max_connections", 1024),
            connection_idle_timeout=getattr(args, "connection_idle_timeout", 60.0),
            max_id_length=id_limit,
            sender_limit=_sender_limit(args),
        )
    if args.source == "replay":
        path = args.data or spec.data_path
        if not path:
            raise ValueError("--source replay needs --data FILE.h5 (the checkpoint names no data file)")
        ids = args.recording or recordings_of_test_split(
            spec, path
        )  # default: the test subjects of the checkpoint's split
        return ReplaySource(channels, path, ids, speed=args.speed)
    raise ValueError(f"unknown --source {args.source!r}; expected stdin, udp, tcp or replay")


def print_engine(args: argparse.Namespace, runtime: Any) -> None:
    """``--verbose``: which engine runs which part of the model, and why (``runtime.describe()``), on stderr."""
    if getattr(args, "verbose", False):
        print(runtime.describe(), file=sys.stderr, flush=True)


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
    device = run_device(args)  # an unusable --device is refused before the checkpoint is read
    if getattr(args, "flow_checkpoint", None):  # a two-stream pair: RGB --checkpoint + --flow-checkpoint
        from vidrec.streaming import two_stream

        return two_stream.run_stream(args, out)
    loaded = load_classifier(args.checkpoint)
    spec = _spec(loaded)
    _refuse_lone_two_stream(spec, args.checkpoint)
    if spec.modality is Modality.VIDEO:
        return run_stream_video(args, loaded, out)
    if _feature_head(spec):  # a head over per-frame features: the backbone runs live (vidrec.streaming.features)
        from vidrec.streaming import features

        return features.run_stream(args, loaded, out)
    hop = args.hop or spec.eval_hop
    runtime: Any = build_runtime(
        loaded, hop, args.backend, capacity=min(64, args.max_streams), precision=args.precision, device=device
    )
    if spec.modality is Modality.SKELETON:  # joint frames, anchored per stream (vidrec.streaming.joints)
        from vidrec.streaming.joints import skeleton_stream_runtime

        runtime = skeleton_stream_runtime(runtime, spec, args.source)
    mux = StreamMultiplexer(
        runtime,
        list(loaded.class_names),
        sampling_rate=spec.rate,
        gap_factor=args.gap_factor,
        idle_timeout=args.idle_timeout,
        smoothing=args.smooth,
        max_streams=args.max_streams,
        full_table=FullTablePolicy(getattr(args, "full_table", FullTablePolicy.REFUSE.value)),
    )
    source = _make_source(args, runtime.in_channels, spec)
    source.parser = getattr(runtime, "line_parser", None)  # joint frames for skeleton checkpoints
    where = f" on {args.host}:{args.port}" if args.source in ("udp", "tcp") else ""
    print(f"vidrec stream: reading {args.source}{where}, hop={hop}, window={runtime.window}", file=sys.stderr)
    print_engine(args, runtime)
    stats = serve(source, mux, _printer(args.format, out), max_seconds=args.max_seconds, max_samples=args.max_samples)
    summary = stats.summary()
    print("summary: " + json.dumps(summary), file=sys.stderr, flush=True)
    return summary


def _refuse_lone_two_stream(spec: DeploymentSpec, path: str) -> None:
    """One stream of a two-stream ConvNet streams only with its partner (``--flow-checkpoint``): say how."""
    info = spec.two_stream
    if info is None or info.input not in ("rgb", "flow"):
        return
    if info.input == "rgb":
        pair = f"--checkpoint {path} --flow-checkpoint FLOW.ckpt (the temporal stream, trained with input: flow)"
    else:
        pair = f"--checkpoint RGB.ckpt (the spatial stream, trained with input: rgb) --flow-checkpoint {path}"
    raise ValueError(
        f"{path}: the {info.input} stream of a two-stream ConvNet is not streamable alone; stream the RGB and flow "
        f"checkpoints together, with incremental flow: {pair}"
    )


def _feature_head(spec: DeploymentSpec) -> bool:
    """A head trained on a feature file (``datamodules.features``): its spec names the features' extractor."""
    return isinstance(spec.data_source.get("features"), dict)


_EXTRACTOR_HELP = (
    "feature-head checkpoints: the backbone checkpoint or weights file, when it is no longer where the feature "
    "file records it (its sha256 must match)"
)


def run_evaluate_streaming(args: argparse.Namespace) -> dict[str, Any]:
    """``vidrec evaluate-streaming``: offline vs streaming on the windows ``vidrec test`` scored; writes JSON + PNG."""
    from vidrec.streaming.evaluation import write_report

    device = run_device(args)  # an unusable --device is refused before the checkpoint is read
    if getattr(args, "flow_checkpoint", None):  # a two-stream pair
        from vidrec.streaming import two_stream

        return two_stream.run_evaluate_streaming(args)
    loaded = load_classifier(args.checkpoint)
    spec = _spec(loaded)
    _refuse_lone_two_stream(spec, args.checkpoint)
    if spec.modality is Modality.VIDEO:
        return run_evaluate_streaming_video(args, loaded)
    if spec.modality is Modality.SKELETON:  # test clips offline vs streamed (vidrec.streaming.skeleton_eval)
        from vidrec.streaming import skeleton_eval

        return skeleton_eval.run_evaluate_streaming(args, loaded)
    if _feature_head(spec):
        from vidrec.streaming import features

        return features.run_evaluate_streaming(args, loaded)
    result = evaluate_checkpoint(loaded, data=args.data, hop=args.hop, precision=args.precision, device=device)
    js, png = write_report(result, args.out)
    print(json.dumps(result.report, indent=2))
    print(f"wrote {js} and {png}", file=sys.stderr)
    return result.report


def evaluate_checkpoint(
    loaded: Any,
    *,
    data: str | None = None,
    hop: int | None = None,
    precision: str = "fp32",
    timing_repeats: int = 50,
    device: str | torch.device = "cpu",
) -> Any:
    """Offline vs streaming evaluation of a time-series checkpoint on its test split.

    The data module is rebuilt from the checkpoint's deployment spec (``HDF5WindowDataModule.from_spec``): the same
    test subjects, windows, label policy and normalisation as ``vidrec test``, so the offline accuracy is the test
    accuracy. Both sides run on ``device``. Returns a ``StreamingEvalResult``.
    """
    from datamodules.timeseries.datamodule import HDF5WindowDataModule
    from vidrec.streaming.evaluation import evaluate_streaming

    spec = _spec(loaded)
    dm = HDF5WindowDataModule.from_spec(spec, data)
    dm.setup("test")
    recordings = dm.test_recordings()
    split = spec.split
    assert split is not None  # from_spec refuses a spec without one
    return evaluate_streaming(
        loaded.model,
        recordings,
        spec.input_length,
        hop or spec.eval_hop,
        list(loaded.class_names),
        sampling_rate=spec.rate,
        dtype=PRECISIONS[precision],
        device=device,
        first_output=spec.first_output,
        timing_repeats=timing_repeats,
        label_policy=f"{spec.label_policy} (the data module's, as in `vidrec test`)",
        extra={
            "checkpoint": str(getattr(loaded, "path", "")),
            "data": dm.path,
            "split": split.to_dict(),
        },
    )


def run_export_stream(args: argparse.Namespace) -> str:
    """``vidrec export-stream``: write the streaming step of a checkpoint's model as ONNX."""
    from vidrec.streaming.export import export_streaming_onnx

    loaded = load_classifier(args.checkpoint)
    spec = _spec(loaded)
    if spec.modality not in (Modality.TIMESERIES, Modality.SKELETON):
        raise ValueError(
            f"{args.checkpoint}: export-stream writes time-series and skeleton steps; this is a "
            f"{spec.modality.value} model"
        )
    hop = args.hop or spec.eval_hop
    skeleton = spec.modality is Modality.SKELETON  # joint frames: anchored per stream, not normalised
    channels = spec.in_channels if skeleton else None  # the body-part subnet's first conv sees one part only
    path = export_streaming_onnx(loaded.model, spec.input_length, hop, args.out, in_channels=channels)
    inputs = "inputs normalised with the spec's mean/std"
    if skeleton:
        inputs = "inputs: joint frames anchored per stream as the spec's skeleton part says (vidrec.skeleton_spec)"
    print(f"wrote {path} (window={spec.input_length}, hop={hop}; {inputs})")
    return str(path)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``stream``, ``evaluate-streaming`` and ``export-stream`` to the ``vidrec`` subcommands."""
    p = subparsers.add_parser(
        "stream", help="classify live sensor streams", description=STREAM_HELP, formatter_class=_Formatter
    )
    p.add_argument("--checkpoint", required=True, help="trained checkpoint (.ckpt)")
    _add_two_stream_arguments(p)
    p.add_argument("--source", choices=["stdin", "udp", "tcp", "replay"], default="stdin")
    p.add_argument(
        "--input",
        default="-",
        help="stdin source: read this file instead of standard input; video checkpoints: a video file, a camera "
        "(/dev/video0) or an rtsp:// / http:// URL, read frame by frame with PyAV",
    )
    p.add_argument("--host", default="127.0.0.1", help="udp/tcp: address to bind")
    p.add_argument("--port", type=int, default=9999, help="udp/tcp: port to bind")
    p.add_argument("--data", help="replay: vidrec.timeseries/1 HDF5 file (default: the checkpoint's)")
    p.add_argument(
        "--recording", action="append", help="replay: recording id (repeatable; default: the checkpoint's test split)"
    )
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1 = real time, 0 = unpaced)")
    p.add_argument(
        "--hop", type=int, default=None, help="samples (frames) per prediction (default: the checkpoint's eval hop)"
    )
    p.add_argument("--smooth", type=int, default=1, help="average class probabilities over the last k hops")
    p.add_argument("--format", choices=["json", "table"], default="json", help="output: JSON lines or a table")
    p.add_argument(
        "--gap-factor", type=float, default=5.0, help="timestamp jump (in sample periods) that resets a stream"
    )
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds of silence before a stream is evicted")
    p.add_argument("--max-streams", type=int, default=4096, help="upper bound on concurrent streams")
    p.add_argument(
        "--full-table",
        choices=[f.value for f in FullTablePolicy],
        default=FullTablePolicy.REFUSE.value,
        help="a new stream when --max-streams are live: refuse it (counted) or evict the least recently active",
    )
    p.add_argument("--max-id-length", type=int, default=MAX_ID_LENGTH, help="longest accepted stream id")
    p.add_argument("--max-connections", type=int, default=1024, help="tcp: concurrent connections (more are refused)")
    p.add_argument("--connection-idle-timeout", type=float, default=60.0, help="tcp: seconds of silence before a close")
    p.add_argument(
        "--sender-lines-per-second", type=float, default=0.0, help="tcp/udp: lines/s per sender (0: no limit)"
    )
    p.add_argument(
        "--sender-bytes-per-second", type=float, default=0.0, help="tcp/udp: bytes/s per sender (0: no limit)"
    )
    p.add_argument("--sender-burst", type=float, default=1.0, help="seconds a sender may run above its limits")
    p.add_argument(
        "--sender-over-limit",
        choices=[x.value for x in LimitPolicy],
        default=LimitPolicy.DROP.value,
        help="a sender over its limit: drop its excess lines (counted), or disconnect it (tcp)",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--max-samples", type=int, default=None, help="stop after this many samples")
    p.add_argument("--backend", choices=[b.value for b in StepBackend], default="compiled", help="streaming engine")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help=_PRECISION_HELP)
    add_device_argument(p)
    p.add_argument(
        "--verbose", action="store_true", help="print which engine runs which part of the model, and why (stderr)"
    )
    p.add_argument("--extractor", default=None, help=_EXTRACTOR_HELP)
    p.set_defaults(func=run_stream)

    e = subparsers.add_parser(
        "evaluate-streaming",
        help="offline vs streaming on the test split of a checkpoint",
        description="Classify the test recordings of the checkpoint's split offline (window by window) and "
        "streaming (hop by hop); accuracy and macro-F1 are scored on the windows `vidrec test` scores (same subjects, "
        "label policy, normalisation: the checkpoint's deployment spec), so the offline column is the test accuracy. "
        "Also reports agreement, logit deltas, ms and FLOPs per hop/window and decision latency, and writes "
        "streaming_eval.json and streaming_timeline.png. Video checkpoints: the test videos are read frame by frame "
        "and each streamed clip is compared with the offline clip of the same frames.",
    )
    e.add_argument("--checkpoint", required=True)
    _add_two_stream_arguments(e)
    e.add_argument("--data", help="HDF5 file or video root (default: the one the checkpoint names)")
    e.add_argument("--hop", type=int, default=None, help="hop in samples (default: the checkpoint's eval hop)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--max-videos", type=int, default=None, help="video checkpoints: evaluate the first N test videos")
    e.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help=_PRECISION_HELP)
    add_device_argument(e)
    e.add_argument("--extractor", default=None, help=_EXTRACTOR_HELP)
    e.set_defaults(func=run_evaluate_streaming)

    x = subparsers.add_parser("export-stream", help="export the streaming step to ONNX")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--hop", type=int, default=None)
    x.add_argument("--out", required=True, help="output .onnx file")
    x.set_defaults(func=run_export_stream)


def _add_two_stream_arguments(p: argparse.ArgumentParser) -> None:
    """``--flow-checkpoint`` and ``--window``: stream an RGB (``--checkpoint``) and flow checkpoint pair together."""
    p.add_argument(
        "--flow-checkpoint",
        default=None,
        help="two-stream: the temporal (flow) stream's checkpoint; --checkpoint is then the RGB stream's, and the "
        "video is streamed with incremental flow (vidrec.streaming.two_stream)",
    )
    p.add_argument("--window", type=int, default=None, help="two-stream: frames per fused window (default 25)")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows defaults."""


def run_stream_video(args: argparse.Namespace, loaded: Any, out: TextIO) -> dict[str, Any]:
    """``vidrec stream`` of a video checkpoint (see :mod:`vidrec.streaming.video`)."""
    from vidrec.streaming import video

    return video.run_stream(args, loaded, out)


def run_evaluate_streaming_video(args: argparse.Namespace, loaded: Any) -> dict[str, Any]:
    """``vidrec evaluate-streaming`` of a video checkpoint (see :mod:`vidrec.streaming.video`)."""
    from vidrec.streaming import video

    return video.run_evaluate_streaming(args, loaded)
