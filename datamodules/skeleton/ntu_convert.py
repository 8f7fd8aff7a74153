"""NTU RGB+D ``.skeleton`` folder -> ``vidrec.skeleton/1`` HDF5, with pyskl's body selection and denoising.

Kinect tracks bodies by id and also "tracks" furniture and reflections. The cleaning follows the preprocessing of
"Revisiting Skeleton-based Action Recognition" (pyskl, Duan et al., CVPR 2022; after Ke et al.'s NTU scripts):

1. **Length**: bodies tracked for at most ``min_body_frames`` (11) frames are noise.
2. **Spread**: a frame whose joints spread wider in x than ``spread_ratio`` (0.8) times their spread in y is not a
   standing person; a body with at least ``noisy_frame_ratio`` (0.69754) of such frames is noise.
3. **Motion ranking**: the remaining bodies are ranked by motion (the summed variance of x, y, z over all their
   joints and frames, the NTU authors' heuristic); the most active is actor 1, then each other body joins actor 1's
   track when their frames do not overlap, else actor 2's when they do not overlap with it, else it is dropped.
4. **Trimming**: frames where neither actor is present are removed at the start and the end (and inside the clip
   too with ``drop_empty_frames``, as pyskl does).

Samples on the official missing-skeleton list are skipped, and so is every file that cannot be read or has no body
left; the conversion goes on and lists each skipped file with its reason (returned, logged and stored in
``/skipped``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.skeleton.ntu_format import (
    BodyTrack,
    SkeletonFile,
    SkeletonFormatError,
    parse_sample_name,
    read_skeleton_file,
)
from datamodules.skeleton.protocols import ntu_missing_skeletons
from datamodules.skeleton.schema import SampleInfo, SkeletonSample, write_skeleton_samples

__all__ = [
    "BodySelection",
    "ConversionReport",
    "EmptySkeletonError",
    "select_bodies",
    "skeleton_file_to_sample",
    "convert_ntu_folder",
    "NTU_CLASS_NAMES_60",
]

log = logging.getLogger(__name__)

NTU_CLASS_NAMES_60 = (
    "drink water,eat meal,brush teeth,brush hair,drop,pick up,throw,sit down,stand up,clapping,reading,writing,"
    "tear up paper,wear jacket,take off jacket,wear a shoe,take off a shoe,wear on glasses,take off glasses,"
    "put on a hat,take off a hat,cheer up,hand waving,kicking something,reach into pocket,hopping,jump up,"
    "phone call,play with phone,typing,pointing,taking a selfie,check time,rub two hands,nod head,shake head,"
    "wipe face,salute,put palms together,cross hands in front,sneeze or cough,staggering,falling down,headache,"
    "chest pain,back pain,neck pain,nausea,fan self,punch,kicking,pushing,pat on back,point finger,hugging,"
    "giving object,touch pocket,shaking hands,walking towards,walking apart"
).split(",")


class EmptySkeletonError(ValueError):
    """A ``.skeleton`` file holds no usable body (none tracked, or all filtered as noise)."""


@dataclass(frozen=True)
class BodySelection:
    """Body cleaning settings (pyskl's defaults)."""

    max_bodies: int = 2  # actors kept (M)
    min_body_frames: int = 11  # bodies tracked for at most this many frames are noise
    spread_ratio: float = 0.8  # a frame is noisy when x spread > spread_ratio * y spread
    noisy_frame_ratio: float = 0.69754  # a body with at least this fraction of noisy frames is noise
    drop_empty_frames: bool = True  # also drop frames inside the clip where no actor is present


def _is_noise(body: BodyTrack, sel: BodySelection) -> bool:
    if len(body.frames) <= sel.min_body_frames:
        return True
    spread = body.joints.max(axis=1) - body.joints.min(axis=1)  # (n, 3)
    noisy = spread[:, 0] > sel.spread_ratio * spread[:, 1]
    return bool(noisy.mean() >= sel.noisy_frame_ratio)


def _motion(body: BodyTrack) -> float:
    return float(body.joints.reshape(-1, 3).var(axis=0).sum())


def select_bodies(skeleton: SkeletonFile, sel: BodySelection = BodySelection()) -> np.ndarray:
    """Clean and stack the bodies of a file into ``(M, T, 25, 3)`` (see the module docstring).

    Raises:
        EmptySkeletonError: no body was tracked, or every body was filtered as noise.
    """
    if not skeleton.bodies:
        raise EmptySkeletonError(f"{skeleton.path}: no body is tracked in any of its {skeleton.num_frames} frames")
    bodies = [b for b in skeleton.bodies if not _is_noise(b, sel)]
    if not bodies:
        # pyskl keeps the longest body rather than losing the sample when everything looks like noise
        bodies = [max(skeleton.bodies, key=lambda b: len(b.frames))]
        if len(bodies[0].frames) <= 1:
            raise EmptySkeletonError(f"{skeleton.path}: only noise bodies (at most one frame each)")
    bodies.sort(key=_motion, reverse=True)
    out = np.zeros((sel.max_bodies, skeleton.num_frames, 25, 3), dtype=np.float32)
    occupied = np.zeros((sel.max_bodies, skeleton.num_frames), dtype=bool)
    for body in bodies:
        for slot in range(sel.max_bodies):
            if not occupied[slot, body.frames].any():
                out[slot, body.frames] = body.joints
                occupied[slot, body.frames] = True
                break
    present = occupied.any(axis=0)  # (T,)
    keep = np.flatnonzero(present)
    if sel.drop_empty_frames:
        return out[:, keep]
    return out[:, keep[0] : keep[-1] + 1]


def skeleton_file_to_sample(path: str | Path, sel: BodySelection = BodySelection()) -> SkeletonSample:
    """Read, clean and label one NTU file; the label is the action id minus one."""
    name = parse_sample_name(str(path))
    joints = select_bodies(read_skeleton_file(path), sel)
    info = SampleInfo(
        name=name.name,
        label=name.action - 1,
        performer=name.performer,
        camera=name.camera,
        setup=name.setup,
        replication=name.replication,
        frames=int(joints.shape[1]),
    )
    return SkeletonSample(info, joints)


@dataclass
class ConversionReport:
    """What a folder conversion did."""

    out: str
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or sample name, reason)
    seconds: float = 0.0

    @property
    def files_per_second(self) -> float:
        """Input files handled per second (written and skipped)."""
        return (self.written + len(self.skipped)) / self.seconds if self.seconds > 0 else float("nan")


