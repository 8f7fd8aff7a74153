"""The skeleton part of a deployment spec: joint layout and the preprocessing both sides of a stream apply alike.

A skeleton model (``vidrec.models.skeleton``) reads ``(M * V * C, T)`` inputs: M bodies, V joints, C coordinates a
frame, channel ``m * V * C + v * C + c``. Before that, the training data were *anchored*: centred on the main actor's
spine base and, optionally, rotated so its hips lie on x and its spine on y (pyskl's ``PreNormalize3D``, "Revisiting
Skeleton-based Action Recognition", Duan et al., CVPR 2022). :class:`SkeletonSpec` records the layout and that
preprocessing in the checkpoint, and this module holds its one implementation, used offline by
``datamodules.skeleton.transforms.preprocess_joints`` and live by :class:`AnchoredJoints`.

Anchoring (offline and live alike)
----------------------------------
The anchor is taken at the **first frame in which body 0 (the main actor) is present** (any non-zero joint): its
spine base is the origin, and with ``align_view`` its hips and spine give the rotation. Every later frame of every
present body is mapped by that one affine map; absent bodies stay all zero; frames *before* the anchor frame are
fed as no-body frames (zeros), because a stream cannot know its anchor before it has seen the main actor.

* Offline, a clip is one recording: anchored at its own first frame with the main actor.
* Live, a **stream** is one recording: anchored at its first frame with the main actor, and re-anchored whenever the
  stream starts over (a new stream, a timestamp gap, an idle eviction). A fixed anchor per stream is a constant
  affine map of the input, so the streamed logits equal the offline logits of the same windows of the stream
  preprocessed as one clip (tested). Anchoring *each window* on its own first frame would not stream: every window
  would shift the input by a different amount, and the convolution state kept from earlier frames (computed under
  another shift) would no longer match, so every window would have to be recomputed from scratch.
* Limitation: a long stream keeps the anchor of its start; a performer who walks away drifts from the origin by
  more than training clips (a few seconds) did. Restart the stream (or send a timestamp gap) to re-anchor.

Scale normalisation (``normalize_scale``: the mean spine length over the whole clip) needs the clip's future and has
no live equivalent: ``vidrec stream`` refuses such checkpoints. Clips resampled to a fixed length
(``length_mode: resample``) are time-normalised; live frames arrive at their native rate, which matches training
only for clips of about ``window`` frames (``vidrec stream`` warns).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AnchoredJoints",
    "NTU25_JOINT_NAMES",
    "Centring",
    "SkeletonSpec",
    "anchor_transform",
    "apply_anchor",
    "present_frames",
]

# Kinect v2 / NTU RGB+D joints, 0-based (the order of the .skeleton files)
NTU25_JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot", "spine_shoulder", "left_hand_tip", "left_thumb",
    "right_hand_tip", "right_thumb",
)  # fmt: skip


class Centring(enum.Enum):
    """Where the origin of a recording's coordinates is."""

    NONE = "none"  # camera coordinates as they are
    FIRST_FRAME = "first_frame"  # the main actor's spine base at its first present frame (clip or stream)


def present_frames(joints: np.ndarray) -> np.ndarray:
    """``(M, T, V, C)`` -> ``(M, T)`` bool: the body has at least one non-zero joint in the frame."""
    return np.abs(joints).reshape(joints.shape[0], joints.shape[1], -1).sum(axis=2) > 0


