"""A flat, compiled streaming step for 1D streamable classifiers (minimal per-op overhead).

The eager streaming step walks the module tree and calls ``stream_step`` on every layer: for a small 1D model at a
hop of one sample most of the time goes into Python and dispatcher overhead of ~60 small ops, not arithmetic.
``compile_stream_step`` lowers a configured (BatchNorm-folded, eval) model once into straight-line Python source of
primitive tensor ops, compiles it with ``exec`` and returns the function (run as a TorchScript trace).

Values are held time-first, ``(T, B, C)``: a layer's buffer of past inputs and the new chunk are joined by one
contiguous ``torch.cat``, and tap ``j`` of every output position of a convolution is the time slab
``buf[j d : j d + n_out]``, viewed as an ``(n_out B, C)`` matrix without a copy, so a convolution is ``k``
accumulating matmuls (``addmm`` then ``addmm_``) straight on the buffer: no im2col, no tap gathering. In-place ReLU and
residual adds, preallocated outputs. The state tensors are the model's state tree flattened
(``vidrec.layers.stream_state.flatten_state``: same order and meaning) with layer buffers held ``(T, B, C)``;
``CompiledStep.to_compiled`` / ``to_protocol`` convert, and ``batch_axes`` tells the runtime where the slots are for
reset, grow and slot subsets. A module called as it is gets its flat tensors rebuilt into its own state tree.

Heads: the average pool and a linear classifier are lowered. Any other temporal head (an attention pool, a recurrent
head over segment summaries) leaves the program covering the features only (``CompiledStep.head_eager``): it returns
their new steps and the engine steps the head eagerly on them, so the features keep their trace and ring buffers.

Lowered modules: every layer with a lowering registered beside it (``vidrec.layers.lowering``: the containers of
``vidrec.layers.temporal``, the 1D residual blocks, ``TemporalConcat``, ``TemporalMaxPool1d``, the skeleton body-part
features; they decompose into this target's primitives: ``add``, ``concat``, ``window_max``, ``select_channels``
(``index_select`` on the channel axis), and ``kernel``, a layer's own time-first step traced with the program), and
this target's own leaves: ``TemporalWindowOp`` over ``nn.Conv1d``, ``TemporalAvgPoolHead`` on ``(B, C, T)``,
ReLU/ReLU6/identity/dropout, eval ``BatchNorm1d`` that folding left (after an addition, before a pool, in a head: a
per-channel affine ``x * scale + shift``), ``nn.Linear``/``nn.Sequential`` heads. Any other module is called through
its own ``stream_step`` (or ``forward`` when time-free) and recorded as a ``LoweringDecision``, so lowering never
changes results; ``compile_stream_step`` checks the compiled step against the eager one on a random chunk before
returning it. A streamable model that is not a ``StreamableClassifier`` but registers a compiled lowering of its own
class (TS-LSTM) is lowered whole, chunk to logits (``lowers_whole``). A step may hold no state at all
(time-pointwise features under an eager head): it returns an empty state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.lowering import batchnorm_affine, lowering_for
from vidrec.layers.stream_state import flatten_state, state_layout
from vidrec.layers.temporal import (
    TemporalAvgPoolHead,
    TemporalModule,
    TemporalWindowOp,
    is_time_pointwise,
    stream_state_of,
    stream_step_of,
)
from vidrec.streaming.lowering import LoweringDecision, module_names

if TYPE_CHECKING:
    from vidrec.models._base import StreamableClassifier

__all__ = ["CompiledStep", "compile_stream_step", "generate_step", "head_lowers", "lowers_whole", "trace_step"]

State = list[Tensor]
StepFn = Callable[[Tensor, State], tuple[Tensor, State]]
# a layer's own compiled step on time-first values: (x (n, B, C) or (B, C), state) -> (y, new state), see kernel()
TimeFirstKernel = Callable[[Tensor, State], tuple[Tensor, State]]

_SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d)


@dataclass
class _Value:
    """A tensor in the generated program: its variable name, an example of it, and whether it may be mutated."""

    name: str
    example: Tensor
    owned: bool  # produced by this program and referenced nowhere else, so in-place ops are safe


@dataclass
class _Program:
    """Straight-line source being generated, with its constants and state bookkeeping."""

    lines: list[str] = field(default_factory=list)
    consts: dict[str, object] = field(default_factory=dict)
    state_examples: list[Tensor] = field(default_factory=list)
    time_first: list[bool] = field(default_factory=list)  # per state tensor: held as (T, B, C) instead of (B, C, T)
    new_state: list[str] = field(default_factory=list)
    buffers: list[tuple[int, ...]] = field(default_factory=list)  # shapes of preallocated outputs, -1 = the batch
    fresh: set[str] = field(default_factory=set)  # values allocated by the step itself (safe to return)
    probe: tuple[int, int] | None = None  # (state index, buffer index) of a new state tensor living in a buffer
    counter: int = 0
    opaque: int = 0  # modules called through their own stream_step / forward
    histories: int = 0  # state tensors that are layer histories (the ring-buffer variant keeps them in rings)
    conv_calls: bool = False  # convolutions as F.conv1d calls instead of tap matmuls (few channels, many rows)
    ring_phase: int | None = None  # ring-buffer variant for this phase (vidrec.streaming.rings), None: concatenation
    ring_period: int = 0  # steps between wrap-arounds of the ring buffers
    rings: dict[int, tuple[int, int]] = field(default_factory=dict)  # state index -> (history rows, new rows per step)
    wraps: list[str] = field(default_factory=list)  # wrap-around copies, run after the step's last read
    names: dict[int, str] = field(default_factory=dict)  # id(module) -> qualified name, for decisions
    decisions: list[LoweringDecision] = field(default_factory=list)  # modules not lowered, and why

    def not_lowered(self, m: nn.Module, reason: str) -> None:
        """Record that ``m`` is called as it is (eagerly) inside the compiled step."""
        self.opaque += 1
        self.decisions.append(LoweringDecision(self.names.get(id(m), "?"), type(m).__name__, "eager", reason))

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, obj: object, prefix: str = "c") -> str:
        n = self.name(prefix)
        self.consts[n] = obj
        return n

    def take_state(self, examples: State, time_first: list[bool]) -> list[str]:
        """Names of the next ``len(examples)`` input state tensors."""
        start = len(self.state_examples)
        self.state_examples.extend(examples)
        self.time_first.extend(time_first)
        return [f"s{start + i}" for i in range(len(examples))]

    def buffer(self, shape: tuple[int, ...]) -> str:
        """Name of a preallocated output buffer of ``shape``, -1 marking the batch axis (ops write with ``out=``)."""
        self.buffers.append(tuple(int(v) for v in shape))
        return f"o{len(self.buffers) - 1}"

    def emit(self, line: str) -> None:
        self.lines.append(line)


class CompiledStep:
    """A compiled streaming step: ``step(chunk, state) -> (logits, new_state)`` like ``model.stream_step``.

    The state list has the model's flat state tensors (``flatten_state`` order), but the buffers of lowered layers are
    held time-first, ``(T, B, C)`` instead of ``(B, C, T)`` (see the module docstring); convert with ``to_compiled`` /
    ``to_protocol``. ``batch_axes`` gives the batch axis of each compiled state tensor for per-slot indexing.

    Intermediate results and new state are written into two preallocated sets of buffers per batch size (no
    allocation per step): each call writes into the set that does not hold the incoming state, so a returned state
    stays valid until it has been passed back in and the following call returns. Feed each call the state returned by
    the previous one (or fresh tensors), as ``StreamingClassifier`` does. Logits are always freshly allocated.

    Attributes:
        source: The generated Python source (for inspection).
        num_opaque: Modules that were not lowered and are called through their own ``stream_step``/``forward``.
        num_histories: State tensors that are layer histories (what ring buffers hold; 0 for a stateless step or
            one whose state is a layer's own, such as TS-LSTM's segment extremes).
        decisions: One ``LoweringDecision`` per such module: its name in the model and the reason.
        time_first: Per state tensor, True where the compiled layout is ``(T, B, C)`` instead of the protocol's.
        batch_axes: Per state tensor, the axis of the batch (slots) in the compiled layout.
        traced: True when the step runs as a TorchScript trace of the generated source.
    """

    max_cached_batches = 4  # batch sizes whose buffers are kept (slot subsets of varying size allocate new ones)

    def __init__(
        self,
        fn: Callable[[Tensor, State, State], tuple[Tensor, State]],
        source: str,
        program: _Program,
        probe: tuple[int, int] | None,
        dtype: torch.dtype,
        device: torch.device | None = None,
    ) -> None:
        self._fn = fn
        self._device = device
        self.source = source
        self.num_opaque = program.opaque
        self.num_histories = program.histories
        self.decisions = list(program.decisions)
        self.time_first = list(program.time_first)
        self.batch_axes = [1 if tf else 0 for tf in self.time_first]
        self.traced = False
        self.head_eager = False  # set by compile_stream_step: the step returns features, the head runs eagerly
        self._buffer_shapes = list(program.buffers)
        self._probe = probe  # (state index, buffer index) of one state tensor that lives in a step buffer
        self._dtype = dtype
        self._cache: dict[int, tuple[State, State]] = {}

    def _allocate(self, batch: int) -> State:
        shapes = [tuple(batch if v == -1 else v for v in shape) for shape in self._buffer_shapes]
        return [torch.empty(shape, dtype=self._dtype, device=self._device) for shape in shapes]

    def _buffers(self, batch: int, state: State) -> State:
        pair = self._cache.get(batch)
        if pair is None:
            if len(self._cache) >= self.max_cached_batches:
                self._cache.pop(next(iter(self._cache)))
            pair = (self._allocate(batch), self._allocate(batch))
            self._cache[batch] = pair
        if self._probe is None:
            return pair[0]
        i, j = self._probe
        holds = state[i].untyped_storage().data_ptr() == pair[0][j].untyped_storage().data_ptr()
        return pair[1] if holds else pair[0]

    def raw(self) -> Callable[[Tensor, State, State], tuple[Tensor, State]]:
        """The generated function ``(chunk, state, buffers) -> (logits, new_state)``."""
        return self._fn

    def trace(self, chunk: Tensor, state: State) -> None:
        """Replace the Python function by its TorchScript trace (less per-op overhead); ``state`` in compiled layout."""
        self._fn = trace_step(self._fn, chunk, state, self._allocate(chunk.shape[0]))
        self.traced = True

    def __call__(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        logits, new_state = self._fn(x, state, self._buffers(x.shape[0], state))
        return logits, list(new_state)

    def to_compiled(self, state: State) -> State:
        """Protocol-layout state -> the compiled step's layout (copies)."""
        return [t.permute(2, 0, 1).contiguous() if tf else t for t, tf in zip(state, self.time_first, strict=True)]

    def to_protocol(self, state: State) -> State:
        """The compiled step's state -> protocol layout (views)."""
        return [t.permute(1, 2, 0) if tf else t for t, tf in zip(state, self.time_first, strict=True)]


