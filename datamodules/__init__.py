"""LightningDataModules and datasets of vidrec: video clips, optical-flow stacks, HDF5 time series and features.

Time series (``datamodules.timeseries``): the ``vidrec.timeseries/1`` HDF5 schema, converters and
``HDF5WindowDataModule``. Its names are re-exported here and imported on first use, so ``import datamodules`` does not
pull in torch / Lightning.
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

__all__ = [
    "ChannelNormalization",
    "HDF5WindowDataModule",
    "LabelPolicy",
    "Recording",
    "SplitMode",
    "TestRecording",
    "read_recordings",
    "write_recordings",
]
_TIMESERIES = frozenset(__all__)


def __getattr__(name: str) -> Any:
    """Import re-exported names on first access (PEP 562)."""
    if name in _TIMESERIES:
        return getattr(importlib.import_module("datamodules.timeseries"), name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")


# Video clips (``datamodules.video``): UCF101 / HMDB51 / Kinetics / class-folder datamodules, robust decoding,
# synthetic actions. Re-exported lazily like the time-series names (appended; the block above is unchanged).
if TYPE_CHECKING:
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

__all__ += [
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
_VIDEO = frozenset(__all__) - _TIMESERIES
_getattr_before_video = __getattr__


def __getattr__(name: str) -> Any:  # type: ignore[no-redef]  # noqa: F811
    """Import re-exported video names on first access; other names as before."""
    if name in _VIDEO:
        return getattr(importlib.import_module("datamodules.video"), name)
    return _getattr_before_video(name)
