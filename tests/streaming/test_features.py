"""Live feature heads (vidrec.streaming.features): live features equal the feature file's rows of the same frames,
streamed head logits equal the head offline on the same features, the CLI streams a head checkpoint, and the
TS-LSTM window mismatch is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from datamodules.features import FeatureDataModule, FeatureReader
from datamodules.features.extract import ExtractionSettings, FrameEncoder, LabelledVideo, extract_features
from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions
from vidrec.cli import main
from vidrec.models.ts_lstm import mean_pool_linear, ts_lstm
from vidrec.streaming.features import (
    FeatureHeadError,
    FeatureSourceSpec,
    LiveFrameFeatures,
    default_hop,
    evaluate_feature_head,
    head_runtime,
    load_encoder,
)
from vidrec.streaming.video import read_frames
from vidrec.tasks.checkpoint import LoadedClassifier

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 videos of 20 frames, 32 x 32 (one test video per class)."""
    root = tmp_path_factory.mktemp("ucf")
    generate_synthetic_actions(root, SyntheticSettings(num_classes=2, videos_per_class=4, frames=20, size=32))
    return root


def _labelled(root: Path) -> list[LabelledVideo]:
    paths = sorted(root.rglob("*.mp4"))
    return [
        LabelledVideo(p, str(p.relative_to(root)), i % 2, "test" if i % 3 == 0 else "train")
        for i, p in enumerate(paths)
    ]


class _TinyClipEncoder(nn.Module):
    """A random 3D conv backbone: clips (N, 3, 3, H, W) -> (N, 8), temporal kernel 3 (a context of 3 frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, (3, 3, 3), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


def test_live_features_equal_the_file_rows_with_clip_context(videos: Path, tmp_path: Path) -> None:
    """Context 3 frames, 2 native frames apart, a feature every 3rd frame: live == extract-features, row for row."""
    torch.manual_seed(0)
    net = _TinyClipEncoder().eval()
    encoder = FrameEncoder(encode=net, context_frames=3, feature_dim=8, description={"kind": "test", "name": "tiny"})
    settings = ExtractionSettings(
        frames=None, frame_step=3, short_side=24, crop_size=20, frame_stride=2, context_frames=3, dtype="float32"
    )
    out = tmp_path / "f.h5"
    extract_features(_labelled(videos), encoder, out, settings, class_names=["a", "b"], progress=False)
    reader = FeatureReader(out)
    assert reader.info.sampling == {"mode": "every", "frames": None, "step": 3}
    live = LiveFrameFeatures(encoder, settings, frame_step=3)
    for video in list(reader.read())[:2]:
        live.reset()
        rows = [f for f in (live.push(fr.rgb) for fr in read_frames(videos / video.path)) if f is not None]
        np.testing.assert_array_equal(video.frame_indices, np.arange(0, 20, 3))
        got = torch.stack(rows).numpy()  # (7, 8)
        np.testing.assert_allclose(got, video.features, atol=1e-5, rtol=1e-5)  # batched vs one clip at a time
        assert live.clips == 7


@pytest.fixture(scope="module")
def resnet_features(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A resnet18 with weights from a local file, a feature every 2nd frame (float32): (feature file, weights)."""
    import torchvision

    tmp = tmp_path_factory.mktemp("feats")
    torch.manual_seed(0)
    weights = tmp / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = tmp / "rgb.h5"
    args = ["extract-features", "ucf101", "--root", str(videos), "--out", str(out), "--backbone", "resnet18"]
    args += ["--weights", str(weights), "--every-frame", "--frame-step", "2", "--dtype", "float32"]
    args += ["--short-side", "32", "--crop-size", "28", "--no-progress", "--threads", "1", "--batch-size", "4"]
    assert main(args) == 0
    return out, weights


def _loaded(model: nn.Module, feats: Path, num_frames: int) -> LoadedClassifier:
    spec = FeatureDataModule(feats, num_frames=num_frames).deployment_spec()
    return LoadedClassifier(model=model.eval(), class_names=list(spec.class_names), spec=spec, path="head.ckpt")


def _trained_bn(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics of both signs (as after training)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)  # type: ignore[operator]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
            m.weight.data.uniform_(-1.5, 1.5)
    return model


def test_ts_lstm_streams_live_equal_to_offline(resnet_features: tuple[Path, Path]) -> None:
    feats, _ = resnet_features
    torch.manual_seed(1)
    head = _trained_bn(ts_lstm(feature_dim=512, num_classes=2, hidden_sizes=[16]))
    loaded = _loaded(head, feats, num_frames=6)  # 3 segments of 2 features
    spec = FeatureSourceSpec.of(loaded.require_spec())
    assert (spec.frame_step, spec.exact_sampling, spec.extractor["name"]) == (2, True, "resnet18")
    assert default_hop(head, 6, 1) == 2  # one segment
    report = evaluate_feature_head(loaded, backend="eager")
    assert report["windows"] > 0 and report["hop"] == 2 and report["window"] == 6
    assert report["max_abs_logit_delta"] < 1e-5 and report["argmax_agreement"] == 1.0
    assert report["max_abs_live_vs_file_feature_delta"] < 1e-4  # live backbone == extract-features


