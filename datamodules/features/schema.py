"""The HDF5 per-frame feature file: one documented schema, a writer, a reader and the RGB + flow join.

Written by ``vidrec extract-features`` (``datamodules.features.extract``) and by the ordered-events generator, read
by ``FeatureDataModule``. A feature file always says where it came from::

    /                       attrs: schema = "vidrec-features", version = 1,
                                   feature_dim (D), dtype ("float16" | "float32"),
                                   class_names (JSON list, label k -> name),
                                   sampling (JSON: {"mode": "uniform" | "every", "frames": F}),
                                   extractor (JSON: kind, name, settings, checkpoint path and sha256, ...),
                                   extractor_hash (sha256 of the extractor JSON: files agree iff their hashes do),
                                   source (data set root or generator), created (UTC ISO time)
    /videos/<key>           one group per video; <key> is the video's path relative to the data set root with "/"
                            written as "__" (HDF5 names cannot hold "/"); attrs:
                                   path (relative path), label (int), split ("train" | "val" | "test"),
                                   fps (float), num_frames (decodable frames of the video), complete (bool)
    /videos/<key>/features       (T, D) float16 or float32: one feature vector per sampled frame, in time order
    /videos/<key>/frame_indices  (T,) int64: the native frame index of each row
    /quarantine             attrs: entries (JSON list of [path, reason]): videos that could not be decoded

``complete`` is written last, so a crashed extraction resumes at the first incomplete video.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "FeatureFileError",
    "FeatureFileInfo",
    "VideoFeatures",
    "FeatureWriter",
    "FeatureReader",
    "video_key",
    "extractor_hash",
    "join_feature_files",
]

SCHEMA = "vidrec-features"
SCHEMA_VERSION = 1
_DTYPES = ("float16", "float32")


class FeatureFileError(ValueError):
    """A feature file is missing, of another schema, or does not match what the reader expects (names the file)."""


def video_key(relative_path: str) -> str:
    """HDF5 group name of a video: its relative path with ``/`` as ``__``."""
    return relative_path.replace("\\", "/").replace("/", "__")


def extractor_hash(extractor: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of an extractor description."""
    return hashlib.sha256(json.dumps(extractor, sort_keys=True).encode()).hexdigest()


@dataclass
class FeatureFileInfo:
    """The root attributes of a feature file."""

    feature_dim: int  # D
    dtype: str  # "float16" or "float32"
    class_names: list[str]  # label k -> name
    sampling: dict[str, Any]  # {"mode": "uniform", "frames": 25} or {"mode": "every", "frames": None}
    extractor: dict[str, Any]  # kind, name, settings, checkpoint path/sha256 (JSON-serialisable)
    source: str = ""  # data set root or generator
    extractor_hash: str = field(default="")

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"feature dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if not self.extractor_hash:
            self.extractor_hash = extractor_hash(self.extractor)


@dataclass
class VideoFeatures:
    """The features of one video."""

    key: str
    path: str  # relative to the data set root
    features: np.ndarray  # (T, D)
    frame_indices: np.ndarray  # (T,) int64
    label: int
    split: str
    fps: float
    num_frames: int


