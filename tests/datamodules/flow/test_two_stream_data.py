"""Two-stream datasets: sampling positions, flow-correct transforms, BOTH joined by video id, bad input not fatal."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("cv2.optflow")

from datamodules.flow.datamodule import TwoStreamDataModule
from datamodules.flow.dataset import (
    Mode,
    SegmentSampling,
    StreamInput,
    TwoStreamDataset,
    VideoEntry,
    evaluation_positions,
    segment_positions,
    stack_field_range,
)
from datamodules.flow.extraction import extract_flow
from datamodules.flow.methods import FlowSettings
from datamodules.flow.schema import flow_path
from datamodules.flow.synthetic_motion import MOTION_CLASSES, MotionSettings, generate_motion_set, render_motion
from datamodules.flow.transforms import CropBox, FlowMean, FrameTransformSettings, crop_boxes, transform_flow
from datamodules.video.decoding import QuarantineLog, RobustVideoReader


def test_positions_and_stack_ranges() -> None:
    assert evaluation_positions(100, 25) == [2 + 4 * j for j in range(25)]
    assert evaluation_positions(3, 25) == sorted(evaluation_positions(3, 25)) and max(evaluation_positions(3, 25)) == 2
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = segment_positions(30, 3, rng)
        assert 0 <= p[0] < 10 <= p[1] < 20 <= p[2] < 30
    assert stack_field_range(50, 10, 99) == (45, 55)  # centred
    assert stack_field_range(1, 10, 99) == (0, 10)  # runs past the start: shifted inside
    assert stack_field_range(98, 10, 99) == (89, 99)  # runs past the end: shifted inside
    assert stack_field_range(3, 10, 6) == (0, 6)  # fewer fields than L: the whole video (edge repeated later)


def test_flip_negates_x_and_resizing_scales_displacements() -> None:
    settings = FrameTransformSettings(crop_size=16, short_side=32)
    stacks = np.full((1, 2, 2, 32, 64), 128, dtype=np.uint8)  # (K, L, 2, H, W)
    stacks[:, :, 0] = 128 + 40  # x = +40 levels, y = 0
    plain = transform_flow(stacks, CropBox(0, 0, 0.5, 0.5), settings)  # 32 x 32 crop -> 16 x 16: factor 0.5
    flipped = transform_flow(stacks, CropBox(0, 0, 0.5, 0.5, flip=True), settings)
    assert plain.shape == (1, 4, 16, 16)
    x = (168 - 127.5) / 127.5 * 0.5
    assert torch.allclose(plain[:, 0::2], torch.full_like(plain[:, 0::2], x), atol=1e-5)
    assert torch.allclose(flipped[:, 0::2], -plain[:, 0::2]) and torch.allclose(flipped[:, 1::2], plain[:, 1::2])
    wide = transform_flow(stacks, CropBox(0, 0, 0.5, 0.25), settings)  # 16 x 16 crop: x unscaled, aspect kept
    assert torch.allclose(wide[:, 0::2], torch.full_like(wide[:, 0::2], x * 2), atol=1e-5)
    subtracted = transform_flow(stacks, CropBox(0, 0, 1, 1), FrameTransformSettings(16, 32, flow_mean=FlowMean.FIELD))
    assert subtracted.abs().max() < 1e-5  # uniform motion is all "camera motion"
    assert len(crop_boxes(settings, 32, 64, 10)) == 10 and sum(b.flip for b in crop_boxes(settings, 32, 64, 10)) == 5


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("motion")
    generate_motion_set(root / "videos", MotionSettings(num_classes=4, videos_per_class=4, frames=8, size=32))
    extract_flow(root / "videos", root / "flow", FlowSettings(short_side=None), progress=False)
    return root / "videos", root / "flow"


def test_motion_set_frames_share_appearance_and_flow_shows_the_class() -> None:
    stats = {}
    for label, name in enumerate(MOTION_CLASSES):
        frames = np.concatenate(
            [render_motion(name, np.random.default_rng([1, label, v]), 4, 64, 4.0)[..., 0] for v in range(30)]
        ).astype(np.float64)
        stats[name] = (frames.mean(), frames.std())
    means = np.array([m for m, _ in stats.values()])
    stds = np.array([s for _, s in stats.values()])
    assert np.ptp(means) < 3 and np.ptp(stds) < 3  # one appearance distribution (grey level 0-255)
    a = render_motion("DiscMovingRight", np.random.default_rng(0), 5, 64, 0.0)
    b = render_motion("DiscMovingRight", np.random.default_rng(0), 5, 64, 0.0)
    assert np.array_equal(a, b)  # deterministic from the seed


def test_flow_of_the_motion_set_points_the_way_of_its_class(motion_data: tuple[Path, Path]) -> None:
    videos, flow = motion_data
    with h5py.File(flow_path(flow, "DiscMovingRight/v_DiscMovingRight_g01_c01")) as f:
        x, y = (f["flow"][:, c].astype(np.float64) - 127.5 for c in (0, 1))
    moving = np.abs(x) > 4  # 0.6 pixels
    assert moving.mean() > 0.02 and np.median(x[moving]) > 0 and abs(np.median(y[moving])) < np.median(x[moving])


def test_datamodule_shapes_and_the_25_frame_test_views(motion_data: tuple[Path, Path]) -> None:
    videos, flow = motion_data
    transform = FrameTransformSettings(crop_size=24, short_side=32, horizontal_flip=True)
    sampling = SegmentSampling(stack_length=4, segments=3, test_frames=25, test_crops=3)
    dm = TwoStreamDataModule(videos, input="both", flow_root=flow, sampling=sampling, transform=transform)
    dm.setup("fit")
    dm.setup("test")
    train = dm.datasets[next(iter(dm.datasets))]
    item = train[0]
    assert item["inputs"]["rgb"].shape == (3, 3, 24, 24) and item["inputs"]["flow"].shape == (3, 8, 24, 24)
    test = dm.datasets[max(dm.datasets, key=lambda s: s.value == "test")]
    assert len(test) == 4 * 25 * 3 and test.views_per_video == 75
    views = [test[i] for i in range(75)]
    assert {v["group"] for v in views} == {0} and views[0]["inputs"]["flow"].shape == (8, 24, 24)
    again = test[5]
    assert torch.equal(again["inputs"]["flow"], views[5]["inputs"]["flow"])  # evaluation views are deterministic
    assert dm.num_classes == 4 and dm.video_id(videos / "a" / "b.mp4") == "a/b"


def test_bad_flow_files_are_quarantined_and_the_item_substituted(
    motion_data: tuple[Path, Path], tmp_path: Path
) -> None:
    videos, flow = motion_data
    entries = [
        VideoEntry("DiscMovingRight/v_DiscMovingRight_g01_c01", videos / "x.mp4", 0),  # flow ok (video path unused)
        VideoEntry("missing/none", videos / "none.mp4", 0),
    ]
    quarantine = tmp_path / "q.tsv"
    settings = FrameTransformSettings(crop_size=24, short_side=32)
    ds = TwoStreamDataset(
        entries, StreamInput.FLOW, Mode.EVAL, SegmentSampling(stack_length=4), settings, None, flow, frames=2
    )
    ds.set_quarantine_path(quarantine)
    with pytest.warns(RuntimeWarning, match="missing/none.h5: no flow file"):
        item = ds[2]  # video 1, view 0: its flow is missing -> video 0 of the same class
    assert item["group"] == 0
    assert QuarantineLog.read(quarantine)[0][0] == str(videos / "none.mp4")


def test_both_mode_refuses_a_flow_file_that_disagrees_with_its_video(
    motion_data: tuple[Path, Path], tmp_path: Path
) -> None:
    videos, flow = motion_data
    ids = ["DiscMovingRight/v_DiscMovingRight_g01_c01", "DiscMovingRight/v_DiscMovingRight_g02_c01"]
    bad_root = tmp_path / "flow"
    for vid in ids:
        target = flow_path(bad_root, vid)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(flow_path(flow, vid).read_bytes())
    with h5py.File(flow_path(bad_root, ids[0]), "r+") as f:  # claims one frame more than the video has
        n = int(f.attrs["video_frames"])
        f.attrs["video_frames"] = n + 1
        data = f["flow"][:]
        del f["flow"], f["frame_indices"]
        f.create_dataset("flow", data=np.concatenate([data, data[-1:]]))
        f.create_dataset("frame_indices", data=np.stack([np.arange(n), np.arange(1, n + 1)], 1))
    entries = [VideoEntry(vid, videos / f"{vid}.mp4", 0) for vid in ids]
    settings = FrameTransformSettings(crop_size=24, short_side=32)
    reader = RobustVideoReader()
    ds = TwoStreamDataset(
        entries, StreamInput.BOTH, Mode.EVAL, SegmentSampling(stack_length=4), settings, reader, bad_root, frames=1
    )
    with pytest.warns(RuntimeWarning, match=f"made from {n + 1} frames but the video .* has {n} decodable"):
        item = ds[0]
    assert item["group"] == 1 and set(item["inputs"]) == {"rgb", "flow"}


def test_a_video_shorter_than_the_stack_repeats_its_edge_with_a_warning(motion_data: tuple[Path, Path]) -> None:
    videos, flow = motion_data
    entry = VideoEntry("DiscMovingUp/v_DiscMovingUp_g01_c01", videos / "x.mp4", 0)  # 8 frames: 7 fields
    settings = FrameTransformSettings(crop_size=24, short_side=32)
    ds = TwoStreamDataset([entry], StreamInput.FLOW, Mode.EVAL, SegmentSampling(stack_length=10), settings, None, flow)
    with pytest.warns(RuntimeWarning, match="7 flow fields, fewer than the stack length 10"):
        item = ds[0]
    assert item["inputs"].shape == (20, 24, 24)
    assert torch.equal(item["inputs"][-2:], item["inputs"][12:14])  # fields 7..9 repeat field 6


def test_stream_checkpoints_carry_a_deployment_spec_streaming_is_built_from(motion_data: tuple[Path, Path]) -> None:
    from vidrec.spec import DeploymentSpec
    from vidrec.streaming.two_stream import two_stream_settings

    videos, flow = motion_data
    transform = FrameTransformSettings(crop_size=24, short_side=32)
    sampling = SegmentSampling(stack_length=4)
    specs = {}
    for name in ("rgb", "flow"):
        dm = TwoStreamDataModule(videos, input=name, flow_root=flow, sampling=sampling, transform=transform)
        spec = dm.deployment_spec()
        specs[name] = DeploymentSpec.from_dict(spec.to_dict())  # plain types, as stored in a checkpoint
        assert specs[name].to_dict() == spec.to_dict()
        example = dm.example_input()
        assert example is not None and example.shape == ((1, 3, 24, 24) if name == "rgb" else (1, 8, 24, 24))
    assert (specs["rgb"].window, specs["rgb"].channels, specs["rgb"].frame_size) == (1, ["R", "G", "B"], (24, 24))
    assert (specs["flow"].window, specs["flow"].channels) == (4, ["x", "y"])
    flow_spec = specs["flow"].two_stream
    assert flow_spec is not None and flow_spec.flow == FlowSettings(short_side=None).as_dict()
    assert (flow_spec.input, flow_spec.stack_length, flow_spec.transform_short_side) == ("flow", 4, 32)
    assert specs["rgb"].two_stream is not None and specs["rgb"].two_stream.flow == {}
    assert "two_stream" not in specs["flow"].data_source
    settings = two_stream_settings(specs["rgb"], specs["flow"])
    assert settings["stack_length"] == 4 and settings["flow"].as_dict() == FlowSettings(short_side=None).as_dict()
    assert settings["rgb_transform"].short_side == 32 and settings["flow_transform"].crop_size == 24
    with pytest.raises(ValueError, match="flow checkpoint's deployment spec has a two-stream spec of input 'rgb'"):
        two_stream_settings(specs["rgb"], specs["rgb"])

    # checkpoints written before the typed field carried the same dict in data_source["two_stream"]
    legacy = {}
    for name, spec in specs.items():
        stored = spec.to_dict()
        info = stored.pop("two_stream")
        if name == "flow":
            info.pop("transform_short_side")  # the earliest of them lacked it: the crop or the stored short side
        stored["data_source"] = {**stored["data_source"], "two_stream": info}
        legacy[name] = DeploymentSpec.from_dict(stored)
    assert legacy["rgb"].two_stream == specs["rgb"].two_stream
    assert legacy["flow"].two_stream is not None and legacy["flow"].two_stream.transform_short_side == 24
    assert two_stream_settings(legacy["rgb"], legacy["flow"])["flow"].as_dict() == settings["flow"].as_dict()
    broken = specs["flow"].to_dict()
    broken["two_stream"]["input"] = "depth"
    with pytest.raises(ValueError, match="ckpt.pt: spec.two_stream.input: 'depth' is not one of"):
        DeploymentSpec.from_dict(broken, "ckpt.pt")


@pytest.mark.parametrize("command", ["stream", "evaluate-streaming"])
def test_a_lone_stream_checkpoint_is_pointed_to_its_partner(
    motion_data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    import argparse
    import types

    from vidrec.streaming import command as streaming

    videos, flow = motion_data
    parser = argparse.ArgumentParser()
    streaming.add_parser(parser.add_subparsers())
    transform = FrameTransformSettings(crop_size=24, short_side=32)
    for name, hint in (
        ("rgb", "--checkpoint s.ckpt --flow-checkpoint FLOW.ckpt"),
        ("flow", "--flow-checkpoint s.ckpt"),
    ):
        spec = TwoStreamDataModule(videos, input=name, flow_root=flow, transform=transform).deployment_spec()
        loaded = types.SimpleNamespace(require_spec=lambda spec=spec: spec)
        monkeypatch.setattr(streaming, "load_classifier", lambda path, loaded=loaded: loaded)
        args = parser.parse_args([command, "--checkpoint", "s.ckpt", *(["--out", "o"] if command != "stream" else [])])
        with pytest.raises(ValueError, match=f"s.ckpt: the {name} stream .* not streamable alone.*{hint}"):
            args.func(args)
