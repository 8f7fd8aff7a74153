"""Optical flow for two-stream ConvNets: extraction into ``vidrec.flow/1`` HDF5 files, flow-stack and RGB-frame
datasets, LightningDataModules over the video layouts, and a synthetic motion-only action set.

Extraction needs ``opencv-contrib-python-headless`` (``pip install 'vidrec[flow]'``); reading flow files does not.
"""

from datamodules.flow.datamodule import Layout, TwoStreamDataModule
from datamodules.flow.dataset import SegmentSampling, StreamInput, TwoStreamDataset, VideoEntry
from datamodules.flow.methods import DISPreset, FlowMethod, FlowSettings, TVL1Params
from datamodules.flow.schema import SCHEMA, FlowFile, FlowFileError, FlowHeader, dequantize, open_flow, quantize
from datamodules.flow.synthetic_motion import MOTION_CLASSES, MotionSettings, generate_motion_set
from datamodules.flow.transforms import FlowMean, FrameTransformSettings

__all__ = [
    "DISPreset",
    "FlowFile",
    "FlowFileError",
    "FlowHeader",
    "FlowMean",
    "FlowMethod",
    "FrameTransformSettings",
    "Layout",
    "FlowSettings",
    "MOTION_CLASSES",
    "MotionSettings",
    "SCHEMA",
    "SegmentSampling",
    "StreamInput",
    "TVL1Params",
    "TwoStreamDataModule",
    "TwoStreamDataset",
    "VideoEntry",
    "dequantize",
    "generate_motion_set",
    "open_flow",
    "quantize",
]
