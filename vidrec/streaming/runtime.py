"""Stateful, batched streaming execution of any streamable vidrec classifier.

``StreamingClassifier`` wraps a ``StreamableClassifier`` (``vidrec.models._base``) configured for a ``(window, hop)``
pair. It holds the per-layer streaming state batched over a fixed number of *slots* (one slot = one live stream), so
one step serves many streams, and each hop of ``hop`` new samples costs only the new output positions of each layer.

Semantics (exact):

* A slot's samples arrive in chunks of exactly ``hop`` samples. After each chunk the runtime returns the logits of the
  window of the last ``window`` samples, equal to ``model(window_samples)`` offline (fp32, to float rounding).
* Warm-up: a slot that has seen fewer than ``window`` samples since its last reset has no prediction (``ready`` is
  False). The state starts at zero; the zeros never reach a window that is reported, so the first reported window is
  already exact.
* Edge-filled start (``first_output < window``, for models trained on windows with left context): before a slot's
  first chunk the runtime feeds copies of that chunk's first sample until ``window - first_output`` samples of history
  exist, so the slot reports from its ``first_output``-th sample on. Each report equals the offline model on the window
  with that edge-filled history (the data module's ``context_padding=EDGE``).
* ``reset(slots)`` zeroes those slots' slice of every state tensor and their sample counters (a restarted stream).
* Inputs are normalised in the runtime with ``(x - mean) / std`` per channel when ``mean``/``std`` are given, the same
  normalisation the data module applies offline.

Execution is an engine's (``vidrec.streaming.engines``): ``compiled`` (the default; time series models are lowered
once into a flat generated step over ring buffers, video models into ops on channels-last frames over ring buffers,
ensembles member by member, each checked against eager at build; a model neither takes runs eagerly),
``eager`` (module by module), ``numpy`` (one NumPy ring-buffer step per slot, lowest batch-1 latency) and
``onnxruntime`` (the exported step graph). Every engine steps a converted copy (BatchNorm folded into convolutions,
dropout removed, eval mode, and for time series the linear classifier moved in front of the average pool so the pool
buffers logits) under ``torch.inference_mode``. The runtime keeps what all engines share: normalisation, warm-up and
edge-filled lead-in, the per-slot sample counters and ready flags. ``describe()`` says which engine runs which part,
naming every module an engine did not lower and why.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.stream_state import StateLayout, StreamState, state_layout
from vidrec.models._base import ParallelClassifiers
from vidrec.spec import ChannelNormalization
from vidrec.streaming.engines import StepBackend, StepEngine, build_engine
from vidrec.streaming.lowering import LoweringDecision
from vidrec.streaming.optimize import fold_batchnorm, fold_linear_head

__all__ = [
    "EngineDescription",
    "StepBackend",
    "StepResult",
    "StreamingClassifier",
    "smallest_stream_geometry",
    "to_streaming",
    "infer_in_channels",
]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

State = list[Tensor]


@dataclass
class StepResult:
    """Output of one streaming step over ``n`` slots.

    Attributes:
        logits: ``(n, K)`` logits of the window ending at this hop (meaningless where ``ready`` is False).
        ready: ``(n,)`` bool, True where the slot has seen at least ``window`` samples since its last reset.
        slots: ``(n,)`` the slot index of each row.
    """

    logits: Tensor
    ready: np.ndarray
    slots: np.ndarray


@dataclass
class EngineDescription:
    """Which engine runs which part of a runtime's model (``StreamingClassifier.describe``).

    Attributes:
        requested: The engine asked for.
        engine: The engine that runs the model (another one when the requested one cannot take it).
        device: Where the step runs.
        dtype: The step's dtype.
        ring_buffers: True when full steps keep layer histories in ring buffers (compiled engine).
        decisions: Every part not run by ``engine`` itself: its module name, the engine that runs it, the reason.
    """

    requested: str
    engine: str
    device: str
    dtype: str
    ring_buffers: bool = False
    decisions: list[LoweringDecision] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"engine: {self.engine} (requested {self.requested}) on {self.device}, {self.dtype}"]
        if self.ring_buffers:
            lines[0] += ", ring buffers"
        if not self.decisions:
            lines.append(f"  every module runs in the {self.engine} engine")
        lines += [f"  {d}" for d in self.decisions]
        return "\n".join(lines)


def infer_in_channels(model: nn.Module) -> int:
    """Input channels of a model: its own ``in_channels`` attribute, else those of its first convolution or linear
    layer (a model that splits its input between branches, such as the skeleton body-part net, sets the attribute)."""
    own = getattr(model, "in_channels", None)
    if isinstance(own, int):
        return own
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    raise ValueError(f"cannot infer the input channels of {type(model).__name__}; pass in_channels explicitly")


def smallest_stream_geometry(model: nn.Module, spare_steps: int = 3) -> tuple[int, int]:
    """``(window, hop)``: the shortest window and smallest hop a streamable ``model`` takes.

    A member that sees the whole window at once (the skeleton spatial stream) is built for one window length, which
    then is the window; otherwise the receptive field plus ``spare_steps`` output steps. A head whose segments follow
    the window (TS-LSTM: S segments of window / S steps) streams whole segments a hop.
    """
    stride = int(model.stride)  # type: ignore[arg-type]
    fixed = {int(w) for w in (getattr(m, "window", None) for m in model.modules()) if isinstance(w, int)}
    if len(fixed) > 1:
        raise ValueError(f"{type(model).__name__} has members built for different windows: {sorted(fixed)}")
    window = fixed.pop() if fixed else int(model.receptive_field) + spare_steps * stride  # type: ignore[arg-type]
    smallest = getattr(model, "min_stream_hop", None)
    hop = math.lcm(stride, int(smallest(window))) if callable(smallest) else stride
    return window, hop


def _check_streamable(model: nn.Module) -> None:
    missing = [a for a in ("configure_stream", "stream_state", "stream_step") if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} is not streamable: it lacks {', '.join(missing)} "
            "(build it from vidrec.layers temporal modules as a vidrec.models.StreamableClassifier)"
        )


class StreamingClassifier:
    """Batched streaming runtime over ``capacity`` slots.

    Args:
        model: A streamable classifier (``configure_stream``, ``stream_state``, ``stream_step``). It is not modified:
            the runtime works on a copy.
        window: Window length in samples (the model's offline input length).
        hop: New samples per step; must be a multiple of the model's temporal stride.
        capacity: Number of slots (streams stepped in one batch); ``grow`` raises it later.
        in_channels: Input channels C; inferred from the first convolution when None.
        frame_shape: Shape of one time step beyond the channels: ``()`` for time series, ``(H, W)`` for video frames.
        mean: Per-channel mean for input normalisation, or None for no normalisation.
        std: Per-channel standard deviation (same length as ``mean``).
        fold_bn: Fold BatchNorm into convolutions and, for time series, the linear classifier in front of the average
            pool (``optimize.fold_linear_head``); exact to float rounding, faster.
        backend: The engine (a ``StepBackend`` or its name: ``"compiled"``, ``"eager"``, ``"numpy"``,
            ``"onnxruntime"``); an unknown name raises ``ValueError`` listing them.
        ring_buffers: With the compiled engine (time series), steps of all slots keep every layer's history in ring
            buffers (``vidrec.streaming.rings``) instead of re-concatenating it: same results, faster at small hops.
        dtype: Run the step in this floating dtype instead of the model's (``torch.bfloat16``: approximate, about
            2x the throughput of float32 at hops of 8 and more on CPUs with AMX/AVX512-BF16; measure the deviation
            with ``vidrec evaluate-streaming --precision bf16``). 16-bit steps return float32 logits.
        first_output: Samples a slot must see before it reports, when less than ``window``: the missing history is
            filled with copies of the slot's first sample (see the module docstring). Default: ``window``.
        device: Where the state lives and the step runs (``"cpu"``, ``"cuda"``, ...; the numpy and onnxruntime engines
            run on the CPU only). Chunks may come from anywhere; logits are returned on the CPU.

    Raises:
        TypeError: ``model`` is not streamable.
        ValueError: the hop does not fit the model's stride, the window is shorter than its receptive field, the
            normalisation vectors do not have C entries, or the engine is unknown or cannot take the dtype, device or
            frames.
    """

    def __init__(
        self,
        model: nn.Module,
        window: int,
        hop: int,
        *,
        capacity: int = 1,
        in_channels: int | None = None,
        frame_shape: Sequence[int] = (),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        fold_bn: bool = True,
        backend: StepBackend | str = StepBackend.COMPILED,
        ring_buffers: bool = True,
        dtype: torch.dtype | None = None,
        first_output: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        _check_streamable(model)
        requested = StepBackend.parse(backend)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.device = torch.device(device)
        self.model: nn.Module = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
        if fold_bn:  # the pool buffers K logits per position instead of C features (each member of an ensemble)
            for part in self.model.members() if isinstance(self.model, ParallelClassifiers) else [self.model]:
                fold_linear_head(part)
        if dtype is not None:
            if dtype not in _FLOAT_DTYPES:
                raise ValueError(f"dtype must be one of {sorted(str(d) for d in _FLOAT_DTYPES)}, got {dtype}")
            if requested in (StepBackend.ONNXRUNTIME, StepBackend.NUMPY) and dtype != torch.float32:
                raise ValueError(f"the {requested.value} backend runs float32 only; got dtype {dtype}")
            self.model.to(dtype)
        self.model.to(self.device)
        self.model.configure_stream(window, hop)  # type: ignore[operator]  # raises for a bad (window, hop)
        self.window, self.hop = int(window), int(hop)
        # samples before the first reported window: `window`, or more for approximate models (see approximate.py)
        warmup = getattr(self.model, "stream_warmup", None)
        self.warmup = int(warmup(self.window)) if callable(warmup) else self.window
        self._lead_in = 0  # samples of edge-filled history fed before a slot's first chunk
        if first_output is not None and first_output != self.window:
            if callable(warmup):
                raise ValueError(
                    f"first_output={first_output}: an approximate streaming model reports after its own warm-up "
                    f"({self.warmup} samples); edge-filled starts need an exact model"
                )
            if not 1 <= first_output < self.window:
                raise ValueError(f"first_output must be in [1, window={self.window}], got {first_output}")
            lead_in = self.window - int(first_output)
            self._lead_in = -(-lead_in // self.hop) * self.hop  # whole hops; extra copies leave every window alike
            self.warmup = int(first_output)
        self.in_channels = in_channels if in_channels is not None else infer_in_channels(model)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.dtype = next(self.model.parameters()).dtype
        # inputs are normalised at float32 (or the model's wider dtype), then cast to the step's dtype
        self._input_dtype = self.dtype if self.dtype in (torch.float32, torch.float64) else torch.float32
        self._scale, self._shift = self._normalisation(mean, std)
        chunk_shape = (self.in_channels, self.hop, *self.frame_shape)
        self.engine: StepEngine = build_engine(
            requested, self.model, self.window, chunk_shape, self.dtype, self.device, ring_buffers=ring_buffers
        )
        self.requested_backend = requested
        # the engine asked for, or the compiled one where the numpy engine cannot take the model
        self.backend = requested if requested is not StepBackend.NUMPY else StepBackend(self.engine.name)
        with torch.inference_mode():
            one = torch.zeros((1, *chunk_shape), dtype=self.dtype, device=self.device)
            self.state_layout: StateLayout = state_layout(self.model.stream_state(one))  # type: ignore[operator]
        self.capacity = 0
        self.samples_seen = np.zeros(0, dtype=np.int64)
        self._all_slots = np.zeros(0, dtype=np.int64)  # arange(capacity): the slots of a step that names none
        self.grow(capacity)

    def _normalisation(
        self, mean: Sequence[float] | None, std: Sequence[float] | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(1 / std, mean / std)`` of ``vidrec.spec.ChannelNormalization`` shaped ``(C, 1, ...)``, or Nones."""
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std for input normalisation, or neither")
        if mean is None or std is None:
            return None, None
        norm = ChannelNormalization(np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64))
        if norm.num_channels != self.in_channels:
            raise ValueError(
                f"normalisation mean/std have {norm.num_channels} entries, expected {self.in_channels} channels"
            )
        shape = (-1, 1, *(1 for _ in self.frame_shape))  # (C, 1, ...) broadcasts over (n, C, hop, ...)
        scale, shift = (torch.from_numpy(v).reshape(shape).to(self._input_dtype) for v in norm.scale_shift())
        return scale.to(self.device), shift.to(self.device)

    def describe(self) -> EngineDescription:
        """Which engine runs the model, on which device, and every part it does not run itself (with the reason)."""
        rings = bool(getattr(self.engine, "uses_rings", False))
        return EngineDescription(
            requested=self.requested_backend.value,
            engine=self.engine.name,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            ring_buffers=rings,
            decisions=list(self.engine.decisions),
        )

    @property
    def compiled(self) -> bool:
        """True when steps run through the compiled flat step."""
        return self.engine.name == "compiled"

    @property
    def num_state_tensors(self) -> int:
        """Number of state tensors of the step (inputs/outputs of the exported graph besides chunk/logits)."""
        return self.engine.num_state_tensors

    def state(self) -> StreamState:
        """The current state as the model's state tree (``model.stream_state``'s structure), each tensor
        ``(capacity, ...)`` in the layer protocol's layout (views, do not modify); ``model.stream_step`` takes it."""
        return self.state_layout.unflatten(self.engine.state())

    def flat_state(self) -> State:
        """The current state tensors in ``flatten_state`` order (the ONNX graph's ``state_i``), views as ``state()``."""
        return self.engine.state()

    def grow(self, capacity: int) -> None:
        """Raise the number of slots to ``capacity`` (new slots start reset); existing slots keep their state."""
        if capacity <= self.capacity:
            return
        self.engine.grow(capacity)
        self.samples_seen = np.concatenate([self.samples_seen, np.zeros(capacity - self.capacity, dtype=np.int64)])
        self.capacity = capacity
        self._all_slots = np.arange(capacity)

    def reset(self, slots: Sequence[int] | np.ndarray | None = None) -> None:
        """Zero the state and sample counters of ``slots`` (all slots when None)."""
        if slots is None:
            self.engine.reset(None)
            self.samples_seen[:] = 0
            return
        idx = self._check_slots(slots)
        self.engine.reset(idx)
        self.samples_seen[idx] = 0

    def step(self, chunk: Tensor | np.ndarray, slots: Sequence[int] | np.ndarray | None = None) -> StepResult:
        """Consume one hop of new samples for ``slots`` (all slots when None).

        Args:
            chunk: ``(n, C, hop)`` raw samples, one row per slot in ``slots`` order.
            slots: Distinct slot indices, or None for all ``capacity`` slots in order.

        Returns:
            The logits of the windows ending at this hop and which of them are valid predictions.
        """
        x = torch.as_tensor(chunk, dtype=self._input_dtype, device=self.device)
        n = self.capacity if slots is None else len(slots)
        expected = (n, self.in_channels, self.hop, *self.frame_shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"chunk must be (n, C, hop, *frame_shape) = {expected}, got {tuple(x.shape)}")
        if self._scale is not None and self._shift is not None:
            x = x * self._scale - self._shift  # as ChannelNormalization.apply: (n, C, hop, ...)
        x = x.to(self.dtype)
        slot_idx = self._all_slots if slots is None else self._check_slots(slots)
        self._lead_in_slots(x, slot_idx)
        # a step of every slot in order skips _advance's check: this is the hop-1 single-stream hot path
        logits = self.engine.step(x, None) if slots is None else self._advance(x, slot_idx)
        self.samples_seen[slot_idx] += self.hop
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()  # 16-bit steps report float32 logits
        return StepResult(logits=logits.cpu(), ready=self.samples_seen[slot_idx] >= self.warmup, slots=slot_idx)

    def _lead_in_slots(self, x: Tensor, slot_idx: np.ndarray) -> None:
        """Edge-filled start: feed the fresh slots among ``slot_idx`` copies of their first sample (no counters)."""
        if not self._lead_in:
            return
        fresh = np.flatnonzero(self.samples_seen[slot_idx] == 0)
        if not len(fresh):
            return
        first = x[torch.from_numpy(fresh).to(x.device)].narrow(2, 0, 1)  # (f, C, 1, ...)
        copies = first.expand(-1, -1, self.hop, *self.frame_shape).contiguous()
        for _ in range(self._lead_in // self.hop):
            self._advance(copies, slot_idx[fresh])

    def _advance(self, x: Tensor, slot_idx: np.ndarray) -> Tensor:
        """One engine step of the normalised ``(n, C, hop, ...)`` chunk for ``slot_idx``; the state moves on."""
        full = len(slot_idx) == self.capacity and bool((slot_idx == np.arange(self.capacity)).all())
        return self.engine.step(x, None if full else slot_idx)

    def _check_slots(self, slots: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(slots, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise ValueError(f"slot indices must be in [0, {self.capacity}), got {idx.tolist()}")
        return idx

    def run(self, x: Tensor | np.ndarray) -> tuple[Tensor, np.ndarray]:
        """Stream whole sequences through all slots from their current state, hop by hop.

        Args:
            x: ``(capacity, C, T)``; trailing samples beyond a multiple of ``hop`` are not consumed.

        Returns:
            ``(logits, ready)``: ``(capacity, T // hop, K)`` logits after each hop and ``(capacity, T // hop)`` bool.
        """
        x = torch.as_tensor(x, dtype=self._input_dtype)
        outs, readies = [], []
        for k in range(x.shape[2] // self.hop):
            res = self.step(x[:, :, k * self.hop : (k + 1) * self.hop])
            outs.append(res.logits)
            readies.append(res.ready)
        if not outs:
            return torch.zeros(self.capacity, 0, 0), np.zeros((self.capacity, 0), dtype=bool)
        return torch.stack(outs, dim=1), np.stack(readies, axis=1)


def to_streaming(model: nn.Module, window: int, hop: int, **kwargs: object) -> StreamingClassifier:
    """Generic entry point: a ``StreamingClassifier`` for ``model`` at ``(window, hop)``.

    Args:
        model: A streamable classifier.
        window: Window length in samples.
        hop: Samples per step.
        **kwargs: Passed to ``StreamingClassifier`` (capacity, mean, std, fold_bn, backend, in_channels, device, ...).
    """
    return StreamingClassifier(model, window, hop, **kwargs)  # type: ignore[arg-type]
