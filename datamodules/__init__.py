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
