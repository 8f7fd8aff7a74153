"""Skeletons from users' own videos with MediaPipe Pose (the optional ``[pose]`` extra), in NTU's 25-joint layout.

MediaPipe Pose ("BlazePose: On-device Real-time Body Pose tracking", Bazarevsky et al., CVPR Workshops 2020; the
``mediapipe==0.10.21`` wheel ships ``pose_detection.tflite`` and ``pose_landmark_full.tflite``, so nothing is
downloaded at run time) finds the most prominent person of each frame and gives 33 landmarks in metres
(``pose_world_landmarks``). ``video_to_skeleton`` maps them onto the NTU RGB+D / Kinect v2 joints and
``convert_videos`` writes a ``vidrec.skeleton/1`` file (``datamodules.skeleton.schema``) that the skeleton data
module, models and ``vidrec stream`` read like converted NTU data.

Mapping onto the 25 NTU joints (0-based NTU index <- MediaPipe landmark):

* taken as they are: 4 left shoulder <- 11, 5 left elbow <- 13, 6 left wrist <- 15, 8 right shoulder <- 12,
  9 right elbow <- 14, 10 right wrist <- 16, 12 left hip <- 23, 13 left knee <- 25, 14 left ankle <- 27,
  15 left foot <- 31 (foot index), 16 right hip <- 24, 17 right knee <- 26, 18 right ankle <- 28,
  19 right foot <- 32, 21 left hand tip <- 19 (index finger), 22 left thumb <- 21, 23 right hand tip <- 20,
  24 right thumb <- 22;
* **synthesised** (no MediaPipe landmark): 0 spine base = mid-hips (23, 24); 20 spine shoulder = mid-shoulders
  (11, 12); 1 spine mid = midway between those two; 3 head = mid-ears (7, 8); 2 neck = midway between the spine
  shoulder and the head; 7 left hand = mean of the left wrist, pinky and index (15, 17, 19); 11 right hand = mean of
  16, 18, 20;
* unused MediaPipe landmarks: the face (0-6, 9, 10: eyes, nose, mouth; the ears only give the head) and the heels
  (29, 30).

Coordinates: MediaPipe's world frame has x to the image right, y down and z away from the camera, with the origin at
the hips' midpoint *in every frame*. They are written as ``(-x, -y, z)``: y up and z away from the camera, a
right-handed frame like Kinect's camera space (x to the sensor's left). Because MediaPipe centres every frame on the
hips, whole-body translation (walking, jumping) is **missing**, unlike Kinect data; the body's articulation is kept.
One person per frame (M = 1). Frames without a person are zero (an absent body); leading and trailing such frames
are trimmed, as the NTU converter does. A video in which no frame shows a person is skipped with the reason
"no person detected"; a video that cannot be opened or decoded is skipped and listed with the decoder's error.

Compatibility: mediapipe 0.10.21 was built against protobuf 4, and this project's stack has protobuf 6+ (onnx's
generated code needs it). Its pose *solution* object sets its two confidence thresholds through a protobuf API that
protobuf 6 removed (``FieldDescriptor.label``), so the graph is built here through ``SolutionBase`` without them: the
graph's own defaults, 0.5 and 0.5, are those of ``mp.solutions.pose.Pose``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.skeleton.schema import NTU25_LAYOUT, SampleInfo, SkeletonSample, write_skeleton_samples

__all__ = [
    "MEDIAPIPE_TO_NTU",
    "NTU_SYNTHESISED",
    "PoseExtractionReport",
    "PoseUnavailable",
    "VIDEO_SUFFIXES",
    "convert_videos",
    "mediapipe_to_ntu",
    "video_to_skeleton",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

# NTU joint (0-based) <- MediaPipe Pose landmark, for the joints MediaPipe has
MEDIAPIPE_TO_NTU: dict[int, int] = {
    4: 11, 5: 13, 6: 15, 8: 12, 9: 14, 10: 16, 12: 23, 13: 25, 14: 27, 15: 31, 16: 24, 17: 26, 18: 28, 19: 32,
    21: 19, 22: 21, 23: 20, 24: 22,
}  # fmt: skip
# NTU joints computed from several landmarks (documented in the module docstring)
NTU_SYNTHESISED = (0, 1, 2, 3, 7, 11, 20)


class PoseUnavailable(RuntimeError):
    """MediaPipe is not installed (``pip install -e ".[pose]"``, see the module docstring)."""


def mediapipe_to_ntu(landmarks: np.ndarray) -> np.ndarray:
    """``(..., 33, 3)`` MediaPipe world landmarks -> ``(..., 25, 3)`` NTU joints in ``(-x, -y, z)`` coordinates."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape[-2:] != (33, 3):
        raise ValueError(f"MediaPipe Pose landmarks must be (..., 33, 3), got {lm.shape}")
    lm = lm * np.array([-1.0, -1.0, 1.0], np.float32)
    out = np.zeros((*lm.shape[:-2], 25, 3), np.float32)
    for ntu, mp in MEDIAPIPE_TO_NTU.items():
        out[..., ntu, :] = lm[..., mp, :]
    out[..., 0, :] = (lm[..., 23, :] + lm[..., 24, :]) / 2  # spine base: mid-hips
    out[..., 20, :] = (lm[..., 11, :] + lm[..., 12, :]) / 2  # spine shoulder: mid-shoulders
    out[..., 1, :] = (out[..., 0, :] + out[..., 20, :]) / 2  # spine mid
    out[..., 3, :] = (lm[..., 7, :] + lm[..., 8, :]) / 2  # head: mid-ears
    out[..., 2, :] = (out[..., 20, :] + out[..., 3, :]) / 2  # neck
    out[..., 7, :] = lm[..., [15, 17, 19], :].mean(axis=-2)  # left hand: wrist, pinky, index
    out[..., 11, :] = lm[..., [16, 18, 20], :].mean(axis=-2)  # right hand
    return out


