"""The streaming protocol of vidrec.layers.temporal: geometry, right alignment, exact streaming per layer."""

import copy

import pytest
import torch
from torch import nn

from vidrec.layers import (
    TemporalAvgPoolHead,
    TemporalConcat,
    TemporalModule,
    TemporalParallelSum,
    TemporalResidual,
    TemporalSequential,
    TemporalWindowOp,
    flatten_state,
    map_state,
    state_layout,
    stream_state_of,
    stream_step_of,
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


# ------------------------------------------------------------------ structured state (vidrec.layers.stream_state)
class _LegacyFlatLeaf(TemporalModule):
    """A leaf on the flat protocol (a list of two tensors), as the video layers are: a delay line and a running sum."""

    receptive_field, stride = 2, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:] + x[:, :, :-1]

    def stream_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.new_zeros(x.shape[0], x.shape[1], 1), x.new_zeros(x.shape[0], 1)]

    def stream_step(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        buf = torch.cat([state[0], x], dim=2)
        return buf[:, :, 1:] + buf[:, :, :-1], [buf[:, :, -1:], state[1] + x.shape[2]]


class _LegacySizesContainer(TemporalModule):
    """A container on the flat protocol that splits its children's states by cached lengths (as conv2plus1d's)."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.body = nn.ModuleList(modules)
        self.receptive_field = 1 + sum(temporal_geometry(m)[0] - 1 for m in modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.body:
            x = m(x)
        return x

    def stream_state(self, x: torch.Tensor) -> list:  # type: ignore[type-arg]
        state: list = []  # type: ignore[type-arg]
        self._sizes = []
        for m in self.body:
            s = stream_state_of(m, x)
            self._sizes.append(len(s))
            state.extend(s)
            x, _ = stream_step_of(m, x, s)
        return state

    def stream_step(self, x: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:  # type: ignore[type-arg]
        new: list = []  # type: ignore[type-arg]
        i = 0
        for m, n in zip(self.body, self._sizes):
            x, s = stream_step_of(m, x, state[i : i + n])
            new.extend(s)
            i += n
        return x, new


def _block() -> nn.Module:
    torch.manual_seed(0)
    return TemporalSequential(
        ResidualBlock1d(3, 4, 3, dilation=2),
        TemporalConcat(
            temporal_conv1d(4, 2, 3), TemporalParallelSum(temporal_conv1d(4, 2, 2), temporal_conv1d(4, 2, 1))
        ),
        nn.ReLU(),
        temporal_conv1d(4, 4, 3, stride=2),
    ).eval()


def test_state_is_one_entry_per_child_and_flattens_in_stepping_order() -> None:
    block = _block()
    state = block.stream_state(torch.zeros(2, 3, 2))
    assert isinstance(state, list) and len(state) == len(block)  # one entry per layer
    assert state[2] == []  # a pointwise layer has an empty state
    flat = flatten_state(state)
    layout = state_layout(state)
    assert layout.num_tensors == len(flat) == 7  # residual: 2 + shortcut 1; concat: 1 + 2; strided conv: 1
    rebuilt = layout.unflatten(flat)
    assert state_layout(rebuilt) == layout and all(a is b for a, b in zip(flatten_state(rebuilt), flat))
    with pytest.raises(ValueError, match="holds 7 tensors, got 6"):
        layout.unflatten(flat[:-1])
    assert flatten_state(map_state(lambda t: t[:1], state))[0].shape[0] == 1


def test_stream_step_needs_no_prior_stream_state_call() -> None:
    """Any state of the right structure steps any instance: nothing is cached by stream_state."""
    block = _block()
    twin = copy.deepcopy(block)  # never asked for a state
    x = torch.randn(2, 3, 40)
    state = block.stream_state(x[:, :, :2])
    flat = [torch.randn(t.shape) for t in flatten_state(state)]  # e.g. gathered from slots or read from ONNX
    ya, sa = block.stream_step(x[:, :, :2], state_layout(state).unflatten(flat))
    yb, sb = twin.stream_step(x[:, :, :2], state_layout(state).unflatten([t.clone() for t in flat]))
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    for a, b in zip(flatten_state(sa), flatten_state(sb)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(_stream(twin, x, 2)[:, :, -8:], twin(x)[:, :, -8:], rtol=1e-5, atol=1e-5)


def test_wrong_state_structure_is_named() -> None:
    block = _block()
    with pytest.raises(ValueError, match=r"TemporalSequential.stream_step expects a state of 4 entries"):
        block.stream_step(torch.zeros(1, 3, 2), [])


def test_flat_protocol_modules_stream_inside_structured_containers() -> None:
    """A leaf returning a flat list, and a container splitting flat lists by cached sizes, still stream exactly."""
    torch.manual_seed(0)
    legacy = _LegacySizesContainer(temporal_conv1d(3, 3, 3), _LegacyFlatLeaf(), _block())
    model = TemporalSequential(temporal_conv1d(3, 3, 2), legacy, _LegacyFlatLeaf()).eval()
    x = torch.randn(2, 3, 60)
    offline = model(x)
    streamed = _stream(model, x, 2)
    n = min(offline.shape[2], streamed.shape[2]) - 4
    torch.testing.assert_close(streamed[:, :, -n:], offline[:, :, -n:], rtol=1e-5, atol=1e-5)
    assert state_layout(model.stream_state(x[:, :, :2])).num_tensors == 1 + (1 + 2 + 7) + 2