@dataclass(frozen=True)
class SkeletonSpec:
    """Joint layout and live-applicable preprocessing of a skeleton model's inputs.

    Attributes:
        bodies: M, bodies per frame (missing ones are zero).
        joints: V, joints per body.
        coords: Coordinate names per joint (C = ``len(coords)``; the first three are x, y, z).
        joint_names: Names of the V joints (NTU's 25 by default).
        centring: NONE or FIRST_FRAME (see the module docstring).
        align_view: Also rotate hips onto x and the spine onto y at the anchor frame.
        normalize_scale: Divide by the clip's mean spine length (offline only: no live equivalent).
        spine_base: Joint index of the origin.
        spine_top: Joint index of the top of the spine (view alignment, scale).
        left_hip: Joint index (view alignment).
        right_hip: Joint index (view alignment).
        length_mode: How training clips became ``window`` frames: ``"crop"`` (native rate) or ``"resample"``.
    """

    bodies: int = 2
    joints: int = 25
    coords: tuple[str, ...] = ("x", "y", "z")
    joint_names: tuple[str, ...] = NTU25_JOINT_NAMES
    centring: Centring = Centring.FIRST_FRAME
    align_view: bool = False
    normalize_scale: bool = False
    spine_base: int = 0
    spine_top: int = 20
    left_hip: int = 12
    right_hip: int = 16
    length_mode: str = "crop"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. the pose estimator's mapping)

    def __post_init__(self) -> None:
        if self.bodies < 1 or self.joints < 1 or not self.coords:
            raise ValueError(f"skeleton spec: need bodies, joints >= 1 and coords; got {self}")
        if len(self.joint_names) != self.joints:
            raise ValueError(f"skeleton spec: {len(self.joint_names)} joint names for {self.joints} joints")
        used = ["spine_base"] if self.centring is Centring.FIRST_FRAME else []
        used += ["spine_base", "spine_top", "left_hip", "right_hip"] if self.align_view else []
        used += ["spine_base", "spine_top"] if self.normalize_scale else []
        for name in used:  # the joints the preprocessing reads must exist
            if not 0 <= getattr(self, name) < self.joints:
                raise ValueError(f"skeleton spec: {name}={getattr(self, name)} is not a joint index < {self.joints}")

    @property
    def values_per_body(self) -> int:
        """V * C."""
        return self.joints * len(self.coords)

    @property
    def num_channels(self) -> int:
        """M * V * C."""
        return self.bodies * self.values_per_body

    def channel_names(self) -> list[str]:
        """``b{m}_{joint}_{coord}`` for every channel, in input order."""
        return [f"b{m}_{j}_{c}" for m in range(self.bodies) for j in self.joint_names for c in self.coords]

    @property
    def anchored(self) -> bool:
        """Whether inputs are mapped by a per-recording anchor (centring or view alignment)."""
        return self.centring is not Centring.NONE or self.align_view

    def to_dict(self) -> dict[str, Any]:
        """Plain types (checkpoint storage)."""
        return {
            "bodies": int(self.bodies),
            "joints": int(self.joints),
            "coords": [str(c) for c in self.coords],
            "joint_names": [str(j) for j in self.joint_names],
            "centring": self.centring.value,
            "align_view": bool(self.align_view),
            "normalize_scale": bool(self.normalize_scale),
            "spine_base": int(self.spine_base),
            "spine_top": int(self.spine_top),
            "left_hip": int(self.left_hip),
            "right_hip": int(self.right_hip),
            "length_mode": str(self.length_mode),
            "extra": dict(self.extra),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "spec.skeleton") -> SkeletonSpec:
        """Inverse of :meth:`to_dict`; errors name ``where`` and the key."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        missing = [k for k in ("bodies", "joints", "coords") if k not in d]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}")
        try:
            centring = Centring(str(d.get("centring", "first_frame")))
        except ValueError as err:
            raise ValueError(f"{where}.centring: {d.get('centring')!r} is not one of none, first_frame") from err
        joints = int(d["joints"])
        names = d.get("joint_names") or (NTU25_JOINT_NAMES if joints == 25 else [f"j{i:02d}" for i in range(joints)])
        return SkeletonSpec(
            bodies=int(d["bodies"]),
            joints=joints,
            coords=tuple(str(c) for c in d["coords"]),
            joint_names=tuple(str(n) for n in names),
            centring=centring,
            align_view=bool(d.get("align_view", False)),
            normalize_scale=bool(d.get("normalize_scale", False)),
            spine_base=int(d.get("spine_base", 0)),
            spine_top=int(d.get("spine_top", 20)),
            left_hip=int(d.get("left_hip", 12)),
            right_hip=int(d.get("right_hip", 16)),
            length_mode=str(d.get("length_mode", "crop")),
            extra=dict(d.get("extra") or {}),
        )


def anchor_transform(frame: np.ndarray, spec: SkeletonSpec) -> tuple[np.ndarray, np.ndarray]:
    """The anchor of a recording from the main actor's joints ``(V, C)`` at its first present frame.

    Returns ``(origin (3,), rotation (3, 3))`` float32: a joint ``p`` maps to ``rotation @ (p - origin)``.
    """
    xyz = np.asarray(frame, dtype=np.float32)[:, :3]
    origin = xyz[spec.spine_base].copy() if spec.centring is Centring.FIRST_FRAME else np.zeros(3, np.float32)
    rotation = np.eye(3, dtype=np.float32)
    if spec.align_view:
        hips = xyz[spec.left_hip] - xyz[spec.right_hip]
        spine = xyz[spec.spine_top] - xyz[spec.spine_base]
        ex = hips / max(float(np.linalg.norm(hips)), 1e-6)
        ey = spine - float(spine @ ex) * ex
        ey = ey / max(float(np.linalg.norm(ey)), 1e-6)
        rotation = np.stack([ex, ey, np.cross(ex, ey)]).astype(np.float32)  # rows: new axes in old coordinates
    return origin, rotation


def apply_anchor(joints: np.ndarray, origin: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Map the xyz of the present bodies of ``(M, T, V, C)`` joints by an anchor; absent bodies stay zero (a copy)."""
    out = np.array(joints, dtype=np.float32, copy=True)
    mask = present_frames(out)[:, :, None, None]
    out[..., :3] = np.where(mask, (out[..., :3] - origin) @ rotation.T, 0.0)
    return out