def _pose_graph() -> Any:
    """MediaPipe's pose graph (legacy solution API, the full landmark model: the one the wheel ships) without the
    thresholds protobuf 6 cannot set (module doc)."""
    try:
        from mediapipe.python.solution_base import SolutionBase
        from mediapipe.python.solutions import pose as mp_pose
    except ImportError as err:
        raise PoseUnavailable(
            f"video-to-skeleton needs MediaPipe ({err}); install the extra: pip install -e '.[pose]' "
            "(or pip install --no-deps mediapipe==0.10.21)"
        ) from err
    side_inputs = dict(
        model_complexity=1,  # pose_landmark_full.tflite; lite (0) and heavy (2) would be downloaded
        smooth_landmarks=True,
        enable_segmentation=False,
        smooth_segmentation=True,
        use_prev_landmarks=True,
    )
    return SolutionBase(
        binary_graph_path=mp_pose._BINARYPB_FILE_PATH,
        side_inputs=side_inputs,
        outputs=["pose_world_landmarks"],
    )


@dataclass
class VideoPose:
    """The skeleton of one video."""

    joints: np.ndarray  # (1, T, 25, 3) float32, leading/trailing frames without a person trimmed
    frames_read: int  # decoded frames
    frames_with_person: int
    mean_visibility: float  # MediaPipe's mean landmark visibility over the frames with a person
    seconds: float


