"""The flow stream's accuracy per flow extractor setting, on the synthetic motion-only set (a long run: nice it).

Endpoint error (``tools/bench_flow.py``) says how far a faster setting's fields are from full TV-L1; this says what
that costs the temporal stream. One motion set (``vidrec data synthetic-motion``: classes differ only in motion) is
extracted once per setting, and the same temporal stream (ResNet-18 on stacks of L = 10 fields, the config
``synthetic_motion_two_stream_flow.yaml``, same seed, same epochs) is trained on each and tested with the papers'
protocol (25 frames per video, video-level top-1 of the mean softmax)::

    OMP_NUM_THREADS=1 nice -n 10 python tools/flow_setting_accuracy.py --work /tmp/flow_settings \
        [--settings tvl1-tuned tvl1-1warp dis] [--epochs 8] [--videos-per-class 24] [--seed 0]

Settings (the rows of ``tools/bench_flow.py``): ``tvl1-default`` (OpenCV's defaults, the papers' extractor; slow),
``tvl1-tuned`` (``TVL1Params.fast()``), ``tvl1-1warp`` (3 scales, 1 warp, 1 x 5 iterations), ``dis`` (DIS medium,
the CPU default) and ``farneback``. Prints per setting: extraction time and fields/s (2 workers), clip and video top-1.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from datamodules.flow.extraction import extract_flow
from datamodules.flow.methods import DISPreset, FlowMethod, FlowSettings, TVL1Params
from datamodules.flow.synthetic_motion import MotionSettings, generate_motion_set
from vidrec.cli import main as vidrec

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "video" / "synthetic_motion_two_stream_flow.yaml"

SETTINGS: dict[str, FlowSettings] = {  # native size (the set is 64 x 64), as `vidrec data flow --short-side 0`
    "tvl1-default": FlowSettings(method=FlowMethod.TVL1, tvl1=TVL1Params(), short_side=None),
    "tvl1-tuned": FlowSettings(method=FlowMethod.TVL1, tvl1=TVL1Params.fast(), short_side=None),
    "tvl1-1warp": FlowSettings(
        method=FlowMethod.TVL1,
        tvl1=TVL1Params(scales=3, scale_step=0.5, warps=1, inner_iterations=5, outer_iterations=1, epsilon=0.1),
        short_side=None,
    ),
    "dis": FlowSettings(method=FlowMethod.DIS, dis_preset=DISPreset.MEDIUM, short_side=None),
    "farneback": FlowSettings(method=FlowMethod.FARNEBACK, short_side=None),
}


def run_setting(work: Path, videos: Path, name: str, epochs: int, workers: int, seed: int = 0) -> dict[str, float]:
    """Extract the set's flow with one setting, train the temporal stream on it, test it; the figures."""
    flow = work / f"flow_{name}"
    start = time.perf_counter()
    summary = extract_flow(videos, flow, SETTINGS[name], workers=workers, progress=False)
    seconds = time.perf_counter() - start
    run_dir = work / f"runs_{name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)  # the config's loggers write runs/ under the working directory
    common = [
        "-c", str(CONFIG),
        "--data.init_args.root", str(videos),
        "--data.init_args.flow_root", str(flow),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    checkpoints = sorted(run_dir.glob("runs/synthetic_motion_flow/*/checkpoints/last.ckpt"))
    if not checkpoints:
        schedule = ["--trainer.max_epochs", str(epochs), "--model.scheduler.init_args.T_max", str(epochs)]
        vidrec(["fit", *common, *schedule, "--seed_everything", str(seed)])
        checkpoints = sorted(run_dir.glob("runs/synthetic_motion_flow/*/checkpoints/last.ckpt"))
    before = set(run_dir.glob("runs/synthetic_motion_flow/*/test_metrics.json"))
    vidrec(["test", *common, "--ckpt_path", str(checkpoints[-1])])
    report = json.loads(
        sorted(set(run_dir.glob("runs/synthetic_motion_flow/*/test_metrics.json")) - before)[-1].read_text()
    )
    return {
        "extraction_s": seconds,
        "fields_per_s": summary.fields / seconds if summary.done else float("nan"),  # nan: files were reused
        "clip_top1": float(report["test/acc"]),
        "video_top1": float(report["test/group_acc"]),
        "videos": float(report["test/groups"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (videos, flow per setting, runs)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["tvl1-tuned", "tvl1-1warp", "dis"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--videos-per-class", type=int, default=24, help="motion set size (every fourth is test)")
    parser.add_argument("--workers", type=int, default=2, help="flow extraction processes")
    parser.add_argument("--seed", type=int, default=0, help="training seed (initialisation, sampling, augmentation)")
    args = parser.parse_args()
    work = args.work.resolve()
    videos = work / "videos"
    if not (videos / "ucfTrainTestlist").is_dir():
        generate_motion_set(videos, MotionSettings(videos_per_class=args.videos_per_class, workers=args.workers))
    table = work / "flow_setting_accuracy.json"
    rows = json.loads(table.read_text()) if table.is_file() else {}  # earlier runs' settings stay in the table
    for name in args.settings:
        rows[name] = run_setting(work, videos, name, args.epochs, args.workers, args.seed)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
        table.write_text(json.dumps(rows, indent=2))
    print(f"\n{'setting':14s} {'extract s':>10s} {'fields/s':>9s} {'clip top-1':>11s} {'video top-1':>12s}")
    for name, r in rows.items():
        print(
            f"{name:14s} {r['extraction_s']:10.1f} {r['fields_per_s']:9.1f} {r['clip_top1']:11.3f} "
            f"{r['video_top1']:12.3f}  ({r['videos']:.0f} test videos)"
        )


if __name__ == "__main__":
    main()
