"""Two-stream figures on synthetic data: RGB, flow and fused video accuracy (a long run: nice it).

Generates a data set (the motion-only set, or the synthetic actions set with ``--set actions``), extracts its flow
with ``vidrec data flow``, trains the spatial and the temporal stream with their configs and tests the fused model
with the fused config, then prints the video-level top-1 of each stream and of the fusion::

    OMP_NUM_THREADS=1 nice -n 10 python tools/two_stream_synthetic.py --work /tmp/two_stream [--set actions]

``--fit-weights`` (motion set) also fits the fusion weights on a validation set drawn apart from the test set (the
same generator with another seed; UCF101-style lists have no validation split of their own), by the likelihood of
the true class (``fit_fusion_weights``), and tests the fusion again with them. ``--rgb-checkpoint`` and
``--flow-checkpoint`` reuse trained streams instead of training them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from vidrec.cli import main as vidrec

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "video"


def fused_test(work: Path, common: list[str], checkpoints: dict[str, Path], weights: tuple[float, float]) -> dict:
    """``vidrec test`` of the fused config with these checkpoints and (RGB, flow) weights; its test_metrics.json."""
    before = set((work / "runs" / "synthetic_motion_fused").glob("*/test_metrics.json"))
    vidrec(
        [
            "test", "-c", str(CONFIGS / "synthetic_motion_two_stream_fused.yaml"),
            *common[:6],
            "--model.model.init_args.rgb_checkpoint", str(checkpoints["rgb"]),
            "--model.model.init_args.flow_checkpoint", str(checkpoints["flow"]),
            "--model.model.init_args.rgb_weight", str(weights[0]),
            "--model.model.init_args.flow_weight", str(weights[1]),
        ]
    )  # fmt: skip
    new = sorted(set((work / "runs" / "synthetic_motion_fused").glob("*/test_metrics.json")) - before)
    return json.loads(new[-1].read_text())


def fit_on_validation(work: Path, checkpoints: dict[str, Path]) -> Any:
    """Fusion weights fitted on a motion set generated with another seed (36 videos of its test list)."""
    from datamodules.flow import FlowSettings, MotionSettings, SegmentSampling, TwoStreamDataModule, generate_motion_set
    from datamodules.flow.extraction import extract_flow
    from datamodules.flow.transforms import FrameTransformSettings
    from vidrec.models.two_stream import TwoStreamFusion, fit_fusion_weights, stream_scores_by_video

    videos, flow = work / "val_videos", work / "val_flow"
    if not (videos / "ucfTrainTestlist").is_dir():
        generate_motion_set(videos, MotionSettings(seed=1, workers=2))
    extract_flow(videos, flow, FlowSettings(short_side=None), workers=2, progress=False)  # as `--short-side 0`
    dm = TwoStreamDataModule(
        videos,
        input="both",
        flow_root=flow,
        sampling=SegmentSampling(stack_length=10, segments=1, test_frames=25, test_crops=1),
        transform=FrameTransformSettings(crop_size=56, short_side=64, horizontal_flip=False),
        batch_size=25,
        num_workers=0,
    )
    dm.setup("test")
    model = TwoStreamFusion(rgb_checkpoint=str(checkpoints["rgb"]), flow_checkpoint=str(checkpoints["flow"]))
    rgb, flow_scores, labels = stream_scores_by_video(model, dm.test_dataloader())
    fit = fit_fusion_weights(rgb, flow_scores, labels)
    for w, nll, acc in fit.grid:
        print(f"validation: flow weight {w:.2f}  NLL {nll:.3f}  video top-1 {acc:.3f}")
    return fit


def run(
    work: Path, which: str, epochs: int, reuse: dict[str, Path] | None = None, fit_weights: bool = False
) -> dict[str, float]:
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
    checkpoints = dict(reuse or {})
    for stream in [s for s in ("rgb", "flow") if s not in checkpoints]:
        name = f"synthetic_motion_{stream}"  # the configs' run names
        vidrec(
            [
                "fit", "-c", str(CONFIGS / f"synthetic_motion_two_stream_{stream}.yaml"), *common,
                "--trainer.max_epochs", str(epochs),
                "--model.scheduler.init_args.T_max", str(epochs),
            ]
        )  # fmt: skip
        checkpoints[stream] = sorted((work / "runs" / name).glob("*/checkpoints/last.ckpt"))[-1]
    report = fused_test(work, common, checkpoints, (1.0, 1.5))
    figures = {
        "rgb": report["streams"]["rgb"]["group_acc"],
        "flow": report["streams"]["flow"]["group_acc"],
        "fused": report["test/group_acc"],
        "videos": report["test/groups"],
    }
    if fit_weights:
        fit = fit_on_validation(work, checkpoints)
        fitted = fused_test(work, common, checkpoints, (fit.rgb_weight, fit.flow_weight))
        figures.update(fitted_flow_weight=fit.flow_weight, fused_fitted=fitted["test/group_acc"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (data, flow, runs)")
    parser.add_argument("--set", choices=["motion", "actions"], default="motion")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rgb-checkpoint", type=Path, default=None, help="reuse this RGB stream (no training)")
    parser.add_argument("--flow-checkpoint", type=Path, default=None, help="reuse this flow stream (no training)")
    parser.add_argument("--fit-weights", action="store_true", help="fit the fusion weights on a validation set")
    args = parser.parse_args()
    reuse = {k: v.resolve() for k, v in (("rgb", args.rgb_checkpoint), ("flow", args.flow_checkpoint)) if v}
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # the configs write runs/ under the working directory
    figures = run(args.work.resolve(), args.set, args.epochs, reuse, args.fit_weights)
    print(
        f"{args.set} set, {figures['videos']:.0f} test videos, video top-1 (25 frames): "
        f"RGB {figures['rgb']:.3f}  flow {figures['flow']:.3f}  fused {figures['fused']:.3f} (1 : 1.5)"
    )
    if "fused_fitted" in figures:
        w = figures["fitted_flow_weight"]
        print(
            f"fused with weights fitted on validation (RGB {1 - w:.2f} : flow {w:.2f}): {figures['fused_fitted']:.3f}"
        )


if __name__ == "__main__":
    main()
