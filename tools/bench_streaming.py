"""Benchmark of exact streaming versus recomputing every window, for one model (default resnet1d_har, W=128).

Prints, measured in one run with ``torch.set_num_threads(--threads)`` (default 2):

* median per-hop latency of one stream (batch 1) at hop 1 and hop 16, per backend (torch: the compiled flat step
  of vidrec.streaming.fastpath; torch-eager: module-by-module steps, both with BatchNorm folded under inference_mode;
  ONNX Runtime running the exported step; numpy: vidrec.streaming.numpy_step, one stream's ring buffers in NumPy);
* batched throughput: samples/s and the number of concurrent 50 Hz streams served (= samples/s / 50) at hop 1 and
  16 for batches of 64, 256, 1024 streams;
* the same for recomputing the whole window at every hop (folded model, torch);
* the wall-clock speedup of streaming over recomputation at each batch (ideal: W / hop);
* with ``--processes N`` (N > 1): the same torch step served by N single-threaded worker processes at once, each
  stepping its own shard of streams for ``--seconds``; the table sums their samples/s (how a server scales streams
  over cores: one process per core, streams sharded by id).

The batched table compares the compiled torch step over ring buffers (the default), the same step re-concatenating
each layer's history (no ring buffers), ONNX Runtime, and the ring step in bfloat16 (opt-in, approximate; its
streams are listed apart from the exact ones). The numpy backend loops over streams in Python and is left out.
``--width`` sets resnet1d_har's width (default 32: 32-64 channels; 64 is the 580k-parameter variant).

Two more modes:

* ``--compare TREE [TREE ...]``: no-regression figures of source trees (e.g. ``/work/main`` and a branch) in one run:
  single-stream latency (compiled and numpy engines) and the batched compiled step at ``--batches``, for every hop,
  each measured in a child process with ``PYTHONPATH=TREE``, the trees alternating for ``--rounds`` rounds; prints
  the per-tree medians and each tree's ratio to the first (>1: faster than the first tree).
* ``--exactness``: for every registered model whose registry metadata says it streams exactly, and every engine
  that takes it, the largest ``|streamed - offline|`` logit over a few streamed windows (float32; video models on
  tiny 32x32 frames, time series engines marked n/a for video).

Usage: ``python tools/bench_streaming.py [--model resnet1d_har] [--width 64] [--window 128] [--batches 64 256 1024]
[--threads 1]``; ``python tools/bench_streaming.py --compare /work/main $PWD --batches 256 --rounds 3``;
``python tools/bench_streaming.py --exactness``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

from vidrec.models import build_model
from vidrec.streaming.optimize import fold_batchnorm
from vidrec.streaming.runtime import StepBackend, StreamingClassifier

RATE = 50.0  # Hz of one stream


def median_seconds(fn: object, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def stream_step_seconds(
    model: torch.nn.Module,
    window: int,
    hop: int,
    batch: int,
    backend: StepBackend,
    repeats: int,
    *,
    ring_buffers: bool = True,
    dtype: torch.dtype | None = None,
) -> float:
    """Median seconds of one batched streaming step."""
    rt = StreamingClassifier(
        model, window, hop, capacity=batch, backend=backend, ring_buffers=ring_buffers, dtype=dtype
    )
    chunk = torch.randn(batch, rt.in_channels, hop)
    return median_seconds(lambda: rt.step(chunk), repeats)


def recompute_seconds(model: torch.nn.Module, window: int, batch: int, channels: int, repeats: int) -> float:
    """Median seconds of classifying ``batch`` full windows (the recompute-every-hop baseline)."""
    folded = fold_batchnorm(model)
    x = torch.randn(batch, channels, window)
    with torch.inference_mode():
        return median_seconds(lambda: folded(x), repeats)


def _shard_worker(args: tuple[str, dict[str, int], int, int, int, float, str], out: mp.Queue[float]) -> None:
    """One worker: step ``batch`` streams of its own for ``seconds``; put its samples/s on ``out``."""
    name, kwargs, window, hop, batch, seconds, dtype = args
    torch.set_num_threads(1)
    model = build_model(name, **kwargs).eval()
    rt = StreamingClassifier(model, window, hop, capacity=batch, backend=StepBackend.TORCH, dtype=getattr(torch, dtype))
    chunk = torch.randn(batch, rt.in_channels, hop)
    for _ in range(3):
        rt.step(chunk)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rt.step(chunk)
        steps += 1
    out.put(steps * batch * hop / (time.perf_counter() - start))


def sharded_samples_per_second(
    name: str,
    kwargs: dict[str, int],
    window: int,
    hop: int,
    batch: int,
    processes: int,
    seconds: float,
    dtype: str = "float32",
) -> list[float]:
    """Samples/s of each of ``processes`` concurrent single-threaded workers (``batch`` streams each)."""
    ctx = mp.get_context("spawn")
    out: mp.Queue[float] = ctx.Queue()
    workers = [
        ctx.Process(target=_shard_worker, args=((name, kwargs, window, hop, batch, seconds, dtype), out))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    rates = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    return rates


def quick_figures(model: torch.nn.Module, window: int, hops: list[int], batches: list[int]) -> dict[str, float]:
    """Microseconds of the headline steps: one stream (compiled, numpy) and batched compiled steps, per hop.

    Uses only the API that every tree compared with ``--compare`` has (``StepBackend.TORCH``/``NUMPY``).
    """
    figures: dict[str, float] = {}
    for hop in hops:
        for name, backend in (("compiled", StepBackend.TORCH), ("numpy", StepBackend.NUMPY)):
            figures[f"hop {hop:>2} batch    1 {name}"] = stream_step_seconds(model, window, hop, 1, backend, 300) * 1e6
        for batch in batches:
            repeats = max(5, min(100, 20000 // batch))
            sec = stream_step_seconds(model, window, hop, batch, StepBackend.TORCH, repeats)
            figures[f"hop {hop:>2} batch {batch:>4} compiled"] = sec * 1e6
    return figures


def compare_trees(args: argparse.Namespace) -> None:
    """Run ``quick_figures`` under each tree in turn for ``args.rounds`` rounds; print medians and ratios."""
    runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in args.compare}
    child = [sys.executable, os.path.abspath(__file__), "--quick-json", "--model", args.model, "--window"]
    child += [str(args.window), "--threads", str(args.threads), "--hops", *map(str, args.hops), "--batches"]
    child += [*map(str, args.batches)] + (["--width", str(args.width)] if args.width is not None else [])
    for _ in range(args.rounds):
        for tree in args.compare:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
            out = subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout
            runs[tree].append(json.loads(out.strip().splitlines()[-1]))
            print(f"# {tree}: {json.dumps(runs[tree][-1])}", flush=True)  # each run as it arrives
    keys = list(runs[args.compare[0]][0])
    medians = {t: {k: float(np.median([r[k] for r in rs])) for k in keys} for t, rs in runs.items()}
    base = args.compare[0]
    print(f"median step us over {args.rounds} alternating rounds; ratio = {base} / tree (>1: faster than {base})")
    print(f"{'step':<30} " + " ".join(f"{os.path.basename(os.path.abspath(t))[:14]:>14} {'ratio':>6}" for t in runs))
    for k in keys:
        cells = [f"{medians[t][k]:>14.1f} {medians[base][k] / medians[t][k]:>6.2f}" for t in runs]
        print(f"{k:<30} " + " ".join(cells))


def exactness_table() -> None:
    """Max |streamed - offline| logits for every exactly streaming registered model and every engine."""
    from vidrec.models import StreamMode, list_models
    from vidrec.streaming.runtime import infer_in_channels, smallest_stream_geometry, to_streaming

    engines = ["compiled", "eager", "numpy", "onnxruntime"]
    print(f"{'model':<26} {'engines that ran':<34} " + " ".join(f"{e:>12}" for e in engines))
    for name in list_models(streams=StreamMode.EXACT):
        torch.manual_seed(0)
        model = build_model(name).eval()
        video = any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
        channels = infer_in_channels(model)
        window, hop = smallest_stream_geometry(model, spare_steps=1 if video else 3)
        hops = 2 if video else 6
        frame = (32, 32) if video else ()
        x = torch.randn(1, channels, window + hops * hop, *frame)
        cells, ran = [], set()
        for engine in engines:
            if video and engine in ("numpy", "onnxruntime"):
                cells.append(f"{'n/a':>12}")
                continue
            try:
                with warnings.catch_warnings():  # an engine's fallback is the "engines that ran" column
                    warnings.simplefilter("ignore", UserWarning)
                    rt = to_streaming(model, window, hop, backend=engine, frame_shape=frame, in_channels=channels)
            except (ValueError, TypeError) as err:  # a geometry the generic probe does not fit: said, not hidden
                print(f"# {name} on {engine}: not measured ({err})", flush=True)
                cells.append(f"{'-':>12}")
                continue
            ran.add(getattr(getattr(rt, "engine", None), "name", engine))
            logits, ready = rt.run(x)
            worst = 0.0
            with torch.inference_mode():
                for k in np.flatnonzero(ready[0]):
                    end = (k + 1) * hop
                    worst = max(worst, float((logits[0, k] - model(x[:, :, end - window : end])[0]).abs().max()))
            cells.append(f"{worst:>12.2e}")
        print(f"{name:<26} {','.join(sorted(ran)):<34} " + " ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet1d_har")
    parser.add_argument("--width", type=int, default=None, help="width of resnet1d_* models (resnet1d_har: 32)")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--hops", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1, help="> 1: also measure N single-thread worker processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="--processes: seconds each worker steps")
    parser.add_argument(
        "--process-dtypes", nargs="+", default=["float32", "bfloat16"], help="--processes: step dtypes to measure"
    )
    parser.add_argument("--compare", nargs="+", metavar="TREE", help="source trees to compare in one run")
    parser.add_argument("--rounds", type=int, default=3, help="--compare: alternating rounds per tree")
    parser.add_argument("--quick-json", action="store_true", help=argparse.SUPPRESS)  # child of --compare
    parser.add_argument("--exactness", action="store_true", help="max |streamed - offline| per model and engine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        compare_trees(args)
        return
    if args.exactness:
        exactness_table()
        return
    kwargs = {"width": args.width} if args.width is not None else {}
    model = build_model(args.model, **kwargs).eval()
    if args.quick_json:
        print(json.dumps(quick_figures(model, args.window, args.hops, args.batches)))
        return
    channels = next(m for m in model.modules() if isinstance(m, torch.nn.Conv1d)).in_channels
    backends = [StepBackend.TORCH, StepBackend.TORCH_EAGER, StepBackend.ONNXRUNTIME]
    single = [*backends, StepBackend.NUMPY]  # batch 1 only
    w = args.window
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model={args.model} {kwargs} params={params} window={w} threads={torch.get_num_threads()} "
        f"(receptive field {model.receptive_field})"
    )

    print("\n== one stream (batch 1): median per-hop latency ==")
    print(f"{'hop':>4} " + " ".join(f"{b.value + ' us':>16}" for b in single) + f" {'recompute us':>14}")
    rec1 = recompute_seconds(model, w, 1, channels, 100)
    for hop in args.hops:
        lat = [stream_step_seconds(model, w, hop, 1, b, 300) for b in single]
        print(f"{hop:>4} " + " ".join(f"{s * 1e6:>16.0f}" for s in lat) + f" {rec1 * 1e6:>14.0f}")

    print("\n== batched streams: step ms per backend, 50 Hz streams served, recompute, speedup ==")
    print(
        "rings: compiled step over ring buffers (the default); concat: compiled step re-concatenating the history;\n"
        "bf16: rings in bfloat16 (approximate, opt-in); streams and speedup from the best exact (float32) column"
    )
    header = (
        f"{'hop':>4} {'batch':>6} {'rings ms':>9} {'concat ms':>10} {'onnx ms':>9} {'bf16 ms':>9} {'samples/s':>11} "
        f"{'streams':>8} {'bf16 str':>9} {'recomp ms':>10} {'recomp str':>11} {'speedup':>8} {'ideal W/h':>9}"
    )
    print(header)
    for hop in args.hops:
        for batch in args.batches:
            repeats = max(5, min(100, 20000 // batch))
            rings = stream_step_seconds(model, w, hop, batch, StepBackend.TORCH, repeats)
            concat = stream_step_seconds(model, w, hop, batch, StepBackend.TORCH, repeats, ring_buffers=False)
            onnx = stream_step_seconds(model, w, hop, batch, StepBackend.ONNXRUNTIME, repeats)
            bf16 = stream_step_seconds(model, w, hop, batch, StepBackend.TORCH, repeats, dtype=torch.bfloat16)
            step = min(rings, concat, onnx)
            rec = recompute_seconds(model, w, batch, channels, max(3, repeats // 4))
            samples = batch * hop / step
            # recomputation: one full window per stream per hop -> batch * hop new samples per `rec` seconds
            rec_samples = batch * hop / rec
            print(
                f"{hop:>4} {batch:>6} {rings * 1e3:>9.2f} {concat * 1e3:>10.2f} {onnx * 1e3:>9.2f} {bf16 * 1e3:>9.2f} "
                f"{samples:>11.0f} {samples / RATE:>8.0f} {batch * hop / bf16 / RATE:>9.0f} {rec * 1e3:>10.2f} "
                f"{rec_samples / RATE:>11.0f} {rec / step:>8.1f} {w / hop:>9.0f}"
            )

    if args.processes > 1:
        print(f"\n== {args.processes} single-thread worker processes at once, each with its own batch of streams ==")
        print(
            f"{'hop':>4} {'batch/proc':>10} {'dtype':>9} {'samples/s per process':>30} {'total samples/s':>16} "
            f"{'streams':>9}"
        )
        for hop in args.hops:
            for batch in args.batches:
                for dtype in args.process_dtypes:
                    rates = sharded_samples_per_second(
                        args.model, kwargs, w, hop, batch, args.processes, args.seconds, dtype
                    )
                    per = " ".join(f"{r:.0f}" for r in rates)
                    print(f"{hop:>4} {batch:>10} {dtype:>9} {per:>30} {sum(rates):>16.0f} {sum(rates) / RATE:>9.0f}")


if __name__ == "__main__":
    main()