def trace_step(
    fn: Callable[[Tensor, State, State], tuple[Tensor, State]], chunk: Tensor, state: State, bufs: State
) -> Callable[[Tensor, State, State], tuple[Tensor, State]]:
    """TorchScript trace of a generated step ``fn(chunk, state, bufs)``, run once on copies of its inputs.

    The copies are made outside inference mode (a trace cannot write into inference tensors); the trace accepts any
    batch size.
    """
    with torch.inference_mode(False), torch.no_grad():
        args = (chunk.clone(), [t.clone() for t in state], [b.clone() for b in bufs])
        with warnings.catch_warnings():  # the deprecation notice of torch.jit.trace, emitted on every call
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated", category=FutureWarning)
            if state and bufs:
                return torch.jit.trace(fn, args, check_trace=False)  # type: ignore[no-any-return]
            return _trace_without_empty_lists(fn, args)


def _trace_without_empty_lists(
    fn: Callable[[Tensor, State, State], tuple[Tensor, State]], args: tuple[Tensor, State, State]
) -> Callable[[Tensor, State, State], tuple[Tensor, State]]:
    """A trace takes no empty list (a stateless step, a step with no preallocated buffer): trace ``fn`` on its
    non-empty arguments and call it with them (a stateless step returns an empty state)."""
    present = [i for i in (1, 2) if args[i]]

    def partial(x: Tensor, *lists: State) -> tuple[Tensor, State]:
        full: list[object] = [x, [], []]
        for i, values in zip(present, lists, strict=True):
            full[i] = values
        logits, new_state = fn(*full)  # type: ignore[arg-type]
        return logits, tuple(new_state)  # type: ignore[return-value]

    inputs = tuple(args[i] for i in [0, *present])
    if not args[1]:  # a trace cannot return an empty tuple either: trace the logits alone
        logits_only = torch.jit.trace(lambda *a: partial(*a)[0], inputs, check_trace=False)
        return lambda x, state, bufs: (logits_only(x, *([state, bufs][i - 1] for i in present)), [])
    traced = torch.jit.trace(partial, inputs, check_trace=False)
    return lambda x, state, bufs: traced(x, *([state, bufs][i - 1] for i in present))  # type: ignore[no-any-return]


