"""R(2+1)D video ResNets (18 and 34 layers), streamable, with torchvision weight loading.

Paper: Du Tran, Heng Wang, Lorenzo Torresani, Jamie Ray, Yann LeCun, Manohar Paluri, "A Closer Look at
Spatiotemporal Convolutions for Action Recognition", CVPR 2018.

The network is torchvision's ``VideoResNet`` with ``Conv2Plus1D`` (``torchvision/models/video/resnet.py``): a (2+1)D
stem (``1x7x7`` spatial conv to 45 channels, ``3x1x1`` temporal conv to 64), four stages of basic blocks
(64, 128, 256, 512 channels, spatial stride 2 in stages 2-4), global average pooling and a linear classifier.
As in torchvision, both (2+1)D convs of a block use the intermediate width ``M`` of the block's input and output
widths (``r2plus1d_mid_channels(in, out, t)``) as torchvision computes them (conv2's width from the block's input and
output widths, a 45-channel stem), which gives torchvision's 31.5M parameters for R(2+1)D-18 in SAME mode.

Two temporal layouts (``temporal_padding``):

* ``TemporalPadding.SAME``: torchvision's network exactly: every (2+1)D conv has ``t = 3`` with zero padding in time,
  temporal stride 2 in stages 2-4. Loads torchvision's Kinetics-400 weights with :func:`load_torchvision_r2plus1d`.
  Offline only.
* ``TemporalPadding.VALID`` (default): streamable exactly, frame by frame. Valid ``t = 3`` convs each consume two
  frames, and torchvision's 17 temporal convs with temporal striding would need 109 input frames, so this layout keeps
  ``t = 3`` only in the first (2+1)D conv of the first two blocks of stages 2-4 (six temporal convs, temporal
  convolutions only in the top layers as the paper's rMC variants) and ``t = 1`` elsewhere, with no temporal
  striding: receptive field 13 frames, stride 1. Minimum clip: 13 frames; a 16-frame clip gives 4 positions.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from vidrec.layers.conv2plus1d import (
    Conv2Plus1d,
    NamedTemporalSequential,
    TemporalPadding,
    r2plus1d_mid_channels,
    temporal_conv,
)
from vidrec.layers.temporal import ResidualReLU, TemporalAvgPoolHead, TemporalResidual
from vidrec.models._base import StreamableClassifier
from vidrec.models._registry import Modality, StreamMode, register_model

__all__ = [
    "R2Plus1dStage",
    "R2Plus1dBasicBlock",
    "R2Plus1d",
    "r2plus1d_18",
    "r2plus1d_34",
    "load_torchvision_r2plus1d",
    "torchvision_r2plus1d_key",
]


@dataclass(frozen=True)
class R2Plus1dStage:
    """Settings of one stage of basic blocks."""

    blocks: int  # number of basic blocks
    channels: int  # output channels of every block
    spatial_stride: int  # spatial stride of the first block
    temporal_stride: int  # temporal stride of the first block
    temporal_kernels: tuple[int, ...]  # t of each (2+1)D conv in order: two per block (conv1, conv2)

    def __post_init__(self) -> None:
        if len(self.temporal_kernels) != 2 * self.blocks:
            raise ValueError(
                f"R2Plus1dStage.temporal_kernels needs {2 * self.blocks} entries (two per block), "
                f"got {len(self.temporal_kernels)}"
            )


class R2Plus1dBasicBlock(ResidualReLU):
    """Basic residual block of two (2+1)D convs.

    ::

        x ─► (2+1)D (stride s_t,s,s) ─► BN ─► ReLU ─► (2+1)D ─► BN ─┐
        │                                                          (+) ─► ReLU ─► y
        └──────► shortcut (identity, or 1x1x1 stride s_t,s,s + BN) ─► crop ┘
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        temporal_kernels: tuple[int, int] = (3, 3),
        padding: TemporalPadding = TemporalPadding.VALID,
    ) -> None:
        t1, t2 = temporal_kernels
        branch = NamedTemporalSequential(
            {
                "conv1": Conv2Plus1d(
                    in_channels,
                    out_channels,
                    spatial_stride=spatial_stride,
                    temporal_kernel=t1,
                    temporal_stride=temporal_stride,
                    mid_channels=r2plus1d_mid_channels(in_channels, out_channels, t1),
                    padding=padding,
                ),
                "bn1": nn.BatchNorm3d(out_channels),
                "relu1": nn.ReLU(inplace=True),
                "conv2": Conv2Plus1d(
                    out_channels,
                    out_channels,
                    temporal_kernel=t2,
                    mid_channels=r2plus1d_mid_channels(in_channels, out_channels, t2),  # torchvision's convention
                    padding=padding,
                ),
                "bn2": nn.BatchNorm3d(out_channels),
            }
        )
        shortcut = None
        if spatial_stride != 1 or temporal_stride != 1 or in_channels != out_channels:
            shortcut = NamedTemporalSequential(
                {
                    "conv": temporal_conv(
                        in_channels,
                        out_channels,
                        1,
                        stride=temporal_stride,
                        spatial_stride=spatial_stride,
                        padding=padding,
                    ),
                    "bn": nn.BatchNorm3d(out_channels),
                }
            )
        super().__init__(TemporalResidual(branch, shortcut))


