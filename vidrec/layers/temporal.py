"""Temporal layers that run offline and in streaming mode with identical outputs.

Every temporal layer in vidrec follows one convention, so that whole models stream without being rewritten
(the design of kws_streaming's ``Stream`` wrapper, generalised to strides, residuals and video):

* Time is axis 2: time series are ``(B, C, T)``, video is ``(B, C, T, H, W)``.
* No zero padding in time ("valid"). A layer with receptive field ``r`` and stride ``s`` maps ``T`` input
  steps to ``(T - r) // s + 1`` output steps.
* **Right alignment.** When ``(T - r)`` is not a multiple of ``s`` the surplus is dropped on the *left*, so the last
  output position always ends on the last input step. Residual and parallel branches crop the longer branch on
  the left. With this rule a layer that sees a long stream chunk by chunk produces exactly the positions it
  produces offline, and a window's outputs do not depend on where the window starts.

Streaming: each layer exposes ``stream_state(x)`` (zero state for chunks shaped like ``x``) and
``stream_step(x, state) -> (y, state)``. A convolution keeps a buffer of the last ``r - s`` inputs (a ring buffer
in effect), so every hop costs only its new positions. State is structured per child (``vidrec.layers.stream_state``):
a leaf returns a list of its tensors, a container one entry per child, and every tensor is batched over streams on
axis 0; ``stream_step`` needs nothing but the state it is given. The engines and the ONNX export flatten it with
``flatten_state``. Time-pointwise modules (batch norm in eval mode, activations, dropout, convolutions whose temporal
kernel and stride are 1) stream by applying them to the chunk; their state is ``[]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vidrec.layers.lowering import LoweringBuilder, register_batchnorm_fold, register_lowering

__all__ = [
    "TemporalModule",
    "TemporalWindowOp",
    "TemporalSequential",
    "TemporalResidual",
    "ResidualReLU",
    "TemporalParallelSum",
    "TemporalConcat",
    "TemporalAvgPoolHead",
    "temporal_conv1d",
    "temporal_geometry",
    "is_time_pointwise",
    "stream_state_of",
    "stream_step_of",
    "right_align",
    "crop_left_to",
]

# A StreamState (vidrec.layers.stream_state): a tensor or a list/tuple of states. The protocol methods take it as Any
# so that each layer annotates its own structure (``list[Tensor]`` for a leaf) without breaking override rules.
State = Any

_POINTWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)


def right_align(x: Tensor, receptive_field: int, stride: int) -> Tensor:
    """Drop steps on the left of axis 2 so that a valid window op with this geometry ends on the last step."""
    surplus = (x.shape[2] - receptive_field) % stride
    return x[:, :, surplus:] if surplus else x


def crop_left_to(x: Tensor, length: int) -> Tensor:
    """Keep the last ``length`` steps of axis 2 (right alignment of branches)."""
    if x.shape[2] < length:
        raise ValueError(f"cannot crop a branch of {x.shape[2]} steps to {length}")
    return x[:, :, x.shape[2] - length :]


def _entries(module: nn.Module, state: State, n: int) -> Sequence[State]:
    """The ``n`` per-child entries of a container's state; a clear error for a state of another structure."""
    if isinstance(state, Tensor) or len(state) != n:
        got = "a tensor" if isinstance(state, Tensor) else f"{len(state)} entries"
        raise ValueError(
            f"{type(module).__name__}.stream_step expects a state of {n} entries (one per child, as its "
            f"stream_state returns), got {got}"
        )
    return state


