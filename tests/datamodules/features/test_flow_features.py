"""Flow-stream features (datamodules.features.flow_features): stacks of flow fields through a temporal stream, the
RGB file's keys, and the RGB + flow join per video into (T, D_rgb + D_flow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.features import FeatureReader
from datamodules.features.extract import ExtractionSettings, LabelledVideo, extract_features, torchvision_encoder
from datamodules.features.flow_features import FlowFeatureSettings, extract_flow_features, flow_model_encoder
from datamodules.features.schema import join_feature_files
from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions
from vidrec.cli import main
from vidrec.models.two_stream import temporal_stream_resnet18


def test_rgb_and_flow_feature_files_join_per_video(tmp_path: Path) -> None:
    root = tmp_path / "ucf"
    generate_synthetic_actions(root, SyntheticSettings(num_classes=2, videos_per_class=2, frames=10, size=32))
    flows = tmp_path / "flow"
    args = ["data", "flow", "--videos", str(root), "--out", str(flows), "--method", "dis", "--dis-preset", "ultrafast"]
    assert main([*args, "--short-side", "32", "--no-progress"]) == 0
    paths = sorted(root.rglob("*.mp4"))
    videos = [
        LabelledVideo(p, str(p.relative_to(root)), i // 2, "train" if i % 2 else "test") for i, p in enumerate(paths)
    ]
    missing = LabelledVideo(root / "x.mp4", "SquareMovingLeft/v_none.mp4", 0, "train")  # no flow file
    torch.manual_seed(0)
    rgb = tmp_path / "rgb.h5"
    settings = ExtractionSettings(frames=4, short_side=32, crop_size=32, dtype="float32")
    extract_features(
        videos, torchvision_encoder("resnet18", None), rgb, settings, class_names=["a", "b"], progress=False
    )
    stream = temporal_stream_resnet18(num_classes=2, stack_length=3).eval()
    encoder = flow_model_encoder(stream, {"kind": "flow_checkpoint", "name": "test"})
    assert (encoder.context_frames, encoder.feature_dim) == (3, 512)
    flow = tmp_path / "flow.h5"
    summary = extract_flow_features(
        [*videos, missing],
        encoder,
        flows,
        flow,
        FlowFeatureSettings(frames=4, crop_size=24, dtype="float32"),
        class_names=["a", "b"],
        progress=False,
    )
    assert (summary.written, summary.quarantined) == (4, ["SquareMovingLeft/v_none.mp4"])
    reader = FeatureReader(flow)
    assert reader.info.extractor["stack_length"] == 3 and reader.info.sampling == {"mode": "uniform", "frames": 4}
    (first, *_) = list(reader.read())
    np.testing.assert_array_equal(first.frame_indices, [1, 3, 6, 8])  # the RGB file's sampled frames
    # row 0: the 3 fields centred on frame 1 (fields 0, 1, 2), centre crop 24 of 32, through the stream
    from datamodules.flow.schema import FlowFile, flow_path
    from datamodules.flow.transforms import FrameTransformSettings, crop_boxes, transform_flow

    with FlowFile(flow_path(flows, str(Path(first.path).with_suffix("")))) as f:
        fields = f.read_fields(0, 3)[None]  # (1, 3, 2, 32, 32)
    t = FrameTransformSettings(crop_size=24, short_side=32)
    with torch.inference_mode():
        ref = stream.forward_features(transform_flow(fields, crop_boxes(t, 32, 32, 1)[0], t))
    np.testing.assert_allclose(first.features[0], ref[0].numpy(), atol=1e-5)
    # join: (T, 512 + 512) per video, RGB columns first
    report = join_feature_files(rgb, flow, tmp_path / "both.h5", strict=True)
    assert report.joined == 4
    both = {v.key: v for v in FeatureReader(tmp_path / "both.h5").read()}
    rgb_rows = {v.key: v for v in FeatureReader(rgb).read()}
    assert both[first.key].features.shape == (4, 1024)
    np.testing.assert_array_equal(both[first.key].features[:, 512:], first.features)
    np.testing.assert_array_equal(both[first.key].features[:, :512], rgb_rows[first.key].features)


def test_flow_root_needs_a_temporal_stream_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["extract-features", "class-folders", "--root", str(tmp_path), "--out", str(tmp_path / "f.h5")]
    assert main([*args, "--backbone", "resnet18", "--random-init", "--flow-root", str(tmp_path)]) == 2
    assert "--flow-root needs --checkpoint" in capsys.readouterr().err
