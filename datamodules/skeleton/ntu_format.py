"""The NTU RGB+D ``.skeleton`` text format: reader, writer and sample names.

"NTU RGB+D: A Large Scale Dataset for 3D Human Activity Analysis" (Shahroudy et al., CVPR 2016) and "NTU RGB+D 120"
(Liu et al., TPAMI 2019) store the Kinect v2 skeletons of one sample in one text file (the layout of the authors'
``read_skeleton_file.m``)::

    <frame count>
    per frame:
        <body count>                              (0 when Kinect tracked nobody)
        per body:
            <10 values>                           body id, clipped edges, left hand confidence, left hand state,
                                                  right hand confidence, right hand state, restricted, lean x, lean y,
                                                  tracking state
            <joint count>                         25
            25 x <12 values>                      x y z (metres, camera space), depth x y, colour x y,
                                                  orientation w x y z, tracking state

File names ``SsssCcccPpppRrrrAaaa`` give setup, camera, performer, replication and action (1-based).
``read_skeleton_file`` keeps the camera-space ``x y z`` of every body, grouped by body id (the id is Kinect's
tracking id, stable while a body stays tracked); ``write_skeleton_file`` writes the full format back (the synthetic
generator and the tests use it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "NUM_JOINTS",
    "SampleName",
    "BodyTrack",
    "SkeletonFile",
    "SkeletonFormatError",
    "parse_sample_name",
    "read_skeleton_file",
    "write_skeleton_file",
]

NUM_JOINTS = 25
_BODY_INFO_VALUES = 10
_JOINT_VALUES = 12
_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


class SkeletonFormatError(ValueError):
    """A ``.skeleton`` file breaks the format; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class SampleName:
    """The fields of an NTU sample name ``SsssCcccPpppRrrrAaaa`` (all 1-based as in the name)."""

    name: str
    setup: int
    camera: int
    performer: int
    replication: int
    action: int


def parse_sample_name(name: str) -> SampleName:
    """Parse ``S001C002P003R002A013`` (a path or a name with a suffix is accepted).

    Raises:
        ValueError: the name does not contain the pattern.
    """
    stem = Path(name).name.split(".")[0]
    m = _NAME.fullmatch(stem)
    if m is None:
        raise ValueError(
            f"{name!r} is not an NTU sample name: expected SsssCcccPpppRrrrAaaa, e.g. S001C002P003R002A013"
        )
    s, c, p, r, a = (int(g) for g in m.groups())
    return SampleName(stem, s, c, p, r, a)


@dataclass
class BodyTrack:
    """One tracked body: the frames it appears in and its joints there.

    Attributes:
        body_id: Kinect's tracking id (the first value of the body line).
        frames: ``(n,)`` frame indices, increasing.
        joints: ``(n, 25, 3)`` camera-space x, y, z in metres.
    """

    body_id: str
    frames: np.ndarray
    joints: np.ndarray