def _to_protocol(x: _Value) -> str:
    """Expression of ``x`` in the protocol layout ``(B, C, T)`` (values are held time-first, ``(T, B, C)``)."""
    return f"{x.name}.permute(1, 2, 0)" if x.example.dim() == 3 else x.name


def _from_protocol(name: str, example: Tensor) -> str:
    return f"{name}.permute(2, 0, 1)" if example.dim() == 3 else name


def _lower_opaque(p: _Program, m: nn.Module, x: _Value, reason: str) -> _Value:
    """Call ``m`` through the layer protocol (exact for any streamable module); its state keeps the protocol layout.

    Its flat state tensors are rebuilt into ``m``'s state tree for the call and the new tree is flattened again.
    """
    p.not_lowered(m, reason)
    ex_tree = stream_state_of(m, x.example)
    ex_state = flatten_state(ex_tree)
    ex_out, _ = stream_step_of(m, x.example, ex_tree)
    mod, layout = p.const(m, "m"), p.const(state_layout(ex_tree), "layout")
    names = p.take_state(ex_state, [False] * len(ex_state))
    y, st = p.name("v"), p.name("st")
    p.emit(f"{y}, {st} = stream_step_of({mod}, {_to_protocol(x)}, {layout}.unflatten([{', '.join(names)}]))")
    p.emit(f"{st} = flatten_state({st})")
    p.emit(f"{y} = {_from_protocol(y, ex_out)}")
    p.new_state.extend(f"{st}[{i}]" for i in range(len(names)))
    return _Value(y, ex_out, owned=False)


def _lower_pointwise(p: _Program, m: nn.Module, x: _Value) -> _Value:
    if isinstance(m, _SKIP):
        return x
    y = p.name("v")
    ex = m(x.example.clone())
    if isinstance(m, nn.ReLU):
        p.emit(f"{y} = {x.name}.relu_()" if x.owned else f"{y} = torch.relu({x.name})")
    elif isinstance(m, nn.ReLU6):
        p.emit(f"{y} = {x.name}.clamp_(0.0, 6.0)" if x.owned else f"{y} = torch.clamp({x.name}, 0.0, 6.0)")
    elif _is_eval_batchnorm(m):
        # eval batch norm is x * scale + shift per channel; values hold channels on the last axis
        scale, shift = batchnorm_affine(m)
        sc, sh = p.const(scale, "w"), p.const(shift, "b")
        p.emit(f"{y} = {x.name}.mul_({sc}).add_({sh})" if x.owned else f"{y} = torch.addcmul({sh}, {x.name}, {sc})")
    else:
        p.not_lowered(m, f"no compiled lowering for the pointwise {type(m).__name__}")
        call = f"{p.const(m, 'm')}({_to_protocol(x)})"
        p.emit(f"{y} = {_from_protocol(call, ex)}")
        return _Value(y, ex, owned=False)
    return _Value(y, ex, owned=True)


def _is_eval_batchnorm(m: nn.Module) -> bool:
    """An eval ``BatchNorm1d`` with running statistics: a per-channel affine map (``batchnorm_affine``)."""
    return isinstance(m, nn.BatchNorm1d) and not m.training and m.running_mean is not None and m.running_var is not None


