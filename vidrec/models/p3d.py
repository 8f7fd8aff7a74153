"""Pseudo-3D residual networks (P3D-63, P3D-131, P3D-199), streamable, for RGB clips and optical-flow stacks.

Paper: Zhaofan Qiu, Ting Yao, Tao Mei, "Learning Spatio-Temporal Representation with Pseudo-3D Residual
Networks", ICCV 2017.

ResNet-50/101/152 bottleneck depths ([3, 4, 6, 3], [3, 4, 23, 3], [3, 8, 36, 3]) whose blocks become P3D blocks
(:mod:`vidrec.layers.p3d_blocks`) placed cyclically A, B, C, A, B, C, ... in network order, as in the paper. The stem
is a ``1x7x7`` conv (stride 1,2,2), BN, ReLU and a max pool; the head is global average pooling, dropout and a
linear layer. ``in_channels = 3`` for RGB, ``2 * L`` for a stack of ``L`` optical-flow fields (x, y interleaved).

Two temporal layouts (``temporal_padding``):

* ``TemporalPadding.SAME``: the paper's network as the authors released it: a P3D block (``t = 3``, zero padding in
  time) in every block of res2-res4, plain 2D bottlenecks in res5, a ``2x3x3`` stride-2 stem pool and ``2x1x1``
  stride-2 temporal max pools after res2, res3 and res4, so a 16-frame clip reaches res5 as one step (16 x 160 x 160
  input in the paper; P3D-199 has ~66M parameters). Minimum clip 16 frames. Offline only.
* ``TemporalPadding.VALID`` (default): streamable exactly, frame by frame. Valid ``t = 3`` convs each consume two
  frames, so 50 of them (P3D-199) cannot fit a clip; this layout makes the first two blocks of res3, res4 and res5 P3D
  blocks (A, B, C, A, B, C) and all others 2D bottlenecks, with no temporal pooling: receptive field 13 frames,
  stride 1. Minimum clip: 13 frames; a 16-frame clip gives 4 positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from vidrec.layers.conv2plus1d import NamedTemporalSequential, SpatialConv3d, TemporalPadding
from vidrec.layers.p3d_blocks import EXPANSION, P3DBlockType, p3d_block
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalWindowOp
from vidrec.models._base import StreamableClassifier
from vidrec.models._registry import Modality, StreamMode, register_model
from vidrec.models.r2plus1d import init_video_resnet_weights

__all__ = ["P3DStage", "P3D", "p3d63", "p3d131", "p3d199"]

_CYCLE = (P3DBlockType.A, P3DBlockType.B, P3DBlockType.C)


@dataclass(frozen=True)
class P3DStage:
    """Settings of one stage of bottleneck blocks."""

    blocks: int  # number of bottleneck blocks
    width: int  # bottleneck width; the stage outputs 4 * width channels
    spatial_stride: int  # spatial stride of the first block
    temporal_blocks: tuple[int, ...]  # indices of the blocks that are P3D blocks; the others are 2D bottlenecks
    temporal_pool: bool = False  # a 2x1x1 temporal max pool, stride 2, after the stage

    def __post_init__(self) -> None:
        bad = [i for i in self.temporal_blocks if not 0 <= i < self.blocks]
        if bad:
            raise ValueError(f"P3DStage.temporal_blocks {bad} out of range for a stage of {self.blocks} blocks")


def _temporal_max_pool() -> TemporalWindowOp:
    # (B, C, T, H, W) -> (B, C, (T - 2) // 2 + 1, H, W), right-aligned and streamable
    return TemporalWindowOp(nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1)), receptive_field=2, stride=2)


class P3D(StreamableClassifier):
    """P3D ResNet: ``features`` (stem + 4 stages), ``pool`` (global average), ``classifier`` (dropout + linear).

    Input ``(B, C, T, H, W)``; ``features`` gives ``(B, 2048, T', H / 32, W / 32)``.

    Args:
        stages: the four stages.
        num_classes: classifier outputs.
        in_channels: 3 for RGB, ``2 * L`` for ``L`` stacked flow fields.
        temporal_kernel: ``t`` of every P3D block's temporal conv.
        stem_temporal_pool: the stem's max pool is ``2x3x3`` stride 2 (True) or ``1x3x3`` stride (1, 2, 2).
        temporal_padding: see the module docstring.
        dropout: dropout probability before the linear classifier (0.5 in the authors' release).
    """

    def __init__(
        self,
        *,
        stages: Sequence[P3DStage],
        num_classes: int = 400,
        in_channels: int = 3,
        temporal_kernel: int = 3,
        stem_temporal_pool: bool = False,
        temporal_padding: TemporalPadding = TemporalPadding.VALID,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.temporal_padding = temporal_padding
        # everything but the padding, so a twin with the other padding and the same weights can be built
        self.arch: dict[str, object] = dict(
            stages=list(stages),
            num_classes=num_classes,
            in_channels=in_channels,
            temporal_kernel=temporal_kernel,
            stem_temporal_pool=stem_temporal_pool,
            dropout=dropout,
        )
        if stem_temporal_pool:
            stem_pool: nn.Module = TemporalWindowOp(
                nn.MaxPool3d((2, 3, 3), stride=2, padding=(0, 1, 1)), receptive_field=2, stride=2
            )
        else:
            stem_pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        parts: dict[str, nn.Module] = {
            "stem": NamedTemporalSequential(
                {
                    # (B, C, T, H, W) -> (B, 64, T', H/4, W/4)
                    "conv": SpatialConv3d(in_channels, 64, 7, stride=2),
                    "bn": nn.BatchNorm3d(64),
                    "relu": nn.ReLU(inplace=True),
                    "pool": stem_pool,
                }
            )
        }
        channels, n_p3d = 64, 0
        for i, st in enumerate(stages, start=1):
            blocks: dict[str, nn.Module] = {}
            for b in range(st.blocks):
                block_type = None
                if b in st.temporal_blocks:
                    block_type, n_p3d = _CYCLE[n_p3d % 3], n_p3d + 1
                blocks[str(b)] = p3d_block(
                    block_type,
                    channels,
                    st.width,
                    spatial_stride=st.spatial_stride if b == 0 else 1,
                    temporal_kernel=temporal_kernel,
                    padding=temporal_padding,
                )
                channels = st.width * EXPANSION
            parts[f"layer{i}"] = NamedTemporalSequential(blocks)
            if st.temporal_pool:
                parts[f"tpool{i}"] = _temporal_max_pool()
        self.features = NamedTemporalSequential(parts)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        self.num_features = channels
        init_video_resnet_weights(self)
        self._init_geometry()

    @property
    def min_frames(self) -> int:
        """Shortest clip the network accepts (its temporal receptive field)."""
        return self.features.receptive_field


def _default_stages(blocks: Sequence[int], padding: TemporalPadding) -> list[P3DStage]:
    stages = []
    for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        stride = 1 if i == 0 else 2
        if padding is TemporalPadding.SAME:
            # the authors' release: P3D blocks in res2-res4, 2D res5, temporal pooling after res2-res4
            stages.append(P3DStage(n, width, stride, tuple(range(n)) if i < 3 else (), temporal_pool=i < 3))
        else:
            # streamable: P3D blocks are the first two of res3-res5 (receptive field 13 frames)
            stages.append(P3DStage(n, width, stride, (0, 1) if i > 0 else ()))
    return stages


def _build(
    blocks: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    temporal_padding: TemporalPadding,
    dropout: float,
    stages: Sequence[P3DStage] | None,
) -> P3D:
    temporal_padding = TemporalPadding(temporal_padding)
    return P3D(
        stages=stages if stages is not None else _default_stages(blocks, temporal_padding),
        num_classes=num_classes,
        in_channels=in_channels,
        stem_temporal_pool=temporal_padding is TemporalPadding.SAME,
        temporal_padding=temporal_padding,
        dropout=dropout,
    )


@register_model(streams=StreamMode.EXACT, modality=Modality.VIDEO)
def p3d63(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    temporal_padding: TemporalPadding = TemporalPadding.VALID,
    dropout: float = 0.5,
    stages: Sequence[P3DStage] | None = None,
) -> P3D:
    """P3D-63 (from ResNet-50, [3, 4, 6, 3] blocks).

    Args:
        num_classes: classifier outputs.
        in_channels: 3 for RGB, ``2 * L`` for ``L`` stacked optical-flow fields.
        temporal_padding: ``VALID`` (default): streamable, receptive field 13 frames; ``SAME``: the paper's layout
            (see the module docstring).
        dropout: dropout before the classifier.
        stages: override the default per-stage settings.
    """
    return _build(
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        temporal_padding=temporal_padding,
        dropout=dropout,
        stages=stages,
    )


@register_model(streams=StreamMode.EXACT, modality=Modality.VIDEO)
def p3d131(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    temporal_padding: TemporalPadding = TemporalPadding.VALID,
    dropout: float = 0.5,
    stages: Sequence[P3DStage] | None = None,
) -> P3D:
    """P3D-131 (from ResNet-101, [3, 4, 23, 3] blocks). Arguments as :func:`p3d63`."""
    return _build(
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        temporal_padding=temporal_padding,
        dropout=dropout,
        stages=stages,
    )


@register_model(streams=StreamMode.EXACT, modality=Modality.VIDEO)
def p3d199(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    temporal_padding: TemporalPadding = TemporalPadding.VALID,
    dropout: float = 0.5,
    stages: Sequence[P3DStage] | None = None,
) -> P3D:
    """P3D-199 (from ResNet-152, [3, 8, 36, 3] blocks; ~66M parameters in the paper's layout).

    Arguments as :func:`p3d63`.
    """
    return _build(
        (3, 8, 36, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        temporal_padding=temporal_padding,
        dropout=dropout,
        stages=stages,
    )
