"""Lowering registry shared by the code generators of the streaming engines (one compiler core, several targets).

The compiled time-series (torch, ``vidrec.streaming.fastpath``), NumPy (``vidrec.streaming.numpy_step``) and
compiled video (``vidrec.streaming.engines.video``) engines turn a converted model into straight-line code. All walk
the module tree the same way, so the walk lives here:

* ``register_lowering(LayerType)`` registers, beside the layer, how it decomposes into its children and the
  primitives every target provides (``LoweringBuilder``: ``lower`` a child, ``shared`` for a value read by several
  branches, ``add``, ``concat``, ``window_max``, ``select_channels``); the decomposition is written once and holds
  for every target.
* ``register_lowering(LayerType, target="video")`` registers a target-specific lowering (a target's own
  primitives: convolutions, pools, heads) and wins over the generic one for that target. The video target's
  primitives are ``VideoLoweringBuilder``'s (convolutions on every frame, temporal convolutions on ring buffers,
  per-channel maps, the average-pool head); the video layers register theirs beside the layer
  (``vidrec.layers.conv2plus1d``), torch's own modules in the engine (``vidrec.streaming.engines.video``).
* ``register_lowering(LayerType, target="compiled")`` may also call ``CompiledLoweringBuilder.kernel``: the layer's
  own step on the compiled program's time-first values, traced with it (TS-LSTM's segment head); a model that is not
  a ``StreamableClassifier`` with such a registration is lowered whole, chunk to logits.
* ``lowering_for(module, target)`` finds the lowering along the module's class hierarchy (at each class the
  target-specific one first, then the generic one).

A new temporal layer made of existing layers needs one generic registration in its own file; a new layer with its
own arithmetic registers one lowering per target it should run fast on. A module with no lowering on a target is
never skipped: the target records a ``LoweringDecision`` (its name, the engine that runs it instead, the reason) and
calls it through its own ``stream_step``.

Batch-norm folding (``vidrec.streaming.optimize.fold_batchnorm``) is registered beside each layer the same way:
``register_batchnorm_fold(LayerType, sequence=..., output=...)`` says which of the layer's containers runs its
children in order (a ``BatchNorm`` child right after a convolution there is folded into it) and which convolution
produces the layer's output (``(owner, attribute)``, so that a ``BatchNorm`` after the layer folds into it).
``batchnorm_fold_for(module)`` finds the rule along the module's class hierarchy.

The approximate twin (``vidrec.streaming.approximate``: a zero-padded "same" model rebuilt with valid temporal
layers and the same weights) uses the same per-layer registration: ``register_valid_twin(LayerType)`` registers,
beside the layer, ``fn(module, twin) -> module`` building its valid streaming counterpart (``twin`` converts a
child); ``valid_twin_rule(module)`` finds it along the class hierarchy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "BatchNormFold",
    "batchnorm_affine",
    "CompiledLoweringBuilder",
    "LoweringBuilder",
    "LoweringDecision",
    "Lowering",
    "TARGETS",
    "VideoLoweringBuilder",
    "batchnorm_fold_for",
    "lowering_for",
    "register_batchnorm_fold",
    "register_lowering",
    "register_valid_twin",
    "valid_twin_rule",
]

TARGETS = ("compiled", "numpy", "video")  # code generators that consult the registry

V = TypeVar("V")


class LoweringBuilder(Protocol[V]):
    """What a generic lowering may call; each target implements it on its own value type ``V``."""

    target: str

    def lower(self, module: nn.Module, x: V) -> V:
        """Emit ``module``'s step on ``x`` (through the registry) and return its output."""
        ...

    def shared(self, x: V) -> V:
        """``x`` as read by several branches: no branch may modify it in place."""
        ...

    def add(self, a: V, b: V) -> V:
        """``a + b`` of two right-aligned values with the same number of new steps."""
        ...

    def concat(self, values: Sequence[V]) -> V:
        """Channel concatenation of right-aligned values with the same number of new steps."""
        ...

    def window_max(self, module: nn.Module, x: V, kernel: int, stride: int) -> V:
        """Maximum over the last ``kernel`` steps every ``stride`` steps; ``module`` owns the history state."""
        ...

    def select_channels(self, x: V, channels: Sequence[int]) -> V:
        """The channels ``channels`` of ``x`` in that order (a gather, no arithmetic: exact for any input)."""
        ...


