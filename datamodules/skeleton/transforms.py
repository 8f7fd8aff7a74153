"""Skeleton preprocessing and augmentation on ``(M, T, V, C)`` joint arrays (NumPy, per sample).

Preprocessing (deterministic, train and test alike), in the order of pyskl's ``PreNormalize3D`` ("Revisiting
Skeleton-based Action Recognition", Duan et al., CVPR 2022) and of the NTU authors' normalisation:

1. **Centre** on the spine base of the main actor at its first present frame (absent bodies stay all zero; frames
   before that one are zeroed, as a live stream must: see ``vidrec.skeleton_spec``).
2. **View alignment** (optional): rotate so that the main actor's hips (right -> left hip) lie on x and its spine
   (base -> shoulders) on y at that frame, which removes the camera's viewpoint.
3. **Scale** (optional): divide by the main actor's mean spine length (base -> shoulders), removing body size.
4. **Fixed length** ``L``: ``CROP`` takes ``L`` consecutive frames (random in training, centred in evaluation;
   shorter clips are edge-padded on the left with their first frame), ``RESAMPLE`` interpolates the clip linearly to
   ``L`` frames.

Augmentation (training only): random rotation about the three axes, random per-axis scaling and a random temporal
crop (a sub-clip of a random fraction of the frames, then fixed to ``L``). Bodies are padded with zeros to
``max_bodies`` (two-body padding). The output is ``(M * V * C, L)``: channel ``m * V * C + v * C + c``, time last,
as the 1D networks of ``vidrec.models.skeleton`` read it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from vidrec.skeleton_spec import NTU25_JOINT_NAMES, Centring, SkeletonSpec, anchor_transform, apply_anchor

__all__ = [
    "LengthMode",
    "SkeletonPreprocessing",
    "SkeletonAugmentation",
    "preprocess_joints",
    "augment_joints",
    "fix_length",
    "joints_to_channels",
]

SPINE_BASE, SPINE_SHOULDER, LEFT_HIP, RIGHT_HIP = 0, 20, 12, 16  # NTU joint indices (0-based)


class LengthMode(enum.Enum):
    """How a clip of any length becomes ``L`` frames."""

    CROP = "crop"  # L consecutive frames (random in training, centred in evaluation), edge-padded when shorter
    RESAMPLE = "resample"  # linear interpolation of the whole clip to L frames


@dataclass(frozen=True)
class SkeletonPreprocessing:
    """Deterministic preprocessing (the joint indices are NTU's; other layouts set them)."""

    center: bool = True  # subtract the main actor's spine base at its first present frame
    align_view: bool = False  # rotate hips onto x, spine onto y
    normalize_scale: bool = False  # divide by the main actor's mean spine length
    spine_base: int = SPINE_BASE
    spine_top: int = SPINE_SHOULDER
    left_hip: int = LEFT_HIP
    right_hip: int = RIGHT_HIP

    def spec(self, bodies: int = 2, joints: int = 25, coords: tuple[str, ...] = ("x", "y", "z")) -> SkeletonSpec:
        """The ``vidrec.skeleton_spec.SkeletonSpec`` of this preprocessing (the part a deployment applies live)."""
        names = NTU25_JOINT_NAMES if joints == 25 else tuple(f"j{i:02d}" for i in range(joints))
        return SkeletonSpec(
            bodies=bodies,
            joints=joints,
            coords=coords,
            joint_names=names,
            centring=Centring.FIRST_FRAME if self.center else Centring.NONE,
            align_view=self.align_view,
            normalize_scale=self.normalize_scale,
            spine_base=self.spine_base,
            spine_top=self.spine_top,
            left_hip=self.left_hip,
            right_hip=self.right_hip,
        )


@dataclass(frozen=True)
class SkeletonAugmentation:
    """Training-time augmentation; zeros switch each part off."""

    rotation_deg: float = 0.0  # uniform rotation in [-r, r] about each axis (y, the vertical, gets the full range)
    scale: float = 0.0  # per-axis scale factor uniform in [1 - s, 1 + s]
    min_crop: float = 1.0  # temporal crop of a uniform fraction in [min_crop, 1] of the clip


def _present(joints: np.ndarray) -> np.ndarray:
    """``(M, T)`` bool: the body has at least one non-zero joint in the frame."""
    return np.abs(joints).reshape(joints.shape[0], joints.shape[1], -1).sum(axis=2) > 0


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def preprocess_joints(joints: np.ndarray, prep: SkeletonPreprocessing) -> np.ndarray:
    """Centre, align and scale ``(M, T, V, C)`` joints (C >= 3 uses the first three as x, y, z); returns a copy.

    Centring and view alignment are ``vidrec.skeleton_spec``'s anchoring, the one implementation ``vidrec stream``
    applies to live joint frames: anchored at the main actor's first present frame, earlier frames zeroed.
    """
    out = np.array(joints, dtype=np.float32, copy=True)
    present = _present(out)
    if not present[0].any() or out.shape[3] < 3:
        return out
    first = int(np.argmax(present[0]))
    spec = prep.spec(bodies=out.shape[0], joints=out.shape[2], coords=tuple(f"c{i}" for i in range(out.shape[3])))
    if spec.anchored:
        origin, rotation = anchor_transform(out[0, first], spec)
        out[:, :first] = 0.0  # a stream cannot anchor before it sees the main actor; the clip does the same
        out[:, first:] = apply_anchor(out[:, first:], origin, rotation)
    if prep.normalize_scale:
        frames = present[0]
        length = np.linalg.norm(out[0, frames, prep.spine_top, :3] - out[0, frames, prep.spine_base, :3], axis=1)
        scale = float(length.mean()) if length.size else 0.0
        if scale > 1e-6:
            out[..., :3] /= scale
    return out


def fix_length(joints: np.ndarray, length: int, mode: LengthMode, rng: np.random.Generator | None) -> np.ndarray:
    """``(M, T, V, C)`` -> ``(M, length, V, C)``; ``rng`` None means evaluation (centred crop)."""
    t = joints.shape[1]
    if mode is LengthMode.RESAMPLE:
        if t == 1:
            return np.repeat(joints, length, axis=1)
        pos = np.linspace(0.0, t - 1, length)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, t - 1)
        w = (pos - lo)[None, :, None, None].astype(np.float32)
        return joints[:, lo] * (1 - w) + joints[:, hi] * w
    if t < length:  # edge-pad on the left: the clip ends on its last frame, as a stream does
        pad = np.repeat(joints[:, :1], length - t, axis=1)
        return np.concatenate([pad, joints], axis=1)
    start = int(rng.integers(0, t - length + 1)) if rng is not None else (t - length) // 2
    return joints[:, start : start + length]


