"""LightningDataModules and datasets of vidrec: HDF5 time series and decoded video clips.

* Time series (``datamodules.timeseries``): the ``vidrec.timeseries/1`` HDF5 schema, converters and
  ``HDF5WindowDataModule``.
* Video clips (``datamodules.video``): UCF101 / HMDB51 / Kinetics / class-folder data modules, robust decoding and
  the synthetic action set.

The names below are imported on first use (PEP 562), so ``import datamodules`` does not pull in torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datamodules.timeseries import (
        ChannelNormalization,
        HDF5WindowDataModule,
        LabelPolicy,
        Recording,
        SplitMode,
        TestRecording,
        read_recordings,
        write_recordings,
    )
    from datamodules.video import (
        ClassFolderDataModule,
        ClipTiming,
        DecoderBackend,
        DecodeSettings,
        HMDB51DataModule,
        KineticsDataModule,
        TransformSettings,
        UCF101DataModule,
        VideoClipDataModule,
    )

__all__ = [
    # time series
    "ChannelNormalization",
    "HDF5WindowDataModule",
    "LabelPolicy",
    "Recording",
    "SplitMode",
    "TestRecording",
    "read_recordings",
    "write_recordings",
    # video clips
    "ClassFolderDataModule",
    "ClipTiming",
    "DecodeSettings",
    "DecoderBackend",
    "HMDB51DataModule",
    "KineticsDataModule",
    "TransformSettings",
    "UCF101DataModule",
    "VideoClipDataModule",
]
_FIRST_VIDEO_NAME = __all__.index("ClassFolderDataModule")
_MODULE_OF = {
    name: "datamodules.timeseries" if i < _FIRST_VIDEO_NAME else "datamodules.video" for i, name in enumerate(__all__)
}


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its subpackage on first access."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