class FeatureWriter:
    """Appends videos to a feature file; reopening an existing file resumes it.

    Args:
        path: the HDF5 file.
        info: what the file holds. When the file exists its ``extractor_hash`` and ``feature_dim`` must match
            (resuming with another extractor would mix features), else ``FeatureFileError``.
    """

    def __init__(self, path: str | Path, info: FeatureFileInfo) -> None:
        self.path = Path(path)
        self.info = info
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = h5py.File(self.path, "a")
        attrs = self._h5.attrs
        if "schema" in attrs:
            _check_schema(self._h5, self.path)
            theirs, their_dim = str(attrs["extractor_hash"]), int(attrs["feature_dim"])
            if theirs != info.extractor_hash or their_dim != info.feature_dim:
                self._h5.close()
                raise FeatureFileError(
                    f"{self.path}: written by another extractor (extractor_hash {theirs[:12]}, feature_dim "
                    f"{their_dim}); expected {info.extractor_hash[:12]}, D={info.feature_dim}. "
                    "Write to a new file or delete this one"
                )
        else:
            attrs.update(
                schema=SCHEMA,
                version=SCHEMA_VERSION,
                feature_dim=info.feature_dim,
                dtype=info.dtype,
                class_names=json.dumps(info.class_names),
                sampling=json.dumps(info.sampling),
                extractor=json.dumps(info.extractor, sort_keys=True),
                extractor_hash=info.extractor_hash,
                source=info.source,
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            )
        self._videos = self._h5.require_group("videos")
        self._quarantine = self._h5.require_group("quarantine")

    def done(self, key: str) -> bool:
        """True when ``key`` was written completely (resume skips it)."""
        return key in self._videos and bool(self._videos[key].attrs.get("complete", False))

    def write(self, video: VideoFeatures) -> None:
        """Write one video (replacing an incomplete earlier attempt) and flush."""
        feats = np.asarray(video.features)
        if feats.ndim != 2 or feats.shape[1] != self.info.feature_dim:
            raise FeatureFileError(
                f"{self.path}: video {video.path} has features {feats.shape}, expected (T, {self.info.feature_dim})"
            )
        if len(video.frame_indices) != len(feats):
            raise FeatureFileError(
                f"{self.path}: video {video.path}: {len(video.frame_indices)} frame indices "
                f"for {len(feats)} feature rows"
            )
        if video.key in self._videos:
            del self._videos[video.key]
        group = self._videos.create_group(video.key)
        group.create_dataset("features", data=feats.astype(self.info.dtype))
        group.create_dataset("frame_indices", data=np.asarray(video.frame_indices, dtype=np.int64))
        group.attrs.update(
            path=video.path,
            label=int(video.label),
            split=video.split,
            fps=float(video.fps),
            num_frames=int(video.num_frames),
        )
        group.attrs["complete"] = True  # last: a crash before this line leaves the video to redo
        self._h5.flush()

    def quarantine(self, path: str, reason: str) -> None:
        """Record a video that could not be read."""
        entries = json.loads(self._quarantine.attrs.get("entries", "[]"))
        entries = [e for e in entries if e[0] != path] + [[path, reason]]
        self._quarantine.attrs["entries"] = json.dumps(entries)
        self._h5.flush()

    def close(self) -> None:
        """Close the file."""
        self._h5.close()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_schema(h5: h5py.File, path: Path) -> None:
    if h5.attrs.get("schema") != SCHEMA:
        raise FeatureFileError(
            f"{path} is not a vidrec feature file (attribute schema={h5.attrs.get('schema')!r}, expected {SCHEMA!r})"
        )
    if int(h5.attrs.get("version", -1)) != SCHEMA_VERSION:
        raise FeatureFileError(f"{path}: feature schema version {h5.attrs.get('version')}, expected {SCHEMA_VERSION}")


