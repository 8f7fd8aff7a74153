"""Figures of the feature-sequence heads (TS-LSTM, Temporal-Inception, mean pool, frame LSTM), one run each.

    python tools/bench_feature_heads.py accuracy  [--workdir runs/bench_feature_heads] [--heads ...]  vidrec fit/test
    python tools/bench_feature_heads.py train     [--dim 4096] [--batch 32] [--steps 20]  training samples/s per head
    python tools/bench_feature_heads.py stream    [--dim 4096] [--steps 50] [--heads ...] streaming cost and exactness
    python tools/bench_feature_heads.py live      [--backbone resnet18] [--steps 48]      backbone + head per frame
    python tools/bench_feature_heads.py approximate [--workdir ...] [--epochs 10]        "same" Inception streamed

``accuracy`` writes the ordered-events set (3 events, 6 orders, chance 1/6) and trains every head with its
``configs/video/ordered_events_<head>.yaml`` through ``vidrec fit`` then ``vidrec test`` (same features, same split),
printing each test accuracy. ``train`` times forward + backward + Adam on random ``(batch, D, 25)`` inputs.
``stream`` runs ``vidrec.streaming.to_streaming`` over one long random feature stream and reports, per new frame, the
streaming step's cost against recomputing the whole window offline at each hop, and the largest |streamed - offline|
logit over every reported window. ``live`` runs the live pipeline of ``vidrec.streaming.features`` (a torchvision
backbone, randomly initialised, on 128 x 171 frames cropped to 112, once per new frame; the head streams over the
cached features) and compares its cost per frame with recomputing the window at each hop: the backbone on the
window's ``window`` clips (batched 32 at a time, as ``extract-features`` runs it) plus the head on the window.
``approximate`` writes the ordered-events set at 24 frames per video, trains the "same"-padded Temporal-Inception
with its config through ``vidrec fit``, then streams its valid twin (``approximate_model_streaming``, hop 24) over
streams of test videos laid end to end: each hop ends at a video's last frame, so every streamed window is compared
with the padded model offline on that video alone (max |approx - offline| logits, top-1 agreement, accuracies).
Figures on a shared 2-core machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from vidrec.models import build_model

HEADS = ["mean_pool_linear", "frame_lstm", "ts_lstm", "temporal_inception"]
ROOT = Path(__file__).resolve().parents[1]


def accuracy(workdir: Path, heads: list[str]) -> None:
    """Ordered events: test accuracy of each head (vidrec fit + vidrec test with the shipped configs)."""
    import os

    from datamodules.features.ordered_events import OrderedEventsSettings, generate_ordered_events
    from vidrec.cli import main

    workdir.mkdir(parents=True, exist_ok=True)
    data = generate_ordered_events(workdir / "ordered_events.h5", OrderedEventsSettings(events=3, feature_dim=64))
    os.chdir(workdir)
    rows = []
    for head in heads:
        config = str(ROOT / "configs" / "video" / f"ordered_events_{head}.yaml")
        common = ["-c", config, "--data.init_args.path", str(data), "--trainer.enable_progress_bar", "false"]
        start = time.perf_counter()
        main(["fit", *common])
        seconds = time.perf_counter() - start
        last = max(Path("runs", f"ordered_events_{head}").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
        main(["test", *common, "--ckpt_path", str(last)])
        report = max(Path("runs", f"ordered_events_{head}").rglob("test_metrics.json"), key=lambda p: p.stat().st_mtime)
        metrics = json.loads(report.read_text())
        rows.append((head, metrics["test/acc"], seconds))
    print("\nordered events (3 events, 6 classes, chance 0.167), test accuracy of the last epoch:")
    for head, acc, seconds in rows:
        print(f"  {head:20s} {acc:.3f}   (fit {seconds:.0f} s)")


def _head(name: str, dim: int, classes: int, **kwargs: object) -> nn.Module:
    return build_model(name, feature_dim=dim, num_classes=classes, **kwargs)


def train(dim: int, batch: int, steps: int) -> None:
    """Training samples/s of each head on random features."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, dim, 25), torch.randint(0, 101, (batch,))
    print(f"training samples/s, batch {batch}, (D={dim}, T=25), {torch.get_num_threads()} threads:")
    for name in HEADS:
        model = _head(name, dim, 101).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        times = []
        for i in range(steps + 3):
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 3:
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        print(f"  {name:20s} {batch / statistics.median(times):8.0f} samples/s   ({params / 1e6:.2f} M parameters)")


