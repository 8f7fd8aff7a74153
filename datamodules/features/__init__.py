"""Per-frame feature files: the HDF5 schema, extraction from video backbones, the feature data module and the
ordered-events generator (a set only temporal models can solve)."""

from datamodules.features.datamodule import FeatureDataModule, FeatureSequenceDataset, segment_rows
from datamodules.features.ordered_events import OrderedEventsSettings, generate_ordered_events
from datamodules.features.schema import (
    FeatureFileError,
    FeatureFileInfo,
    FeatureReader,
    FeatureWriter,
    VideoFeatures,
    join_feature_files,
)

__all__ = [
    "FeatureDataModule",
    "FeatureFileError",
    "FeatureFileInfo",
    "FeatureReader",
    "FeatureSequenceDataset",
    "FeatureWriter",
    "OrderedEventsSettings",
    "VideoFeatures",
    "generate_ordered_events",
    "join_feature_files",
    "segment_rows",
]
