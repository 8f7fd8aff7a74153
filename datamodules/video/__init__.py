"""Video clip data: official layouts (UCF101, HMDB51, Kinetics, class folders), frame-accurate decoding (PyAV or
decord, addressed through a per-file frame index), clip sampling, transforms, LightningDataModules and a synthetic
action set generator."""

from datamodules.video.datamodule import (
    ClassFolderDataModule,
    HMDB51DataModule,
    KineticsDataModule,
    UCF101DataModule,
    VideoClipDataModule,
)
from datamodules.video.dataset import ClipTiming, SamplingMode, VideoClipDataset, clip_frame_indices
from datamodules.video.decoding import DecoderBackend, DecodeSettings, QuarantineLog, RobustVideoReader
from datamodules.video.layouts import AnnotationError, Split, VideoIndex
from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions, write_video
from datamodules.video.transforms import EvalClipTransform, TrainClipTransform, TransformSettings

__all__ = [
    "AnnotationError",
    "ClassFolderDataModule",
    "ClipTiming",
    "DecodeSettings",
    "DecoderBackend",
    "EvalClipTransform",
    "HMDB51DataModule",
    "KineticsDataModule",
    "QuarantineLog",
    "RobustVideoReader",
    "SamplingMode",
    "Split",
    "SyntheticSettings",
    "TrainClipTransform",
    "TransformSettings",
    "UCF101DataModule",
    "VideoClipDataModule",
    "VideoClipDataset",
    "VideoIndex",
    "clip_frame_indices",
    "generate_synthetic_actions",
    "write_video",
]
