"""Body selection and denoising, the pose-pickle and generic-folder importers, the NTU protocols."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from datamodules.skeleton.importers import import_pose_pickle, import_skeleton_folder, load_pose_pickle
from datamodules.skeleton.ntu_convert import select_bodies
from datamodules.skeleton.ntu_format import BodyTrack, SkeletonFile
from datamodules.skeleton.protocols import (
    NTU60_XSUB_TRAIN_PERFORMERS,
    NTU120_XSUB_TRAIN_PERFORMERS,
    Protocol,
    is_training_sample,
)
from datamodules.skeleton.schema import SampleInfo, read_skeleton_info


def _person(frames: np.ndarray, motion: float, rng: np.random.Generator) -> BodyTrack:
    base = np.stack([rng.uniform(-0.2, 0.2, 25), np.linspace(-0.9, 0.7, 25), np.full(25, 3.0)], 1)
    wave = motion * np.sin(frames / 3.0)[:, None, None] * np.array([1.0, 0.5, 0.0])
    return BodyTrack(str(motion), frames, (base[None] + wave).astype(np.float32))


def test_noise_bodies_are_removed_and_actors_ranked_by_motion() -> None:
    rng = np.random.default_rng(0)
    t = 40
    calm = _person(np.arange(5, 35), 0.01, rng)
    active = _person(np.arange(3, 37), 0.3, rng)
    flicker = _person(np.arange(10, 16), 1.0, rng)  # 6 frames: noise by length
    table = BodyTrack(
        "table",
        np.arange(0, t),
        np.tile(np.stack([np.linspace(-1, 1, 25), np.zeros(25), np.full(25, 2.0)], 1), (t, 1, 1)),
    )
    sk = SkeletonFile("x.skeleton", t, [calm, flicker, table, active])
    joints = select_bodies(sk)
    # frames 0-2 and 37-39 hold only noise bodies: trimmed; the most active body is actor 1
    assert joints.shape == (2, 34, 25, 3)
    np.testing.assert_allclose(joints[0], active.joints)
    np.testing.assert_allclose(joints[1, 2:32], calm.joints)
    assert not joints[1, :2].any() and not joints[1, 32:].any()


def test_non_overlapping_bodies_join_the_first_actor_track() -> None:
    rng = np.random.default_rng(1)
    first = _person(np.arange(0, 20), 0.3, rng)
    second = _person(np.arange(20, 40), 0.2, rng)  # the same person re-tracked under a new id
    joints = select_bodies(SkeletonFile("x.skeleton", 40, [first, second]))
    assert joints.shape == (2, 40, 25, 3) and not joints[1].any()


def _annotation(name: str, label: int, keypoint: np.ndarray) -> dict:
    return {"frame_dir": name, "label": label, "keypoint": keypoint, "total_frames": keypoint.shape[1]}


def test_pose_pickles_import_with_their_splits_and_skip_wrong_ranks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = rng.normal(size=(1, 30, 25, 3)).astype(np.float32)
    blob = {
        "split": {"xsub_train": ["S001C001P001R001A001"], "xsub_val": ["S001C001P003R001A002"]},
        "annotations": [
            _annotation("S001C001P001R001A001", 0, good),
            _annotation("S001C001P003R001A002", 1, rng.normal(size=(2, 12, 25, 3))),
            _annotation("S001C001P004R001A002", 1, rng.normal(size=(30, 25, 3))),  # rank 3
        ],
    }
    path = tmp_path / "ntu60_3d.pkl"
    path.write_bytes(pickle.dumps(blob, protocol=4))
    n, skipped = import_pose_pickle(path, tmp_path / "out.h5", train_split="xsub_train", test_split="xsub_val")
    assert n == 2
    assert len(skipped) == 1 and "S001C001P004R001A002" in skipped[0][0] and "rank 4" in skipped[0][1]
    info = read_skeleton_info(tmp_path / "out.h5")
    assert [(s.split, s.performer, s.frames) for s in info.samples] == [("train", 1, 30), ("test", 3, 12)]
    assert info.skipped and info.num_joints == 25


class _Exploit:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo owned",))


def test_pickles_that_would_run_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"annotations": [_Exploit()]}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|os|nt)\.system"):
        load_pose_pickle(path)
    arrays = tmp_path / "arrays.pkl"
    arrays.write_bytes(pickle.dumps({"a": np.arange(3.0), "b": [np.float32(1), (1, "x")]}, protocol=2))
    loaded = load_pose_pickle(arrays)
    np.testing.assert_array_equal(loaded["a"], np.arange(3.0))


def test_generic_folder_reads_npz_and_csv_and_lists_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "poses"
    root.mkdir()
    joints = np.random.default_rng(0).normal(size=(12, 17, 3)).astype(np.float32)  # (T, V, C), a 17-joint layout
    np.savez(root / "clip_a.npz", joints=joints)
    rows = ["frame,body,joint,x,y,z"] + [
        f"{t},0,{v},{joints[t, v, 0]},{joints[t, v, 1]},{joints[t, v, 2]}" for t in range(12) for v in range(17)
    ]
    (root / "clip_b.csv").write_text("\n".join(rows) + "\n")
    (root / "index.csv").write_text(
        "name,label,performer,camera,split\nclip_a,0,1,1,train\nclip_b,1,2,1,test\nclip_c,1,3,1,test\n"
    )
    n, skipped = import_skeleton_folder(root, tmp_path / "out.h5")
    assert n == 2 and len(skipped) == 1 and "clip_c" in skipped[0][0] and "listed in" in skipped[0][1]
    info = read_skeleton_info(tmp_path / "out.h5")
    assert info.num_joints == 17 and info.layout == "17joints" and info.coords == ["x", "y", "z"]
    import h5py

    with h5py.File(tmp_path / "out.h5") as f:
        np.testing.assert_allclose(f["samples/clip_b"][0], joints, atol=1e-5)
        np.testing.assert_allclose(f["samples/clip_a"][0], joints)


def test_ntu_protocols_follow_the_official_lists() -> None:
    assert len(NTU60_XSUB_TRAIN_PERFORMERS) == 20 and len(NTU120_XSUB_TRAIN_PERFORMERS) == 53
    s = SampleInfo("S018C001P045R001A061", 60, performer=45, camera=1, setup=18)
    assert is_training_sample(Protocol.NTU120_XSUB, s) and not is_training_sample(Protocol.NTU60_XSUB, s)
    assert is_training_sample(Protocol.NTU120_XSET, s)  # even setup
    assert not is_training_sample(Protocol.NTU60_XVIEW, s)  # camera 1 is the cross-view test camera
