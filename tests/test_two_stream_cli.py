"""`vidrec data flow`, `vidrec fit` of both streams and `vidrec test` of the fused model with one config, end to end."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("cv2.optflow")

from datamodules.flow.synthetic_motion import MotionSettings, generate_motion_set
from vidrec.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "video"
TINY = [
    "--trainer.enable_progress_bar", "false",
    "--trainer.max_epochs", "1",
    "--model.model.init_args.num_classes", "3",
    "--data.init_args.transform.crop_size", "24",
    "--data.init_args.transform.short_side", "32",
    "--data.init_args.num_workers", "0",
]  # fmt: skip


@pytest.mark.slow
def test_two_streams_trained_then_tested_fused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    generate_motion_set("videos", MotionSettings(num_classes=3, videos_per_class=4, frames=8, size=32))
    assert main(["data", "flow", "--videos", "videos", "--out", "flow", "--short-side", "0", "--no-progress"]) == 0
    data = ["--data.init_args.root", "videos", "--data.init_args.flow_root", "flow"]
    stack = ["--data.init_args.sampling.stack_length", "4"]
    main(["fit", "-c", str(CONFIGS / "synthetic_motion_two_stream_rgb.yaml"), *data, *TINY])
    main(
        [
            "fit",
            "-c",
            str(CONFIGS / "synthetic_motion_two_stream_flow.yaml"),
            *data,
            *TINY,
            *stack,
            "--model.model.init_args.in_channels",
            "8",
        ]
    )
    rgb_ckpt = next(Path("runs/synthetic_motion_rgb").glob("*/checkpoints/last.ckpt"))
    flow_ckpt = next(Path("runs/synthetic_motion_flow").glob("*/checkpoints/last.ckpt"))
    main(
        [
            "test",
            "-c",
            str(CONFIGS / "synthetic_motion_two_stream_fused.yaml"),
            *data,
            *stack,
            *TINY[:2],
            *TINY[6:],
            "--data.init_args.sampling.test_frames",
            "5",
            "--model.model.init_args.rgb_checkpoint",
            str(rgb_ckpt),
            "--model.model.init_args.flow_checkpoint",
            str(flow_ckpt),
        ]
    )
    report = json.loads(next(Path("runs/synthetic_motion_fused").glob("*/test_metrics.json")).read_text())
    assert report["test/groups"] == 3.0  # one test video per class, 5 views each, scored per video
    assert set(report["streams"]) == {"rgb", "flow"}
    for stream in report["streams"].values():
        assert {"acc", "group_acc", "groups"} <= set(stream)
    assert len(report["confusion_matrix"]) == 3 and sum(map(sum, report["confusion_matrix"])) == 15
    # the checkpoints carry their deployment specs; the pair streams a video frame by frame with incremental flow
    from vidrec.tasks import load_checkpoint

    flow_spec = load_checkpoint(flow_ckpt).require_spec()
    assert flow_spec.window == 4 and flow_spec.two_stream is not None and flow_spec.two_stream.input == "flow"
    pair = ["--checkpoint", str(rgb_ckpt), "--flow-checkpoint", str(flow_ckpt), "--window", "6"]
    video = next(Path("videos").rglob("*.mp4"))
    out = io.StringIO()
    from vidrec.streaming.command import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["stream", *pair, "--input", str(video)])
    summary = args.func(args, out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["frames"] == 8 and len(rows) == 8 - 6 + 1 == summary["predictions"]
    assert {"class", "probability", "latency_ms", "flow_ms", "rgb_class", "flow_class"} <= set(rows[0])
    args = parser.parse_args(["evaluate-streaming", *pair, "--out", "eval", "--data", "videos"])
    report = args.func(args)
    assert report["max_abs_logit_delta"] < 1e-4 and report["streamed_flow_equals_stored"] is True
    assert report["videos"] == report["videos_with_stored_flow"] == 3 and report["windows"] == 3 * 3
