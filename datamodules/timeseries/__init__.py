"""Time-series data layer: the ``vidrec.timeseries/1`` HDF5 schema, converters and the window datamodule.

The schema names import eagerly; the dataset / datamodule names (torch, Lightning) import on first use, so the
converters (``vidrec data ...``) stay quick to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from datamodules.timeseries.schema import (
    SCHEMA,
    Recording,
    TimeSeriesFileError,
    TimeSeriesInfo,
    describe,
    read_info,
    read_recordings,
    write_recordings,
)

if TYPE_CHECKING:
    from datamodules.timeseries.datamodule import HDF5WindowDataModule, TestRecording
    from datamodules.timeseries.dataset import ChannelNormalization, ContextPadding, LabelPolicy, WindowDataset
    from datamodules.timeseries.settings import LabelSettings, LoaderSettings, SplitMode, SplitSettings, WindowSettings
    from datamodules.timeseries.splits import SubjectSplit

_LAZY = {
    "HDF5WindowDataModule": "datamodules.timeseries.datamodule",
    "LabelSettings": "datamodules.timeseries.settings",
    "LoaderSettings": "datamodules.timeseries.settings",
    "SplitMode": "datamodules.timeseries.settings",
    "SplitSettings": "datamodules.timeseries.settings",
    "WindowSettings": "datamodules.timeseries.settings",
    "SubjectSplit": "datamodules.timeseries.splits",
    "TestRecording": "datamodules.timeseries.datamodule",
    "ChannelNormalization": "datamodules.timeseries.dataset",
    "ContextPadding": "datamodules.timeseries.dataset",
    "LabelPolicy": "datamodules.timeseries.dataset",
    "WindowDataset": "datamodules.timeseries.dataset",
}

__all__ = [
    "SCHEMA",
    "ChannelNormalization",
    "ContextPadding",
    "HDF5WindowDataModule",
    "LabelPolicy",
    "LabelSettings",
    "LoaderSettings",
    "Recording",
    "SplitMode",
    "SplitSettings",
    "SubjectSplit",
    "TestRecording",
    "TimeSeriesFileError",
    "TimeSeriesInfo",
    "WindowDataset",
    "WindowSettings",
    "describe",
    "read_info",
    "read_recordings",
    "write_recordings",
]


def __getattr__(name: str) -> Any:
    """Import the torch / Lightning parts on first access (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'datamodules.timeseries' has no attribute {name!r}")