def _lower_conv1d_call(p: _Program, m: TemporalWindowOp, conv: nn.Conv1d, x: _Value) -> _Value:
    """The convolution as one ``F.conv1d`` on its window joined straight into the ``(B, C, keep + n)`` layout
    oneDNN takes (one copy, no tap matmuls): for few channels over many rows (``rows_as_batch``)."""
    ex_state = flatten_state(m.stream_state(x.example))
    (s_name,) = p.take_state(ex_state, [True])
    keep, r, s = m._keep, m.receptive_field, m.stride
    length = keep + x.example.shape[2]
    p.histories += bool(keep)
    buf = p.name("b")
    if keep:
        out = p.buffer((-1, conv.in_channels, length))
        p.emit(f"{buf} = torch.cat([{s_name}.permute(1, 2, 0), {x.name}.permute(1, 2, 0)], 2, out={out})")
        p.new_state.append(f"{buf}[:, :, {length - keep}:].permute(2, 0, 1)")  # (keep, B, C) view
    else:
        p.emit(f"{buf} = {x.name}.permute(1, 2, 0)")  # (B, C, n)
        p.new_state.append(s_name)
    surplus = (length - r) % s
    w, b = p.const(conv.weight.detach(), "w"), "None" if conv.bias is None else p.const(conv.bias.detach(), "b")
    y = p.name("v")
    args = f"{w}, {b}, {s}, 0, {conv.dilation[0]}, {conv.groups}"
    p.emit(f"{y} = F.conv1d({buf}[:, :, {surplus}:], {args}).permute(2, 0, 1)")  # (n_out, B, O) view
    ex_out, _ = m.stream_step(x.example, [ex_state[0]])
    return _Value(y, ex_out, owned=True)


def _lower_conv1d(p: _Program, m: TemporalWindowOp, conv: nn.Conv1d, x: _Value) -> _Value:
    if p.conv_calls and p.ring_phase is None:
        return _lower_conv1d_call(p, m, conv, x)
    ex_state = flatten_state(m.stream_state(x.example))
    (s_name,) = p.take_state(ex_state, [True])
    keep, r, s = m._keep, m.receptive_field, m.stride
    length = keep + x.example.shape[2]
    c_in, c_out = conv.in_channels, conv.out_channels
    buf = p.name("b")
    p.histories += bool(keep)
    if keep and p.ring_phase is not None:
        p.emit(f"{buf} = {_ring_window(p, s_name, keep, x)}")  # (keep + n, B, C) view of the ring
    elif keep:
        out = p.buffer((length, -1, c_in))
        if p.probe is None:
            p.probe = (len(p.state_examples) - 1, len(p.buffers) - 1)
        p.emit(f"{buf} = torch.cat([{s_name}, {x.name}], 0, out={out})")  # (keep + n, B, C)
        p.new_state.append(f"{buf}[{length - keep}:]")
    else:
        p.emit(f"{buf} = {x.name}")
        p.new_state.append(s_name)
    surplus = (length - r) % s
    n_out = (length - r) // s + 1
    if surplus:
        p.emit(f"{buf} = {buf}[{surplus}:]")
    y = p.name("v")
    d, k = conv.dilation[0], conv.kernel_size[0]
    weight = conv.weight.detach()  # (O, C, k)
    bias = None if conv.bias is None else p.const(conv.bias.detach(), "b")
    if conv.groups == 1:
        # output o, tap j reads input row o*s + j*d: the slab buf[j*d : j*d + (n_out-1)*s + 1 : s], (n_out, B, C),
        # viewed as (n_out*B, C) without a copy when s == 1; k accumulating matmuls -> (n_out*B, O)
        ob = p.buffer((n_out, -1, c_out))
        for j in range(k):
            stop = j * d + (n_out - 1) * s + 1
            rows = f"{buf}[{j * d}:{stop}" + (f":{s}]" if s > 1 else "]")
            mat, wj = f"{rows}.reshape(-1, {c_in})", p.const(weight[:, :, j].t().contiguous(), "w")
            if j == 0 and bias is not None:
                p.emit(f"{y} = torch.addmm({bias}, {mat}, {wj}, out={ob}.view(-1, {c_out}))")
            elif j == 0:
                p.emit(f"{y} = torch.mm({mat}, {wj}, out={ob}.view(-1, {c_out}))")
            else:
                p.emit(f"{y}.addmm_({mat}, {wj})")
        p.emit(f"{y} = {ob}")  # (n_out, B, O)
    else:
        w = p.const(weight, "w")
        b = "None" if bias is None else bias
        conv_call = f"F.conv1d({buf}.permute(1, 2, 0), {w}, {b}, {s}, 0, {d}, {conv.groups})"
        p.emit(f"{y} = {conv_call}.permute(2, 0, 1)")
    ex_out, _ = m.stream_step(x.example, [ex_state[0]])
    return _Value(y, ex_out, owned=True)


def _ring_window(p: _Program, s_name: str, keep: int, x: _Value) -> str:
    """Ring-buffer variant: write the new rows after the history; returns the ``(keep + n, B, C)`` window expression.

    The state tensor ``s_name`` is a ring of ``keep + period * n`` rows. At phase ``t`` its history is rows
    ``[t n, t n + keep)`` and the new rows go to ``[t n + keep, t n + keep + n)``, so the window is a contiguous slab
    and nothing is moved; after the last phase the history is copied back to the front (``p.wraps``).
    """
    assert p.ring_phase is not None
    n = x.example.shape[2]
    base, index = p.ring_phase * n, int(s_name[1:])
    p.rings[index] = (keep, n)
    p.emit(f"{s_name}[{base + keep}:{base + keep + n}].copy_({x.name})")
    p.new_state.append(s_name)
    if p.ring_phase == p.ring_period - 1:
        end = p.ring_period * n
        src = f"{s_name}[{end}:{end + keep}]" + (".clone()" if keep > end else "")  # overlapping rows: copy first
        p.wraps.append(f"{s_name}[0:{keep}].copy_({src})")
    return f"{s_name}[{base}:{base + keep + n}]"