class VideoLoweringBuilder(LoweringBuilder[V], Protocol[V]):
    """The primitives of the ``"video"`` target (``vidrec.streaming.engines.video``) on ``(n, B, H, W, C)`` values.

    Values are held time-first and channels-last; after the temporal head they are ``(B, C)`` rows. Each primitive
    that cannot take its arguments (a temporal extent where none is allowed, a padding it does not lower) falls back
    to ``eager`` itself, so a lowering never has to check what the primitive checks.
    """

    def frame_conv(self, conv: nn.Conv3d, x: V) -> V:
        """A convolution pointwise in time (temporal kernel and stride 1, no temporal padding) on every frame."""
        ...

    def temporal_conv(self, window: nn.Module, conv: nn.Conv3d, x: V) -> V:
        """The ``t x 1 x 1`` ``conv`` of the window op ``window`` on its ring buffer's window (one matmul a tap);
        another ``conv`` runs eagerly on that window."""
        ...

    def window_eager(self, window: nn.Module, x: V, reason: str) -> V:
        """The window op ``window``'s ``forward`` on its ring buffer's window (no concatenation), a decision."""
        ...

    def frame_map(self, fn: Callable[[Any], Any], x: V) -> V:
        """``fn`` on every frame: ``(n B, C, H, W)`` channels-last frames -> ``(n B, C', H', W')`` (spatial pools)."""
        ...

    def elementwise(self, fn: Callable[[Any], Any], x: V) -> V:
        """``fn`` on the value as it is held (elementwise, or broadcasting over the channels on the last axis)."""
        ...

    def relu(self, x: V) -> V:
        """ReLU (fused into the convolution that produces ``x`` where it is its only reader)."""
        ...

    def temporal_mean(self, head: nn.Module, positions: int, x: V) -> V:
        """The average-pool head: spatial mean of each new frame into a ring, mean of the last ``positions``."""
        ...

    def linear(self, layer: nn.Linear, x: V) -> V:
        """``layer`` on ``(B, C)`` rows."""
        ...

    def eager(self, module: nn.Module, x: V, reason: str) -> V:
        """``module`` through its own ``stream_step`` on its own state (``(B, C)`` rows: called as it is), a
        ``LoweringDecision`` naming it and ``reason``."""
        ...


class CompiledLoweringBuilder(LoweringBuilder[V], Protocol[V]):
    """The ``"compiled"`` target's own primitive (``vidrec.streaming.fastpath``) on time-first values ``(n, B, C)``
    (``(B, C)`` after a temporal head)."""

    def kernel(self, module: nn.Module, x: V, fn: Callable[[Any, list[Any]], tuple[Any, list[Any]]]) -> V:
        """``module``'s step written for this target: ``fn(x, state) -> (y, new_state)`` on time-first values, the
        module's flat state tensors held ``(T, B, C)`` where they are 3D; traced with the program, so ``fn`` uses
        tensor ops on its arguments and detached constants only."""
        ...

    def rows_as_batch(self, module: nn.Module, layers: Sequence[nn.Module], x: V) -> V:
        """``module``'s step: ``layers`` (a 1D network ending in one channel) on each of the ``D`` channel rows of
        ``x`` on its own, the rows a batch: ``(n, B, D) -> (n', B, D)``; ``module``'s state tensors are the layers'
        state of ``B D`` rows viewed ``(B, D c, ...)``."""
        ...


Lowering = Callable[[Any, Any, Any], Any]  # (builder, module, value) -> value

_LOWERINGS: dict[tuple[type[nn.Module], str | None], Lowering] = {}
M = TypeVar("M", bound=type[nn.Module])


@dataclass(frozen=True)
class LoweringDecision:
    """Which engine runs a part of the model, and why it is not the requested one.

    Attributes:
        part: Qualified name of the module in the converted model (``""``: the whole model).
        module: Its class name.
        engine: The engine that runs it (``"eager"`` for a module called through its own ``stream_step``).
        reason: Why the requested engine does not run it.
    """

    part: str
    module: str
    engine: str
    reason: str

    def __str__(self) -> str:
        where = self.part or "<model>"
        return f"{where} ({self.module}): {self.engine} - {self.reason}"


def register_lowering(module_type: type[nn.Module], target: str | None = None) -> Callable[[Lowering], Lowering]:
    """Register ``fn(builder, module, x) -> y`` as the lowering of ``module_type`` (generic when ``target`` is None).

    Raises:
        ValueError: ``target`` is not a known target, or the pair is registered already.
    """
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown lowering target {target!r}; expected one of {TARGETS} or None (every target)")
    key = (module_type, target)

    def decorate(fn: Lowering) -> Lowering:
        if key in _LOWERINGS:
            raise ValueError(f"a lowering of {module_type.__name__} for {target or 'every target'} is registered")
        _LOWERINGS[key] = fn
        return fn

    return decorate