class R2Plus1d(StreamableClassifier):
    """R(2+1)D ResNet: ``features`` (stem + 4 stages), ``pool`` (global average), ``classifier`` (dropout + linear).

    Input ``(B, C, T, H, W)``; ``features`` gives ``(B, 512, T', H / 16, W / 16)`` and ``forward`` the logits
    ``(B, num_classes)``.

    Args:
        stages: the four stages.
        num_classes: classifier outputs.
        in_channels: input channels (3 for RGB).
        stem_temporal_kernel: ``t`` of the stem's temporal conv.
        stem_channels: (spatial conv width, output width) of the stem; torchvision: (45, 64).
        temporal_padding: see the module docstring.
        dropout: dropout probability before the linear classifier.
    """

    def __init__(
        self,
        *,
        stages: Sequence[R2Plus1dStage],
        num_classes: int = 400,
        in_channels: int = 3,
        stem_temporal_kernel: int = 3,
        stem_channels: tuple[int, int] = (45, 64),
        temporal_padding: TemporalPadding = TemporalPadding.VALID,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.temporal_padding = temporal_padding
        # everything but the padding, so a twin with the other padding and the same weights can be built
        self.arch: dict[str, object] = dict(
            stages=list(stages),
            num_classes=num_classes,
            in_channels=in_channels,
            stem_temporal_kernel=stem_temporal_kernel,
            stem_channels=stem_channels,
            dropout=dropout,
        )
        mid, width = stem_channels
        parts: dict[str, nn.Module] = {
            "stem": NamedTemporalSequential(
                {
                    # (B, C, T, H, W) -> (B, 64, T', H/2, W/2)
                    "conv": Conv2Plus1d(
                        in_channels,
                        width,
                        spatial_kernel=7,
                        spatial_stride=2,
                        temporal_kernel=stem_temporal_kernel,
                        mid_channels=mid,
                        padding=temporal_padding,
                    ),
                    "bn": nn.BatchNorm3d(width),
                    "relu": nn.ReLU(inplace=True),
                }
            )
        }
        for i, st in enumerate(stages, start=1):
            blocks: dict[str, nn.Module] = {}
            for b in range(st.blocks):
                blocks[str(b)] = R2Plus1dBasicBlock(
                    width,
                    st.channels,
                    spatial_stride=st.spatial_stride if b == 0 else 1,
                    temporal_stride=st.temporal_stride if b == 0 else 1,
                    temporal_kernels=(st.temporal_kernels[2 * b], st.temporal_kernels[2 * b + 1]),
                    padding=temporal_padding,
                )
                width = st.channels
            parts[f"layer{i}"] = NamedTemporalSequential(blocks)
        self.features = NamedTemporalSequential(parts)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.num_features = width
        init_video_resnet_weights(self)
        self._init_geometry()

    @property
    def min_frames(self) -> int:
        """Shortest clip the network accepts (its temporal receptive field)."""
        return self.features.receptive_field


def init_video_resnet_weights(model: nn.Module) -> None:
    """torchvision VideoResNet's initialisation: Kaiming-normal convs, unit BN, small normal linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _default_stages(blocks: Sequence[int], padding: TemporalPadding) -> list[R2Plus1dStage]:
    stages = []
    for i, (n, channels) in enumerate(zip(blocks, (64, 128, 256, 512))):
        if padding is TemporalPadding.SAME:
            kernels = (3,) * (2 * n)
            t_stride = 1 if i == 0 else 2
        else:
            # t = 3 in conv1 of the first two blocks of stages 2-4, t = 1 elsewhere, no temporal striding
            kernels = tuple(3 if (i > 0 and c == 0 and b < 2) else 1 for b in range(n) for c in range(2))
            t_stride = 1
        stages.append(R2Plus1dStage(n, channels, 1 if i == 0 else 2, t_stride, kernels))
    return stages


def _build(
    blocks: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    temporal_padding: TemporalPadding,
    dropout: float,
    stages: Sequence[R2Plus1dStage] | None,
    torchvision_weights: str | Path | None,
) -> R2Plus1d:
    temporal_padding = TemporalPadding(temporal_padding)
    model = R2Plus1d(
        stages=stages if stages is not None else _default_stages(blocks, temporal_padding),
        num_classes=num_classes,
        in_channels=in_channels,
        stem_temporal_kernel=3 if temporal_padding is TemporalPadding.SAME else 1,
        temporal_padding=temporal_padding,
        dropout=dropout,
    )
    if torchvision_weights is not None:
        load_torchvision_r2plus1d(model, torchvision_weights)
    return model


@register_model(streams=StreamMode.EXACT, modality=Modality.VIDEO)
def r2plus1d_18(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    temporal_padding: TemporalPadding = TemporalPadding.VALID,
    dropout: float = 0.0,
    stages: Sequence[R2Plus1dStage] | None = None,
    torchvision_weights: str | Path | None = None,
) -> R2Plus1d:
    """R(2+1)D-18: stages of [2, 2, 2, 2] basic blocks (400 classes: 31.5M parameters SAME, 20.4M VALID).

    Args:
        num_classes: classifier outputs.
        in_channels: input channels.
        temporal_padding: ``SAME`` for torchvision's network (offline, loads its weights), ``VALID`` (default)
            for the streamable layout (receptive field 13 frames, see the module docstring).
        dropout: dropout before the classifier.
        stages: override the default per-stage settings.
        torchvision_weights: path of a torchvision ``r2plus1d_18`` state dict (e.g. the Kinetics-400 file
            torchvision downloaded, ``~/.cache/torch/hub/checkpoints/r2plus1d_18-91a641e6.pth``) to load; needs
            ``temporal_padding=SAME``. The classifier is loaded only when ``num_classes`` matches.
    """
    return _build(
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        temporal_padding=temporal_padding,
        dropout=dropout,
        stages=stages,
        torchvision_weights=torchvision_weights,
    )


@register_model(streams=StreamMode.EXACT, modality=Modality.VIDEO)
def r2plus1d_34(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    temporal_padding: TemporalPadding = TemporalPadding.VALID,
    dropout: float = 0.0,
    stages: Sequence[R2Plus1dStage] | None = None,
    torchvision_weights: str | Path | None = None,
) -> R2Plus1d:
    """R(2+1)D-34: stages of [3, 4, 6, 3] basic blocks. Arguments as :func:`r2plus1d_18`."""
    return _build(
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        temporal_padding=temporal_padding,
        dropout=dropout,
        stages=stages,
        torchvision_weights=torchvision_weights,
    )


_TV_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^stem\.0\.(.+)$"), r"features.stem.conv.spatial.\1"),
    (re.compile(r"^stem\.1\.(.+)$"), r"features.stem.conv.bn.\1"),
    (re.compile(r"^stem\.3\.(.+)$"), r"features.stem.conv.temporal.op.\1"),
    (re.compile(r"^stem\.4\.(.+)$"), r"features.stem.bn.\1"),
    (re.compile(r"^(layer\d)\.(\d+)\.conv(\d)\.0\.0\.(.+)$"), r"features.\1.\2.residual.branch.conv\3.spatial.\4"),
    (re.compile(r"^(layer\d)\.(\d+)\.conv(\d)\.0\.1\.(.+)$"), r"features.\1.\2.residual.branch.conv\3.bn.\4"),
    (re.compile(r"^(layer\d)\.(\d+)\.conv(\d)\.0\.3\.(.+)$"), r"features.\1.\2.residual.branch.conv\3.temporal.op.\4"),
    (re.compile(r"^(layer\d)\.(\d+)\.conv(\d)\.1\.(.+)$"), r"features.\1.\2.residual.branch.bn\3.\4"),
    (re.compile(r"^(layer\d)\.(\d+)\.downsample\.0\.(.+)$"), r"features.\1.\2.residual.shortcut.conv.op.\3"),
    (re.compile(r"^(layer\d)\.(\d+)\.downsample\.1\.(.+)$"), r"features.\1.\2.residual.shortcut.bn.\3"),
    (re.compile(r"^fc\.(.+)$"), r"classifier.1.\1"),
]


def torchvision_r2plus1d_key(key: str) -> str:
    """Our state-dict key for a key of torchvision's ``VideoResNet`` with ``Conv2Plus1D`` (e.g. ``r2plus1d_18``)."""
    for pattern, repl in _TV_RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    raise KeyError(f"torchvision r2plus1d state-dict key {key!r} matches no known layer (stem.*, layerN.*, fc.*)")


def load_torchvision_r2plus1d(
    model: R2Plus1d, state_dict: Mapping[str, Tensor] | str | Path, *, load_classifier: bool | None = None
) -> R2Plus1d:
    """Load torchvision ``r2plus1d_18`` weights (a state dict or the path of a local ``.pth`` file) into ``model``.

    Every torchvision key is mapped with :func:`torchvision_r2plus1d_key` and loaded strictly (missing or unexpected
    keys and shape mismatches raise, naming the key). The model must use ``TemporalPadding.SAME`` and the default
    stages to match the weights' shapes and semantics.

    Args:
        model: the model to fill (in place).
        state_dict: torchvision state dict, or the path of one saved with ``torch.save``.
        load_classifier: load ``fc`` into ``classifier``; ``None`` loads it when its shape matches and otherwise
            keeps the model's fresh classifier with a warning (fine-tuning to other classes).

    Returns:
        ``model``.
    """
    if isinstance(state_dict, (str, Path)):
        path = Path(state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"torchvision r2plus1d weights file {path} does not exist")
        weights: Mapping[str, Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    else:
        weights = state_dict
    if model.temporal_padding is not TemporalPadding.SAME:
        raise ValueError(
            "torchvision's r2plus1d weights were trained with zero padding in time: build the model with "
            "temporal_padding=TemporalPadding.SAME to load them"
        )
    mapped = {torchvision_r2plus1d_key(k): v for k, v in weights.items()}
    own = model.state_dict()
    fc_shape = tuple(mapped["classifier.1.weight"].shape) if "classifier.1.weight" in mapped else None
    if load_classifier is None:
        load_classifier = fc_shape == tuple(own["classifier.1.weight"].shape)
        if not load_classifier:
            warnings.warn(
                f"torchvision classifier {fc_shape} does not match the model's "
                f"{tuple(own['classifier.1.weight'].shape)}; keeping the model's fresh classifier",
                stacklevel=2,
            )
    if not load_classifier:
        mapped = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
        mapped.update({k: v for k, v in own.items() if k.startswith("classifier.")})
    for k, v in mapped.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"torchvision weight for {k!r} has shape {tuple(v.shape)}, model has {tuple(own[k].shape)}"
            )
    model.load_state_dict(mapped, strict=True)
    return model