def _lower_window_max(p: _Program, m: nn.Module, x: _Value, kernel: int, stride: int) -> _Value:
    """Maximum over the last ``kernel`` rows every ``stride`` rows: ``(keep + n, B, C) -> (n / stride, B, C)``."""
    ex_tree = stream_state_of(m, x.example)
    ex_state = flatten_state(ex_tree)
    (s_name,) = p.take_state(ex_state, [True])
    keep = ex_state[0].shape[2]
    length = keep + x.example.shape[2]
    buf = p.name("b")
    p.histories += bool(keep)
    if keep and p.ring_phase is not None:
        p.emit(f"{buf} = {_ring_window(p, s_name, keep, x)}")  # (keep + n, B, C) view of the ring
    elif keep:
        p.emit(f"{buf} = torch.cat([{s_name}, {x.name}], 0)")  # (keep + n, B, C), fresh
        p.new_state.append(f"{buf}[{length - keep}:]")
    else:
        p.emit(f"{buf} = {x.name}")
        p.new_state.append(s_name)
    surplus = (length - kernel) % stride
    y = p.name("v")
    # (L, B, C) -> (n_out, B, C, kernel) windows -> max over the window
    p.emit(f"{y} = {buf}[{surplus}:].unfold(0, {kernel}, {stride}).amax(-1)")
    ex_out, _ = stream_step_of(m, x.example, ex_tree)
    return _Value(y, ex_out, owned=True)


def _lower_sum(p: _Program, a: _Value, b: _Value) -> _Value:
    if a.owned:
        p.emit(f"{a.name}.add_({b.name})")
        return _Value(a.name, a.example + b.example, owned=True)
    y = p.name("v")
    p.emit(f"{y} = torch.add({a.name}, {b.name})")
    return _Value(y, a.example + b.example, owned=True)


class _TorchBuilder:
    """The compiled target of the shared lowering core (``vidrec.layers.lowering.LoweringBuilder``)."""

    target = "compiled"

    def __init__(self, p: _Program) -> None:
        self.p = p

    def lower(self, module: nn.Module, x: _Value) -> _Value:
        return _lower(self.p, module, x)

    def shared(self, x: _Value) -> _Value:
        return _Value(x.name, x.example, owned=False)

    def add(self, a: _Value, b: _Value) -> _Value:
        return _lower_sum(self.p, a, b)

    def concat(self, values: Sequence[_Value]) -> _Value:
        p, y = self.p, self.p.name("v")
        ex = torch.cat([v.example for v in values], dim=1)  # protocol layout (B, C, n)
        p.emit(f"{y} = torch.cat([{', '.join(v.name for v in values)}], {2 if ex.dim() == 3 else 1})")
        return _Value(y, ex, owned=True)

    def window_max(self, module: nn.Module, x: _Value, kernel: int, stride: int) -> _Value:
        return _lower_window_max(self.p, module, x, kernel, stride)

    def select_channels(self, x: _Value, channels: Sequence[int]) -> _Value:
        p, y = self.p, self.p.name("v")
        index = torch.tensor([int(c) for c in channels], device=x.example.device)
        p.emit(f"{y} = torch.index_select({x.name}, -1, {p.const(index, 'i')})")  # channels are the last axis as held
        return _Value(y, x.example.index_select(1, index), owned=True)

    def kernel(self, module: nn.Module, x: _Value, fn: TimeFirstKernel) -> _Value:
        return _lower_kernel(self.p, module, x, fn)

    def rows_as_batch(self, module: nn.Module, layers: Sequence[nn.Module], x: _Value) -> _Value:
        return _lower_rows(self.p, module, layers, x)


