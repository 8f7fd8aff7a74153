"""Two-stream figures on synthetic data: RGB, flow and fused video accuracy (a long run: nice it).

Generates a data set (the motion-only set, or the synthetic actions set with ``--set actions``), extracts its flow
with ``vidrec data flow``, trains the spatial and the temporal stream with their configs and tests the fused model
with the fused config, then prints the video-level top-1 of each stream and of the fusion::

    OMP_NUM_THREADS=1 nice -n 10 python tools/two_stream_synthetic.py --work /tmp/two_stream [--set actions]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from vidrec.cli import main as vidrec

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "video"


def run(work: Path, which: str, epochs: int) -> dict[str, float]:
    """Generate, extract, train both streams, test the fusion; the video top-1 per stream and fused."""
    videos, flow = work / "videos", work / "flow"
    classes = "6" if which == "motion" else "8"
    if not (videos / "ucfTrainTestlist").is_dir():
        if which == "motion":
            vidrec(["data", "synthetic-motion", "--out", str(videos), "--workers", "2"])
        else:
            vidrec(["data", "synthetic-actions", "--out", str(videos), "--videos-per-class", "24", "--workers", "2"])
    start = time.perf_counter()
    vidrec(["data", "flow", "--videos", str(videos), "--out", str(flow), "--short-side", "0", "--workers", "2"])
    print(f"flow extraction: {time.perf_counter() - start:.1f} s")
    common = [
        "--data.init_args.root", str(videos),
        "--data.init_args.flow_root", str(flow),
        "--trainer.enable_progress_bar", "false",
        "--model.model.init_args.num_classes", classes,
    ]  # fmt: skip
    checkpoints = {}
    for stream in ("rgb", "flow"):
        name = f"synthetic_motion_{stream}"  # the configs' run names
        vidrec(
            [
                "fit", "-c", str(CONFIGS / f"synthetic_motion_two_stream_{stream}.yaml"), *common,
                "--trainer.max_epochs", str(epochs),
                "--model.scheduler.init_args.T_max", str(epochs),
            ]
        )  # fmt: skip
        checkpoints[stream] = sorted((work / "runs" / name).glob("*/checkpoints/last.ckpt"))[-1]
    vidrec(
        [
            "test", "-c", str(CONFIGS / "synthetic_motion_two_stream_fused.yaml"),
            *common[:6],
            "--model.model.init_args.rgb_checkpoint", str(checkpoints["rgb"]),
            "--model.model.init_args.flow_checkpoint", str(checkpoints["flow"]),
        ]
    )  # fmt: skip
    report = json.loads(sorted((work / "runs" / "synthetic_motion_fused").glob("*/test_metrics.json"))[-1].read_text())
    return {
        "rgb": report["streams"]["rgb"]["group_acc"],
        "flow": report["streams"]["flow"]["group_acc"],
        "fused": report["test/group_acc"],
        "videos": report["test/groups"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (data, flow, runs)")
    parser.add_argument("--set", choices=["motion", "actions"], default="motion")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # the configs write runs/ under the working directory
    figures = run(args.work.resolve(), args.set, args.epochs)
    print(
        f"{args.set} set, {figures['videos']:.0f} test videos, video top-1 (25 frames): "
        f"RGB {figures['rgb']:.3f}  flow {figures['flow']:.3f}  fused {figures['fused']:.3f}"
    )


if __name__ == "__main__":
    main()
