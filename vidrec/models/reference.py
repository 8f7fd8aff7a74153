"""Reference video models built with pytorchvideo (offline only, not streamable).

Papers: Christoph Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020;
Christoph Feichtenhofer, Haoqi Fan, Jitendra Malik, Kaiming He, "SlowFast Networks for Video Recognition",
ICCV 2019 (the Slow-only R50); Du Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", CVPR 2018 (pytorchvideo's bottleneck R(2+1)D-50).

These are the architectures of pytorchvideo's model zoo (``pytorchvideo.models.hub``) built from its builders
(``create_x3d``, ``create_resnet``, ``create_r2plus1d``) with fresh weights: nothing is downloaded. They pad zeros in
time and end in a fixed-size average pool, so they run offline on clips of exactly ``clip_length x crop_size x
crop_size`` and cannot stream. Each is wrapped in :class:`PytorchvideoNet` for vidrec's ``forward_features`` /
``forward_head`` interface; logits come out without softmax.
"""

from __future__ import annotations

import warnings

from torch import Tensor, nn

with warnings.catch_warnings():
    # pytorchvideo imports fvcore, which applies torch.jit.script at import time (deprecated in torch 2.10+)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from pytorchvideo.models.r2plus1d import create_r2plus1d
    from pytorchvideo.models.resnet import create_resnet
    from pytorchvideo.models.x3d import create_x3d

from vidrec.models._registry import Modality, StreamMode, register_model

__all__ = ["PytorchvideoNet", "x3d_xs", "x3d_s", "slow_r50", "r2plus1d_r50"]


class PytorchvideoNet(nn.Module):
    """A pytorchvideo ``Net`` (``blocks``: stem, stages, head) with ``forward_features`` / ``forward_head``.

    Offline only: ``streamable`` is False and there is no ``features`` / ``pool`` pair for the streaming runtime.

    Args:
        net: a ``pytorchvideo.models.net.Net`` whose last block is the head.
        clip_length: frames the head's pooling expects.
        crop_size: height and width the head's pooling expects.
    """

    streamable = False

    def __init__(self, net: nn.Module, *, clip_length: int, crop_size: int) -> None:
        super().__init__()
        blocks = getattr(net, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) < 2:
            raise TypeError(f"expected a pytorchvideo Net with a `blocks` ModuleList, got {type(net).__name__}")
        self.blocks = blocks
        self.clip_length = clip_length
        self.crop_size = crop_size

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, clip_length, crop, crop) -> (B, C', T', H', W')``."""
        if tuple(x.shape[2:]) != (self.clip_length, self.crop_size, self.crop_size):
            raise ValueError(
                f"{type(self).__name__} was built for clips of {self.clip_length} x {self.crop_size} x "
                f"{self.crop_size} (T x H x W), got {tuple(x.shape[2:])}"
            )
        for block in self.blocks[:-1]:
            x = block(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        """``(B, C', T', H', W') -> (B, num_classes)``."""
        return self.blocks[-1](x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _check(clip_length: int, crop_size: int, t_stride: int, name: str) -> None:
    if clip_length % t_stride or crop_size % 32:
        raise ValueError(
            f"{name}: clip_length must be a multiple of {t_stride} and crop_size of 32, got {clip_length}, {crop_size}"
        )


def _x3d(
    *, num_classes: int, in_channels: int, clip_length: int, crop_size: int, dropout: float, depth_factor: float
) -> PytorchvideoNet:
    _check(1, crop_size, 1, "x3d")
    net = create_x3d(
        input_channel=in_channels,
        input_clip_length=clip_length,
        input_crop_size=crop_size,
        model_num_class=num_classes,
        dropout_rate=dropout,
        depth_factor=depth_factor,
        head_activation=None,
    )
    return PytorchvideoNet(net, clip_length=clip_length, crop_size=crop_size)


@register_model(streams=StreamMode.NONE, modality=Modality.VIDEO)
def x3d_xs(
    *, num_classes: int = 400, in_channels: int = 3, clip_length: int = 4, crop_size: int = 160, dropout: float = 0.5
) -> PytorchvideoNet:
    """X3D-XS (pytorchvideo zoo: 4 x 160 x 160). Offline only, not streamable."""
    return _x3d(
        num_classes=num_classes,
        in_channels=in_channels,
        clip_length=clip_length,
        crop_size=crop_size,
        dropout=dropout,
        depth_factor=2.2,
    )


@register_model(streams=StreamMode.NONE, modality=Modality.VIDEO)
def x3d_s(
    *, num_classes: int = 400, in_channels: int = 3, clip_length: int = 13, crop_size: int = 160, dropout: float = 0.5
) -> PytorchvideoNet:
    """X3D-S (pytorchvideo zoo: 13 x 160 x 160). Offline only, not streamable."""
    return _x3d(
        num_classes=num_classes,
        in_channels=in_channels,
        clip_length=clip_length,
        crop_size=crop_size,
        dropout=dropout,
        depth_factor=2.2,
    )


@register_model(streams=StreamMode.NONE, modality=Modality.VIDEO)
def slow_r50(
    *, num_classes: int = 400, in_channels: int = 3, clip_length: int = 8, crop_size: int = 224, dropout: float = 0.5
) -> PytorchvideoNet:
    """Slow-only ResNet-50 (pytorchvideo zoo: 8 x 224 x 224). Offline only, not streamable."""
    _check(clip_length, crop_size, 1, "slow_r50")
    net = create_resnet(
        input_channel=in_channels,
        model_depth=50,
        model_num_class=num_classes,
        dropout_rate=dropout,
        stem_conv_kernel_size=(1, 7, 7),
        head_pool_kernel_size=(clip_length, crop_size // 32, crop_size // 32),
    )
    return PytorchvideoNet(net, clip_length=clip_length, crop_size=crop_size)


@register_model(streams=StreamMode.NONE, modality=Modality.VIDEO)
def r2plus1d_r50(
    *, num_classes: int = 400, in_channels: int = 3, clip_length: int = 16, crop_size: int = 224, dropout: float = 0.5
) -> PytorchvideoNet:
    """pytorchvideo's bottleneck R(2+1)D-50 (zoo: 16 x 224 x 224, temporal stride 4). Offline only, not streamable."""
    _check(clip_length, crop_size, 4, "r2plus1d_r50")
    net = create_r2plus1d(
        input_channel=in_channels,
        model_num_class=num_classes,
        dropout_rate=dropout,
        head_pool_kernel_size=(clip_length // 4, crop_size // 32, crop_size // 32),
        head_activation=None,
    )
    return PytorchvideoNet(net, clip_length=clip_length, crop_size=crop_size)