def video_to_skeleton(path: str | Path, *, max_frames: int | None = None) -> VideoPose:
    """Run MediaPipe Pose over every frame of a video (PyAV decoding) and map it onto NTU's 25 joints.

    Raises:
        PoseUnavailable: MediaPipe is not installed.
        ValueError: no frame shows a person ("no person detected"), or the video has no frames.
        av.error.FFmpegError / OSError: the video cannot be opened or decoded.
    """
    import av

    graph = _pose_graph()
    frames: list[np.ndarray | None] = []
    visibility: list[float] = []
    start = time.perf_counter()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            for frame in container.decode(video=0):
                result = graph.process({"image": frame.to_ndarray(format="rgb24")})
                world = getattr(result, "pose_world_landmarks", None)
                if world is None:
                    frames.append(None)
                else:
                    frames.append(np.array([[p.x, p.y, p.z] for p in world.landmark], np.float32))
                    visibility.append(float(np.mean([p.visibility for p in world.landmark])))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    finally:
        graph.close()
    seconds = time.perf_counter() - start
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    found = [i for i, f in enumerate(frames) if f is not None]
    if not found:
        raise ValueError(f"{path}: no person detected in {len(frames)} frames")
    kept = frames[found[0] : found[-1] + 1]
    joints = np.zeros((1, len(kept), 25, 3), np.float32)
    for t, lm in enumerate(kept):
        if lm is not None:
            joints[0, t] = mediapipe_to_ntu(lm)
    return VideoPose(joints, len(frames), len(found), float(np.mean(visibility)), seconds)


@dataclass
class PoseExtractionReport:
    """What ``convert_videos`` wrote and skipped."""

    out: Path
    written: int
    frames: int  # frames decoded over all videos
    seconds: float  # pose-estimation time over all videos
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    videos: list[tuple[str, int, int, float]] = field(default_factory=list)  # (sample, frames, with a person, vis.)

    @property
    def frames_per_second(self) -> float:
        """Decoded-and-estimated frames per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _sample_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(rel.with_suffix("")))


def convert_videos(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    max_frames: int | None = None,
) -> PoseExtractionReport:
    """Videos (files, or folders searched recursively) -> a ``vidrec.skeleton/1`` file of NTU-layout skeletons.

    A video's label is its parent folder's name when the inputs are folders of class subfolders
    (``root/<class>/<video>``), else the single class ``"unlabelled"``; performer, camera, setup and replication are
    0. Videos that cannot be decoded, or show no person, are skipped and listed (returned, printed by the command,
    stored in ``/skipped``).

    Raises:
        PoseUnavailable: MediaPipe is not installed.
        FileNotFoundError: an input does not exist.
        ValueError: no video was found.
    """
    videos: list[tuple[Path, Path]] = []  # (video, its root)
    for item in map(Path, inputs):
        if item.is_dir():
            videos += [(p, item) for p in sorted(item.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]
        elif item.is_file():
            videos.append((item, item.parent))
        else:
            raise FileNotFoundError(f"video-to-skeleton: {item} does not exist")
    if not videos:
        raise ValueError(f"video-to-skeleton: no video ({', '.join(VIDEO_SUFFIXES)}) in {[str(i) for i in inputs]}")
    _pose_graph().close()  # PoseUnavailable before any video is read
    classes = sorted({v.parent.name for v, root in videos if v.parent != root})
    class_names = classes if classes and all(v.parent != root for v, root in videos) else ["unlabelled"]
    samples: list[SkeletonSample] = []
    skipped: list[tuple[str, str]] = []
    frames = 0
    seconds = 0.0
    per_video: list[tuple[str, int, int, float]] = []
    for video, root in videos:
        name = _sample_name(video, root)
        try:
            pose = video_to_skeleton(video, max_frames=max_frames)
        except PoseUnavailable:
            raise
        except Exception as err:  # noqa: BLE001  # a broken video is listed, the conversion goes on
            skipped.append((str(video), f"{type(err).__name__}: {err}"))
            continue
        frames += pose.frames_read
        seconds += pose.seconds
        per_video.append((name, pose.frames_read, pose.frames_with_person, pose.mean_visibility))
        label = class_names.index(video.parent.name) if class_names != ["unlabelled"] else 0
        samples.append(SkeletonSample(SampleInfo(name=name, label=label, performer=0), pose.joints))
    written = write_skeleton_samples(
        out,
        samples,
        class_names=class_names,
        layout=NTU25_LAYOUT,
        source="MediaPipe Pose 0.10.21 world landmarks mapped onto NTU's 25 joints (datamodules.skeleton.pose_extract)",
        skipped=skipped,
    )
    return PoseExtractionReport(Path(out), written, frames, seconds, skipped, class_names, per_video)
