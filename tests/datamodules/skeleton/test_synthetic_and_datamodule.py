"""The synthetic skeleton generator, preprocessing, SkeletonDataModule and one tiny ensemble fit/test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.skeleton.datamodule import SkeletonDataModule
from datamodules.skeleton.ntu_convert import convert_ntu_folder
from datamodules.skeleton.ntu_format import parse_sample_name, read_skeleton_file
from datamodules.skeleton.protocols import Protocol
from datamodules.skeleton.synthetic import SYNTHETIC_CLASSES, SyntheticSkeletonSettings, generate_synthetic_skeletons
from datamodules.skeleton.transforms import (
    LengthMode,
    SkeletonPreprocessing,
    fix_length,
    joints_to_channels,
    preprocess_joints,
)

SETTINGS = SyntheticSkeletonSettings(num_classes=3, performers=3, replications=1, min_frames=30, max_frames=40)


@pytest.fixture(scope="module")
def synthetic_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_skeletons(root / "skeletons", SETTINGS)
    report = convert_ntu_folder(root / "skeletons", root / "s.h5", num_classes=3, class_names=SYNTHETIC_CLASSES[:3])
    assert report.written == 27 and not report.skipped
    return root / "s.h5"


def test_generator_writes_real_skeleton_files_for_every_view(tmp_path: Path) -> None:
    paths = generate_synthetic_skeletons(tmp_path, SyntheticSkeletonSettings(num_classes=2, performers=1, seed=3))
    assert len(paths) == 2 * 1 * 2 * 3  # actions x performers x replications x cameras
    names = sorted(p.stem for p in paths)
    assert names[0] == "S001C001P001R001A001" and {parse_sample_name(n).camera for n in names} == {1, 2, 3}
    views = [read_skeleton_file(tmp_path / f"S001C00{c}P001R001A002.skeleton") for c in (1, 2, 3)]
    assert len({v.num_frames for v in views}) == 1  # one performance seen by three cameras
    main = [max(v.bodies, key=lambda b: len(b.frames)) for v in views]
    heads = [b.joints[:, 3, 1].mean() - b.joints[:, 0, 1].mean() for b in main]  # head above spine base
    assert all(0.5 < h < 0.9 for h in heads)
    # the side cameras see the body turned: x positions of the shoulders differ between the views
    widths = [np.abs(b.joints[:, 4, 0] - b.joints[:, 8, 0]).mean() for b in main]
    assert widths[0] > widths[1] + 0.05 and widths[0] > widths[2] + 0.05


def test_preprocessing_centres_aligns_and_fixes_the_length() -> None:
    rng = np.random.default_rng(0)
    joints = np.zeros((2, 10, 25, 3), dtype=np.float32)
    joints[0] = rng.normal(size=(10, 25, 3)) + np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = preprocess_joints(joints, SkeletonPreprocessing(center=True, align_view=True, normalize_scale=True))
    np.testing.assert_allclose(out[0, 0, 0], 0.0, atol=1e-6)  # spine base at the origin
    hips = out[0, 0, 12] - out[0, 0, 16]
    spine = out[0, 0, 20] - out[0, 0, 0]
    assert abs(hips[1]) < 1e-5 and abs(hips[2]) < 1e-5 and hips[0] > 0  # hips on x
    assert abs(spine[2]) < 1e-5 and spine[1] > 0  # spine in the x-y plane, pointing up
    np.testing.assert_allclose(np.linalg.norm(out[0, :, 20] - out[0, :, 0], axis=1).mean(), 1.0, rtol=1e-5)
    assert not out[1].any()  # the absent second body stays zero
    resampled = fix_length(out, 19, LengthMode.RESAMPLE, None)
    np.testing.assert_allclose(resampled[:, ::2], out, atol=1e-5)
    cropped = fix_length(out, 14, LengthMode.CROP, None)
    assert cropped.shape[1] == 14 and (cropped[:, :4] == out[:, :1]).all()  # edge-padded on the left
    channels = joints_to_channels(out, 2)
    assert channels.shape == (150, 10) and channels[1 * 3 + 2, 4] == out[0, 4, 1, 2]


def test_datamodule_splits_by_protocol_and_reports_missing_list_entries(synthetic_h5: Path, tmp_path: Path) -> None:
    dm = SkeletonDataModule(str(synthetic_h5), protocol=Protocol.NTU60_XSUB, length=32, batch_size=8)
    dm.setup("fit")
    assert {len(v) for v in dm.datasets.values()} == {18, 0, 9}  # performers 1, 2 train; 3 test
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (8, 150, 32) and batch["target"].dtype == torch.long
    xview = SkeletonDataModule(str(synthetic_h5), protocol=Protocol.NTU60_XVIEW, length=32)
    xview.setup("fit")
    assert all(n[4:8] == "C001" for n in xview.split_names["test"]) and len(xview.split_names["train"]) == 18
    listed = tmp_path / "test_list.txt"
    listed.write_text("S001C001P003R001A001\nS001C001P099R001A001\n")
    dm2 = SkeletonDataModule(str(synthetic_h5), protocol=Protocol.NTU60_XSUB, test_list=str(listed), length=32)
    dm2.setup("test")
    assert dm2.split_names["test"] == ["S001C001P003R001A001"]
    assert dm2.missing_from_lists == ["S001C001P099R001A001"]
    with pytest.raises(ValueError, match="protocol CUSTOM needs test_performers"):
        SkeletonDataModule(str(synthetic_h5), protocol=Protocol.CUSTOM)
    with pytest.raises(FileNotFoundError, match="vidrec data ntu-skeleton"):
        SkeletonDataModule(str(tmp_path / "none.h5"))


@pytest.mark.slow
def test_a_tiny_ensemble_fit_reports_every_subnet(synthetic_h5: Path, tmp_path: Path) -> None:
    import lightning as L

    from vidrec.models import build_model
    from vidrec.tasks.classification import Classification

    torch.manual_seed(0)
    dm = SkeletonDataModule(str(synthetic_h5), protocol=Protocol.CUSTOM, test_performers=[3], length=40, batch_size=9)
    model = build_model("skeleton_ensemble", in_channels=150, num_classes=3, window=40, width=4, kernel_size=3)
    task = Classification(model)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    trainer.test(task, datamodule=dm, verbose=False)
    results = json.loads((tmp_path / "test_metrics.json").read_text())
    assert set(results["subnets"]) == {"two_stream", "body_part", "attention", "frame_difference"}
    best = max(v["acc"] for v in results["subnets"].values())
    assert results["fusion_gain"] == pytest.approx(results["test/acc"] - best)
    assert set(results["per_subject"]) == {"3"}
    trainer.save_checkpoint(tmp_path / "m.ckpt")  # the deployment spec is stored as plain types
    # (weights_only=False: this task was built in Python with a default optimizer factory, not by `vidrec fit`)
    spec = json.loads(json.dumps(torch.load(tmp_path / "m.ckpt", weights_only=False)["vidrec"]["spec"]))
    assert spec["modality"] == "skeleton" and spec["window"] == 40 and spec["skeleton"]["centring"] == "first_frame"