class FeatureReader:
    """Reads a feature file (complete videos only).

    Raises:
        FeatureFileError: the file does not exist, is of another schema, or (``expected_feature_dim``) holds features
            of another dimension.
    """

    def __init__(self, path: str | Path, expected_feature_dim: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatureFileError(f"feature file {self.path} does not exist (write it with `vidrec extract-features`)")
        with h5py.File(self.path, "r") as h5:
            _check_schema(h5, self.path)
            a = h5.attrs
            self.info = FeatureFileInfo(
                feature_dim=int(a["feature_dim"]),
                dtype=str(a["dtype"]),
                class_names=json.loads(a["class_names"]),
                sampling=json.loads(a["sampling"]),
                extractor=json.loads(a["extractor"]),
                source=str(a.get("source", "")),
                extractor_hash=str(a["extractor_hash"]),
            )
            videos = h5.get("videos")
            self.keys: list[str] = (
                sorted(k for k in videos if bool(videos[k].attrs.get("complete", False))) if videos else []
            )
            q = h5.get("quarantine")
            self.quarantined: list[tuple[str, str]] = (
                [(str(p), str(r)) for p, r in json.loads(q.attrs.get("entries", "[]"))] if q is not None else []
            )
        if expected_feature_dim is not None and expected_feature_dim != self.info.feature_dim:
            raise FeatureFileError(
                f"{self.path}: feature_dim is {self.info.feature_dim} (extractor {self.info.extractor.get('name')!r}), "
                f"expected {expected_feature_dim}: a feature file of another extractor"
            )

    def read(self, keys: Sequence[str] | None = None) -> Iterator[VideoFeatures]:
        """Yield the videos ``keys`` (all complete videos when None); a key not in the file raises, naming it."""
        with h5py.File(self.path, "r") as h5:
            videos = h5["videos"] if "videos" in h5 else {}
            for key in self.keys if keys is None else keys:
                if key not in videos or not bool(videos[key].attrs.get("complete", False)):
                    raise FeatureFileError(
                        f"{self.path}: video {key!r} is not in the feature file (videos/{key} missing or incomplete)"
                    )
                g = videos[key]
                yield VideoFeatures(
                    key=key,
                    path=str(g.attrs["path"]),
                    features=g["features"][()],
                    frame_indices=g["frame_indices"][()],
                    label=int(g.attrs["label"]),
                    split=str(g.attrs["split"]),
                    fps=float(g.attrs["fps"]),
                    num_frames=int(g.attrs["num_frames"]),
                )


@dataclass
class JoinReport:
    """What ``join_feature_files`` did."""

    joined: int
    only_in_first: list[str]
    only_in_second: list[str]


def join_feature_files(first: str | Path, second: str | Path, out: str | Path, *, strict: bool = False) -> JoinReport:
    """Concatenate two feature files (e.g. RGB and flow) per video into ``(T, D_1 + D_2)``.

    Videos in only one file are skipped and reported (``strict`` raises instead). Both files must list the same
    classes, and each joined video the same frame indices, label and split, else ``FeatureFileError`` naming the
    video and both files.
    """
    a, b = FeatureReader(first), FeatureReader(second)
    if a.info.class_names != b.info.class_names:
        raise FeatureFileError(f"{first} and {second} list different classes; expected the same data set")
    only_a = sorted(set(a.keys) - set(b.keys))
    only_b = sorted(set(b.keys) - set(a.keys))
    if strict and (only_a or only_b):
        missing = [f"{k} (not in {second})" for k in only_a[:3]] + [f"{k} (not in {first})" for k in only_b[:3]]
        raise FeatureFileError(f"joining {first} and {second}: videos missing from one file: {', '.join(missing)}")
    common = sorted(set(a.keys) & set(b.keys))
    dtype = "float32" if "float32" in (a.info.dtype, b.info.dtype) else "float16"
    info = FeatureFileInfo(
        feature_dim=a.info.feature_dim + b.info.feature_dim,
        dtype=dtype,
        class_names=a.info.class_names,
        sampling=a.info.sampling,
        extractor={
            "kind": "join",
            "name": "join",
            "parts": [a.info.extractor, b.info.extractor],
            "part_hashes": [a.info.extractor_hash, b.info.extractor_hash],
            "files": [str(first), str(second)],
        },
        source=a.info.source or b.info.source,  # the data set root the video paths are relative to
    )
    with FeatureWriter(out, info) as writer:
        for va, vb in zip(a.read(common), b.read(common)):
            if not np.array_equal(va.frame_indices, vb.frame_indices) or (va.label, va.split) != (vb.label, vb.split):
                raise FeatureFileError(
                    f"video {va.path}: {first} and {second} disagree on frame indices, label or split "
                    f"({len(va.frame_indices)} vs {len(vb.frame_indices)} frames); extract both with the same sampling"
                )
            joined = np.concatenate([va.features.astype(np.float32), vb.features.astype(np.float32)], axis=1)
            writer.write(
                VideoFeatures(va.key, va.path, joined, va.frame_indices, va.label, va.split, va.fps, va.num_frames)
            )
    return JoinReport(joined=len(common), only_in_first=only_a, only_in_second=only_b)
