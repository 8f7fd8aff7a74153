"""On-disk contract for skeleton action samples: ``vidrec.skeleton/1``.

One HDF5 file holds the samples of one data set, each a short clip of one action::

    /                                   root attributes
        schema         str              "vidrec.skeleton/1"
        layout         str              joint layout, "ntu25" (Kinect v2's 25 joints, NTU order) or another name
        num_joints     int              V
        coords         list[str]        C coordinate names, e.g. ["x", "y", "z"] (NTU: camera space, metres)
        class_names    list[str]        K names; label k means class_names[k]
        source         str (optional)   where the data came from (citation / licence / converter)
    /samples/<name>                     one dataset per sample (<name>: NTU's SsssCcccPpppRrrrAaaa or any id)
        float32 (M, T, V, C)            M bodies (absent bodies all zero), T frames, V joints, C coordinates
        attrs:
            label        int            class index in [0, K)
            performer    int            who performed it (cross-subject splits)
            camera       int            camera / view id (cross-view splits), 0 when unknown
            setup        int            recording setup (NTU-120 cross-setup), 0 when unknown
            replication  int            repetition, 0 when unknown
            frames       int            T
            split        str (optional) "train" or "test" where the source names the membership
    /skipped                            (optional) str (n,): "<name>\t<reason>" for every input the converter
                                        skipped (official missing-skeleton list, broken files, empty samples)

Samples are read back in the order they were written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = [
    "SCHEMA",
    "NTU25_LAYOUT",
    "SkeletonSample",
    "SampleInfo",
    "SkeletonFileInfo",
    "SkeletonSchemaError",
    "write_skeleton_samples",
    "read_skeleton_info",
    "read_skeleton_sample",
]

SCHEMA = "vidrec.skeleton/1"
NTU25_LAYOUT = "ntu25"


class SkeletonSchemaError(ValueError):
    """A file or sample does not follow ``vidrec.skeleton/1``; the message names the file, the key and the rule."""


@dataclass
class SampleInfo:
    """The metadata of one sample (everything but the joints)."""

    name: str
    label: int
    performer: int
    camera: int = 0
    setup: int = 0
    replication: int = 0
    frames: int = 0
    split: str | None = None  # "train" / "test" where the source says (pose pickles, generic folders), else None


@dataclass
class SkeletonSample:
    """One sample: ``joints`` is ``(M, T, V, C)`` float32; ``info.frames`` is set from it when written."""

    info: SampleInfo
    joints: np.ndarray


@dataclass(frozen=True)
class SkeletonFileInfo:
    """Root attributes and the per-sample metadata of a schema file, read without loading any joints."""

    path: str
    layout: str
    num_joints: int
    coords: list[str]
    class_names: list[str]
    source: str | None
    samples: list[SampleInfo]
    skipped: list[tuple[str, str]]

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.class_names)


def _check_sample(path: str, sample: SkeletonSample, num_joints: int, num_coords: int, num_classes: int) -> None:
    j = sample.joints
    where = f"{path}: sample {sample.info.name!r}"
    if j.ndim != 4 or j.shape[2] != num_joints or j.shape[3] != num_coords:
        raise SkeletonSchemaError(
            f"{where}: joints must be (M, T, V={num_joints}, C={num_coords}), got shape {tuple(j.shape)}"
        )
    if j.shape[0] < 1 or j.shape[1] < 1:
        raise SkeletonSchemaError(f"{where}: joints need at least one body and one frame, got {tuple(j.shape)}")
    if not np.isfinite(j).all():
        raise SkeletonSchemaError(f"{where}: joints hold non-finite values")
    if not 0 <= sample.info.label < num_classes:
        raise SkeletonSchemaError(f"{where}: label {sample.info.label} is not in [0, {num_classes})")


def write_skeleton_samples(
    path: str | Path,
    samples: Iterable[SkeletonSample],
    *,
    class_names: Sequence[str],
    layout: str | None = None,
    num_joints: int | None = None,
    coords: Sequence[str] | None = None,
    source: str | None = None,
    skipped: Sequence[tuple[str, str]] = (),
) -> int:
    """Write samples into a new ``vidrec.skeleton/1`` file (overwrites); returns the number written.

    ``num_joints`` and ``coords`` default to the first sample's V and C (coordinates named x, y, z for C = 3, else
    c0, c1, ...); ``layout`` defaults to "ntu25" for 25 joints, else "<V>joints". Later samples must match.

    Raises:
        SkeletonSchemaError: a sample has the wrong shape, non-finite values, a label outside the classes or a
            duplicate name.
    """
    path = str(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    v, c = num_joints, (list(coords) if coords is not None else None)
    with h5py.File(path, "w") as f:
        f.attrs.update(schema=SCHEMA, class_names=list(class_names))
        if source:
            f.attrs["source"] = source
        group = f.create_group("samples", track_order=True)
        for sample in samples:
            if v is None:
                v = int(sample.joints.shape[2]) if sample.joints.ndim == 4 else 25
            if c is None:
                n_c = int(sample.joints.shape[3]) if sample.joints.ndim == 4 else 3
                c = ["x", "y", "z"] if n_c == 3 else [f"c{i}" for i in range(n_c)]
            _check_sample(path, sample, v, len(c), len(class_names))
            if sample.info.name in group:
                raise SkeletonSchemaError(f"{path}: sample name {sample.info.name!r} appears twice")
            ds = group.create_dataset(sample.info.name, data=sample.joints.astype(np.float32))
            info = sample.info
            ds.attrs.update(
                label=int(info.label),
                performer=int(info.performer),
                camera=int(info.camera),
                setup=int(info.setup),
                replication=int(info.replication),
                frames=int(sample.joints.shape[1]),
            )
            if info.split is not None:
                ds.attrs["split"] = info.split
            n += 1
        v = 25 if v is None else v
        c = ["x", "y", "z"] if c is None else c
        f.attrs.update(num_joints=v, coords=c, layout=layout or (NTU25_LAYOUT if v == 25 else f"{v}joints"))
        if skipped:
            f.create_dataset("skipped", data=np.array([f"{a}\t{b}" for a, b in skipped], dtype=h5py.string_dtype()))
    return n


def _attr(f: h5py.File, path: str, key: str) -> object:
    if key not in f.attrs:
        raise SkeletonSchemaError(f"{path}: root attribute {key!r} is missing (required by {SCHEMA})")
    return f.attrs[key]


def _strings(values: object) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(np.asarray(values))]


def read_skeleton_info(path: str | Path) -> SkeletonFileInfo:
    """Root attributes and per-sample metadata of a ``vidrec.skeleton/1`` file.

    Raises:
        FileNotFoundError: no such file.
        SkeletonSchemaError: another schema, or a required attribute is missing.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} does not exist (create it with `vidrec data ntu-skeleton`, `vidrec data synthetic-skeleton`, "
            "`vidrec data pose-pickle` or `vidrec data skeleton-npz`)"
        )
    with h5py.File(path, "r") as f:
        schema = f.attrs.get("schema")
        if schema != SCHEMA:
            raise SkeletonSchemaError(f"{path}: root attribute 'schema' is {schema!r}, expected {SCHEMA!r}")
        if "samples" not in f:
            raise SkeletonSchemaError(f"{path}: group '/samples' is missing")
        samples = []
        for name, ds in f["samples"].items():
            a = ds.attrs
            if "label" not in a or "performer" not in a:
                raise SkeletonSchemaError(f"{path}: /samples/{name} lacks the 'label' or 'performer' attribute")
            samples.append(
                SampleInfo(
                    name=name,
                    label=int(a["label"]),
                    performer=int(a["performer"]),
                    camera=int(a.get("camera", 0)),
                    setup=int(a.get("setup", 0)),
                    replication=int(a.get("replication", 0)),
                    frames=int(ds.shape[1]),
                    split=str(a["split"]) if "split" in a else None,
                )
            )
        skipped = [tuple(s.split("\t", 1)) for s in _strings(f["skipped"][()])] if "skipped" in f else []
        return SkeletonFileInfo(
            path=path,
            layout=str(_attr(f, path, "layout")),
            num_joints=int(_attr(f, path, "num_joints")),  # type: ignore[call-overload]
            coords=_strings(_attr(f, path, "coords")),
            class_names=_strings(_attr(f, path, "class_names")),
            source=str(f.attrs["source"]) if "source" in f.attrs else None,
            samples=samples,
            skipped=[(s[0], s[1] if len(s) > 1 else "") for s in skipped],
        )


def read_skeleton_sample(f: h5py.File, name: str) -> np.ndarray:
    """The ``(M, T, V, C)`` joints of sample ``name`` from an open file."""
    try:
        return np.asarray(f["samples"][name][()], dtype=np.float32)
    except KeyError:
        raise SkeletonSchemaError(f"{f.filename}: sample /samples/{name} does not exist") from None
