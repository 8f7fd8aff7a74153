"""A NumPy streaming step for one stream of a 1D streamable classifier (lowest per-sample latency at batch 1).

At batch 1 and a hop of one sample a 1D ResNet step is ~80 tiny ops; each costs ~3 us of dispatch in PyTorch but
~1 us as a NumPy call with ``out=``. ``NumpyStreamStep`` lowers a converted model (BatchNorm folded, linear head in
front of the pool: ``StreamingClassifier(model, window, hop).model``) once into straight-line Python source of NumPy
calls on preallocated float32 buffers and runs it sample by sample.

Layout (why each sample costs one call per op and no copies):

* Every value of the program (a layer's output at the newest time step) is a row of ``C + 1`` floats whose last
  entry is a constant 1, so a convolution's bias is one more row of its weight matrix and conv + bias is one
  ``np.dot(taps, W, out=row)`` with ``W`` of shape ``(k * (C + 1), O)``.
* A value read by a temporal convolution with kernel ``k`` and dilation ``d`` lives in ``d`` phase rings (time ``t``
  goes to ring ``t mod d``), so the taps ``t - (k-1) d, ..., t - d, t`` are ``k`` consecutive rows of one ring, a
  free contiguous view. Rings are "long rings": ``span - 1 + P / d`` rows written once each; every ``P`` samples the
  last ``span - 1`` rows are copied to the front (amortised to nothing). The writer computes straight into its slot.
* Because the slot of every value depends only on ``t mod P``, all views are built once per phase ``t mod P``; a
  step unpacks the phase's tuple of views and runs the generated function.
* The average pool keeps the last ``positions`` rows of the ``K`` logits in such a ring and takes their mean as one
  ``np.dot(1 / positions, rows)`` (exact to rounding, nothing accumulates). For a chunk of several samples the pool
  and classifier run only after the last one.

Lowered modules: every layer with a lowering registered beside it (``vidrec.layers.lowering``: the containers of
``vidrec.layers.temporal``, the 1D residual blocks, ``TemporalConcat``, ``TemporalMaxPool1d`` of stride 1), and this
target's own leaves: ``TemporalWindowOp`` over ``nn.Conv1d`` (groups 1, stride 1, no padding, any dilation),
pointwise ``nn.Conv1d`` (kernel 1), ReLU, eval-mode ``BatchNorm1d`` (when not folded), identity/dropout,
``TemporalAvgPoolHead`` and an ``nn.Linear``/identity classifier. Anything else raises ``TypeError`` so that
callers can fall back to PyTorch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.lowering import batchnorm_affine, lowering_for
from vidrec.layers.stream_state import map_state
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalWindowOp

__all__ = ["NumpyStreamStep"]

_SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d)
_MIN_PERIOD = 64  # phases with precomputed views; the ring wrap-around copy happens once per period


class _OpKind(enum.Enum):
    """Instructions of the generated program."""

    INPUT = "input"  # copy the new input sample into its row
    DOT = "dot"  # convolution / linear: taps @ W (bias in the ones column)
    RELU = "relu"
    AFFINE = "affine"  # unfolded eval BatchNorm: x * scale + shift
    ADD = "add"
    POOL = "pool"  # mean of the last `positions` rows
    MAX = "max"  # maximum of the last `kernel` rows (temporal max pool, stride 1)
    CONCAT = "concat"  # channel concatenation of rows


@dataclass(eq=False)
class _Value:
    """A per-time-step row vector of the program and the history its readers need."""

    index: int
    channels: int
    span: int = 1  # rows of one phase ring that readers need (kernel size, pool positions)
    dilation: int = 1  # number of phase rings

    def need(self, rows: int, dilation: int) -> None:
        """Register a reader of the last ``rows`` rows ``dilation`` steps apart."""
        if rows <= 1:
            return
        if self.span == 1:
            self.span, self.dilation = rows, dilation
        elif self.dilation == dilation:
            self.span = max(self.span, rows)
        else:
            raise TypeError(
                f"numpy_step: a value read by convolutions of dilations {self.dilation} and {dilation} is not supported"
            )


@dataclass(frozen=True)
class _Ref:
    """A value as seen by one reader during lowering."""

    value: _Value
    owned: bool  # produced here and read by nobody else, so in-place ops are safe


@dataclass(frozen=True)
class _View:
    """A view of a value's storage at the current phase: its row, its last ``rows`` rows flattened, or 2D rows."""

    value: int
    kind: str  # "row" (C,), "taps" (rows * (C + 1),) with the ones column, "rows2d" (rows, C)
    rows: int = 1