def convert_ntu_folder(
    root: str | Path,
    out: str | Path,
    *,
    selection: BodySelection = BodySelection(),
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    skip_official_missing: bool = True,
    source: str | None = None,
) -> ConversionReport:
    """Convert every ``*.skeleton`` file under ``root`` into one ``vidrec.skeleton/1`` file.

    Args:
        root: Folder searched recursively for ``SsssCcccPpppRrrrAaaa.skeleton`` files.
        out: HDF5 file to write.
        selection: Body cleaning settings.
        num_classes: K; default: the largest action id found (60 or 120 for the real data sets).
        class_names: K names; default NTU-60's names when K is 60, else "A001", "A002", ...
        skip_official_missing: Skip the samples on the official missing-skeleton list.
        source: Text stored in the file's ``source`` attribute.

    Returns:
        The report; every skipped file is listed with its reason (the conversion never stops at a broken file).

    Raises:
        FileNotFoundError: ``root`` holds no ``.skeleton`` file.
    """
    start = time.perf_counter()
    files = sorted(Path(root).rglob("*.skeleton"))
    if not files:
        raise FileNotFoundError(f"{root}: no *.skeleton file found (expected NTU's SsssCcccPpppRrrrAaaa.skeleton)")
    report = ConversionReport(out=str(out))
    missing = ntu_missing_skeletons() if skip_official_missing else frozenset()
    actions = []
    for f in files:
        try:
            actions.append(parse_sample_name(f.name).action)
        except ValueError:
            pass
    k = num_classes or (max(actions) if actions else 1)
    names = (
        list(class_names) if class_names else (NTU_CLASS_NAMES_60 if k == 60 else [f"A{i + 1:03d}" for i in range(k)])
    )
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries, expected num_classes={k}")

    def samples() -> Iterator[SkeletonSample]:
        for f in files:
            try:
                name = parse_sample_name(f.name)
                if name.name in missing:
                    report.skipped.append((str(f), "on the official list of samples with missing skeletons"))
                    continue
                if name.action > k:
                    report.skipped.append((str(f), f"action A{name.action:03d} beyond num_classes={k}"))
                    continue
                sample = skeleton_file_to_sample(f, selection)
            except (SkeletonFormatError, EmptySkeletonError, ValueError, OSError) as err:
                log.warning("skipping %s: %s", f, err)
                report.skipped.append((str(f), str(err)))
                continue
            report.written += 1
            yield sample

    # `skipped` is known only after the generator has run, so it is written in a second, tiny pass
    write_skeleton_samples(out, samples(), class_names=names, source=source or f"NTU RGB+D .skeleton files of {root}")
    if report.skipped:
        import h5py

        with h5py.File(str(out), "a") as h5:
            rows = [f"{a}\t{b}" for a, b in report.skipped]
            h5.create_dataset("skipped", data=np.array(rows, dtype=h5py.string_dtype()))
    report.seconds = time.perf_counter() - start
    return report
