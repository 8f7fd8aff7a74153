"""Skeletons from other tools into ``vidrec.skeleton/1``: pyskl / mmaction2 pickles and a generic NPZ/CSV folder.

**pyskl / mmaction2 pickles** ("Revisiting Skeleton-based Action Recognition", Duan et al., CVPR 2022) hold
``dict(split={name: [frame_dir, ...]}, annotations=[dict(frame_dir, label, keypoint (M, T, V, C), total_frames,
...)])``. A pickle is a program: loading an untrusted one with ``pickle.load`` can run any code. ``load_pose_pickle``
therefore unpickles with a restricted ``Unpickler`` that builds only plain containers and scalars (dict, list, tuple,
set, str, bytes, numbers, bool, None) and NumPy arrays, dtypes and scalars; any other global in the stream is
refused with ``pickle.UnpicklingError`` naming it, before anything is called.

**Generic folder** (bring skeletons from any pose estimator): ``index.csv`` with a header and the columns
``name,label,performer`` (optional ``camera,setup,replication,split``), and per sample either ``<name>.npz`` with an
array ``joints`` of shape ``(M, T, V, C)`` or ``(T, V, C)``, or ``<name>.csv`` with the header
``frame,body,joint,<coord>,...`` and one row per joint (frames, bodies and joints 0-based).

Both importers skip a broken sample (wrong rank, missing file, bad values) with a reason naming the file and what
was expected, and return the skipped list beside the number written.
"""

from __future__ import annotations

import csv
import io
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.skeleton.ntu_format import parse_sample_name
from datamodules.skeleton.schema import SampleInfo, SkeletonSample, write_skeleton_samples

__all__ = ["RestrictedUnpickler", "load_pose_pickle", "import_pose_pickle", "import_skeleton_folder"]

_ALLOWED_GLOBALS = {
    ("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int")
} | {
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles of NumPy arrays store their bytes through it
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An ``Unpickler`` that resolves only plain containers, scalars and NumPy arrays/dtypes/scalars."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load global {module}.{name}: skeleton pickles may hold only dicts, lists, "
            "strings, numbers and NumPy arrays (a pickle can run code, so nothing else is unpickled)"
        )


def load_pose_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with ``RestrictedUnpickler`` (plain types and NumPy arrays only)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, str(path)).load()  # type: ignore[arg-type]


def _fields(name: str) -> dict[str, int]:
    try:
        n = parse_sample_name(name)
    except ValueError:
        return {}
    return {"performer": n.performer, "camera": n.camera, "setup": n.setup, "replication": n.replication}


def import_pose_pickle(
    path: str | Path,
    out: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    train_split: str | None = None,
    test_split: str | None = None,
    max_bodies: int = 2,
) -> tuple[int, list[tuple[str, str]]]:
    """Convert a pyskl / mmaction2 skeleton pickle into ``vidrec.skeleton/1``.

    Args:
        path: The pickle.
        out: HDF5 file to write.
        class_names: K names; default ``"0" ... "K-1"`` from the largest label.
        train_split: Key of the pickle's ``split`` dict whose samples get ``split="train"`` (e.g. ``"xsub_train"``).
        test_split: Key whose samples get ``split="test"``.
        max_bodies: Bodies kept (the first ``max_bodies`` of ``keypoint``); fewer are zero-padded.

    Returns:
        ``(written, skipped)`` with ``(frame_dir or index, reason)`` per skipped annotation.

    Raises:
        pickle.UnpicklingError: the pickle holds anything but plain types and NumPy arrays.
        ValueError: the pickle is not ``dict(annotations=[...])`` or a named split does not exist.
    """
    path = str(path)
    blob = load_pose_pickle(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("annotations"), list):
        raise ValueError(f"{path}: expected dict(split=..., annotations=[...]), got {type(blob).__name__}")
    splits = blob.get("split") or {}
    membership: dict[str, str] = {}
    for key, value in (("train", train_split), ("test", test_split)):
        if value is None:
            continue
        if value not in splits:
            raise ValueError(f"{path}: split {value!r} not in the pickle's splits {sorted(splits)}")
        membership.update({str(n): key for n in splits[value]})
    annotations: list[Any] = blob["annotations"]
    labels = [int(a["label"]) for a in annotations if isinstance(a, dict) and "label" in a]
    names = list(class_names) if class_names else [str(i) for i in range(max(labels, default=0) + 1)]
    skipped: list[tuple[str, str]] = []
    num_joints: list[int] = []

    def samples() -> Iterator[SkeletonSample]:
        for i, ann in enumerate(annotations):
            where = str(ann.get("frame_dir", f"annotation {i}")) if isinstance(ann, dict) else f"annotation {i}"
            try:
                kp = np.asarray(ann["keypoint"], dtype=np.float32)
                if kp.ndim != 4:
                    raise ValueError(f"keypoint must have rank 4 (M, T, V, C), got shape {kp.shape}")
                if num_joints and kp.shape[2] != num_joints[0]:
                    raise ValueError(f"keypoint has {kp.shape[2]} joints, the file's first sample {num_joints[0]}")
                if not np.isfinite(kp).all():
                    raise ValueError("keypoint holds non-finite values")
                num_joints[:1] = [kp.shape[2]]
                joints = np.zeros((max_bodies, *kp.shape[1:]), dtype=np.float32)
                joints[: min(max_bodies, kp.shape[0])] = kp[:max_bodies]
                info = SampleInfo(
                    name=where.replace("/", "_"),
                    label=int(ann["label"]),
                    **{"performer": 0, **_fields(where)},  # type: ignore[arg-type]
                    split=membership.get(where),
                )
            except (KeyError, TypeError, ValueError) as err:
                skipped.append((f"{path}: {where}", str(err)))
                continue
            yield SkeletonSample(info, joints)

    n = write_skeleton_samples(out, samples(), class_names=names, source=f"pyskl/mmaction2 pickle {path}")
    _append_skipped(out, skipped)
    return n, skipped