class TemporalModule(nn.Module):
    """Base class of layers that are valid and right-aligned in time and know how to stream.

    Subclasses set ``receptive_field`` (input steps behind one output step) and ``stride`` (input steps between
    consecutive output steps), and implement ``forward``, ``stream_state`` and ``stream_step``.
    """

    receptive_field: int = 1
    stride: int = 1

    def stream_state(self, x: Tensor) -> State:
        """Zero state for streaming chunks shaped like ``x``: a list of this layer's tensors, or one entry per child.

        Composite modules find the shapes of their children's inputs by stepping them once on ``x`` (a real forward
        pass), so call this in eval mode (the streaming runtime uses an eval copy under inference mode).
        """
        raise NotImplementedError

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Consume a chunk of new steps (a multiple of ``stride``); return the new output steps and the new state."""
        raise NotImplementedError

    def output_length(self, length: int) -> int:
        """Number of output steps for ``length`` input steps offline."""
        return max((length - self.receptive_field) // self.stride + 1, 0)


def is_time_pointwise(module: nn.Module) -> bool:
    """True for modules that act on each time step independently (in eval mode)."""
    if isinstance(module, _POINTWISE_TYPES):
        return True
    if isinstance(module, (nn.Conv1d, nn.Conv3d)):
        return (
            module.kernel_size[0] == 1
            and module.stride[0] == 1
            and module.dilation[0] == 1
            and _padding_t(module.padding) == 0
        )
    if isinstance(module, (nn.MaxPool3d, nn.AvgPool3d)):
        k, s = _first(module.kernel_size), _first(module.stride)
        return k == 1 and s == 1 and _padding_t(module.padding) == 0
    return False


def _first(v: int | tuple[int, ...]) -> int:
    return v if isinstance(v, int) else v[0]


def _padding_t(padding: str | int | tuple[int, ...]) -> int:
    if isinstance(padding, str):
        return 0 if padding == "valid" else -1
    return _first(padding)


def temporal_geometry(module: nn.Module) -> tuple[int, int]:
    """``(receptive_field, stride)`` in time of a streamable module; raises for modules that cannot stream."""
    if isinstance(module, TemporalModule):
        return module.receptive_field, module.stride
    if is_time_pointwise(module):
        return 1, 1
    raise TypeError(
        f"{type(module).__name__} is neither a vidrec TemporalModule nor pointwise in time, so it cannot stream; "
        "wrap temporal ops in vidrec.layers.TemporalWindowOp"
    )


def stream_state_of(module: nn.Module, x: Tensor) -> State:
    """Zero streaming state of any streamable module for chunks shaped like ``x``."""
    if isinstance(module, TemporalModule):
        return module.stream_state(x)
    temporal_geometry(module)  # raises for modules that cannot stream
    return []


def stream_step_of(module: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State]:
    """One streaming step of any streamable module."""
    if isinstance(module, TemporalModule):
        return module.stream_step(x, state)
    return module(x), state


class TemporalWindowOp(TemporalModule):
    """Wraps an op that slides a window over time without temporal padding (conv, pooling).

    ``op`` must map ``(B, C, T, ...)`` to ``(B, C', (T - r) // s + 1, ...)``: for example ``nn.Conv1d(k, stride=s,
    dilation=d)`` has ``r = d * (k - 1) + 1``. Streaming keeps the last ``max(r - s, 0)`` inputs as state.
    """

    def __init__(self, op: nn.Module, receptive_field: int, stride: int = 1) -> None:
        super().__init__()
        if receptive_field < 1 or stride < 1:
            raise ValueError(f"receptive_field and stride must be >= 1, got {receptive_field}, {stride}")
        self.op = op
        self.receptive_field = receptive_field
        self.stride = stride
        self._keep = max(receptive_field - stride, 0)
        # PyTorch runs a dilated Conv1d on short inputs (a streaming step) with a naive kernel (~1 ms a call at batch
        # 1); gathering the k taps and one matmul computes the same sums in microseconds.
        self._gather_taps = isinstance(op, nn.Conv1d) and op.dilation[0] > 1 and op.groups == 1

    def _dilated_conv1d(self, x: Tensor) -> Tensor:
        conv = self.op
        assert isinstance(conv, nn.Conv1d)
        # (B, C, L) -> (B, C, n_out, k): the k taps, `dilation` apart, of each output position
        taps = x.unfold(2, self.receptive_field, self.stride)[..., :: conv.dilation[0]]
        y = torch.einsum("bcnk,ock->bon", taps, conv.weight)  # (B, C', n_out)
        return y if conv.bias is None else y + conv.bias[:, None]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] < self.receptive_field:
            raise ValueError(
                f"{type(self.op).__name__} needs at least {self.receptive_field} time steps, got {x.shape[2]}"
            )
        return self.op(right_align(x, self.receptive_field, self.stride))

    def stream_state(self, x: Tensor) -> State:
        shape = list(x.shape)
        shape[2] = self._keep
        return [x.new_zeros(shape)]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if x.shape[2] % self.stride:
            raise ValueError(f"a streaming chunk of {x.shape[2]} steps is not a multiple of the stride {self.stride}")
        (history,) = _entries(self, state, 1)
        assert isinstance(history, Tensor)
        buf = torch.cat([history, x], dim=2) if self._keep else x
        # (B, C, keep + n, ...) -> (B, C', n / s, ...)
        aligned = right_align(buf, self.receptive_field, self.stride)
        gather = self._gather_taps and not torch.onnx.is_in_onnx_export()  # ONNX Runtime's Conv is fast as it is
        y = self._dilated_conv1d(aligned) if gather else self.op(aligned)
        new = buf[:, :, buf.shape[2] - self._keep :] if self._keep else history
        return y, [new]


def temporal_conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> TemporalWindowOp:
    """A valid, right-aligned, streamable ``nn.Conv1d`` on ``(B, C, T)``."""
    conv = nn.Conv1d(
        in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias, padding=0
    )
    return TemporalWindowOp(conv, receptive_field=dilation * (kernel_size - 1) + 1, stride=stride)


class TemporalSequential(TemporalModule):
    """Applies streamable modules in order; its geometry is the composition of theirs."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)
        r, s = 1, 1
        for m in modules:
            mr, ms = temporal_geometry(m)
            r, s = r + (mr - 1) * s, s * ms
        self.receptive_field, self.stride = r, s

    def __iter__(self) -> Iterable[nn.Module]:  # type: ignore[override]
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> nn.Module:
        return self.layers[i]

    def forward(self, x: Tensor) -> Tensor:
        for m in self.layers:
            x = m(x)
        return x

    def stream_state(self, x: Tensor) -> State:
        """``[state of layer 0, state of layer 1, ...]``; each layer's input shape comes from stepping the previous."""
        states: list[State] = []
        with torch.no_grad():
            for m in self.layers:
                s = stream_state_of(m, x)
                states.append(s)
                x, _ = stream_step_of(m, x, s)
        return states

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        new_state: list[State] = []
        for m, s in zip(self.layers, _entries(self, state, len(self.layers)), strict=True):
            x, s = stream_step_of(m, x, s)
            new_state.append(s)
        return x, new_state