def test_ts_lstm_window_must_be_whole_segments(resnet_features: tuple[Path, Path]) -> None:
    head = ts_lstm(feature_dim=512, num_classes=2, hidden_sizes=[16]).eval()
    with pytest.raises(FeatureHeadError, match=r"head.ckpt: .*window of 25 .*num_frames: 24"):
        head_runtime(head, 25, 1, 512, where="head.ckpt")


def test_extractor_must_match_the_record(resnet_features: tuple[Path, Path], tmp_path: Path) -> None:
    feats, _ = resnet_features
    spec = FeatureSourceSpec.of(_loaded(mean_pool_linear(feature_dim=512, num_classes=2), feats, 4).require_spec())
    other = tmp_path / "other.pth"
    torch.save({"x": torch.zeros(1)}, other)
    with pytest.raises(FeatureHeadError, match="differs from the"):
        load_encoder(spec, other)
    with pytest.raises(FeatureHeadError, match="does not exist"):
        load_encoder(spec, tmp_path / "gone.pth")


def test_cli_streams_and_evaluates_a_head_checkpoint(
    videos: Path, resnet_features: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vidrec fit` of the mean-pool head, then `vidrec stream --input VIDEO` and `vidrec evaluate-streaming`."""
    feats, _ = resnet_features
    monkeypatch.chdir(tmp_path)
    cfg = str(ROOT / "configs" / "video" / "ordered_events_mean_pool_linear.yaml")
    fit = ["fit", "-c", cfg, "--data.init_args.path", str(feats), "--data.init_args.num_frames", "4"]
    fit += ["--model.model.init_args.feature_dim", "512", "--model.model.init_args.num_classes", "2"]
    fit += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "2"]
    assert main(fit) == 0
    (ckpt,) = Path("runs").rglob("last.ckpt")
    video = next(iter(sorted(videos.rglob("*.mp4"))))
    lines = tmp_path / "stream.jsonl"
    with open(lines, "w") as out, monkeypatch.context() as m:
        m.setattr("sys.stdout", out)
        assert main(["stream", "--checkpoint", str(ckpt), "--input", str(video), "--format", "json"]) == 0
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["frame"] for r in rows] == [6, 8, 10, 12, 14, 16, 18]  # a window of 4 features, one every 2 frames
    assert main(["evaluate-streaming", "--checkpoint", str(ckpt), "--out", "eval"]) == 0
    report = json.loads(Path("eval/streaming_eval.json").read_text())
    assert report["max_abs_logit_delta"] < 1e-4 and report["argmax_agreement"] == 1.0
    assert report["max_abs_live_vs_file_feature_delta"] < 1e-4


def test_live_flow_and_joined_features_equal_the_extracted_rows(tmp_path: Path) -> None:
    """Flow from the cached previous frame, the L fields centred on each frame, the temporal stream once a frame:
    the rows `extract-features --flow-root` writes (every 2nd frame), up to the stacks the file shifts at the video
    end; joined with the live RGB features, the rows of `join-features`, and a head streamed over them == offline."""
    from datamodules.features.extract import torchvision_encoder
    from datamodules.features.flow_features import FlowFeatureSettings, extract_flow_features, flow_model_encoder
    from datamodules.features.schema import join_feature_files
    from datamodules.flow.methods import FlowSettings
    from datamodules.flow.schema import FlowFile, flow_path
    from vidrec.models.two_stream import temporal_stream_resnet18
    from vidrec.streaming.features import FeatureHeadStream, LiveFlowFeatures, LiveJoinedFeatures

    root = tmp_path / "ucf"
    generate_synthetic_actions(root, SyntheticSettings(num_classes=1, videos_per_class=1, frames=12, size=32))
    flows = tmp_path / "flow"
    args = ["data", "flow", "--videos", str(root), "--out", str(flows), "--method", "dis", "--dis-preset", "ultrafast"]
    assert main([*args, "--short-side", "32", "--no-progress"]) == 0
    (video,) = sorted(root.rglob("*.mp4"))
    relative = str(video.relative_to(root))
    videos = [LabelledVideo(video, relative, 0, "test")]
    torch.manual_seed(0)
    flow_encoder = flow_model_encoder(temporal_stream_resnet18(num_classes=2, stack_length=4).eval(), {"kind": "t"})
    flow_settings = FlowFeatureSettings(frames=None, frame_step=2, crop_size=24, dtype="float32")
    extract_flow_features(videos, flow_encoder, flows, tmp_path / "flow.h5", flow_settings, class_names=["a"])
    rgb_encoder = torchvision_encoder("resnet18", None)
    rgb_settings = ExtractionSettings(frames=None, frame_step=2, short_side=32, crop_size=32, dtype="float32")
    extract_features(videos, rgb_encoder, tmp_path / "rgb.h5", rgb_settings, class_names=["a"], progress=False)
    join_feature_files(tmp_path / "rgb.h5", tmp_path / "flow.h5", tmp_path / "both.h5", strict=True)
    (stored,) = list(FeatureReader(tmp_path / "flow.h5").read())
    (joined,) = list(FeatureReader(tmp_path / "both.h5").read())
    with FlowFile(flow_path(flows, str(Path(relative).with_suffix("")))) as f:
        flow, fields = FlowSettings.from_dict(f.header.params), f.num_fields
    live = LiveFlowFeatures(flow_encoder, flow, crop_size=24, frame_step=2)
    got = dict(pair for frame in read_frames(video) for pair in live.push(frame.rgb))
    inside = [t for t in stored.frame_indices.tolist() if max(0, t - 2) + 4 <= fields]  # stacks not shifted at the end
    assert sorted(got) == inside and len(inside) >= 4 and live.clips == len(inside)
    for row, t in enumerate(inside):
        np.testing.assert_allclose(got[t].numpy(), stored.features[row], atol=1e-5, rtol=0)
    # RGB + flow per frame, in the joined file's column order
    both = LiveJoinedFeatures(
        [LiveFrameFeatures(rgb_encoder, rgb_settings, 2), LiveFlowFeatures(flow_encoder, flow, 24)]
    )
    head = mean_pool_linear(feature_dim=1024, num_classes=2).eval()
    stream = FeatureHeadStream(both, head_runtime(head, 3, 1, 1024))
    feats, reports = [], []
    for frame in read_frames(video):
        ready, done = stream.push_all(frame.rgb)
        feats += ready
        reports += done
    rows = torch.stack(feats).numpy()  # (len(inside), 1024)
    np.testing.assert_allclose(rows, joined.features[: len(inside)], atol=1e-4, rtol=1e-5)
    live_seq = torch.stack(feats, dim=1)  # (D, T)
    assert [end for end, _ in reports] == list(range(3, len(inside) + 1))
    with torch.no_grad():
        for end, logits in reports:
            torch.testing.assert_close(logits, head(live_seq[None, :, end - 3 : end])[0], atol=1e-5, rtol=0)


def test_a_head_on_joined_rgb_and_flow_features_streams_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head checkpoint's feature source names both extractors: the live pipeline runs the RGB backbone and the
    temporal stream over incremental flow; live features == the joined file's rows, streamed logits == offline."""
    import torchvision

    import datamodules.features.flow_features as flow_features
    from datamodules.features.extract import file_sha256, torchvision_encoder
    from datamodules.features.flow_features import FlowFeatureSettings, extract_flow_features, flow_model_encoder
    from datamodules.features.schema import join_feature_files
    from vidrec.models.two_stream import temporal_stream_resnet18
    from vidrec.streaming.features import LiveJoinedFeatures, live_features

    root = tmp_path / "ucf"
    generate_synthetic_actions(root, SyntheticSettings(num_classes=2, videos_per_class=3, frames=12, size=32))
    flows = tmp_path / "flow"
    args = ["data", "flow", "--videos", str(root), "--out", str(flows), "--method", "dis", "--dis-preset", "ultrafast"]
    assert main([*args, "--short-side", "32", "--no-progress"]) == 0
    videos = _labelled(root)
    torch.manual_seed(0)
    weights, ckpt = tmp_path / "resnet18.pth", tmp_path / "flow_stream.ckpt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    ckpt.write_bytes(b"stands for the temporal stream checkpoint")  # its sha256 is what the record checks
    stream = temporal_stream_resnet18(num_classes=2, stack_length=4).eval()
    record = {"kind": "flow_checkpoint", "name": "t", "checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt)}
    flow_encoder = flow_model_encoder(stream, record)
    monkeypatch.setattr(flow_features, "flow_stream_encoder", lambda path: flow_encoder)
    flow_settings = FlowFeatureSettings(frames=None, frame_step=2, crop_size=24, dtype="float32")
    names, where = ["a", "b"], str(root)
    extract_flow_features(
        videos,
        flow_encoder,
        flows,
        tmp_path / "flow.h5",
        flow_settings,
        class_names=names,
        source=where,
        progress=False,
    )
    rgb_settings = ExtractionSettings(frames=None, frame_step=2, short_side=32, crop_size=24, dtype="float32")
    rgb = torchvision_encoder("resnet18", weights)
    extract_features(videos, rgb, tmp_path / "rgb.h5", rgb_settings, class_names=names, source=where, progress=False)
    join_feature_files(tmp_path / "rgb.h5", tmp_path / "flow.h5", tmp_path / "both.h5", strict=True)
    torch.manual_seed(1)
    loaded = _loaded(mean_pool_linear(feature_dim=1024, num_classes=2), tmp_path / "both.h5", num_frames=3)
    source = FeatureSourceSpec.of(loaded.require_spec())
    assert isinstance(live_features(source), LiveJoinedFeatures)
    report = evaluate_feature_head(loaded, backend="eager")
    assert report["windows"] > 0 and report["max_abs_logit_delta"] < 1e-5 and report["argmax_agreement"] == 1.0
    assert report["max_abs_live_vs_file_feature_delta"] < 1e-4  # RGB backbone and temporal stream == the files
    with pytest.raises(FeatureHeadError, match="joined features of 2 extractors"):
        live_features(source, override=weights)