class AnchoredJoints:
    """The live side of anchoring: per-slot anchors for ``(n, M * V * C, hop)`` chunks of raw joint frames.

    A slot is unanchored after ``reset``; its frames are zero until one shows body 0, whose joints then fix the
    slot's anchor (:func:`anchor_transform`) for every later frame, as ``preprocess_joints`` does for a clip.

    Args:
        spec: The checkpoint's skeleton spec.
        capacity: Initial number of slots (``grow`` adds more).
    """

    def __init__(self, spec: SkeletonSpec, capacity: int = 1) -> None:
        self.spec = spec
        self.origin = np.zeros((0, 3), np.float32)
        self.rotation = np.zeros((0, 3, 3), np.float32)
        self.is_anchored = np.zeros(0, bool)
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        """Add unanchored slots up to ``capacity``."""
        extra = capacity - self.is_anchored.size
        if extra > 0:
            self.origin = np.concatenate([self.origin, np.zeros((extra, 3), np.float32)])
            self.rotation = np.concatenate([self.rotation, np.repeat(np.eye(3, dtype=np.float32)[None], extra, 0)])
            self.is_anchored = np.concatenate([self.is_anchored, np.zeros(extra, bool)])

    def reset(self, slots: Any = None) -> None:
        """Forget the anchors of ``slots`` (all when None)."""
        idx = slice(None) if slots is None else np.asarray(slots, dtype=np.int64)
        self.is_anchored[idx] = False

    def __call__(self, chunk: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Anchored copy of ``chunk`` ``(n, M * V * C, hop)`` of the streams in ``slots``."""
        s = self.spec
        n, channels, hop = chunk.shape
        if channels != s.num_channels:
            raise ValueError(f"joint chunk has {channels} channels, the skeleton spec {s.num_channels}")
        joints = np.asarray(chunk, np.float32).reshape(n, s.bodies, s.joints, len(s.coords), hop)
        joints = joints.transpose(0, 1, 4, 2, 3)  # (n, M, hop, V, C)
        out = np.empty_like(joints)
        for i, slot in enumerate(np.asarray(slots, dtype=np.int64)):
            clip = joints[i]
            start = 0
            if not self.is_anchored[slot]:
                present = present_frames(clip)[0]
                if not present.any():
                    out[i] = 0.0
                    continue
                start = int(np.argmax(present))
                self.origin[slot], self.rotation[slot] = anchor_transform(clip[0, start], s)
                self.is_anchored[slot] = True
                out[i, :, :start] = 0.0
            out[i, :, start:] = apply_anchor(clip[:, start:], self.origin[slot], self.rotation[slot])
        return np.ascontiguousarray(out.transpose(0, 1, 3, 4, 2).reshape(n, channels, hop))