def _lower_rows(p: _Program, m: nn.Module, layers: Sequence[nn.Module], x: _Value) -> _Value:
    """``layers`` on each channel row of ``x`` on its own (``m``'s step): ``(n, B, D) -> (n, B D, 1) -> ... ->
    (n', B D, 1) -> (n', B, D)``, the rows a batch of ``B D``.

    The layers are lowered into an inner program over ``(n, B D, c)`` values (its own buffers, allocated per call for
    the ``B D`` rows), which runs as ``m``'s kernel: ``m``'s state tensors ``(B, D c, k)`` are held ``(k, B, D c)``
    and viewed ``(k, B D, c)`` for the inner program (rows of a stream adjacent, as ``m`` lays them out), so the
    streams stay on the batch axis for slots. Modules the inner program does not lower are decisions as anywhere.
    """
    rows = int(x.example.shape[1])
    prefix = p.names.get(id(m), "?")
    # a tap matmul of a few channels over B D rows runs far below the speed of oneDNN's convolution of the rows
    inner = _Program(names={k: f"{prefix}.{v}" if v else prefix for k, v in module_names(m).items()}, conv_calls=True)
    with torch.inference_mode():
        ex_rows = x.example.reshape(-1, 1, x.example.shape[2])  # (B D, 1, n): each row its own stream
        y = _Value("x", ex_rows, owned=False)
        for layer in layers:
            y = _lower(inner, layer, y)
    if y.example.dim() != 3 or y.example.shape[1] != 1:
        raise TypeError(f"rows_as_batch: the per-row network must end with 1 channel, got {tuple(y.example.shape)}")
    inner_step, _ = _assemble(inner, y.name)
    p.opaque += inner.opaque
    p.decisions += inner.decisions
    shapes = list(inner.buffers)
    time_first = list(inner.time_first)
    channels = [int(t.shape[1]) for t in inner.state_examples]  # per-row channels c of each state tensor

    def step(v: Tensor, state: State) -> tuple[Tensor, State]:
        batch_rows = v.shape[1] * rows
        # (k, B, D c) -> (k, B D, c) time-first, or (B D, c, k) for a module the inner program calls as it is
        inner_state = [
            s.unflatten(2, (rows, c)).flatten(1, 2) if tf else s.permute(1, 2, 0).reshape(batch_rows, c, s.shape[0])
            for s, tf, c in zip(state, time_first, channels, strict=True)
        ]
        bufs = [v.new_empty([batch_rows if d == -1 else d for d in shape]) for shape in shapes]
        out, new = inner_step(v.reshape(v.shape[0], batch_rows, 1).permute(1, 2, 0), inner_state, bufs)
        new_state = [
            t.unflatten(1, (-1, rows)).flatten(2, 3) if tf else t.reshape(-1, rows * c, t.shape[2]).permute(2, 0, 1)
            for t, tf, c in zip(new, time_first, channels, strict=True)
        ]
        return out.unflatten(1, (-1, rows)).flatten(2, 3), new_state  # (n', B D, 1) -> (n', B, D)

    return _lower_kernel(p, m, x, step)


def _lower_kernel(p: _Program, m: nn.Module, x: _Value, fn: TimeFirstKernel) -> _Value:
    """``m``'s step as its own time-first function ``fn(x, state) -> (y, new_state)``, traced with the program.

    ``m``'s flat state tensors are held time-first where they are 3D (``(T, B, C)``, the layout of the rest of the
    program). Ring-buffer variants copy the new state into the incoming tensors (their state is updated in place).
    """
    ex_tree = stream_state_of(m, x.example)
    ex_state = flatten_state(ex_tree)
    names = p.take_state(ex_state, [t.dim() == 3 for t in ex_state])
    ex_out, _ = stream_step_of(m, x.example, ex_tree)
    y, st = p.name("v"), p.name("st")
    p.emit(f"{y}, {st} = {p.const(fn, 'k')}({x.name}, [{', '.join(names)}])")
    if p.ring_phase is None:
        p.new_state.extend(f"{st}[{i}]" for i in range(len(names)))
    else:
        for i, n in enumerate(names):
            p.emit(f"{n}.copy_({st}[{i}])")
        p.new_state.extend(names)
    return _Value(y, ex_out, owned=False)


def _lower(p: _Program, m: nn.Module, x: _Value) -> _Value:
    """Emit the streaming step of ``m`` on ``x``; returns the output value."""
    lowering = lowering_for(m, "compiled")
    if lowering is not None:
        return lowering(_TorchBuilder(p), m, x)  # type: ignore[no-any-return]
    if isinstance(m, TemporalWindowOp) and isinstance(m.op, nn.Conv1d) and x.example.dim() == 3:
        conv = m.op
        if conv.padding_mode == "zeros" and conv.padding in (0, (0,), "valid"):
            return _lower_conv1d(p, m, conv, x)
    if isinstance(m, TemporalAvgPoolHead) and x.example.dim() == 3:
        ex_state = flatten_state(m.stream_state(x.example))
        (s_name,) = p.take_state(ex_state, [True])
        n = x.example.shape[2]
        buf, pooled = p.name("b"), p.name("v")
        c, positions = x.example.shape[1], ex_state[0].shape[2]
        p.histories += 1
        if p.ring_phase is not None:
            p.emit(f"{buf} = {_ring_window(p, s_name, positions, x)}[{n}:]")  # (P, B, C) view of the ring
        else:
            out = p.buffer((positions + n, -1, c))
            if p.probe is None:  # the new state lives in this buffer: alternate buffers (no lowered conv set it)
                p.probe = (len(p.state_examples) - 1, len(p.buffers) - 1)
            p.emit(f"{buf} = torch.cat([{s_name}, {x.name}], 0, out={out})[{n}:]")  # (P + n, B, C) -> (P, B, C)
            p.new_state.append(buf)
        p.emit(f"{pooled} = torch.mean({buf}, 0, out={p.buffer((-1, c))})")  # (B, C)
        return _Value(pooled, m.stream_step(x.example, [ex_state[0]])[0], owned=True)
    if isinstance(m, TemporalModule):
        return _lower_opaque(p, m, x, _why_not_lowered(m, x))
    if isinstance(m, nn.Conv1d) and m.groups == 1 and is_time_pointwise(m) and x.example.dim() == 3:
        # a 1-step convolution is a linear map of the channels: (B, T, C) -> (B, T, O)
        lin = p.name("v")
        b = "None" if m.bias is None else p.const(m.bias.detach(), "b")
        p.emit(f"{lin} = F.linear({x.name}, {p.const(m.weight.detach()[:, :, 0], 'w')}, {b})")
        return _Value(lin, m(x.example), owned=True)
    if is_time_pointwise(m):
        return _lower_pointwise(p, m, x)
    return _lower_head(p, m, x)


