"""Streaming of named multi-input models: a dict of inputs, each at its own rate and hop, fused where windows align.

A two-stream ConvNet reads RGB frames and optical-flow fields; the frames may be sampled every other native frame
while the flow has a field per frame, and the first field only exists once two frames have arrived. Each input is
therefore a stream of its own, with a *clock*: its ``k``-th time step happens at tick ``offset + k * period`` of a
common clock (native frames, seconds, samples of the fastest sensor). :class:`MultiInputStreaming` keeps one
``StreamingClassifier`` per input (``vidrec.streaming.runtime``, so every member gets the engines, the BN folding,
the slots and the ready flags of a single-input stream), steps the members whose input arrives, and fuses the
members' latest logits with the model's fusion rule (``NamedInputClassifiers.fuse``, the offline code) on the slots
where every member is ready and the windows of all members end at the same tick::

    {"rgb": chunk} ──► runtime "rgb"  (window W_rgb,  hop h_rgb)  ─► logits, window end tick ─┐
    {"flow": chunk} ─► runtime "flow" (window W_flow, hop h_flow) ─► logits, window end tick ─┴─► same tick? fuse

Exactness: a fused report equals ``model({name: window of name})`` offline, for the windows of each input that end
at that tick (``tests/streaming/test_multi.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidrec.models.multi_input import NamedInputClassifiers
from vidrec.streaming.runtime import EngineDescription, StreamingClassifier, to_streaming

__all__ = ["InputClock", "MemberDescription", "MultiInputDescription", "MultiInputStreaming", "MultiStepResult"]


def _fraction(value: float | int | Fraction) -> Fraction:
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(str(value))  # 0.1 -> 1/10, not the binary expansion


@dataclass(frozen=True)
class InputClock:
    """When the time steps of one input happen: step ``k`` (from 0 after a reset) at tick ``offset + k * period``.

    Attributes:
        period: Ticks between consecutive steps (``2`` for frames sampled every other native frame).
        offset: Tick of the first step (``1`` for flow fields: field ``k`` needs frames ``k`` and ``k + 1``).
    """

    period: Fraction | int | float = Fraction(1)
    offset: Fraction | int | float = Fraction(0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "period", _fraction(self.period))
        object.__setattr__(self, "offset", _fraction(self.offset))
        if self.period <= 0:
            raise ValueError(f"InputClock: period must be > 0, got {self.period}")

    def tick_of_step(self, count: np.ndarray) -> list[Fraction]:
        """Tick of the last of ``count`` steps, per entry (the end of the window reported after them)."""
        offset, period = _fraction(self.offset), _fraction(self.period)
        return [offset + (int(c) - 1) * period for c in count]


@dataclass
class MultiStepResult:
    """Output of one multi-input step over ``n`` slots.

    Attributes:
        logits: ``(n, K)`` fused logits (the model's fusion of the members' logits; meaningless where not ``ready``).
        ready: ``(n,)`` bool, True where every member is ready and their windows end at the same tick.
        slots: ``(n,)`` the slot of each row.
        members: Input name -> ``(n, K)`` the member's latest logits.
        ticks: ``(n,)`` float, the tick at which the fused windows end (NaN where not ``ready``).
    """

    logits: Tensor
    ready: np.ndarray
    slots: np.ndarray
    members: dict[str, Tensor]
    ticks: np.ndarray


@dataclass
class MemberDescription:
    """One input of a multi-input runtime: its window, hop, clock and the engine that runs its member."""

    name: str
    window: int
    hop: int
    clock: InputClock
    engine: EngineDescription

    def __str__(self) -> str:
        head = (
            f"input {self.name!r}: window {self.window}, hop {self.hop}, step k at tick "
            f"{self.clock.offset} + k * {self.clock.period}"
        )
        return head + "\n" + "\n".join("  " + line for line in str(self.engine).splitlines())


@dataclass
class MultiInputDescription:
    """What a :class:`MultiInputStreaming` runs: every member and the fusion."""

    rule: str
    weights: list[float]
    members: list[MemberDescription] = field(default_factory=list)

    def __str__(self) -> str:
        weights = ", ".join(f"{m.name} {w:.3g}" for m, w in zip(self.members, self.weights))
        return "\n".join([f"fusion: {self.rule} ({weights})", *(str(m) for m in self.members)])


class MultiInputStreaming:
    """One streaming runtime per named input of a ``NamedInputClassifiers``, fused where their windows align.

    Args:
        model: The multi-input model (not modified: each runtime works on a converted copy of its member).
        windows: Input name -> window of that input in its own time steps.
        hops: Input name -> steps per chunk of that input (default 1 each).
        clocks: Input name -> :class:`InputClock` (default: step k at tick k).
        capacity: Slots (streams); every member has the same slots.
        member_kwargs: Input name -> extra ``StreamingClassifier`` arguments (``frame_shape``, ``in_channels``,
            ``mean``/``std``, ``first_output``, ...).
        **kwargs: ``StreamingClassifier`` arguments shared by every member (``backend``, ``device``, ``dtype``, ...).

    Raises:
        TypeError: ``model`` is not a ``NamedInputClassifiers``.
        ValueError: windows, hops or clocks name inputs the model does not have, or lack some.
    """

    def __init__(
        self,
        model: NamedInputClassifiers,
        windows: Mapping[str, int],
        hops: Mapping[str, int] | None = None,
        clocks: Mapping[str, InputClock] | None = None,
        *,
        capacity: int = 1,
        member_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, NamedInputClassifiers):
            raise TypeError(f"MultiInputStreaming needs a NamedInputClassifiers, got {type(model).__name__}")
        names = model.input_names
        hops = dict(hops or {n: 1 for n in names})
        clocks = dict(clocks or {n: InputClock() for n in names})
        extra = dict(member_kwargs or {})
        for what, given in (("windows", windows), ("hops", hops), ("clocks", clocks), ("member_kwargs", extra)):
            unknown = sorted(set(given) - set(names))
            missing = sorted(set(names) - set(given)) if what != "member_kwargs" else []
            if unknown or missing:
                raise ValueError(
                    f"MultiInputStreaming: {what} must name the model's inputs {names}; "
                    f"unknown {unknown}, missing {missing}"
                )
        self.model = model.eval()
        self.names = names
        self.clocks = clocks
        self.members: dict[str, StreamingClassifier] = {
            n: to_streaming(
                getattr(model, n), int(windows[n]), int(hops[n]), capacity=capacity, **{**kwargs, **extra.get(n, {})}
            )
            for n in names
        }
        self.capacity = capacity
        self._latest: dict[str, Tensor | None] = {n: None for n in names}
        self._ready = {n: np.zeros(capacity, dtype=bool) for n in names}

    def describe(self) -> MultiInputDescription:
        """The fusion rule and weights, and per input its window, hop, clock and engine description."""
        return MultiInputDescription(
            rule=self.model.rule.value,
            weights=[float(w) for w in self.model.weights],
            members=[
                MemberDescription(n, r.window, r.hop, self.clocks[n], r.describe()) for n, r in self.members.items()
            ],
        )

    def grow(self, capacity: int) -> None:
        """Raise the number of slots of every member (new slots start reset)."""
        if capacity <= self.capacity:
            return
        for n, runtime in self.members.items():
            runtime.grow(capacity)
            self._ready[n] = np.concatenate([self._ready[n], np.zeros(capacity - self.capacity, dtype=bool)])
            latest = self._latest[n]
            if latest is not None:
                self._latest[n] = torch.cat([latest, latest.new_zeros(capacity - self.capacity, latest.shape[1])])
        self.capacity = capacity

    def reset(self, slots: Sequence[int] | np.ndarray | None = None) -> None:
        """Reset ``slots`` (all when None) of every member: a restarted stream warms up again on every input."""
        for n, runtime in self.members.items():
            runtime.reset(slots)
            self._ready[n][slice(None) if slots is None else np.asarray(slots, dtype=np.int64)] = False

    def step(
        self, inputs: Mapping[str, Tensor | np.ndarray], slots: Sequence[int] | np.ndarray | None = None
    ) -> MultiStepResult:
        """Step the members whose input is in ``inputs`` (a chunk ``(n, C, hop, ...)`` each) and fuse where aligned.

        Inputs absent from ``inputs`` keep their latest logits; a slot reports when every member is ready and the
        windows of all members end at the same tick (their clocks), which is where the fused logits equal the
        offline model on those windows.
        """
        unknown = sorted(set(inputs) - set(self.names))
        if unknown:
            raise KeyError(f"MultiInputStreaming: unknown inputs {unknown}; the model reads {self.names}")
        slot_idx = np.arange(self.capacity) if slots is None else np.asarray(slots, dtype=np.int64).reshape(-1)
        for n, chunk in inputs.items():
            res = self.members[n].step(chunk, slots)
            latest = self._latest[n]
            if latest is None:
                latest = self._latest[n] = res.logits.new_zeros(self.capacity, res.logits.shape[1])
            latest[torch.from_numpy(slot_idx)] = res.logits
            self._ready[n][slot_idx] = res.ready
        ready = np.ones(len(slot_idx), dtype=bool)
        ticks: list[Fraction] | None = None
        for n in self.names:
            ready &= self._ready[n][slot_idx]
            mine = self.clocks[n].tick_of_step(self.members[n].samples_seen[slot_idx])
            if ticks is None:
                ticks = mine
            else:
                ready &= np.array([a == b for a, b in zip(ticks, mine)], dtype=bool)
        assert ticks is not None
        members = {
            n: (t[torch.from_numpy(slot_idx)] if (t := self._latest[n]) is not None else torch.zeros(len(slot_idx), 0))
            for n in self.names
        }
        if all(m.shape[1] for m in members.values()):
            # the members' runtimes return CPU logits; the fusion runs where the model's weights are (a learnt
            # gate, the fusion weights) and reports on the CPU like the members
            where = self.model.weights.device
            with torch.inference_mode():
                fused = self.model.fuse([members[n].to(where) for n in self.names]).cpu()
        else:  # some input has not arrived yet
            fused = torch.zeros(len(slot_idx), 0)
        tick_values = np.array([float(t) if r else np.nan for t, r in zip(ticks, ready)], dtype=np.float64)
        return MultiStepResult(logits=fused, ready=ready, slots=slot_idx, members=members, ticks=tick_values)
