"""Temporal building blocks; every temporal layer here knows how to stream (see ``temporal.py``)."""

from vidrec.layers.pooling import TemporalMaxPool1d
from vidrec.layers.stream_state import StateLayout, StreamState, flatten_state, map_state, state_layout
from vidrec.layers.temporal import (
    TemporalAvgPoolHead,
    TemporalConcat,
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
    "StateLayout",
    "StreamState",
    "flatten_state",
    "map_state",
    "state_layout",
    "TemporalAvgPoolHead",
    "TemporalConcat",
    "TemporalMaxPool1d",
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

# (2+1)D convolution and P3D blocks (video)
from vidrec.layers.conv2plus1d import (  # noqa: E402
    Conv2Plus1d,
    NamedTemporalSequential,
    SameTemporalConv,
    SpatialConv3d,
    TemporalConv3d,
    TemporalPadding,
    r2plus1d_mid_channels,
    temporal_conv,
)
from vidrec.layers.p3d_blocks import (  # noqa: E402
    Bottleneck2d,
    P3DBlockA,
    P3DBlockB,
    P3DBlockC,
    P3DBlockType,
    P3DBottleneck,
    p3d_block,
)

__all__ += [
    "Bottleneck2d",
    "Conv2Plus1d",
    "NamedTemporalSequential",
    "P3DBlockA",
    "P3DBlockB",
    "P3DBlockC",
    "P3DBlockType",
    "P3DBottleneck",
    "SameTemporalConv",
    "SpatialConv3d",
    "TemporalConv3d",
    "TemporalPadding",
    "p3d_block",
    "r2plus1d_mid_channels",
    "temporal_conv",
]
