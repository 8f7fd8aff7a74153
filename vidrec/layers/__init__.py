"""Temporal building blocks; every temporal layer here knows how to stream (see ``temporal.py``)."""

from vidrec.layers.temporal import (
    TemporalAvgPoolHead,
    TemporalModule,
    TemporalParallelSum,
    TemporalResidual,
    TemporalSequential,
    TemporalWindowOp,
    crop_left_to,
    is_time_pointwise,
    right_align,
    stream_state_of,
    stream_step_of,
    temporal_conv1d,
    temporal_geometry,
)

__all__ = [
    "TemporalAvgPoolHead",
    "TemporalModule",
    "TemporalParallelSum",
    "TemporalResidual",
    "TemporalSequential",
    "TemporalWindowOp",
    "crop_left_to",
    "is_time_pointwise",
    "right_align",
    "stream_state_of",
    "stream_step_of",
    "temporal_conv1d",
    "temporal_geometry",
]
