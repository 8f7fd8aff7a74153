"""Lowering registry shared by the code generators of the streaming engines (one compiler core, several targets).

The compiled (torch, ``vidrec.streaming.fastpath``) and NumPy (``vidrec.streaming.numpy_step``) engines turn a
converted model into straight-line code. Both walk the module tree the same way, so the walk lives here:

* ``register_lowering(LayerType)`` registers, beside the layer, how it decomposes into its children and the
  primitives every target provides (``LoweringBuilder``: ``lower`` a child, ``shared`` for a value read by several
  branches, ``add``, ``concat``, ``window_max``); the decomposition is written once and holds for every target.
* ``register_lowering(LayerType, target="compiled")`` registers a target-specific lowering (a target's own
  primitives: convolutions, pools, heads) and wins over the generic one for that target.
* ``lowering_for(module, target)`` finds the lowering along the module's class hierarchy (target-specific first).

A new temporal layer made of existing layers needs one generic registration in its own file. A module with no
lowering on a target is never skipped: the target records a ``LoweringDecision`` (its name, the engine that runs it
instead, the reason) and calls it through its own ``stream_step``.

The approximate twin (``vidrec.streaming.approximate``: a zero-padded "same" model rebuilt with valid temporal
layers and the same weights) uses the same per-layer registration: ``register_valid_twin(LayerType)`` registers,
beside the layer, ``fn(module, twin) -> module`` building its valid streaming counterpart (``twin`` converts a
child); ``valid_twin_rule(module)`` finds it along the class hierarchy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import nn

__all__ = [
    "LoweringBuilder",
    "LoweringDecision",
    "Lowering",
    "TARGETS",
    "lowering_for",
    "register_lowering",
    "register_valid_twin",
    "valid_twin_rule",
]

TARGETS = ("compiled", "numpy")  # code generators that consult the registry

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
