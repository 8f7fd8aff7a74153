"""Synthetic skeleton actions written as real NTU RGB+D ``.skeleton`` files.

NTU RGB+D cannot be downloaded here, so the converter, the data module and the models are exercised on skeletons
made by an articulated 25-joint body in the Kinect v2 / NTU joint order, driven by class-specific motions:

    0 hand waving    1 kicking      2 squatting     3 clapping
    4 bowing         5 hands up     6 punching      7 jumping

Each performance is seen by three cameras at once, as in NTU (camera 1 in front, cameras 2 and 3 at -45 and +45
degrees), and varies the way real performers do: bone lengths and height (per performer), motion amplitude, speed,
number of repetitions and clip length (per performance), body orientation and position, joint noise (2 cm), frames
where Kinect lost the body (leading/trailing and a few inside), and now and then a spurious "body" (a flat piece of
furniture, or a short flicker) that the converter's denoising must remove. Names follow ``SsssCcccPpppRrrrAaaa``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.skeleton.ntu_format import write_skeleton_file

__all__ = ["SYNTHETIC_CLASSES", "SyntheticSkeletonSettings", "performance_joints", "generate_synthetic_skeletons"]

SYNTHETIC_CLASSES = ("hand waving", "kicking", "squatting", "clapping", "bowing", "hands up", "punching", "jumping")
CAMERA_YAW_DEG = {1: 0.0, 2: -45.0, 3: 45.0}

# bone lengths in units of the performer's scale (about metres for a 1.75 m person)
_BONES = {
    "spine_low": 0.25, "spine_high": 0.25, "neck": 0.08, "head": 0.15, "shoulder": 0.18, "upper_arm": 0.29,
    "forearm": 0.26, "hand": 0.08, "hip": 0.10, "thigh": 0.44, "shin": 0.42, "foot": 0.12,
}  # fmt: skip


@dataclass(frozen=True)
class SyntheticSkeletonSettings:
    """What to generate (deterministic from ``seed``)."""

    num_classes: int = 8  # first classes of SYNTHETIC_CLASSES (1-8)
    performers: int = 10  # performer ids 1..performers (NTU-60 cross-subject: 1, 2, 4, 5, 8, 9 train)
    replications: int = 2  # R001, R002
    cameras: tuple[int, ...] = (1, 2, 3)  # camera ids (NTU-60 cross-view: 2, 3 train, 1 test)
    setup: int = 1  # setup id of every sample
    min_frames: int = 48  # clip length range before dropped frames are cut
    max_frames: int = 80
    noise: float = 0.02  # joint noise standard deviation in metres
    drop_rate: float = 0.02  # fraction of frames inside a clip where the body is lost
    spurious_body_rate: float = 0.15  # fraction of files with a spurious extra body
    seed: int = 0


def _limb(flex: np.ndarray, abd: np.ndarray, side: float) -> np.ndarray:
    """Unit directions ``(T, 3)`` of a limb: 0 = hanging down, ``flex`` forward, ``abd`` sideways (radians)."""
    return np.stack([side * np.sin(abd), -np.cos(abd) * np.cos(flex), np.cos(abd) * np.sin(flex)], axis=1)


def _motion(action: int, phase: np.ndarray, amp: float) -> dict[str, np.ndarray]:
    """Joint angles (radians) and offsets over ``phase`` in [0, cycles] for one action."""
    zero = np.zeros_like(phase)
    s = np.sin(2 * np.pi * phase)
    bump = 0.5 - 0.5 * np.cos(2 * np.pi * phase)  # 0 -> 1 -> 0 per cycle
    d = math.radians
    a = {k: zero.copy() for k in ("r_flex", "r_abd", "r_elbow", "l_flex", "l_abd", "l_elbow", "rl_flex", "ll_flex")}
    a |= {"knee": zero.copy(), "pitch": zero.copy(), "lift": zero.copy()}
    a["r_abd"] += d(8)
    a["l_abd"] += d(8)
    if action == 0:  # hand waving: right arm up, swinging sideways
        a["r_abd"] = d(150) + amp * d(20) * s
        a["r_elbow"] += d(20)
    elif action == 1:  # kicking: right leg swings forward
        a["rl_flex"] = amp * d(75) * np.maximum(s, 0)
    elif action == 2:  # squatting
        a["knee"] = amp * d(70) * bump
        a["r_flex"] = a["l_flex"] = amp * d(60) * bump
    elif action == 3:  # clapping: arms forward, hands meet and part
        a["r_flex"] = a["l_flex"] = zero + d(75)
        a["r_abd"] = a["l_abd"] = d(-12) + amp * d(30) * (0.5 + 0.5 * s)
        a["r_elbow"] = a["l_elbow"] = zero + d(30)
    elif action == 4:  # bowing: torso pitches forward
        a["pitch"] = amp * d(55) * bump
    elif action == 5:  # hands up: both arms raised forward overhead
        a["r_flex"] = a["l_flex"] = amp * d(165) * bump
    elif action == 6:  # punching: alternate arms extend forward
        a["r_flex"] = a["l_flex"] = zero + d(85)
        a["r_elbow"] = d(100) * (1 - amp * np.maximum(s, 0))
        a["l_elbow"] = d(100) * (1 - amp * np.maximum(-s, 0))
    elif action == 7:  # jumping: crouch, then the body leaves the ground
        up = np.maximum(s, 0)
        a["lift"] = amp * 0.25 * up
        a["knee"] = d(35) * np.maximum(-s, 0)
        a["r_abd"] = a["l_abd"] = d(8) + amp * d(40) * up
    else:
        raise ValueError(f"synthetic action {action} not in [0, {len(SYNTHETIC_CLASSES)})")
    return a


def performance_joints(
    action: int, frames: int, cycles: float, amp: float, scale: float, bones: dict[str, float]
) -> np.ndarray:
    """Body-frame joints ``(T, 25, 3)`` (x: the performer's left, y: up, z: forward; metres) in NTU joint order."""
    t = np.linspace(0.0, cycles, frames)
    a = _motion(action, t, amp)
    b = {k: v * scale for k, v in bones.items()}
    n = frames
    j = np.zeros((n, 25, 3))
    knee = a["knee"]
    leg = b["thigh"] + b["shin"]
    # knees bend by `knee` (thighs forward, shins back), so the pelvis drops while the ankles stay on the floor
    pelvis = np.stack([np.zeros(n), 0.05 * scale + leg * np.cos(knee) + a["lift"], np.zeros(n)], 1)
    # upper body, pitched forward around the pelvis by `pitch`
    cp, sp = np.cos(a["pitch"]), np.sin(a["pitch"])
    up = np.stack([np.zeros(n), cp, sp], 1)  # torso axis
    j[:, 0] = pelvis
    j[:, 1] = pelvis + b["spine_low"] * up
    j[:, 20] = j[:, 1] + b["spine_high"] * up
    j[:, 2] = j[:, 20] + b["neck"] * up
    j[:, 3] = j[:, 2] + b["head"] * up
    for side, (sh, el, wr, ha, tip, th), pre in ((1.0, (4, 5, 6, 7, 21, 22), "l"), (-1.0, (8, 9, 10, 11, 23, 24), "r")):
        j[:, sh] = j[:, 20] + np.array([side * b["shoulder"], 0.0, 0.0])
        flex = a[f"{pre}_flex"] + a["pitch"]
        upper = _limb(flex, a[f"{pre}_abd"], side)
        lower = _limb(flex + a[f"{pre}_elbow"], a[f"{pre}_abd"], side)
        j[:, el] = j[:, sh] + b["upper_arm"] * upper
        j[:, wr] = j[:, el] + b["forearm"] * lower
        j[:, ha] = j[:, wr] + b["hand"] * lower
        j[:, tip] = j[:, ha] + 0.07 * scale * lower
        j[:, th] = j[:, wr] + 0.05 * scale * (lower + np.array([0.0, 0.0, 1.0]))
    for side, (hip, kn, an, ft), pre in ((1.0, (12, 13, 14, 15), "ll"), (-1.0, (16, 17, 18, 19), "rl")):
        j[:, hip] = pelvis + np.array([side * b["hip"], -0.05 * scale, 0.0])
        thigh = _limb(a[f"{pre}_flex"] + knee, np.zeros(n), side)
        shin = _limb(a[f"{pre}_flex"] - knee, np.zeros(n), side)
        j[:, kn] = j[:, hip] + b["thigh"] * thigh
        j[:, an] = j[:, kn] + b["shin"] * shin
        j[:, ft] = j[:, an] + b["foot"] * np.array([0.0, -0.3, 0.95])
    return j


def _to_camera(body: np.ndarray, yaw_deg: float, offset: np.ndarray) -> np.ndarray:
    """Body frame -> Kinect camera space: the performer faces the camera 3 m away, camera 1 m above the floor."""
    yaw = math.radians(yaw_deg)
    c, s = math.cos(yaw), math.sin(yaw)
    x, y, z = body[..., 0], body[..., 1], body[..., 2]
    xr, zr = c * x + s * z, -s * x + c * z  # rotation about the vertical axis
    return np.stack([-xr + offset[0], y - 1.0, 3.0 - zr + offset[2]], axis=-1)


def generate_synthetic_skeletons(
    out: str | Path, settings: SyntheticSkeletonSettings = SyntheticSkeletonSettings()
) -> list[Path]:
    """Write the synthetic set as ``<out>/SsssCcccPpppRrrrAaaa.skeleton`` files; returns the paths written."""
    st = settings
    if not 1 <= st.num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(SYNTHETIC_CLASSES)}], got {st.num_classes}")
    if not 1 <= st.min_frames <= st.max_frames:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got {st.min_frames}, {st.max_frames}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(st.seed)
    written: list[Path] = []
    for p in range(1, st.performers + 1):
        scale = rng.uniform(0.85, 1.15)
        bones = {k: v * rng.normal(1.0, 0.05) for k, v in _BONES.items()}
        for r in range(1, st.replications + 1):
            for action in range(st.num_classes):
                frames = int(rng.integers(st.min_frames, st.max_frames + 1))
                cycles = rng.uniform(1.0, 2.5) if action not in (4, 5) else rng.uniform(0.8, 1.6)
                body = performance_joints(action, frames, cycles, rng.uniform(0.75, 1.2), scale, bones)
                turn, offset = rng.normal(0.0, 10.0), np.array([rng.uniform(-0.4, 0.4), 0.0, rng.uniform(-0.4, 0.4)])
                lead, trail = rng.integers(0, 6, size=2)
                for cam in st.cameras:
                    joints = _to_camera(body, CAMERA_YAW_DEG.get(cam, 0.0) + turn, offset)
                    joints = joints + rng.normal(0.0, st.noise, joints.shape)
                    kept = rng.random(frames) >= st.drop_rate
                    kept[:lead] = False
                    kept[frames - trail :] = False
                    body_id = str(72057594037900000 + int(rng.integers(0, 99999)))
                    per_frame: list[list[tuple[str, np.ndarray]]] = [
                        [(body_id, joints[f])] if kept[f] else [] for f in range(frames)
                    ]
                    if rng.random() < st.spurious_body_rate:
                        _add_spurious_body(per_frame, rng)
                    name = f"S{st.setup:03d}C{cam:03d}P{p:03d}R{r:03d}A{action + 1:03d}"
                    path = out / f"{name}.skeleton"
                    write_skeleton_file(path, per_frame)
                    written.append(path)
    return written


def _add_spurious_body(per_frame: list[list[tuple[str, np.ndarray]]], rng: np.random.Generator) -> None:
    """A flat, wide "body" (a table) over a third of the clip, or a flicker of a few frames."""
    n = len(per_frame)
    body_id = str(72057594037999000 + int(rng.integers(0, 999)))
    if rng.random() < 0.5:
        start, length = int(rng.integers(0, max(n - n // 3, 1))), max(n // 3, 12)
        table = np.stack([rng.uniform(-0.6, 0.6, 25), rng.uniform(-0.35, -0.3, 25), rng.uniform(2.0, 2.2, 25)], 1)
    else:
        start, length = int(rng.integers(0, max(n - 6, 1))), 6
        table = rng.normal([0.5, 0.0, 3.0], 0.3, (25, 3))
    for f in range(start, min(start + length, n)):
        per_frame[f].append((body_id, table + rng.normal(0.0, 0.005, table.shape)))