def _lower_head(p: _Program, m: nn.Module, x: _Value) -> _Value:
    """Time-free modules after pooling (``(B, C)`` in): sequential containers, linear layers, anything else."""
    if isinstance(m, nn.Sequential):
        for child in m:
            x = _lower_head(p, child, x)
        return x
    if isinstance(m, _SKIP):
        return x
    y = p.name("v")
    ex = m(x.example)
    if isinstance(m, nn.Linear):
        wt = p.const(m.weight.detach().t().contiguous(), "w")
        if m.bias is None:
            p.emit(f"{y} = torch.mm({x.name}, {wt})")
        else:
            p.emit(f"{y} = torch.addmm({p.const(m.bias.detach(), 'b')}, {x.name}, {wt})")
        p.fresh.add(y)
        return _Value(y, ex, owned=True)
    if isinstance(m, TemporalModule):
        return _lower(p, m, x)
    if is_time_pointwise(m) and not isinstance(m, (nn.Conv1d, nn.Conv3d)):
        return _lower_pointwise(p, m, x)
    p.not_lowered(m, f"no compiled lowering for the head module {type(m).__name__}")
    p.emit(f"{y} = {p.const(m, 'm')}({x.name})")
    return _Value(y, ex, owned=False)


def _why_not_lowered(m: nn.Module, x: _Value) -> str:
    """The reason a temporal module reaches the opaque path."""
    if isinstance(m, TemporalWindowOp) and isinstance(m.op, nn.Conv1d):
        return f"Conv1d with padding {m.op.padding!r} / padding_mode {m.op.padding_mode!r} is not lowered"
    if isinstance(m, TemporalWindowOp):
        return f"no compiled lowering for a window op over {type(m.op).__name__}"
    if isinstance(m, TemporalAvgPoolHead):
        return f"average pool over {x.example.dim()}D values is not lowered"
    return f"no compiled lowering for {type(m).__name__}"


def head_lowers(model: nn.Module) -> bool:
    """True when the compiled target lowers the temporal head of ``model`` (the average pool, or the whole model by its
    registered lowering); else the compiled step covers the features only and the engine runs the head eagerly on
    their output (``CompiledStep.head_eager``)."""
    return lowers_whole(model) or isinstance(getattr(model, "pool", None), TemporalAvgPoolHead)


def lowers_whole(model: nn.Module) -> bool:
    """True for a streamable model other than a ``StreamableClassifier`` whose class registers a compiled lowering
    (``vidrec.layers.lowering.register_lowering(Model, target="compiled")``): it is lowered as one module, chunk to
    logits (TS-LSTM's segment head)."""
    from vidrec.models._base import StreamableClassifier

    return (
        isinstance(model, TemporalModule)
        and not isinstance(model, StreamableClassifier)
        and lowering_for(model, "compiled") is not None
    )


def compile_stream_step(model: nn.Module, chunk: Tensor, *, trace: bool = True, atol: float = 1e-4) -> CompiledStep:
    """Lower the streaming step of a configured streamable classifier into a flat compiled function.

    Args:
        model: An eval-mode ``StreamableClassifier`` (``features``, ``pool``, ``classifier``), or a model whose class
            registers a compiled lowering (``lowers_whole``), on which ``configure_stream`` has been called;
            BatchNorm should already be folded (``fold_batchnorm``).
        chunk: An example chunk ``(B, C, hop)``; the compiled step accepts any batch size with this channel count and
            hop.
        trace: Run the generated function as a TorchScript trace (less per-op overhead than Python) when every module
            was lowered.
        atol: Largest absolute difference to the eager step allowed by the build-time check.

    Returns:
        The compiled step, taking and returning the flat state tensors of ``model.stream_step`` (``flatten_state``
        order). When the head is not an average pool (``head_lowers`` is False) it steps ``model.features`` only and
        returns their new steps ``(B, C', n)`` and state: ``head_eager`` is set and a decision names the head.

    Raises:
        TypeError: ``model`` is not a features/pool/classifier classifier with the stock ``stream_step``, or the chunk
            is not 3D.
        RuntimeError: the compiled step disagrees with the eager step on a random chunk (a lowering bug).
    """
    from vidrec.models._base import StreamableClassifier

    if chunk.dim() != 3:
        raise TypeError(
            f"compile_stream_step streams time series (B, C, hop); got a chunk of shape {tuple(chunk.shape)}"
        )
    stock = isinstance(model, StreamableClassifier) and type(model).stream_step is StreamableClassifier.stream_step
    if not stock and not lowers_whole(model):
        raise TypeError(
            f"compile_stream_step needs a StreamableClassifier with the stock stream_step, got {type(model).__name__}"
        )
    fn, source, p = generate_step(model, chunk)
    compiled = CompiledStep(fn, source, p, p.probe, chunk.dtype, chunk.device)
    compiled.head_eager = not head_lowers(model)
    target = cast(nn.Module, model.features) if compiled.head_eager else model
    _check_against_eager(target, compiled, chunk, atol)
    if trace and compiled.num_opaque == 0:  # modules called as they are may hold parameters a trace cannot embed
        with torch.no_grad():
            state = compiled.to_compiled(flatten_state(target.stream_state(chunk)))  # type: ignore[operator]
        compiled.trace(chunk, state)
        _check_against_eager(target, compiled, chunk, atol)
    return compiled


