"""Tests of the (2+1)D conv and P3D blocks: values against plain nn.Conv3d, geometry, exact streaming."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.conv2plus1d import (
    Conv2Plus1d,
    SpatialConv3d,
    TemporalConv3d,
    TemporalPadding,
    r2plus1d_mid_channels,
    temporal_conv,
)
from vidrec.layers.p3d_blocks import Bottleneck2d, P3DBlockA, P3DBlockB, P3DBlockC, P3DBlockType, p3d_block
from vidrec.layers.temporal import TemporalModule


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _stream_frames(layer: TemporalModule, x: Tensor, hop: int = 1) -> Tensor:
    """Feed ``x`` hop by hop from a zero state; return the outputs concatenated over time."""
    state = layer.stream_state(x[:, :, :hop])
    outs = []
    for t in range(0, x.shape[2], hop):
        y, state = layer.stream_step(x[:, :, t : t + hop], state)
        outs.append(y)
    return torch.cat(outs, dim=2)


def test_mid_channels_matches_paper_formula_and_torchvision() -> None:
    # torchvision's midplanes for a 64 -> 64 block: 64*64*27 // (64*9 + 3*64) = 144
    assert r2plus1d_mid_channels(64, 64, 3) == 144
    assert r2plus1d_mid_channels(64, 128, 3) == 230
    # t = 1 matches a 1 x 3 x 3 conv: M = 9 * 64 * 64 // (9 * 64 + 64)
    assert r2plus1d_mid_channels(64, 64, 1) == 57


def test_spatial_and_temporal_conv_equal_conv3d() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 9, 9)
    sp = SpatialConv3d(5, 7, 3, stride=2)
    torch.testing.assert_close(sp(x), F.conv3d(x, sp.weight, None, (1, 2, 2), (0, 1, 1)), atol=1e-5, rtol=1e-5)
    for k, s, p, ss in [(3, 1, 0, 1), (3, 2, 1, 1), (1, 2, 0, 2), (5, 1, 2, 1)]:
        tc = TemporalConv3d(5, 7, k, stride=s, spatial_stride=ss, padding=p)
        ref = F.conv3d(x, tc.weight, None, (s, ss, ss), (p, 0, 0))
        torch.testing.assert_close(tc(x), ref, atol=1e-5, rtol=1e-5)


def test_conv2plus1d_valid_equals_plain_modules() -> None:
    torch.manual_seed(0)
    conv = Conv2Plus1d(4, 8, spatial_stride=2, temporal_kernel=3).eval()
    _randomise_bn(conv)
    assert conv.mid_channels == r2plus1d_mid_channels(4, 8, 3)
    x = torch.randn(1, 4, 7, 10, 10)
    ref = nn.Sequential(
        nn.Conv3d(4, conv.mid_channels, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
        nn.BatchNorm3d(conv.mid_channels),
        nn.ReLU(),
        nn.Conv3d(conv.mid_channels, 8, (3, 1, 1), bias=False),
    ).eval()
    ref.load_state_dict(
        {
            "0.weight": conv.spatial.weight,
            **{f"1.{k}": v for k, v in conv.bn.state_dict().items()},
            "3.weight": conv.temporal.op.weight,
        }
    )
    y = conv(x)
    assert y.shape == (1, 8, 5, 5, 5)  # (B, C_out, T - 2, H / 2, W / 2)
    torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)
    assert (conv.receptive_field, conv.stride) == (3, 1)


def test_same_padding_keeps_length_and_refuses_to_stream() -> None:
    conv = Conv2Plus1d(3, 4, temporal_kernel=3, temporal_stride=2, padding=TemporalPadding.SAME).eval()
    x = torch.randn(1, 3, 7, 8, 8)
    assert conv(x).shape[2] == 4  # ceil(7 / 2)
    assert conv.output_length(7) == 4
    with pytest.raises(ValueError, match="cannot stream"):
        conv.stream_state(x[:, :, :1])
    with pytest.raises(ValueError, match="odd temporal kernel"):
        temporal_conv(3, 4, 2, padding=TemporalPadding.SAME)


@pytest.mark.parametrize("hop", [1, 2])
def test_conv2plus1d_streams_exactly(hop: int) -> None:
    torch.manual_seed(0)
    conv = Conv2Plus1d(3, 6, temporal_kernel=3).eval()
    _randomise_bn(conv)
    x = torch.randn(2, 3, 12, 8, 8)
    with torch.no_grad():
        offline = conv(x)  # (B, 6, 10, 8, 8)
        streamed = _stream_frames(conv, x, hop)
    # the first r - 1 streamed steps read the zero state (warm-up); the rest are the offline positions
    torch.testing.assert_close(streamed[:, :, 2:], offline, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_cls", [P3DBlockA, P3DBlockB, P3DBlockC, Bottleneck2d])
def test_p3d_blocks_shapes_geometry_and_streaming(block_cls: type) -> None:
    torch.manual_seed(0)
    block = block_cls(16, 4, spatial_stride=2, temporal_kernel=3).eval()
    _randomise_bn(block)
    rf = 1 if block_cls is Bottleneck2d else 3
    assert (block.receptive_field, block.stride) == (rf, 1)
    x = torch.randn(1, 16, 9, 8, 8)
    with torch.no_grad():
        offline = block(x)
        streamed = _stream_frames(block, x)
    assert offline.shape == (1, 16, 9 - rf + 1, 4, 4)  # (B, 4 * width, T', H / 2, W / 2)
    torch.testing.assert_close(streamed[:, :, rf - 1 :], offline, atol=1e-5, rtol=1e-5)


def test_p3d_block_structures_differ_as_in_the_paper() -> None:
    """With the temporal conv's BN zeroed, T contributes nothing: A collapses to zero, B and C to the S path."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 6, 6)
    blocks = {t: p3d_block(t, 8, 2).eval() for t in P3DBlockType}
    plain = Bottleneck2d(8, 2).eval()
    for t, block in blocks.items():
        for k, v in plain.state_dict().items():
            # share conv1/conv3/shortcut and the S path with the 2D block
            src = {"A": "core.s.", "B": "core.a.", "C": "core.s."}[t.value]
            key = k.replace("core.", src)
            block.state_dict()[key].copy_(v)
        t_bn = {"A": "core.t.bn", "B": "core.b.bn", "C": "core.t.branch.bn"}[t.value]
        bn = block.get_submodule(f"residual.branch.{t_bn}")
        bn.weight.data.zero_()
        bn.bias.data.zero_()
    with torch.no_grad():
        y2d = plain(x)[:, :, 2:]  # right-aligned to the blocks' T - 2 outputs
        # A: core = T(S(x)) = 0, so y = relu(bn3(conv3(0)) + x)
        ya = blocks[P3DBlockType.A](x)
        zero_core = F.relu(blocks[P3DBlockType.A].residual.branch.bn3(torch.zeros(1, 8, 3, 6, 6)) + x[:, :, 2:])
        torch.testing.assert_close(ya, zero_core, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(blocks[P3DBlockType.B](x), y2d, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(blocks[P3DBlockType.C](x), y2d, atol=1e-5, rtol=1e-5)