def _append_skipped(out: str | Path, skipped: list[tuple[str, str]]) -> None:
    if not skipped:
        return
    import h5py

    with h5py.File(str(out), "a") as h5:
        h5.create_dataset("skipped", data=np.array([f"{a}\t{b}" for a, b in skipped], dtype=h5py.string_dtype()))


def _read_sample_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["frame", "body", "joint"] or len(header) < 4:
            raise ValueError(f"{path}: header must be frame,body,joint,<coord>,..., got {header}")
        rows = np.array([[float(v) for v in r] for r in reader if r], dtype=np.float64)
    if rows.size == 0:
        raise ValueError(f"{path}: no rows")
    idx = rows[:, :3].astype(np.int64)
    if (idx < 0).any():
        raise ValueError(f"{path}: negative frame/body/joint index")
    t, m, v = idx.max(axis=0) + 1
    joints = np.zeros((m, t, v, rows.shape[1] - 3), dtype=np.float32)
    joints[idx[:, 1], idx[:, 0], idx[:, 2]] = rows[:, 3:]
    return joints


def import_skeleton_folder(
    root: str | Path, out: str | Path, *, class_names: Sequence[str] | None = None, max_bodies: int = 2
) -> tuple[int, list[tuple[str, str]]]:
    """Convert a generic folder (``index.csv`` + ``<name>.npz`` / ``<name>.csv``) into ``vidrec.skeleton/1``.

    Returns:
        ``(written, skipped)``; a sample listed in ``index.csv`` without a readable file is skipped with the path.

    Raises:
        FileNotFoundError: ``index.csv`` is missing.
        ValueError: ``index.csv`` lacks the required columns.
    """
    root = Path(root)
    index = root / "index.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{index} does not exist (expected columns name,label,performer[,camera,...])")
    with index.open(newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"name", "label", "performer"}
    if not rows or not required <= set(rows[0]):
        raise ValueError(f"{index}: expected the columns {sorted(required)}, got {sorted(rows[0]) if rows else []}")
    labels = [int(r["label"]) for r in rows]
    names = list(class_names) if class_names else [str(i) for i in range(max(labels) + 1)]
    skipped: list[tuple[str, str]] = []
    shapes: list[tuple[int, int]] = []

    def samples() -> Iterator[SkeletonSample]:
        for r in rows:
            name = r["name"]
            npz, csv_file = root / f"{name}.npz", root / f"{name}.csv"
            try:
                if npz.is_file():
                    with np.load(npz, allow_pickle=False) as z:
                        joints = np.asarray(z["joints"], dtype=np.float32)
                elif csv_file.is_file():
                    joints = _read_sample_csv(csv_file)
                else:
                    raise FileNotFoundError(f"listed in {index} but neither {npz.name} nor {csv_file.name} exists")
                if joints.ndim == 3:
                    joints = joints[None]  # (T, V, C) -> (1, T, V, C)
                if joints.ndim != 4:
                    raise ValueError(f"joints must be (M, T, V, C) or (T, V, C), got shape {joints.shape}")
                if shapes and joints.shape[2:] != shapes[0]:
                    raise ValueError(f"joints are (V, C)={joints.shape[2:]}, the first sample's {shapes[0]}")
                shapes[:1] = [joints.shape[2:]]
                padded = np.zeros((max_bodies, *joints.shape[1:]), dtype=np.float32)
                padded[: min(max_bodies, joints.shape[0])] = joints[:max_bodies]
                info = SampleInfo(
                    name=name,
                    label=int(r["label"]),
                    performer=int(r["performer"]),
                    camera=int(r.get("camera") or 0),
                    setup=int(r.get("setup") or 0),
                    replication=int(r.get("replication") or 0),
                    split=r.get("split") if r.get("split") in ("train", "test") else None,
                )
            except (OSError, KeyError, ValueError) as err:
                skipped.append((str(root / name), str(err)))
                continue
            yield SkeletonSample(info, padded)

    n = write_skeleton_samples(out, samples(), class_names=names, source=f"generic skeleton folder {root}")
    _append_skipped(out, skipped)
    return n, skipped