def lowering_for(module: nn.Module, target: str) -> Lowering | None:
    """The registered lowering of ``module`` on ``target``: along its MRO, the target's own before the generic one."""
    for cls in type(module).__mro__:
        fn = _LOWERINGS.get((cls, target)) or _LOWERINGS.get((cls, None))  # type: ignore[arg-type]
        if fn is not None:
            return fn
    return None


@dataclass(frozen=True)
class BatchNormFold:
    """How batch-norm folding sees one layer type (``register_batchnorm_fold``).

    Attributes:
        sequence: ``layer -> container`` whose consecutive children run in order (``conv, BatchNorm`` pairs among
            them fold), or None when the layer runs no children in sequence.
        output: ``layer -> (owner, attribute)`` of the convolution that produces the layer's output (a following
            ``BatchNorm`` folds into it), None when the output is not a convolution's; when ``output`` is not given,
            the output is that of the last child of ``sequence``.
    """

    sequence: Callable[[Any], nn.Module] | None = None
    output: Callable[[Any], tuple[nn.Module, str] | None] | None = None


_FOLDS: dict[type[nn.Module], BatchNormFold] = {}


def batchnorm_affine(bn: nn.Module, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` per channel of an eval batch norm, ``bn(x) = scale * x + shift``: detached, computed in
    ``dtype`` (default: the statistics' own), for the engines that run a batch norm folding left as an affine map.

    Raises:
        ValueError: ``bn`` has no running statistics (it cannot run in eval mode).
    """
    mean, var = getattr(bn, "running_mean", None), getattr(bn, "running_var", None)
    if mean is None or var is None:
        raise ValueError(f"{type(bn).__name__} without running statistics cannot run in eval mode")
    weight, bias = getattr(bn, "weight", None), getattr(bn, "bias", None)
    with torch.no_grad():
        dtype = dtype or var.dtype
        scale = torch.rsqrt(var.to(dtype) + bn.eps)
        if weight is not None:
            scale = scale * weight.to(dtype)
        shift = -mean.to(dtype) * scale
        if bias is not None:
            shift = shift + bias.to(dtype)
    return scale.detach(), shift.detach()


def register_batchnorm_fold(
    module_type: type[nn.Module],
    *,
    sequence: Callable[[Any], nn.Module] | None = None,
    output: Callable[[Any], tuple[nn.Module, str] | None] | None = None,
) -> None:
    """Register how ``fold_batchnorm`` sees ``module_type`` (see ``BatchNormFold``).

    Raises:
        ValueError: the type is registered already, or neither ``sequence`` nor ``output`` is given.
    """
    if module_type in _FOLDS:
        raise ValueError(f"a batch-norm fold rule of {module_type.__name__} is registered")
    if sequence is None and output is None:
        raise ValueError(f"register_batchnorm_fold({module_type.__name__}) needs a sequence or an output rule")
    _FOLDS[module_type] = BatchNormFold(sequence, output)


def batchnorm_fold_for(module: nn.Module) -> BatchNormFold | None:
    """The batch-norm fold rule of ``module`` along its MRO, or None."""
    for cls in type(module).__mro__:
        rule = _FOLDS.get(cls)
        if rule is not None:
            return rule
    return None


TwinRule = Callable[[Any, Callable[[nn.Module], nn.Module]], nn.Module]  # (module, twin of a child) -> valid twin
_TWINS: dict[type[nn.Module], TwinRule] = {}


def register_valid_twin(module_type: type[nn.Module]) -> Callable[[TwinRule], TwinRule]:
    """Register ``fn(module, twin) -> module``: the valid (unpadded in time) streaming twin of ``module_type``.

    Raises:
        ValueError: the type has a twin rule already.
    """

    def decorate(fn: TwinRule) -> TwinRule:
        if module_type in _TWINS:
            raise ValueError(f"a valid-twin rule of {module_type.__name__} is registered")
        _TWINS[module_type] = fn
        return fn

    return decorate


def valid_twin_rule(module: nn.Module) -> TwinRule | None:
    """The registered valid-twin rule of ``module`` along its MRO, or None."""
    for cls in type(module).__mro__:
        fn = _TWINS.get(cls)
        if fn is not None:
            return fn
    return None
