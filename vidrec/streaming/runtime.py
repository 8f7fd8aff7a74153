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

Speed: the runtime works on a converted copy (BatchNorm folded into convolutions, dropout removed, eval mode, and for
time series the linear classifier moved in front of the average pool so the pool buffers logits) and runs
under ``torch.inference_mode``. For time series, ``StepBackend.TORCH`` lowers that copy once into a flat compiled step
(``vidrec.streaming.fastpath``: one matmul per convolution at a hop of one sample, preallocated buffers, TorchScript
trace), checked against the eager step when built, and steps of all slots keep each layer's history in ring buffers
(``vidrec.streaming.rings``: only new rows are written); ``StepBackend.TORCH_EAGER`` steps module by module and
``StepBackend.ONNXRUNTIME`` runs the exported step graph in ONNX Runtime. ``StepBackend.NUMPY`` runs each slot as its
own ``vidrec.streaming.numpy_step.NumpyStreamStep`` (ring buffers, one NumPy call per op): the lowest latency for a
single stream at a small hop, a Python loop over slots for several.
"""

from __future__ import annotations

import copy
import enum
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.spec import ChannelNormalization
from vidrec.streaming.fastpath import CompiledStep, compile_stream_step
from vidrec.streaming.numpy_step import NumpyStreamStep
from vidrec.streaming.optimize import fold_batchnorm, fold_linear_head
from vidrec.streaming.rings import RingStep

__all__ = ["StepBackend", "StepResult", "StreamingClassifier", "to_streaming", "infer_in_channels"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

State = list[Tensor]
StepFn = Callable[[Tensor, State], tuple[Tensor, State]]


class StepBackend(enum.Enum):
    """How the streaming step is executed."""

    TORCH = "torch"  # time series: the compiled flat step (vidrec.streaming.fastpath); video: eager PyTorch
    TORCH_EAGER = "torch-eager"  # eager PyTorch under inference_mode, module by module
    ONNXRUNTIME = "onnxruntime"  # the exported step graph (vidrec.streaming.export) in ONNX Runtime
    NUMPY = "numpy"  # time series: one NumpyStreamStep per slot (vidrec.streaming.numpy_step), lowest batch-1 latency


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


def infer_in_channels(model: nn.Module) -> int:
    """Input channels of a model: ``in_channels`` of its first convolution or linear layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
        if isinstance(m, nn.Linear):
            return int(m.in_features)
    raise ValueError(f"cannot infer the input channels of {type(model).__name__}; pass in_channels explicitly")


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
        backend: Execution backend of the step.
        ring_buffers: With the compiled step (``StepBackend.TORCH``, time series), steps of all slots keep every
            layer's history in ring buffers (``vidrec.streaming.rings``) instead of re-concatenating it: same results,
            faster at small hops.
        dtype: Run the step in this floating dtype instead of the model's (``torch.bfloat16``: approximate, about
            2x the throughput of float32 at hops of 8 and more on CPUs with AMX/AVX512-BF16; measure the deviation
            with ``vidrec evaluate-streaming --precision bf16``). 16-bit steps return float32 logits.
        first_output: Samples a slot must see before it reports, when less than ``window``: the missing history is
            filled with copies of the slot's first sample (see the module docstring). Default: ``window``.

    Raises:
        TypeError: ``model`` is not streamable.
        ValueError: the hop does not fit the model's stride, the window is shorter than its receptive field, or the
            normalisation vectors do not have C entries.
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
        backend: StepBackend = StepBackend.TORCH,
        ring_buffers: bool = True,
        dtype: torch.dtype | None = None,
        first_output: int | None = None,
    ) -> None:
        _check_streamable(model)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.model: nn.Module = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
        if fold_bn:
            fold_linear_head(self.model)  # the pool buffers K logits per position instead of C features
        if dtype is not None:
            if dtype not in _FLOAT_DTYPES:
                raise ValueError(f"dtype must be one of {sorted(str(d) for d in _FLOAT_DTYPES)}, got {dtype}")
            if backend in (StepBackend.ONNXRUNTIME, StepBackend.NUMPY) and dtype != torch.float32:
                raise ValueError(f"the {backend.value} backend runs float32 only; got dtype {dtype}")
            self.model.to(dtype)
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
        if self.frame_shape and backend is StepBackend.ONNXRUNTIME:
            raise ValueError("the ONNX Runtime backend streams time series only; use the torch backend for video")
        if self.frame_shape and backend is StepBackend.NUMPY:
            raise ValueError(
                f"the numpy backend streams time series only (frame_shape=() expected, got {self.frame_shape}); "
                "use the torch backend for video"
            )
        self._numpy: NumpyStreamStep | None = None  # the prototype stream of the numpy backend
        self._numpy_slots: list[NumpyStreamStep] = []  # one per slot
        if backend is StepBackend.NUMPY:
            try:
                self._numpy = NumpyStreamStep(self.model, self.in_channels)
            except TypeError as err:
                warnings.warn(
                    f"numpy backend unavailable for this model ({err}); using the torch backend", stacklevel=2
                )
                backend = StepBackend.TORCH
        self.backend = backend
        self._scale, self._shift = self._normalisation(mean, std)
        self.capacity = 0
        self._state: State = []
        self.samples_seen = np.zeros(0, dtype=np.int64)
        self._step_fn: StepFn = self._torch_step
        self._compiled: CompiledStep | None = None
        self._rings: RingStep | None = None  # full steps over ring buffers; self._state is then unused
        if backend is StepBackend.TORCH and not self.frame_shape:
            self._compiled = self._compile()
            if self._compiled is not None:
                self._step_fn = self._compiled
                if ring_buffers and self._compiled.num_opaque == 0:
                    chunk = torch.zeros(1, self.in_channels, self.hop, dtype=self.dtype)
                    self._rings = RingStep(self.model, self._compiled, chunk)
        self.grow(capacity)
        if backend is StepBackend.ONNXRUNTIME:
            from vidrec.streaming.export import OnnxStep

            self._step_fn = OnnxStep(self.model, self.window, self.hop, self.in_channels, len(self._state))

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
        return scale, shift

    def _compile(self) -> CompiledStep | None:
        """The compiled step of the converted model, or None for models it does not apply to (they run eagerly)."""
        try:
            chunk = torch.zeros(1, self.in_channels, self.hop, dtype=self.dtype)
            # the build-time check catches lowering bugs; at 16-bit precision both steps round differently
            atol = 1e-4 if self.dtype in (torch.float32, torch.float64) else 1.0
            return compile_stream_step(self.model, chunk, atol=atol)
        except TypeError:  # not a stock features/pool/classifier model: the eager step is exact as well
            return None

    @property
    def compiled(self) -> bool:
        """True when steps run through the compiled flat step."""
        return self._compiled is not None

    @property
    def num_state_tensors(self) -> int:
        """Number of state tensors of the step (inputs/outputs of the exported graph besides chunk/logits)."""
        return len(self._history())

    def state(self) -> State:
        """The current state tensors in the layer protocol's layout, each ``(capacity, ...)`` (views, do not modify)."""
        if self._numpy is not None:
            raise RuntimeError(
                "the numpy backend keeps its state in NumpyStreamStep ring buffers, not protocol tensors"
            )
        history = self._history()
        return self._compiled.to_protocol(history) if self._compiled is not None else history

    def _history(self) -> State:
        """The state in the step's layout: views of the ring buffers at their current phase, or the state tensors."""
        return self._rings.history() if self._rings is not None else self._state

    def grow(self, capacity: int) -> None:
        """Raise the number of slots to ``capacity`` (new slots start reset); existing slots keep their state."""
        if capacity <= self.capacity:
            return
        if self._numpy is not None:
            self._numpy_slots += [self._numpy.fresh() for _ in range(capacity - self.capacity)]
        else:
            with torch.inference_mode():
                shape = (capacity, self.in_channels, self.hop, *self.frame_shape)
                fresh = self.model.stream_state(torch.zeros(shape, dtype=self.dtype))  # type: ignore[operator]
                fresh = [t.clone() for t in fresh]
                if self._compiled is not None:
                    fresh = self._compiled.to_compiled(fresh)
                for new, old, axis in zip(fresh, self._history(), self._batch_axes()):
                    new.narrow(axis, 0, self.capacity).copy_(old)
                if self._rings is not None:
                    self._rings.load(fresh)
                else:
                    self._state = fresh
        self.samples_seen = np.concatenate([self.samples_seen, np.zeros(capacity - self.capacity, dtype=np.int64)])
        self.capacity = capacity

    def reset(self, slots: Sequence[int] | np.ndarray | None = None) -> None:
        """Zero the state and sample counters of ``slots`` (all slots when None)."""
        if self._numpy is not None:
            idx_np = np.arange(self.capacity) if slots is None else self._check_slots(slots)
            for i in idx_np:
                self._numpy_slots[i].reset()
            self.samples_seen[idx_np] = 0
            return
        with torch.inference_mode():
            if slots is None:
                for t in self._history():
                    t.zero_()
                self.samples_seen[:] = 0
                return
            idx = torch.as_tensor(np.asarray(slots, dtype=np.int64))
            for t, axis in zip(self._history(), self._batch_axes()):
                t.index_fill_(axis, idx, 0.0)
        self.samples_seen[idx.numpy()] = 0

    def _batch_axes(self) -> list[int]:
        """The slot axis of each state tensor (the compiled step holds some time-first: ``(T, B, C)``)."""
        return self._compiled.batch_axes if self._compiled is not None else [0] * len(self._history())

    def _torch_step(self, chunk: Tensor, state: State) -> tuple[Tensor, State]:
        return self.model.stream_step(chunk, state)  # type: ignore[operator]

    def step(self, chunk: Tensor | np.ndarray, slots: Sequence[int] | np.ndarray | None = None) -> StepResult:
        """Consume one hop of new samples for ``slots`` (all slots when None).

        Args:
            chunk: ``(n, C, hop)`` raw samples, one row per slot in ``slots`` order.
            slots: Distinct slot indices, or None for all ``capacity`` slots in order.

        Returns:
            The logits of the windows ending at this hop and which of them are valid predictions.
        """
        x = torch.as_tensor(chunk, dtype=self._input_dtype)
        n = self.capacity if slots is None else len(slots)
        expected = (n, self.in_channels, self.hop, *self.frame_shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"chunk must be (n, C, hop, *frame_shape) = {expected}, got {tuple(x.shape)}")
        if self._scale is not None and self._shift is not None:
            x = x * self._scale - self._shift  # as ChannelNormalization.apply: (n, C, hop, ...)
        x = x.to(self.dtype)
        if self._numpy is not None:
            slot_idx = np.arange(self.capacity) if slots is None else self._check_slots(slots)
            self._lead_in_slots(x, slot_idx)
            logits = torch.from_numpy(self._advance_numpy(x.numpy(), slot_idx))
        else:
            slot_idx = np.arange(self.capacity) if slots is None else np.asarray(slots, dtype=np.int64)
            self._lead_in_slots(x, slot_idx)
            logits = self._advance(x, slot_idx)
        self.samples_seen[slot_idx] += self.hop
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()  # 16-bit steps report float32 logits
        return StepResult(logits=logits, ready=self.samples_seen[slot_idx] >= self.warmup, slots=slot_idx)

    def _lead_in_slots(self, x: Tensor, slot_idx: np.ndarray) -> None:
        """Edge-filled start: feed the fresh slots among ``slot_idx`` copies of their first sample (no counters)."""
        if not self._lead_in:
            return
        fresh = np.flatnonzero(self.samples_seen[slot_idx] == 0)
        if not len(fresh):
            return
        first = x[torch.from_numpy(fresh)].narrow(2, 0, 1)  # (f, C, 1, ...)
        copies = first.expand(-1, -1, self.hop, *self.frame_shape).contiguous()
        for _ in range(self._lead_in // self.hop):
            if self._numpy is not None:
                self._advance_numpy(copies.numpy(), slot_idx[fresh])
            else:
                self._advance(copies, slot_idx[fresh])

    def _advance(self, x: Tensor, slot_idx: np.ndarray) -> Tensor:
        """One torch step of the normalised ``(n, C, hop, ...)`` chunk for ``slot_idx``; the state moves on."""
        with torch.inference_mode():
            full = len(slot_idx) == self.capacity and bool((slot_idx == np.arange(self.capacity)).all())
            if full and self._rings is not None:
                return self._rings(x)
            if full:
                logits, self._state = self._step_fn(x, self._state)
                return logits
            # a subset of slots: gather their state, step, write it back (rings: at the current phase)
            idx = torch.from_numpy(slot_idx)
            axes, history = self._batch_axes(), self._history()
            sub = [t.index_select(a, idx) for t, a in zip(history, axes)]  # n slots per state tensor
            logits, new = self._step_fn(x, sub)
            for t, u, a in zip(history, new, axes):
                t.index_copy_(a, idx, u)
            return logits

    def _check_slots(self, slots: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(slots, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise ValueError(f"slot indices must be in [0, {self.capacity}), got {idx.tolist()}")
        return idx

    def _advance_numpy(self, x: np.ndarray, slot_idx: np.ndarray) -> np.ndarray:
        """One numpy-backend step of the normalised ``(n, C, hop)`` chunk: one ``NumpyStreamStep`` per slot."""
        if len(slot_idx) == 1:
            return self._numpy_slots[int(slot_idx[0])].step(x[0])[None]  # (1, K)
        return np.stack([self._numpy_slots[s].step(row) for s, row in zip(slot_idx.tolist(), x)])  # (n, K)

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
        **kwargs: Passed to ``StreamingClassifier`` (capacity, mean, std, fold_bn, backend, in_channels).
    """
    return StreamingClassifier(model, window, hop, **kwargs)  # type: ignore[arg-type]
