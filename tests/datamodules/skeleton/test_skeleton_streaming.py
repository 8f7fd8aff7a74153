"""Live joint frames: the deployment spec of skeleton data, anchoring alike offline and live, `vidrec stream`."""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.skeleton.datamodule import SkeletonDataModule
from datamodules.skeleton.ntu_convert import convert_ntu_folder
from datamodules.skeleton.protocols import Protocol
from datamodules.skeleton.synthetic import SYNTHETIC_CLASSES, SyntheticSkeletonSettings, generate_synthetic_skeletons
from datamodules.skeleton.transforms import SkeletonPreprocessing, joints_to_channels, preprocess_joints
from vidrec.models import build_model
from vidrec.skeleton_spec import Centring, SkeletonSpec
from vidrec.spec import DeploymentSpec, Modality
from vidrec.streaming import command as stream_command
from vidrec.streaming import to_streaming
from vidrec.streaming.joints import AnchoredRuntime, JointLineParser
from vidrec.streaming.lines import DropReason, MalformedLine

WINDOW, HOP = 40, 4
SPEC = SkeletonSpec(bodies=2, align_view=True)


def _recording(seed: int, frames: int = 60, absent: int = 3) -> np.ndarray:
    """Raw ``(M=2, T, 25, 3)`` joints far from the origin; body 0 absent in the first ``absent`` frames."""
    rng = np.random.default_rng(seed)
    joints = rng.normal(0, 0.3, (2, frames, 25, 3)).astype(np.float32) + np.array([1.5, 0.2, 3.0], np.float32)
    joints += np.cumsum(rng.normal(0, 0.01, (1, frames, 1, 3)), axis=1).astype(np.float32)  # drifting performer
    joints[0, :absent] = 0.0
    joints[1, frames // 2 :] = 0.0  # the second body leaves
    return joints


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("skeleton_frame_difference", in_channels=150, num_classes=4, width=4, kernel_size=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_streams_anchored_live_equal_the_offline_clip_preprocessing() -> None:
    model = _model()
    recordings = [_recording(1), _recording(2, absent=9)]
    prep = SkeletonPreprocessing(center=True, align_view=True)
    rt = AnchoredRuntime(to_streaming(model, WINDOW, HOP, capacity=2, in_channels=150), SPEC)
    raw = np.stack([joints_to_channels(r, 2) for r in recordings])  # (2, 150, T) as the camera gives it
    outs, readies = [], []
    for start in range(0, raw.shape[2], HOP):
        result = rt.step(raw[:, :, start : start + HOP], [0, 1])
        outs.append(result.logits)
        readies.append(result.ready)
    logits = torch.stack(outs, dim=1)
    offline = [torch.from_numpy(joints_to_channels(preprocess_joints(r, prep), 2)) for r in recordings]
    ends = [(k + 1) * HOP for k in range(raw.shape[2] // HOP) if (k + 1) * HOP >= WINDOW]
    with torch.no_grad():
        for i, x in enumerate(offline):
            ref = torch.stack([model(x[None, :, e - WINDOW : e])[0] for e in ends])
            got = logits[i, [e // HOP - 1 for e in ends]]
            torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    assert not torch.allclose(offline[0], torch.from_numpy(raw[0]))  # the anchoring did change the input

    rt.reset([1])  # a reset stream re-anchors on its next frame with the main actor
    shifted = raw[1:2] + np.tile(np.float32([5.0, 0.0, 0.0]), 50)[:, None]
    shifted[:, :, :3] = 0.0  # body 0 absent at first, as in the recording (body 1's channels too, for simplicity)
    assert rt.anchors.is_anchored.tolist() == [True, False]
    rt.step(shifted[:, :, :HOP], [1])
    assert rt.anchors.is_anchored[1]


def test_joint_lines_in_every_format_and_malformed_ones_named() -> None:
    parser = JointLineParser(SkeletonSpec(bodies=2), rate=30.0)
    body = [float(v) for v in range(75)]
    one = parser(",".join(map(str, body)), "d", 0.0)
    assert one is not None and one.values.shape == (150,) and not one.values[75:].any()  # body 1 zero-padded
    assert one.timestamp == 0.0 and parser(",".join(map(str, body)), "d", 0.0).timestamp == pytest.approx(1 / 30)
    two = parser("cam1,2.5," + ",".join(map(str, body + body)), "d", 0.0)
    assert two is not None and two.stream == "cam1" and two.timestamp == 2.5 and two.values[75] == 0.0
    stamped = parser("1.0," + ",".join(map(str, body)), "d", 0.0)
    assert stamped is not None and stamped.timestamp == 1.0 and stamped.stream == "d"
    js = parser(json.dumps({"stream": 7, "t": 3, "x": body}), "d", 0.0)
    assert js is not None and js.stream == "7" and js.timestamp == 3.0
    nested = parser(json.dumps({"joints": [np.reshape(body, (25, 3)).tolist()] * 2}), "d", 0.0)
    assert nested is not None and np.array_equal(nested.values, np.asarray(body + body, np.float32))
    assert parser("  # comment", "d") is None and parser("", "d") is None
    bad = {
        ",".join(map(str, body[:74])): "75 or 150 joint values, got 74 fields",
        ",".join(map(str, body * 3)): "expected 75 or 150 joint values",
        ",".join(["x"] * 75): "non-numeric",
        ",".join(map(str, body[:-1] + [float("nan")])): "non-finite",
        "{not json": "invalid JSON",
        json.dumps({"x": body, "joints": []}): "exactly one of",
        json.dumps({"joints": [[1.0, 2.0]] * 25}): "3 coordinates",
        json.dumps({"x": body[:-1] + [True]}): "non-numeric",
        "[" * 30000: "expected",
    }
    for line, message in bad.items():
        with pytest.raises(MalformedLine, match=message):
            parser(line, "d", 0.0)
    with pytest.raises(MalformedLine) as err:
        parser("x" * 200 + ",0," + ",".join(map(str, body)), "d", 0.0, 128)
    assert err.value.drop is DropReason.LONG_STREAM_ID


@pytest.fixture(scope="module")
def skeleton_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    settings = SyntheticSkeletonSettings(num_classes=3, performers=3, replications=1, min_frames=30, max_frames=40)
    generate_synthetic_skeletons(root / "skeletons", settings)
    convert_ntu_folder(root / "skeletons", root / "s.h5", num_classes=3, class_names=SYNTHETIC_CLASSES[:3])
    return root / "s.h5"


def test_the_data_module_spec_describes_layout_and_anchoring(skeleton_h5: Path) -> None:
    dm = SkeletonDataModule(
        str(skeleton_h5), protocol=Protocol.CUSTOM, test_performers=[3], length=WINDOW, align_view=True
    )
    dm.setup("fit")
    spec = dm.deployment_spec()
    assert spec.modality is Modality.SKELETON and spec.window == WINDOW and spec.eval_hop == 4 and spec.rate == 30
    assert spec.skeleton is not None and spec.skeleton.centring is Centring.FIRST_FRAME and spec.skeleton.align_view
    assert spec.in_channels == 150 and spec.channels[:2] == ["b0_spine_base_x", "b0_spine_base_y"]
    assert spec.split is not None and spec.split.test_subjects == [3]
    back = DeploymentSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # plain types only
    assert back.skeleton == spec.skeleton and back.to_dict() == spec.to_dict()
    with pytest.raises(ValueError, match="joint layout"):
        DeploymentSpec.from_dict({**spec.to_dict(), "skeleton": None})


@dataclass
class _Loaded:
    model: nn.Module
    class_names: list[str]
    spec: DeploymentSpec

    def require_spec(self) -> DeploymentSpec:
        return self.spec


def test_vidrec_stream_classifies_joint_frames_and_drops_malformed_lines(
    skeleton_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = SkeletonDataModule(
        str(skeleton_h5), protocol=Protocol.CUSTOM, test_performers=[3], length=WINDOW, align_view=True
    )
    dm.setup("fit")
    spec = dm.deployment_spec()
    model = _model()
    classes = ["a", "b", "c", "d"]
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: _Loaded(model, classes, spec))
    recording = _recording(3, frames=56)
    raw = joints_to_channels(recording, 2)  # (150, T)
    lines = [",".join(f"{v:.6f}" for v in raw[:75, t]) for t in range(56)]  # body 0 only: 75 values a line
    lines = [json.dumps({"stream": "k", "t": t / 30, "x": raw[:, t].round(6).tolist()}) for t in range(56)] + [
        f"p,{t / 30}," + line for t, line in enumerate(lines)
    ]
    lines[5:5] = ["1,2,3", "nan," * 74 + "nan", '{"joints": 5}', "\x00\xff garbage"]
    path = tmp_path / "frames.txt"
    path.write_text("\n".join(lines) + "\n")
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["stream", "--checkpoint", "x.ckpt", "--input", str(path), "--max-seconds", "30"])
    out = io.StringIO()
    summary = args.func(args, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["dropped_malformed"] == 4 and summary["samples"] == 112
    ends = list(range(WINDOW, 57, HOP))
    assert [r["stream"] for r in rows].count("k") == len(ends) == [r["stream"] for r in rows].count("p")
    prep = SkeletonPreprocessing(center=True, align_view=True)
    one_body = recording.copy()
    one_body[1] = 0.0
    for stream, joints in (("k", recording), ("p", one_body)):
        x = torch.from_numpy(joints_to_channels(preprocess_joints(joints.round(6), prep), 2))
        with torch.no_grad():
            probs = torch.stack([model(x[None, :, e - WINDOW : e])[0].softmax(0) for e in ends])
        got = [r for r in rows if r["stream"] == stream]
        assert [r["class"] for r in got] == [classes[k] for k in probs.argmax(1).tolist()]
        np.testing.assert_allclose([r["prob"] for r in got], probs.max(1).values.numpy(), atol=1e-4)


@dataclass
class _LoadedCheckpoint(_Loaded):
    path: str = "tiny.ckpt"


def test_evaluate_streaming_of_a_skeleton_checkpoint_scores_its_test_clips(
    skeleton_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clips report: one window per test clip, offline == `vidrec test`'s accuracy == streamed."""
    window = 32
    dm = SkeletonDataModule(str(skeleton_h5), protocol=Protocol.CUSTOM, test_performers=[3], length=window)
    dm.setup("fit")
    spec = dm.deployment_spec()
    torch.manual_seed(0)
    model = build_model(  # a subnet: the ensemble's fused streaming is tested in tests/models (compiles take long)
        "skeleton_frame_difference", in_channels=150, num_classes=3, width=4, kernel_size=2
    ).eval()
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: _LoadedCheckpoint(model, ["a", "b", "c"], spec))
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate-streaming", "--checkpoint", "x.ckpt", "--out", str(tmp_path / "eval")])
    summary = args.func(args)
    clips = json.loads((tmp_path / "eval" / "streaming_eval.json").read_text())
    test = dm.datasets["test"]
    x = torch.stack([test[i]["inputs"] for i in range(len(test))])
    with torch.no_grad():
        expected = float((model(x).argmax(1) == torch.tensor(test.labels)).float().mean())
    assert clips["windows"] == len(test) == 9 and clips["recordings"] == 9
    assert clips["offline"]["accuracy"] == pytest.approx(expected) == clips["streaming"]["accuracy"]
    assert clips["max_abs_logit_delta"] < 1e-4 and clips["argmax_agreement"] == 1.0
    assert summary["clips"]["offline_accuracy"] == clips["offline"]["accuracy"]
    assert "live_frames" in summary  # native-rate windows of the clips long enough for one (30-40 frames)
    live = json.loads((tmp_path / "eval" / "live_frames" / "streaming_eval.json").read_text())
    assert live["max_abs_logit_delta"] < 1e-4 and live["windows"] >= live["recordings"] >= 1


def test_a_skeleton_spec_whose_test_side_differs_is_refused(skeleton_h5: Path) -> None:
    dm = SkeletonDataModule(str(skeleton_h5), protocol=Protocol.CUSTOM, test_performers=[3], length=WINDOW)
    dm.setup("fit")
    spec = dm.deployment_spec()
    again = SkeletonDataModule.from_spec(spec)
    assert again.split_names["test"] == dm.split_names["test"] and again.length == WINDOW
    xsub = SkeletonDataModule(str(skeleton_h5), protocol=Protocol.NTU60_XSUB, length=WINDOW)
    xsub.setup("fit")
    other = xsub.deployment_spec()
    assert other.split is not None
    moved = DeploymentSpec.from_dict({**other.to_dict(), "split": {**other.split.to_dict(), "test_subjects": [1, 3]}})
    with pytest.raises(ValueError, match=r"gives test performers \[3\], the checkpoint was tested on \[1, 3\]"):
        SkeletonDataModule.from_spec(moved)
    with pytest.raises(ValueError, match="does not describe a skeleton file"):
        SkeletonDataModule.from_spec(
            DeploymentSpec.from_dict({**spec.to_dict(), "modality": "timeseries", "skeleton": None})
        )


def test_export_stream_writes_the_step_of_a_skeleton_checkpoint(
    skeleton_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX step, run hop by hop from a zero state, ends on the offline logits of the window."""
    pytest.importorskip("onnxruntime")
    from vidrec.streaming.export import onnx_session

    dm = SkeletonDataModule(str(skeleton_h5), protocol=Protocol.CUSTOM, test_performers=[3], length=WINDOW)
    dm.setup("fit")
    model = build_model("skeleton_body_part", in_channels=150, num_classes=3, width=4, kernel_size=2).eval()
    spec = dm.deployment_spec()
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: _LoadedCheckpoint(model, ["a", "b", "c"], spec))
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    out = tmp_path / "step.onnx"
    args = parser.parse_args(["export-stream", "--checkpoint", "x.ckpt", "--out", str(out)])
    assert args.func(args) == str(out)
    session: Any = onnx_session(out)
    state = {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
        for i in session.get_inputs()
        if i.name != "chunk"
    }
    x = torch.randn(1, 150, WINDOW)
    for k in range(WINDOW // HOP):
        logits, *new = session.run(None, {"chunk": x[:, :, k * HOP : (k + 1) * HOP].numpy(), **state})
        state = dict(zip(state, new))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4)