def augment_joints(joints: np.ndarray, aug: SkeletonAugmentation, rng: np.random.Generator) -> np.ndarray:
    """Random temporal crop, rotation and scaling of ``(M, T, V, C)`` joints (absent bodies stay zero)."""
    out = joints
    t = out.shape[1]
    if aug.min_crop < 1.0 and t > 2:
        n = max(2, int(round(t * rng.uniform(aug.min_crop, 1.0))))
        start = int(rng.integers(0, t - n + 1))
        out = out[:, start : start + n]
    if (aug.rotation_deg > 0 or aug.scale > 0) and out.shape[3] >= 3:
        r = math.radians(aug.rotation_deg)
        rot = _rotation(rng.uniform(-r, r) / 3, rng.uniform(-r, r), rng.uniform(-r, r) / 3)
        scale = rng.uniform(1 - aug.scale, 1 + aug.scale, size=3) if aug.scale > 0 else np.ones(3)
        m = (rot * scale[None, :]).astype(np.float32)  # scale then rotate
        out = np.array(out, dtype=np.float32, copy=True)
        out[..., :3] = out[..., :3] @ m.T
    return out


def joints_to_channels(joints: np.ndarray, max_bodies: int) -> np.ndarray:
    """``(M, T, V, C)`` -> ``(max_bodies * V * C, T)`` float32, zero-padding or dropping bodies."""
    m, t, v, c = joints.shape
    padded = np.zeros((max_bodies, t, v, c), dtype=np.float32)
    padded[: min(m, max_bodies)] = joints[:max_bodies]
    return np.ascontiguousarray(padded.transpose(0, 2, 3, 1).reshape(max_bodies * v * c, t))
