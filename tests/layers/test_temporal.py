"""The streaming protocol of vidrec.layers.temporal: geometry, right alignment, exact streaming per layer."""

import pytest
import torch
from torch import nn

from vidrec.layers import (
    TemporalAvgPoolHead,
    TemporalParallelSum,
    TemporalResidual,
    TemporalSequential,
    TemporalWindowOp,
    temporal_conv1d,
    temporal_geometry,
)
from vidrec.layers.residual1d import InvertedResidual1d, ResidualBlock1d


def _stream(module: nn.Module, x: torch.Tensor, hop: int) -> torch.Tensor:
    state = module.stream_state(x[:, :, :hop])
    outs = []
    for t in range(0, x.shape[2] - hop + 1, hop):
        y, state = module.stream_step(x[:, :, t : t + hop], state)
        outs.append(y)
    return torch.cat(outs, dim=2)


@pytest.mark.parametrize(
    "kernel,stride,dilation",
    [(1, 1, 1), (3, 1, 1), (5, 2, 1), (3, 1, 3), (1, 2, 1), (2, 4, 1), (7, 3, 2)],
)
def test_window_op_streams_exactly(kernel: int, stride: int, dilation: int) -> None:
    torch.manual_seed(0)
    conv = temporal_conv1d(3, 4, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, 3, 12 * stride * 4)
    hop = stride * 2
    streamed = _stream(conv, x, hop)
    offline = conv(x)
    # the stream's first outputs depend on the zero-initialised buffer; after the receptive field they must match
    n = offline.shape[2]
    torch.testing.assert_close(streamed[:, :, -n:], offline, atol=1e-5, rtol=0)
    assert conv.output_length(x.shape[2]) == n


def test_right_alignment_last_output_ends_on_last_step() -> None:
    # kernel 1 stride 3 over 10 steps picks steps 0, 3, 6, 9 (right-aligned: the last step is always used)
    op = TemporalWindowOp(nn.Identity(), 1, 1)
    pick = TemporalWindowOp(nn.MaxPool1d(1, stride=3), 1, 3)
    x = torch.arange(10.0).view(1, 1, 10)
    assert op(x).flatten().tolist() == list(range(10))
    assert pick(x).flatten().tolist() == [0.0, 3.0, 6.0, 9.0]
    assert pick(x[:, :, :9]).flatten().tolist() == [2.0, 5.0, 8.0]


def test_geometry_composes() -> None:
    seq = TemporalSequential(temporal_conv1d(1, 1, 3), temporal_conv1d(1, 1, 3, stride=2), temporal_conv1d(1, 1, 5))
    # r = 3 + (3-1)*1 + (5-1)*2 = 13, s = 2
    assert (seq.receptive_field, seq.stride) == (13, 2)
    assert seq(torch.zeros(1, 1, 13)).shape[2] == 1
    with pytest.raises(TypeError, match="cannot stream"):
        temporal_geometry(nn.Conv1d(1, 1, 3, padding=1))
    with pytest.raises(ValueError, match="needs at least 3"):
        temporal_conv1d(1, 1, 3)(torch.zeros(1, 1, 2))


def test_stream_step_rejects_chunk_not_multiple_of_stride() -> None:
    conv = temporal_conv1d(1, 1, 3, stride=2)
    state = conv.stream_state(torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="not a multiple of the stride 2"):
        conv.stream_step(torch.zeros(1, 1, 3), state)


@pytest.mark.parametrize("stride", [1, 2])
def test_residual_and_parallel_blocks_stream_exactly(stride: int) -> None:
    torch.manual_seed(1)
    blocks = [
        ResidualBlock1d(4, 4, 3, dilation=2),
        ResidualBlock1d(4, 6, 5, stride=stride),
        InvertedResidual1d(4, 4, 3),
        InvertedResidual1d(4, 8, 3, stride=stride),
        TemporalParallelSum(
            temporal_conv1d(4, 4, 3, stride=stride), TemporalWindowOp(nn.Conv1d(4, 4, 1, stride=stride), 1, stride)
        ),
        TemporalResidual(temporal_conv1d(4, 4, 5)),
    ]
    x = torch.randn(3, 4, 64)
    for block in blocks:
        block.eval()
        with torch.no_grad():
            offline = block(x)
            streamed = _stream(block, x, 2 * block.stride)
        n = offline.shape[2]
        torch.testing.assert_close(streamed[:, :, -n:], offline, atol=1e-5, rtol=0, msg=type(block).__name__)


def test_avg_pool_head_streams_window_mean() -> None:
    head = TemporalAvgPoolHead()
    head.positions = 4
    x = torch.randn(2, 3, 10)
    state = head.stream_state(x[:, :, :1])
    for t in range(10):
        y, state = head.stream_step(x[:, :, t : t + 1], state)
        if t >= 3:
            torch.testing.assert_close(y, head(x[:, :, t - 3 : t + 1]))
    video = torch.randn(1, 3, 5, 4, 4)
    torch.testing.assert_close(head(video), video.mean(dim=(2, 3, 4)))