def _stream_case(model: nn.Module, dim: int, window: int, hop: int, steps: int, **kwargs: object) -> str:
    from vidrec.streaming import to_streaming

    model = model.eval()
    runtime = to_streaming(model, window, hop, in_channels=dim, **kwargs)
    x = torch.randn(1, dim, window + steps * hop)
    step_times, offline_times, worst = [], [], 0.0
    with torch.inference_mode():
        for k in range(x.shape[2] // hop):
            chunk = x[:, :, k * hop : (k + 1) * hop]
            start = time.perf_counter()
            result = runtime.step(chunk)
            step_times.append(time.perf_counter() - start)
            end = (k + 1) * hop
            if end >= window:
                start = time.perf_counter()
                offline = model(x[:, :, end - window : end])
                offline_times.append(time.perf_counter() - start)
                assert bool(result.ready[0])
                worst = max(worst, float((result.logits - offline).abs().max()))
    step = statistics.median(step_times[window // hop :]) / hop * 1e3
    full = statistics.median(offline_times) / hop * 1e3
    return (
        f"window {window:3d} hop {hop:2d}: stream {step:7.3f} ms/frame, recompute window {full:7.3f} ms/frame "
        f"({full / step:5.1f}x), max |stream - offline| {worst:.2e} over {len(offline_times)} windows"
        f"{'' if not getattr(runtime, 'compiled', False) else ' (compiled step)'}"
    )


def stream(dim: int, steps: int, heads: list[str]) -> None:
    """Streaming cost per frame of each streamable head against recomputing the window, and exactness."""
    from vidrec.streaming.runtime import StepBackend

    torch.manual_seed(0)
    print(f"streaming one stream of (D={dim}) features, batch 1, {torch.get_num_threads()} threads:")
    if "ts_lstm" in heads:
        ts = _head("ts_lstm", dim, 101)
        for hop in (8, 24):
            print(f"  ts_lstm             {_stream_case(ts, dim, 24, hop, steps)}")
            print(f"  ts_lstm             {_stream_case(ts, dim, 24, hop, steps, backend=StepBackend.TORCH_EAGER)}")
    if "temporal_inception" in heads:
        ti = _head("temporal_inception", dim, 101, padding="valid")
        print(f"  temporal_inception  {_stream_case(ti, dim, 114, 24, steps // 4)}")
        print(f"  temporal_inception  {_stream_case(ti, dim, 114, 24, steps // 4, backend=StepBackend.TORCH_EAGER)}")
        print("  " + str(to_streaming_description(ti, dim)).replace("\n", "\n  "))
    if "mean_pool_linear" in heads:
        mp = _head("mean_pool_linear", dim, 101)
        for hop in (1, 8):
            print(f"  mean_pool_linear    {_stream_case(mp, dim, 25, hop, steps)}")
            print(f"  mean_pool_linear    {_stream_case(mp, dim, 25, hop, steps, backend=StepBackend.TORCH_EAGER)}")


def to_streaming_description(model: nn.Module, dim: int) -> str:
    """What the compiled engine makes of the valid Temporal-Inception (engine, ring buffers, modules run eagerly)."""
    from vidrec.streaming import to_streaming

    runtime = to_streaming(model.eval(), 114, 24, in_channels=dim)
    traced = bool(getattr(getattr(runtime.engine, "compiled", None), "traced", False))
    return f"{runtime.describe()}\n(compiled step traced: {traced})"


def _live_case(backbone: str, head: nn.Module, dim: int, window: int, hop: int, steps: int) -> str:
    import numpy as np

    from datamodules.features.extract import ExtractionSettings, torchvision_encoder
    from vidrec.streaming.features import FeatureHeadStream, LiveFrameFeatures, head_runtime

    encoder = torchvision_encoder(backbone, None)
    settings = ExtractionSettings(frames=None, short_side=128, crop_size=112, dtype="float32")
    stream = FeatureHeadStream(
        LiveFrameFeatures(encoder, settings, frame_step=1), head_runtime(head.eval(), window, hop, dim)
    )
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (128, 171, 3), dtype=np.uint8) for _ in range(8)]
    total = window + steps
    feats, worst, started = [], 0.0, 0.0
    for t in range(total):
        if t == window:  # time the steady state only
            started, backbone0, head0 = time.perf_counter(), stream.features.backbone_seconds, stream.head_seconds
        feature, logits = stream.push(frames[t % len(frames)])
        assert feature is not None
        feats.append(feature)
        if logits is not None:
            with torch.inference_mode():
                offline = head(torch.stack(feats[-window:], dim=1)[None])
            worst = max(worst, float((logits - offline[0]).abs().max()))
    live = (time.perf_counter() - started) / steps * 1e3
    backbone_ms = (stream.features.backbone_seconds - backbone0) / steps * 1e3
    head_ms = (stream.head_seconds - head0) / steps * 1e3
    # recomputing the window at each hop: `window` clips through the backbone (batched), then the head offline
    clips = torch.randn(32, 3, 1, 112, 112)
    with torch.inference_mode():
        encoder.encode(clips)
        start = time.perf_counter()
        for _ in range(2):
            encoder.encode(clips)
        per_clip = (time.perf_counter() - start) / 64
        x = torch.randn(1, dim, window)
        head(x)
        start = time.perf_counter()
        for _ in range(5):
            head(x)
        head_window = (time.perf_counter() - start) / 5
    recompute = (window * per_clip + head_window) / hop * 1e3
    return (
        f"window {window:3d} hop {hop:2d}: live {live:7.2f} ms/frame (backbone {backbone_ms:6.2f}, head "
        f"{head_ms:6.3f}), recompute window {recompute:8.2f} ms/frame ({recompute / live:5.1f}x; backbone "
        f"{per_clip * 1e3:.2f} ms/clip batched), max |stream - offline| {worst:.1e}"
    )


def live(backbone: str, steps: int) -> None:
    """Backbone once per new frame + head streaming over cached features, against recomputing the window."""
    torch.manual_seed(0)
    dim = {"resnet18": 512, "resnet34": 512}.get(backbone, 2048)
    print(f"live {backbone} (D={dim}) at 112 x 112, one stream, {torch.get_num_threads()} threads:")
    print(f"  ts_lstm             {_live_case(backbone, _head('ts_lstm', dim, 101), dim, 24, 8, steps)}")
    print(f"  mean_pool_linear    {_live_case(backbone, _head('mean_pool_linear', dim, 101), dim, 25, 1, steps)}")
    ti = _head("temporal_inception", dim, 101, padding="valid")
    print(f"  temporal_inception  {_live_case(backbone, ti, dim, 114, 24, steps)}")


def approximate(workdir: Path, epochs: int, streams: int = 6) -> None:
    """The "same"-padded Temporal-Inception through the approximate mode: deviation on the ordered-events test set."""
    import os

    import numpy as np

    from datamodules.features import FeatureReader
    from datamodules.features.ordered_events import OrderedEventsSettings, generate_ordered_events
    from vidrec.cli import main as cli
    from vidrec.streaming.approximate import approximate_model_streaming, streamed_window_logits
    from vidrec.tasks import load_checkpoint  # type: ignore[attr-defined]

    workdir.mkdir(parents=True, exist_ok=True)
    frames = 24  # = the hop (the twin's stride): every hop ends at a video boundary
    data = workdir / "ordered_events_24.h5"
    if not data.is_file():
        generate_ordered_events(data, OrderedEventsSettings(events=3, feature_dim=64, frames=frames))
    run = workdir / "runs" / "ordered_events_temporal_inception"
    ckpts = sorted(run.rglob("last.ckpt"))
    if not ckpts:
        config = ROOT / "configs" / "video" / "ordered_events_temporal_inception.yaml"
        os.chdir(workdir)
        args = ["fit", "-c", str(config), "--data.init_args.path", str(data), "--data.init_args.num_frames", "24"]
        args += ["--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false"]
        assert cli(args) == 0
        ckpts = sorted(run.rglob("last.ckpt"))
    loaded = load_checkpoint(ckpts[-1])
    model = loaded.model.eval()
    test = [v for v in FeatureReader(data).read() if v.split == "test"]
    order = np.random.default_rng(0).permutation(len(test))
    per = len(test) // streams
    xs, labels = [], []
    for s in range(streams):  # stream s: test videos order[s * per : (s + 1) * per] end to end
        picked = [test[i] for i in order[s * per : (s + 1) * per]]
        xs.append(torch.from_numpy(np.concatenate([v.features for v in picked]).astype(np.float32)).T)  # (D, n*24)
        labels.append([v.label for v in picked])
    x = torch.stack(xs)  # (streams, D, per * 24)
    with torch.inference_mode():
        offline_all = model(torch.from_numpy(np.stack([v.features.T for v in test]).astype(np.float32)))
    accuracy = float((offline_all.argmax(1) == torch.tensor([v.label for v in test])).float().mean())
    runtime, report = approximate_model_streaming(model, frames, frames, calibration=x, capacity=streams)
    logits, ends = streamed_window_logits(runtime, x, frames)  # (streams * n, K) in (stream, end) order
    target = torch.tensor([labels[b][int(e) // frames - 1] for b in range(streams) for e in ends[b]])
    with torch.inference_mode():
        wins = torch.cat([x[b : b + 1, :, int(e) - frames : int(e)] for b in range(streams) for e in ends[b]])
        offline = model(wins)
    print(f"ordered events, 24 frames, D=64, {len(test)} test videos; same-padded Temporal-Inception ({epochs} epochs)")
    print(f"  offline test accuracy (padded model, each video alone): {accuracy:.3f}")
    print(f"  approximate streaming, hop 24, twin receptive field {runtime.model.receptive_field} frames: {report}")
    print(
        f"  on the {len(target)} streamed videos (after each stream's {runtime.warmup}-frame warm-up): accuracy "
        f"offline {float((offline.argmax(1) == target).float().mean()):.3f}, approximate stream "
        f"{float((logits.argmax(1) == target).float().mean()):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["accuracy", "train", "stream", "live", "approximate"])
    parser.add_argument("--epochs", type=int, default=10, help="approximate: training epochs of the padded head")
    parser.add_argument("--backbone", default="resnet18", help="live: torchvision 2D backbone (random weights)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_feature_heads"))
    parser.add_argument("--dim", type=int, default=4096, help="feature dimension (4096: two-stream ResNet-101)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=HEADS, help="accuracy, stream: the heads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.figure == "accuracy":
        accuracy(args.workdir.resolve(), args.heads)
    elif args.figure == "train":
        train(args.dim, args.batch, args.steps)
    elif args.figure == "approximate":
        approximate(args.workdir.resolve(), args.epochs)
    elif args.figure == "live":
        live(args.backbone, args.steps)
    else:
        stream(args.dim, args.steps, args.heads)


if __name__ == "__main__":
    main()
