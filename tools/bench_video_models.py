"""CPU throughput of vidrec's video models against torchvision's, and streaming cost per frame.

Measures, in one run, with ``torch.set_num_threads(threads)`` and models timed round-robin (so machine load hits
all of them alike), on ``16 x 112 x 112`` clips and the same input tensor for every model:

* forward clips/s (eval, no grad) at batch 1 and ``--batch``;
* training-step clips/s at ``--train-batch`` (train mode: forward, cross-entropy, backward, SGD momentum step),
  printed as its own table with the ratio to torchvision's ``r2plus1d_18``;

for our ``r2plus1d_18`` (SAME, loaded with torchvision's weights, and VALID), ``p3d63`` (VALID), torchvision's
``r2plus1d_18`` and ``r3d_18``, plus (forward only) our SAME model with BatchNorm folded into its convolutions as
deployed inference runs it (``vidrec.streaming.fold_batchnorm``); the max abs difference between our SAME models and
torchvision's; and, for the VALID models, the streaming table of ``bench_streaming``: one streaming step of one frame
on the eager and the compiled engine against recomputing the 16-frame clip at batch 1, with the FLOP ratio that
bounds the speed-up. All figures are medians over ``--repeats`` rounds (training: ``--train-repeats``) after one
warm-up call each.

Usage: ``python tools/bench_video_models.py [--threads 2] [--repeats 5] [--batch 2] [--train-batch 2]
[--train-repeats 3] [--skip-train] [--skip-stream]``

Streaming table alone, for several thread counts in one run: ``python tools/bench_video_models.py --stream-only 1,2
[--models r2plus1d_18,p3d63] [--size 112] [--repeats 15] [--profile] [--baseline REV]``; ``--baseline REV`` also
times the compiled video engine of git revision ``REV`` (its ``engines/video.py`` and ``video_ops.py``) on the same
converted model, round-robin with the current one, for before/after figures from one run.

Video ensembles on the compiled engine against the eager one (one frame a step, batch 1, small frames):
``python tools/bench_video_models.py --ensembles 1 [--size 32] [--repeats 15]``: a ``ParallelClassifiers`` of
``r2plus1d_18`` and ``p3d63`` on the same clip, and a two-stream ``NamedInputClassifiers`` (RGB ``r2plus1d_18``, flow
``r2plus1d_18`` on 10 channels: 5 stacked fields) streamed by ``MultiInputStreaming``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from vidrec.layers.conv2plus1d import TemporalPadding
from vidrec.layers.stream_state import map_state
from vidrec.models.p3d import p3d63
from vidrec.models.r2plus1d import load_torchvision_r2plus1d, r2plus1d_18
from vidrec.streaming.optimize import fold_batchnorm

FRAMES, SIZE = 16, 112


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.zeros(x.shape[0], dtype=torch.long)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        opt.step()

    return run


def _round_robin(jobs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each job; one warm-up call each, then ``repeats`` interleaved rounds."""
    for job in jobs.values():
        job()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="forward: the small batch besides batch 1")
    parser.add_argument("--train-batch", type=int, default=2, help="training step: clips per step (>= 2 for BN)")
    parser.add_argument("--train-repeats", type=int, default=3, help="training step: timed rounds (median)")
    parser.add_argument("--skip-train", action="store_true", help="skip the (slow) training-step measurement")
    parser.add_argument("--skip-stream", action="store_true", help="skip the streaming-step measurement")
    parser.add_argument(
        "--stream-only",
        metavar="THREADS",
        help="only the streaming table, for these thread counts (e.g. 1,2), medians over --repeats rounds",
    )
    parser.add_argument(
        "--models", default="r2plus1d_18", help="--stream-only: registered model names, comma-separated"
    )
    parser.add_argument("--size", type=int, default=None, help="--stream-only / --ensembles: frame size (112 / 32)")
    parser.add_argument("--profile", action="store_true", help="--stream-only: also profile each engine's step")
    parser.add_argument(
        "--ensembles", metavar="THREADS", help="only the video ensembles' step, compiled vs eager, at these threads"
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="--stream-only: also time the compiled video engine of this git revision"
    )
    parser.add_argument(
        "--exactness", action="store_true", help="only the exactness table of the streamable video models"
    )
    args = parser.parse_args()
    if args.exactness:
        torch.set_num_threads(args.threads)
        exactness_table(["r2plus1d_18", "r2plus1d_34", "p3d63", "p3d131", "p3d199"])
        return
    if args.ensembles:
        bench_ensembles([int(t) for t in args.ensembles.split(",")], repeats=args.repeats, size=args.size or 32)
        return
    if args.stream_only:
        bench_streaming(
            args.models.split(","),
            threads=[int(t) for t in args.stream_only.split(",")],
            repeats=args.repeats,
            size=args.size or SIZE,
            profile=args.profile,
            baseline=args.baseline,
        )
        return
    if min(args.batch, args.train_batch, args.repeats, args.train_repeats) < 1:
        raise ValueError("--batch, --train-batch, --repeats and --train-repeats must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tv_r2p = torchvision.models.video.r2plus1d_18()
    ours_same = load_torchvision_r2plus1d(r2plus1d_18(temporal_padding=TemporalPadding.SAME), tv_r2p.state_dict())
    models: dict[str, nn.Module] = {
        "ours r2plus1d_18 SAME": ours_same,
        "ours r2plus1d_18 VALID": r2plus1d_18(),
        "ours p3d63 VALID": p3d63(),
        "torchvision r2plus1d_18": tv_r2p,
        "torchvision r3d_18": torchvision.models.video.r3d_18(),
    }
    x1 = torch.randn(1, 3, FRAMES, SIZE, SIZE)
    for m in models.values():
        m.eval()
    # inference only: BatchNorm folded into the convolutions (vidrec.streaming.fold_batchnorm), equal to rounding
    folded_name = "ours SAME, BN folded"
    inference = {**models, folded_name: fold_batchnorm(ours_same)}
    with torch.no_grad():
        diff = (ours_same(x1) - tv_r2p(x1)).abs().max().item()
        diff_folded = (inference[folded_name](x1) - tv_r2p(x1)).abs().max().item()
    print(f"threads={args.threads} repeats={args.repeats} input 3x{FRAMES}x{SIZE}x{SIZE}; medians, round-robin")
    print(f"max |ours r2plus1d_18 SAME - torchvision r2plus1d_18| (eval, same weights): {diff:.2e}")
    print(f"max |{folded_name} - torchvision r2plus1d_18|: {diff_folded:.2e}")

    forward: dict[tuple[str, int], float] = {}  # (model, batch) -> clips/s
    fwd_batches = sorted({1, args.batch})
    for batch in fwd_batches:
        x = torch.randn(batch, 3, FRAMES, SIZE, SIZE)  # (B, C, T, H, W), the same tensor for every model
        for k, s in _round_robin({k: _forward(m, x) for k, m in inference.items()}, args.repeats).items():
            forward[(k, batch)] = batch / s
    print("\nforward, eval, no grad (clips/s)")
    print(f"{'model':26s}" + "".join(f"{f'batch {b}':>11s}" for b in fwd_batches))
    for k in inference:
        print(f"{k:26s}" + "".join(f"{forward[(k, b)]:11.2f}" for b in fwd_batches))
    base = forward[("torchvision r2plus1d_18", 1)]
    for k in ("ours r2plus1d_18 SAME", folded_name, "ours r2plus1d_18 VALID"):
        print(f"forward speed-up at batch 1, {k} vs torchvision r2plus1d_18: {forward[(k, 1)] / base:.2f}x")

    if not args.skip_train:
        batch = args.train_batch
        x = torch.randn(batch, 3, FRAMES, SIZE, SIZE)  # (B, C, T, H, W), the same tensor for every model
        for m in models.values():
            m.train()
        steps = _round_robin({k: _train_step(m, x) for k, m in models.items()}, args.train_repeats)
        for m in models.values():
            m.eval()
        base_s = steps["torchvision r2plus1d_18"]
        print(f"\ntraining step at batch {batch}: forward + cross-entropy + backward + SGD step, train mode")
        print(f"{'model':26s}{'clips/s':>11s}{'s/step':>11s}{'vs tv r2p':>11s}")
        for k, s in steps.items():
            print(f"{k:26s}{batch / s:11.2f}{s:11.3f}{base_s / s:10.2f}x")

    if not args.skip_stream:
        bench_streaming(["r2plus1d_18", "p3d63"], threads=[args.threads], repeats=args.repeats * 3, size=SIZE)


def _flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def baseline_video_engine(rev: str) -> Any:
    """The ``CompiledVideoEngine`` class of git revision ``rev``, loaded from its two source files.

    Its lowering walk sees only the generic registrations of ``vidrec.layers.lowering`` (the ones that revision had):
    the video-target registrations of the current tree call primitives its builder does not have.
    """
    from vidrec.layers import lowering

    root = Path(__file__).resolve().parents[1]

    def load(path: str, name: str, replace: dict[str, str]) -> types.ModuleType:
        cmd = ["git", "-C", str(root), "show", f"{rev}:{path}"]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for old, new in replace.items():
            text = text.replace(old, new)
        module = types.ModuleType(name)
        sys.modules[name] = module  # dataclasses resolve the module's annotations through sys.modules
        exec(compile(text, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102  # the project's own history
        return module

    load("vidrec/streaming/engines/video_ops.py", "_baseline_video_ops", {})
    engine = load(
        "vidrec/streaming/engines/video.py",
        "_baseline_video",
        {"vidrec.streaming.engines.video_ops": "_baseline_video_ops"},
    )

    def generic_lowering(module: nn.Module, target: str) -> Any:
        for cls in type(module).__mro__:
            fn = lowering._LOWERINGS.get((cls, None))
            if fn is not None:
                return fn
        return None

    engine.lowering_for = generic_lowering
    return engine.CompiledVideoEngine


def bench_streaming(
    names: list[str],
    *,
    threads: list[int],
    repeats: int,
    size: int,
    profile: bool = False,
    baseline: str | None = None,
) -> None:
    """Streaming one frame (hop 1, 16-frame window, batch 1) on the eager and compiled engines vs recomputing the clip.

    For each model and thread count, in one round-robin run: the median time of a step of each engine
    (``vidrec.streaming.to_streaming``, BatchNorm folded as the runtime does), of the 16-frame clip forward with
    BatchNorm folded (the fair baseline) and without (the model as trained); the ratios clip / step; the FLOP ratio
    (clip / step, counted by ``torch.utils.flop_counter``) that bounds them; and max |streamed - offline| of each
    engine's last logits. With ``baseline``, the compiled video engine of that git revision too (``before``).
    """
    print(f"\nstreaming one frame vs recomputing a {FRAMES}-frame clip (batch 1, {size}x{size}, hop 1; ms, medians)")
    before = None if baseline is None else baseline_video_engine(baseline)
    for name in names:
        _bench_model(name, threads, repeats, size, profile, before, baseline)


def _bench_model(
    name: str, threads: list[int], repeats: int, size: int, profile: bool, before: Any = None, rev: str | None = None
) -> None:
    from vidrec.models import build_model
    from vidrec.streaming import to_streaming

    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(1, 3, FRAMES + 8, size, size)  # (B, C, T, H, W): 8 frames of warm-up beyond the window
    rts = {b: to_streaming(model, FRAMES, 1, frame_shape=(size, size), backend=b) for b in ("eager", "compiled")}
    if before is not None:  # the same runtime, with the revision's engine on its converted model
        rt = to_streaming(model, FRAMES, 1, frame_shape=(size, size), backend="compiled")
        rt.engine = before(rt.model, (3, 1, size, size), rt.dtype, rt.device)
        rt.engine.grow(rt.capacity)
        rts["before"] = rt
    print(
        f"{name}: "
        + "; ".join(f"{b}: {rt.describe().engine}, {len(rt.describe().decisions)} decisions" for b, rt in rts.items())
    )
    with torch.inference_mode():
        logits = {b: rt.run(x[:, :, : FRAMES + 7])[0][0, -1] for b, rt in rts.items()}
        offline = model(x[:, :, 7 : FRAMES + 7])[0]
    folded = rts["eager"].model
    clip, frame = x[:, :, :FRAMES], x[:, :, -1:]
    with torch.inference_mode():
        flop_clip = _flops(lambda: folded(clip))
        state = map_state(lambda t: t.clone(), rts["eager"].state())  # the model's state tree, batch 1
        flop_step = _flops(lambda: folded.stream_step(frame, state))  # type: ignore[operator]
    dev = {b: float((v - offline).abs().max()) for b, v in logits.items()}
    print(
        f"{name}: FLOPs clip {flop_clip / 1e9:.2f} G, step {flop_step / 1e9:.3f} G, so the FLOP ratio allows "
        f"{flop_clip / flop_step:.1f}x; max |streamed - offline| logits: "
        + ", ".join(f"{b} {d:.2e}" for b, d in dev.items())
        + f" (logits up to {float(offline.abs().max()):.2g})"
    )

    def run_clip() -> None:
        with torch.inference_mode():
            folded(clip)

    def stepper(backend: str) -> Callable[[], None]:
        def step() -> None:
            rts[backend].step(frame)

        return step

    jobs: dict[str, Callable[[], None]] = {
        "eager": stepper("eager"),
        "compiled": stepper("compiled"),
        "clip_folded": run_clip,
        "clip": _forward(model, clip),
    }
    if "before" in rts:
        jobs["before"] = stepper("before")
    extra = f"{f'compiled@{rev}':>18s}{'before/now':>12s}" if "before" in rts else ""
    print(
        f"{'threads':>8s}{'eager step':>12s}{'compiled':>10s}{'clip, BN folded':>17s}{'clip':>8s}"
        f"{'clip/eager':>12s}{'clip/compiled':>15s}{'eager/compiled':>16s}{extra}"
    )
    for n in threads:
        torch.set_num_threads(n)
        t = _round_robin(jobs, repeats)
        row = (
            f"{n:8d}{t['eager'] * 1e3:12.1f}{t['compiled'] * 1e3:10.1f}{t['clip_folded'] * 1e3:17.1f}"
            f"{t['clip'] * 1e3:8.1f}{t['clip_folded'] / t['eager']:11.2f}x{t['clip_folded'] / t['compiled']:14.2f}x"
            f"{t['eager'] / t['compiled']:15.2f}x"
        )
        if "before" in t:
            row += f"{t['before'] * 1e3:18.1f}{t['before'] / t['compiled']:11.2f}x"
        print(row, flush=True)
        if profile:
            _profile({k: jobs[k] for k in ("eager", "compiled")}, f"{name}, {n} thread(s)")


def bench_ensembles(threads: list[int], *, repeats: int, size: int) -> None:
    """One frame a step (batch 1, hop 1, 16-frame windows) of two video ensembles, compiled engine vs eager engine.

    A ``ParallelClassifiers`` (``r2plus1d_18`` and ``p3d63``, mean of probabilities) on one clip, through
    ``to_streaming``; a two-stream ``NamedInputClassifiers`` (RGB and flow ``r2plus1d_18``, the flow one on ``2 L = 10``
    channels) through ``MultiInputStreaming``, both inputs stepped. Median ms a step, max |compiled - eager| logits.
    """
    from vidrec.models import build_model
    from vidrec.models._base import FusionRule, ParallelClassifiers
    from vidrec.models.multi_input import NamedInputClassifiers
    from vidrec.streaming import to_streaming
    from vidrec.streaming.multi import MultiInputStreaming

    torch.manual_seed(0)
    frame = (size, size)
    pair = ParallelClassifiers(
        {"r2p": build_model("r2plus1d_18", num_classes=10), "p3d": build_model("p3d63", num_classes=10)},
        rule=FusionRule.MEAN_PROBABILITIES,
    ).eval()
    two = NamedInputClassifiers(
        {
            "rgb": build_model("r2plus1d_18", num_classes=10),
            "flow": build_model("r2plus1d_18", num_classes=10, in_channels=10),
        },
        rule=FusionRule.WEIGHTED_LOGITS,
        weights=[0.4, 0.6],
    ).eval()
    x = torch.randn(1, 3, FRAMES + 2, size, size)  # (B, C, T, H, W)
    flow = torch.randn(1, 10, FRAMES + 2, size, size)
    steppers: dict[str, Callable[[], Any]] = {}
    last: dict[str, torch.Tensor] = {}
    for backend in ("compiled", "eager"):
        rt = to_streaming(pair, FRAMES, 1, frame_shape=frame, backend=backend)
        multi = MultiInputStreaming(
            two,
            windows={"rgb": FRAMES, "flow": FRAMES},
            backend=backend,
            member_kwargs={"rgb": {"frame_shape": frame}, "flow": {"frame_shape": frame}},
        )
        print(
            f"{backend}: pair {rt.describe().engine}, {len(rt.describe().decisions)} decisions; two-stream "
            + ", ".join(f"{n} {m.describe().engine}" for n, m in multi.members.items())
        )
        for t in range(FRAMES + 1):  # warm up past the window
            last[f"pair {backend}"] = rt.step(x[:, :, t : t + 1]).logits
            last[f"two-stream {backend}"] = multi.step(
                {"rgb": x[:, :, t : t + 1], "flow": flow[:, :, t : t + 1]}
            ).logits
        steppers[f"pair {backend}"] = lambda rt=rt: rt.step(x[:, :, -1:])
        steppers[f"two-stream {backend}"] = lambda m=multi: m.step({"rgb": x[:, :, -1:], "flow": flow[:, :, -1:]})
    for what in ("pair", "two-stream"):
        d = float((last[f"{what} compiled"] - last[f"{what} eager"]).abs().max())
        print(f"{what}: max |compiled - eager| logits after {FRAMES + 1} frames: {d:.2e}")
    print(f"\nvideo ensembles, one frame a step ({size}x{size}, batch 1, hop 1; ms, medians of {repeats})")
    print(
        f"{'threads':>8s}{'pair eager':>12s}{'compiled':>10s}{'ratio':>8s}{'2-stream eager':>16s}{'compiled':>10s}"
        f"{'ratio':>8s}"
    )
    for n in threads:
        torch.set_num_threads(n)
        t = _round_robin(steppers, repeats)
        print(
            f"{n:8d}{t['pair eager'] * 1e3:12.1f}{t['pair compiled'] * 1e3:10.1f}"
            f"{t['pair eager'] / t['pair compiled']:7.2f}x{t['two-stream eager'] * 1e3:16.1f}"
            f"{t['two-stream compiled'] * 1e3:10.1f}{t['two-stream eager'] / t['two-stream compiled']:7.2f}x",
            flush=True,
        )


def exactness_table(names: list[str], size: int = 32) -> None:
    """Max |streamed - offline| logits of each video model on the compiled and eager engines, against float rounding.

    Models as built (default initialisation, 400 classes), a window of receptive field + 1 frames, hop 1, two windows.
    Beside each engine's float32 deviation: how far the float32 *offline* logits are from the float64 ones (the size of
    float32 rounding through the network, nothing streamed), and the float64 streamed deviation (any misalignment in the
    streaming step would show there as a difference of the order of the logits).
    """
    from vidrec.models import build_model
    from vidrec.streaming import to_streaming

    print(f"\nmax |streamed - offline| logits ({size}x{size} frames, hop 1, 2 windows; float32 unless said)")
    print(
        f"{'model':<12}{'logits up to':>13}{'compiled':>10}{'eager':>10}"
        f"{'offline f32 vs f64':>20}{'compiled f64':>14}{'eager f64':>11}"
    )
    for name in names:
        torch.manual_seed(0)
        model = build_model(name).eval()
        window = int(model.receptive_field) + 1
        x = torch.randn(1, 3, window + 1, size, size)
        wide = copy.deepcopy(model).double()
        with torch.inference_mode():
            off = torch.cat([model(x[:, :, t - window : t]) for t in (window, window + 1)])
            off64 = torch.cat([wide(x[:, :, t - window : t].double()) for t in (window, window + 1)])
        cells = {}
        for dtype_name, m, xx, ref in (("", model, x, off), (" f64", wide, x.double(), off64)):
            for engine in ("compiled", "eager"):
                rt = to_streaming(m, window, 1, frame_shape=(size, size), backend=engine)
                logits, _ = rt.run(xx)
                cells[engine + dtype_name] = float((logits[0, -2:].to(ref.dtype) - ref).abs().max())
        print(
            f"{name:<12}{float(off64.abs().max()):13.3g}{cells['compiled']:10.2e}{cells['eager']:10.2e}"
            f"{float((off.double() - off64).abs().max()):20.2e}{cells['compiled f64']:14.2e}{cells['eager f64']:11.2e}",
            flush=True,
        )


def _profile(jobs: dict[str, Callable[[], None]], title: str, steps: int = 3) -> None:
    """Where the time of each job goes: torch.profiler's operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    for k, job in jobs.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                job()
        print(f"\nprofile of the {k} step, {title} ({steps} steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