@dataclass
class SkeletonFile:
    """The bodies of one ``.skeleton`` file.

    Attributes:
        path: The file read.
        num_frames: Frame count of the file (frames without bodies included).
        bodies: The tracked bodies in order of first appearance.
        bodies_per_frame: ``(num_frames,)`` body count of each frame.
    """

    path: str
    num_frames: int
    bodies: list[BodyTrack] = field(default_factory=list)
    bodies_per_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class _Lines:
    """Line cursor over a file that raises format errors naming the file and the line."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.lines, self.i = path, text.splitlines(), 0

    def error(self, what: str) -> SkeletonFormatError:
        return SkeletonFormatError(f"{self.path}: line {self.i + 1}: {what}")

    def next(self, expected: str) -> str:
        while self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1  # tolerate blank lines (some copies end frames with them)
        if self.i >= len(self.lines):
            raise self.error(f"file ends early (truncated): expected {expected}")
        line = self.lines[self.i]
        self.i += 1
        return line

    def integer(self, expected: str) -> int:
        line = self.next(expected)
        try:
            return int(line.split()[0])
        except (ValueError, IndexError):
            self.i -= 1
            raise self.error(f"expected {expected} (an integer), got {line.strip()[:40]!r}") from None

    def values(self, n: int, expected: str) -> list[str]:
        line = self.next(expected)
        parts = line.split()
        if len(parts) != n:
            self.i -= 1
            raise self.error(f"expected {expected} ({n} values), got {len(parts)}: {line.strip()[:60]!r}")
        return parts


def read_skeleton_file(path: str | Path) -> SkeletonFile:
    """Read one NTU ``.skeleton`` file.

    Raises:
        SkeletonFormatError: truncated file, a body count or joint count that is not an integer, a joint count other
            than 25, a joint line without 12 values, or a non-numeric value; the message names the file and line.
        OSError: the file cannot be read.
    """
    path = str(path)
    cur = _Lines(path, Path(path).read_text(encoding="ascii", errors="replace"))
    num_frames = cur.integer("the frame count on the first line")
    if num_frames < 0:
        raise cur.error(f"negative frame count {num_frames}")
    per_body: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    counts = np.zeros(num_frames, dtype=np.int64)
    for f in range(num_frames):
        n_bodies = cur.integer(f"the body count of frame {f + 1} of {num_frames}")
        if n_bodies < 0:
            raise cur.error(f"negative body count {n_bodies} in frame {f + 1}")
        counts[f] = n_bodies
        for b in range(n_bodies):
            info = cur.values(_BODY_INFO_VALUES, f"the info line of body {b + 1} in frame {f + 1}")
            n_joints = cur.integer(f"the joint count of body {b + 1} in frame {f + 1}")
            if n_joints != NUM_JOINTS:
                cur.i -= 1
                raise cur.error(f"frame {f + 1}, body {b + 1}: expected {NUM_JOINTS} joints, got {n_joints}")
            rows = [cur.values(_JOINT_VALUES, f"joint {j + 1} of body {b + 1} in frame {f + 1}") for j in range(25)]
            try:
                xyz = np.array([r[:3] for r in rows], dtype=np.float32)  # (25, 3)
            except ValueError:
                cur.i -= NUM_JOINTS
                raise cur.error(f"frame {f + 1}, body {b + 1}: non-numeric joint coordinates") from None
            if not np.isfinite(xyz).all():
                cur.i -= NUM_JOINTS
                raise cur.error(f"frame {f + 1}, body {b + 1}: non-finite joint coordinates")
            frames, joints = per_body.setdefault(info[0], ([], []))
            if frames and frames[-1] == f:  # the same id twice in one frame: keep the first, as pyskl does
                continue
            frames.append(f)
            joints.append(xyz)
    bodies = [BodyTrack(bid, np.asarray(fr, dtype=np.int64), np.stack(js)) for bid, (fr, js) in per_body.items()]
    return SkeletonFile(path, num_frames, bodies, counts)


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:.7g}" for v in values)


def write_skeleton_file(path: str | Path, frames: Sequence[Sequence[tuple[str, np.ndarray]]]) -> None:
    """Write a ``.skeleton`` file: per frame a list of ``(body id, joints (25, 3))`` in camera space (metres).

    The other fields are filled as Kinect would for a tracked body: depth and colour coordinates projected with
    Kinect v2's nominal intrinsics, orientation the identity quaternion, tracking state 2 (tracked).
    """
    out: list[str] = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, joints in bodies:
            joints = np.asarray(joints, dtype=np.float64)
            if joints.shape != (NUM_JOINTS, 3):
                raise ValueError(f"{path}: body {body_id}: joints must be (25, 3), got {joints.shape}")
            out.append(f"{body_id} 0 1 1 1 1 0 0 0 2")
            out.append(str(NUM_JOINTS))
            z = np.maximum(joints[:, 2], 0.1)
            for (x, y, _), zz in zip(joints, z):
                depth = (256 + 365 * x / zz, 212 - 365 * y / zz)
                colour = (960 + 1060 * x / zz, 540 - 1060 * y / zz)
                out.append(_fmt([x, y, zz, *depth, *colour, 1.0, 0.0, 0.0, 0.0]) + " 2")
    Path(path).write_text("\n".join(out) + "\n", encoding="ascii")