@dataclass(eq=False)
class _Instr:
    kind: _OpKind
    out: _View
    args: tuple[_View | str, ...]  # views, or names of constants


@dataclass
class _Program:
    """The lowered program: values, instructions and constants, shared by every stream of the same model."""

    values: list[_Value] = field(default_factory=list)
    body: list[_Instr] = field(default_factory=list)  # run for every sample
    head: list[_Instr] = field(default_factory=list)  # pool and classifier: run once per chunk
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    in_channels: int = 0
    in_head: bool = False  # instructions go to the head (after the pool)
    output: int = -1  # index of the logits value
    period: int = 1
    body_fn: Callable[..., None] | None = None
    head_fn: Callable[..., None] | None = None
    body_views: list[_View] = field(default_factory=list)
    head_views: list[_View] = field(default_factory=list)
    source: str = ""

    def value(self, channels: int) -> _Value:
        v = _Value(len(self.values), int(channels))
        self.values.append(v)
        return v

    def const(self, array: np.ndarray, prefix: str) -> str:
        name = f"{prefix}{len(self.consts)}"
        self.consts[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def emit(self, kind: _OpKind, out: _View, *args: _View | str) -> None:
        (self.head if self.in_head else self.body).append(_Instr(kind, out, args))


def _row(v: _Value) -> _View:
    return _View(v.index, "row")


def _weights(w: Tensor, bias: Tensor | None, c_in: int) -> np.ndarray:
    """``(O, C, k)`` weight and bias -> ``(k * (C + 1), O)`` in float64.

    Row ``j * (C + 1) + c`` multiplies tap ``j`` (oldest first), channel ``c``; the ones column of the newest tap
    carries the bias.
    """
    w_np = w.detach().double().cpu().numpy()
    c_out, _, k = w_np.shape
    out = np.zeros((k, c_in + 1, c_out))
    out[:, :c_in, :] = w_np.transpose(2, 1, 0)  # (O, C, k) -> (k, C, O)
    if bias is not None:
        out[k - 1, c_in, :] = bias.detach().double().cpu().numpy()
    return out.reshape(k * (c_in + 1), c_out)


def _lower_dot(p: _Program, x: _Ref, weight: Tensor, bias: Tensor | None, dilation: int, name: str) -> _Ref:
    c_out, c_in, k = weight.shape
    if c_in != x.value.channels:
        raise TypeError(
            f"numpy_step: {name} expects {c_in} input channels, the value feeding it has {x.value.channels}"
        )
    x.value.need(k, dilation)
    y = p.value(c_out)
    p.emit(_OpKind.DOT, _row(y), _View(x.value.index, "taps", k), p.const(_weights(weight, bias, c_in), "w"))
    return _Ref(y, owned=True)


def _lower_conv(p: _Program, m: nn.Conv1d, x: _Ref, receptive_field: int | None) -> _Ref:
    k, d = m.kernel_size[0], m.dilation[0]
    pad = m.padding if isinstance(m.padding, str) else m.padding[0]
    if m.groups != 1 or m.stride[0] != 1 or pad not in (0, "valid"):
        raise TypeError(
            f"numpy_step supports Conv1d with groups 1, stride 1 and no padding; got groups={m.groups}, "
            f"stride={m.stride[0]}, padding={m.padding} (use the torch backend)"
        )
    if receptive_field is not None and receptive_field != d * (k - 1) + 1:
        raise TypeError(f"numpy_step: TemporalWindowOp receptive field {receptive_field} != conv's {d * (k - 1) + 1}")
    return _lower_dot(p, x, m.weight, m.bias, d if k > 1 else 1, f"Conv1d({m.in_channels}, {m.out_channels}, {k})")


def _lower_unary(p: _Program, kind: _OpKind, x: _Ref, *consts: str) -> _Ref:
    """A pointwise op, in place when ``x`` is owned."""
    y = x.value if x.owned else p.value(x.value.channels)
    p.emit(kind, _row(y), _row(x.value), *consts)
    return _Ref(y, owned=True)


def _lower_sum(p: _Program, a: _Ref, b: _Ref) -> _Ref:
    if a.value.channels != b.value.channels:
        raise TypeError(f"numpy_step: residual sum of {a.value.channels} and {b.value.channels} channels")
    y = a.value if a.owned else b.value if b.owned else p.value(a.value.channels)
    p.emit(_OpKind.ADD, _row(y), _row(a.value), _row(b.value))
    return _Ref(y, owned=True)


class _NumpyBuilder:
    """The NumPy target of the shared lowering core (``vidrec.layers.lowering.LoweringBuilder``)."""

    target = "numpy"

    def __init__(self, p: _Program) -> None:
        self.p = p

    def lower(self, module: nn.Module, x: _Ref) -> _Ref:
        return _lower(self.p, module, x)

    def shared(self, x: _Ref) -> _Ref:
        return _Ref(x.value, owned=False)

    def add(self, a: _Ref, b: _Ref) -> _Ref:
        return _lower_sum(self.p, a, b)

    def concat(self, values: Sequence[_Ref]) -> _Ref:
        y = self.p.value(sum(v.value.channels for v in values))
        self.p.emit(_OpKind.CONCAT, _row(y), *(_row(v.value) for v in values))
        return _Ref(y, owned=True)

    def select_channels(self, x: _Ref, channels: Sequence[int]) -> _Ref:
        # a dot with a one-hot (C', C) matrix: this target's per-row matmul (exact for finite inputs)
        weight = torch.zeros(len(channels), x.value.channels, 1)
        weight[torch.arange(len(channels)), torch.tensor([int(c) for c in channels]), 0] = 1.0
        return _lower_dot(self.p, x, weight, None, 1, f"channel selection of {len(channels)}")

    def window_max(self, module: nn.Module, x: _Ref, kernel: int, stride: int) -> _Ref:
        if stride != 1:
            raise TypeError(f"numpy_step supports stride 1 only, got a temporal max pool of stride {stride}")
        x.value.need(kernel, 1)
        y = self.p.value(x.value.channels)
        self.p.emit(_OpKind.MAX, _row(y), _View(x.value.index, "rows2d", kernel))
        return _Ref(y, owned=True)


def _lower(p: _Program, m: nn.Module, x: _Ref) -> _Ref:
    """Emit the per-sample step of ``m`` on ``x``; returns the output value."""
    lowering = lowering_for(m, "numpy")
    if lowering is not None:
        return lowering(_NumpyBuilder(p), m, x)  # type: ignore[no-any-return]
    if isinstance(m, TemporalWindowOp):
        if not isinstance(m.op, nn.Conv1d) or m.stride != 1:
            raise TypeError(
                f"numpy_step supports TemporalWindowOp over nn.Conv1d with stride 1, got {type(m.op).__name__} "
                f"with stride {m.stride} (use the torch backend)"
            )
        return _lower_conv(p, m.op, x, m.receptive_field)
    if isinstance(m, nn.Conv1d):
        if m.kernel_size[0] != 1:
            raise TypeError(f"numpy_step: a bare Conv1d with kernel {m.kernel_size[0]} is not streamable")
        return _lower_conv(p, m, x, None)
    if isinstance(m, nn.ReLU):
        return _lower_unary(p, _OpKind.RELU, x, p.const(np.zeros(x.value.channels), "z"))
    if isinstance(m, nn.BatchNorm1d) and not m.training and m.running_var is not None and m.running_mean is not None:
        scale, shift = (t.cpu().numpy() for t in batchnorm_affine(m, torch.float64))
        return _lower_unary(p, _OpKind.AFFINE, x, p.const(scale, "a"), p.const(shift, "b"))
    if isinstance(m, _SKIP):
        return x
    raise TypeError(f"numpy_step cannot lower {type(m).__name__} (use the torch backend)")


def _lower_head(p: _Program, m: nn.Module, x: _Ref) -> _Ref:
    """The classifier on the pooled ``(C,)`` row: identity, dropout, linear, or a sequence of them."""
    if isinstance(m, nn.Sequential):
        for child in m:
            x = _lower_head(p, child, x)
        return x
    if isinstance(m, _SKIP):
        return x
    if isinstance(m, nn.Linear):
        return _lower_dot(p, x, m.weight[:, :, None], m.bias, 1, f"Linear({m.in_features}, {m.out_features})")
    raise TypeError(f"numpy_step cannot lower the classifier {type(m).__name__} (use the torch backend)")


def _lower_model(model: nn.Module, in_channels: int) -> _Program:
    from vidrec.models._base import StreamableClassifier

    if not isinstance(model, StreamableClassifier) or type(model).stream_step is not StreamableClassifier.stream_step:
        raise TypeError(
            f"numpy_step needs a StreamableClassifier with the stock stream_step, got {type(model).__name__}"
        )
    pool = model.pool
    if type(pool) is not TemporalAvgPoolHead:
        raise TypeError(f"numpy_step needs a TemporalAvgPoolHead pool, got {type(pool).__name__}")
    if pool.positions is None:
        raise ValueError("numpy_step: call model.configure_stream(window, hop) first (the pool has no positions)")
    p = _Program(in_channels=in_channels)
    x = p.value(in_channels)
    p.emit(_OpKind.INPUT, _row(x))
    feats = _lower(p, model.features, _Ref(x, owned=False)).value
    feats.need(pool.positions, 1)
    p.in_head = True  # the pool and classifier run once per chunk
    pooled = p.value(feats.channels)
    mean = p.const(np.full(pool.positions, 1.0 / pool.positions), "m")  # (positions,): the mean as one dot
    p.emit(_OpKind.POOL, _row(pooled), _View(feats.index, "rows2d", pool.positions), mean)
    p.output = _lower_head(p, model.classifier, _Ref(pooled, owned=True)).value.index
    dilations = [v.dilation for v in p.values if v.span > 1]
    lcm = math.lcm(*dilations) if dilations else 1
    p.period = lcm * math.ceil(_MIN_PERIOD / lcm)
    _generate(p)
    return p


_CALLS = {
    _OpKind.INPUT: "copyto({out}, x)",
    _OpKind.DOT: "dot({0}, {1}, out={out})",
    _OpKind.RELU: "maximum({0}, {1}, out={out})",
    _OpKind.AFFINE: "multiply({0}, {1}, out={out}); add({out}, {2}, out={out})",
    _OpKind.ADD: "add({0}, {1}, out={out})",
    _OpKind.POOL: "dot({1}, {0}, out={out})",
    _OpKind.MAX: "amax({0}, 0, out={out})",
    _OpKind.CONCAT: "concatenate(({args},), out={out})",
}


def _generate(p: _Program) -> None:
    """Source of ``body(x, views)`` and ``head(views)``; views are unpacked from the phase's tuple."""
    sources = []
    for part, instrs in (("body", p.body), ("head", p.head)):
        views: dict[_View, str] = {}

        def ref(a: _View | str, views: dict[_View, str] = views) -> str:
            if isinstance(a, str):
                return a
            return views.setdefault(a, f"v{len(views)}")

        lines = [
            _CALLS[i.kind].format(*(refs := [ref(a) for a in i.args]), out=ref(i.out), args=", ".join(refs))
            for i in instrs
        ]
        args = "x, views" if part == "body" else "views"
        unpack = f"    ({', '.join(views.values())},) = views" if views else "    pass"
        sources.append("\n".join([f"def {part}({args}):", unpack, *(f"    {line}" for line in lines)]))
        if part == "body":
            p.body_views = list(views)
        else:
            p.head_views = list(views)
    p.source = "\n\n".join(sources) + "\n"
    scope: dict[str, object] = {
        "dot": np.dot,
        "maximum": np.maximum,
        "add": np.add,
        "multiply": np.multiply,
        "copyto": np.copyto,
        "amax": np.amax,
        "concatenate": np.concatenate,
        **p.consts,
    }
    exec(compile(p.source, "<vidrec.streaming.numpy_step>", "exec"), scope)  # noqa: S102  # our generated source
    p.body_fn, p.head_fn = scope["body"], scope["head"]  # type: ignore[assignment]


class NumpyStreamStep:
    """The exact streaming step of one stream of a 1D classifier, in NumPy (float32), sample by sample.

    Args:
        model: A converted, configured ``StreamableClassifier`` (e.g. ``StreamingClassifier(m, window, hop).model``:
            eval mode, BatchNorm folded, ``configure_stream`` called). Not modified; weights are copied.
        in_channels: Input channels C; inferred from the first ``nn.Conv1d`` when None.
        check: Compare the lowered step with the model's eager ``stream_step`` on random hops when built (as the
            compiled step is checked).

    Raises:
        TypeError: the model contains a module or geometry that is not lowered (strided or grouped convolutions,
            other layer types); use the torch backend for it.
        ValueError: ``configure_stream`` has not been called.
        RuntimeError: the build-time check found the NumPy step differs from the eager one (a lowering bug).

    Attributes:
        num_classes: K, the length of the returned logits.
        source: The generated Python source (for inspection).
    """

    def __init__(self, model: nn.Module, in_channels: int | None = None, *, check: bool = True) -> None:
        if in_channels is None:
            conv = next((m for m in model.modules() if isinstance(m, nn.Conv1d)), None)
            if conv is None:
                raise TypeError(f"numpy_step: {type(model).__name__} has no nn.Conv1d; pass in_channels")
            in_channels = int(conv.in_channels)
        self._init_state(_lower_model(model, in_channels))
        if check:
            self._check_against_eager(model)
            self.reset()

    def _check_against_eager(self, model: nn.Module, atol: float = 1e-4) -> None:
        """Stream random hops through this step and the model's eager ``stream_step``; raise if logits differ.

        Both start from zero state, so the comparison covers warm-up too (zero history is zero in both); three chunks
        of two samples (every lowered model has stride 1, so any chunk length streams).
        """
        hop = 2
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            x = torch.randn(1, self.in_channels, hop, generator=gen)
            state = map_state(lambda t: t.clone().zero_(), model.stream_state(x))  # type: ignore[operator]
            for _ in range(3):
                x = torch.randn(1, self.in_channels, hop, generator=gen)
                ye, state = model.stream_step(x, state)  # type: ignore[operator]
                yn = self.step(x[0].numpy())
                diff = float(np.abs(ye[0].double().numpy() - yn).max())
                if diff > atol:
                    raise RuntimeError(f"numpy streaming step differs from the eager step by {diff:.3g} > {atol}")

    def _init_state(self, program: _Program) -> None:
        """Allocate this stream's rings and the per-phase views over them."""
        p = self._program = program
        self.in_channels = p.in_channels
        self.num_classes = p.values[p.output].channels
        self.source = p.source
        self._storage: list[np.ndarray] = []
        for v in p.values:
            d = v.dilation if v.span > 1 else 1
            rows = v.span - 1 + p.period // d if v.span > 1 else 1
            self._storage.append(np.zeros((d, rows, v.channels + 1), dtype=np.float32))  # (phases, rows, C + 1)
        self._body_views = [tuple(self._view(w, t) for w in p.body_views) for t in range(p.period)]
        self._head_views = [tuple(self._view(w, t) for w in p.head_views) for t in range(p.period)]
        # per phase: (source, destination) of the ring wrap-around copies (the last span - 1 rows to the front)
        self._wraps: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(p.period)]
        for v, s in zip(p.values, self._storage):
            if v.span > 1:
                for ph in range(s.shape[0]):
                    self._wraps[ph].append((s[ph, s.shape[1] - v.span + 1 :], s[ph, : v.span - 1]))
        self._logits = self._storage[p.output][0, 0, : self.num_classes]
        self._body, self._head = p.body_fn, p.head_fn
        self.reset()

    def _view(self, w: _View, t: int) -> np.ndarray:
        v, s = self._program.values[w.value], self._storage[w.value]
        if v.span > 1:
            ph, pos = t % v.dilation, v.span - 1 + t // v.dilation  # this phase's slot of the newest row
        else:
            ph, pos = 0, 0
        if w.kind == "row":
            return s[ph, pos, : v.channels]  # (C,)
        if w.kind == "taps":
            return s[ph, pos - w.rows + 1 : pos + 1].reshape(-1)  # (rows * (C + 1),), a view: rows are contiguous
        return s[ph, pos - w.rows + 1 : pos + 1, : v.channels]  # (rows, C)

    def fresh(self) -> NumpyStreamStep:
        """A new stream of the same model (shares the lowered program and weights, own zeroed state)."""
        other = object.__new__(NumpyStreamStep)
        other._init_state(self._program)
        return other

    def reset(self) -> None:
        """Forget the stream: zero every ring (ones columns back to 1) and restart the phase."""
        for s in self._storage:
            s.fill(0.0)
            s[..., -1] = 1.0
        self._phase = 0

    def step(self, chunk: np.ndarray) -> np.ndarray:
        """Consume ``(C, n)`` new samples (any ``n >= 1``) and return the ``(K,)`` logits of the window ending here.

        Args:
            chunk: ``(C, n)`` float32 samples (other dtypes are converted).

        Returns:
            A fresh ``(K,)`` float32 array: the logits of the window of the last ``window`` samples.
        """
        x = np.asarray(chunk, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != self.in_channels or x.shape[1] < 1:
            raise ValueError(f"numpy_step: chunk must be (C, n) = ({self.in_channels}, n >= 1), got {x.shape}")
        period, body, t = self._program.period, self._body, self._phase
        assert body is not None and self._head is not None
        for i in range(x.shape[1]):
            for src, dst in self._wraps[t]:
                np.copyto(dst, src)
            body(x[:, i], self._body_views[t])
            last = t
            t = t + 1 if t + 1 < period else 0
        self._phase = t
        self._head(self._head_views[last])
        return self._logits.copy()