class TemporalResidual(TemporalModule):
    """``y = branch(x) + shortcut(x)``, the shortcut cropped on the left to the branch's length.

    ::

        x ──► branch ──────────┐
        │                      (+) ──► y
        └──► shortcut ─► crop ─┘

    ``shortcut`` defaults to identity; with a strided branch pass a strided 1-step op, e.g.
    ``TemporalWindowOp(nn.Conv1d(c_in, c_out, 1, stride=s), 1, s)``.
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        br, bs = temporal_geometry(self.branch)
        sr, ss = temporal_geometry(self.shortcut)
        if bs != ss:
            raise ValueError(f"branch stride {bs} and shortcut stride {ss} differ")
        if sr > br:
            raise ValueError(f"shortcut receptive field {sr} exceeds the branch's {br}")
        self.receptive_field, self.stride = br, bs

    def forward(self, x: Tensor) -> Tensor:
        y = self.branch(x)
        return y + crop_left_to(self.shortcut(x), y.shape[2])

    def stream_state(self, x: Tensor) -> State:
        """``[branch state, shortcut state]``."""
        return [stream_state_of(self.branch, x), stream_state_of(self.shortcut, x)]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        bs, ss = _entries(self, state, 2)
        y, bs = stream_step_of(self.branch, x, bs)
        z, ss = stream_step_of(self.shortcut, x, ss)
        return y + z, [bs, ss]


class ResidualReLU(TemporalModule):
    """``relu(residual(x))``: the output of a residual block (1D ResNet, R(2+1)D, P3D), streaming via the residual."""

    def __init__(self, residual: TemporalResidual) -> None:
        super().__init__()
        self.residual = residual
        self.relu = nn.ReLU(inplace=True)
        self.receptive_field, self.stride = residual.receptive_field, residual.stride

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x))

    def stream_state(self, x: Tensor) -> State:
        return self.residual.stream_state(x)

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.residual.stream_step(x, state)
        return self.relu(y), state


class TemporalParallelSum(TemporalModule):
    """``y = a(x) + b(x)``, the longer output cropped on the left (P3D block B's parallel paths)."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b
        ar, as_ = temporal_geometry(a)
        br, bs = temporal_geometry(b)
        if as_ != bs:
            raise ValueError(f"parallel branches have different strides {as_} and {bs}")
        self.receptive_field, self.stride = max(ar, br), as_

    def forward(self, x: Tensor) -> Tensor:
        ya, yb = self.a(x), self.b(x)
        n = min(ya.shape[2], yb.shape[2])
        return crop_left_to(ya, n) + crop_left_to(yb, n)

    def stream_state(self, x: Tensor) -> State:
        """``[state of a, state of b]``."""
        return [stream_state_of(self.a, x), stream_state_of(self.b, x)]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        sa, sb = _entries(self, state, 2)
        ya, sa = stream_step_of(self.a, x, sa)
        yb, sb = stream_step_of(self.b, x, sb)
        return ya + yb, [sa, sb]


class TemporalConcat(TemporalModule):
    """Channel concatenation of parallel branches, each cropped on the left to the shortest (right alignment).

    ::

        x ─┬─► branch 0 ─► crop ─┐
           ├─► branch 1 ─► crop ─┼─► cat over channels ─► y
           └─► ...      ─► crop ─┘

    The branches must share the temporal stride; the receptive field is the widest branch's (Temporal-Inception's
    parallel convolutions of different kernels).
    """

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        if len(branches) < 2:
            raise ValueError(f"TemporalConcat needs at least two branches, got {len(branches)}")
        self.branches = nn.ModuleList(branches)
        geometry = [temporal_geometry(b) for b in branches]
        strides = sorted({s for _, s in geometry})
        if len(strides) > 1:
            raise ValueError(f"TemporalConcat branches have different strides {strides}")
        self.receptive_field, self.stride = max(r for r, _ in geometry), strides[0]

    def forward(self, x: Tensor) -> Tensor:
        ys = [b(x) for b in self.branches]
        n = min(y.shape[2] for y in ys)
        return torch.cat([crop_left_to(y, n) for y in ys], dim=1)

    def stream_state(self, x: Tensor) -> State:
        """One state per branch, in branch order."""
        return [stream_state_of(b, x) for b in self.branches]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        ys, new_state = [], []
        for b, s in zip(self.branches, _entries(self, state, len(self.branches)), strict=True):
            y, s = stream_step_of(b, x, s)  # every branch emits the same new steps
            ys.append(y)
            new_state.append(s)
        return torch.cat(ys, dim=1), new_state


class TemporalAvgPoolHead(TemporalModule):
    """Global average over time (and space): ``(B, C, T, ...) -> (B, C)``.

    Streaming keeps the last ``positions`` per-step feature vectors (``(B, C, positions)``) and averages them, so
    each hop returns the offline pooling of the window whose feature map has ``positions`` steps. The streaming
    runtime sets ``positions`` from the window length before creating state.
    """

    def __init__(self) -> None:
        super().__init__()
        self.positions: int | None = None

    def configure_stream(self, positions: int, hop: int) -> None:
        """Pool the last ``positions`` feature steps; any ``hop`` (in feature steps) fits a global average."""
        if positions < 1:
            raise ValueError(f"TemporalAvgPoolHead pools at least one position, got positions={positions}")
        self.positions = int(positions)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(dim=2) if x.dim() == 3 else x.flatten(3).mean(dim=3).mean(dim=2)

    def stream_state(self, x: Tensor) -> State:
        if self.positions is None:
            raise RuntimeError("TemporalAvgPoolHead.positions must be set (by the streaming runtime) before streaming")
        return [x.new_zeros(x.shape[0], x.shape[1], self.positions)]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        # (B, C, n, ...) -> (B, C, n): spatial mean once per new step
        (history,) = _entries(self, state, 1)
        assert isinstance(history, Tensor)
        per_step = x if x.dim() == 3 else x.flatten(3).mean(dim=3)
        buf = torch.cat([history, per_step], dim=2)[:, :, -history.shape[2] :]
        return buf.mean(dim=2), [buf]


# Lowerings for the code generators of the streaming engines (vidrec.layers.lowering): written once, every target.
@register_lowering(TemporalSequential)
def _lower_sequential(b: LoweringBuilder[Any], m: TemporalSequential, x: Any) -> Any:
    for child in m.layers:
        x = b.lower(child, x)
    return x


@register_lowering(TemporalResidual)
def _lower_residual(b: LoweringBuilder[Any], m: TemporalResidual, x: Any) -> Any:
    shared = b.shared(x)  # read by both paths: neither may modify it in place
    return b.add(b.lower(m.branch, shared), b.lower(m.shortcut, shared))


@register_lowering(TemporalParallelSum)
def _lower_parallel_sum(b: LoweringBuilder[Any], m: TemporalParallelSum, x: Any) -> Any:
    shared = b.shared(x)
    return b.add(b.lower(m.a, shared), b.lower(m.b, shared))


@register_lowering(ResidualReLU)
def _lower_residual_relu(b: LoweringBuilder[Any], m: ResidualReLU, x: Any) -> Any:
    return b.lower(m.relu, b.lower(m.residual, x))


@register_lowering(TemporalConcat)
def _lower_concat(b: LoweringBuilder[Any], m: TemporalConcat, x: Any) -> Any:
    shared = b.shared(x)
    return b.concat([b.lower(branch, shared) for branch in m.branches])


# Batch-norm folding (vidrec.streaming.optimize): a BatchNorm after a window op folds into its convolution; the
# children of a TemporalSequential run in order.
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
register_batchnorm_fold(TemporalWindowOp, output=lambda m: (m, "op") if isinstance(m.op, _CONVS) else None)
register_batchnorm_fold(TemporalSequential, sequence=lambda m: m.layers)