def generate_step(
    model: nn.Module, chunk: Tensor, ring_phase: int | None = None, ring_period: int = 0
) -> tuple[Callable[[Tensor, State, State], tuple[Tensor, State]], str, _Program]:
    """Lower ``model`` (a checked, configured ``StreamableClassifier``, or a model ``lowers_whole``) into a Python step
    function.

    Args:
        model: The model, as for ``compile_stream_step``.
        chunk: An example chunk ``(B, C, hop)``.
        ring_phase: None for the concatenating step of ``CompiledStep``; else the phase (``0 <= ring_phase <
            ring_period``) of the ring-buffer variant of ``vidrec.streaming.rings``.
        ring_period: Steps between wrap-arounds of the ring buffers.

    Returns:
        ``(step, source, program)``: ``step(x, state, bufs) -> (logits, new_state)`` (the features' new steps
        ``(B, C', n)`` instead of logits when ``head_lowers(model)`` is False), its source and the program's
        bookkeeping (state examples, buffer shapes, ring rows, decisions).
    """
    from vidrec.models._base import StreamableClassifier

    p = _Program(ring_phase=ring_phase, ring_period=ring_period, names=module_names(model))
    with torch.inference_mode():
        x = _Value("x", chunk, owned=False)
        if lowers_whole(model):
            out = _lower(p, model, x)
        else:
            assert isinstance(model, StreamableClassifier)
            out = _lower_classifier(p, model, x)
    if out.name not in p.fresh:
        p.emit(f"{out.name} = {out.name}.clone()")  # logits never alias a step buffer
    fn, source = _assemble(p, out.name)
    return fn, source, p


def _assemble(p: _Program, out: str) -> tuple[Callable[[Tensor, State, State], tuple[Tensor, State]], str]:
    """The program's source ``step(x, state, bufs) -> (out, new_state)`` and the function compiled from it."""
    n_state = len(p.state_examples)
    header = ["def step(x, state, bufs):", "    x = x.permute(2, 0, 1)  # (B, C, hop) -> (hop, B, C)"]
    if n_state:
        header.append(f"    ({', '.join(f's{i}' for i in range(n_state))},) = state")
    if p.buffers:
        header.append(f"    ({', '.join(f'o{i}' for i in range(len(p.buffers)))},) = bufs")
    body = [f"    {line}" for line in p.lines + p.wraps]
    new_state = f"({', '.join(p.new_state)},)" if p.new_state else "()"  # a stateless step returns no state
    footer = [f"    return {out}, {new_state}"]
    source = "\n".join(header + body + footer) + "\n"
    scope: dict[str, object] = {
        "__name__": __name__,
        "torch": torch,
        "F": F,
        "stream_step_of": stream_step_of,
        "flatten_state": flatten_state,
        **p.consts,
    }
    exec(compile(source, "<vidrec.streaming.fastpath>", "exec"), scope)  # noqa: S102  # our own generated source
    return scope["step"], source  # type: ignore[return-value]


def _lower_classifier(p: _Program, model: StreamableClassifier, x: _Value) -> _Value:
    """A ``StreamableClassifier``: features, then the lowered head, or the features' new steps for an eager head."""
    feats = _lower(p, model.features, x)
    if head_lowers(model):
        pooled = _lower(p, model.pool, feats)
        out = _lower_head(p, model.classifier, pooled)
    else:
        # any other temporal head runs eagerly on the features' output, outside the compiled program (which
        # keeps its ring buffers and trace); the engine steps it (vidrec.streaming.engines.compiled)
        for part, what in ((model.pool, "temporal head"), (model.classifier, "classifier after it")):
            if not isinstance(part, nn.Identity):
                p.decisions.append(
                    LoweringDecision(
                        p.names.get(id(part), "?"),
                        type(part).__name__,
                        "eager",
                        f"no compiled lowering for the {what}: runs eagerly on the compiled features' output",
                    )
                )
        out = _Value(p.name("v"), feats.example, owned=True)
        p.emit(f"{out.name} = {_to_protocol(feats)}.clone(memory_format=torch.contiguous_format)")  # (B, C', n)
        p.fresh.add(out.name)
    return out


def _check_against_eager(model: nn.Module, compiled: CompiledStep, chunk: Tensor, atol: float) -> None:
    """Run both steps three times from a random state on random chunks and compare outputs and new states."""
    device = chunk.device
    chunk = torch.zeros((chunk.shape[0] + 2, *chunk.shape[1:]), dtype=chunk.dtype, device=device)  # another batch
    with torch.inference_mode():
        gen = torch.Generator().manual_seed(0)  # on the CPU: the same draws on every device
        zero = model.stream_state(chunk)  # type: ignore[operator]
        layout = state_layout(zero)
        state = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(device) for t in flatten_state(zero)]
        eager_state, fast_state = list(state), compiled.to_compiled(state)
        for _ in range(3):
            x = torch.randn(chunk.shape, generator=gen, dtype=chunk.dtype).to(device)
            ye, eager_tree = model.stream_step(x.clone(), layout.unflatten(eager_state))  # type: ignore[operator]
            eager_state = flatten_state(eager_tree)
            yf, fast_state = compiled(x.clone(), fast_state)
            fast_state = compiled.to_protocol(fast_state)
            if len(eager_state) != len(fast_state):
                raise RuntimeError(f"compiled step returns {len(fast_state)} state tensors, eager {len(eager_state)}")
            diffs = [float((ye - yf).abs().max())]
            diffs += [float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(eager_state, fast_state)]
            fast_state = compiled.to_compiled(fast_state)
            if max(diffs) > atol:
                raise RuntimeError(f"compiled streaming step differs from the eager step by {max(diffs):.3g} > {atol}")
