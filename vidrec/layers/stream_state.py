"""The streaming state contract of vidrec layers: a tree of tensors, one subtree per child, flattened in one place.

A module's streaming state (``stream_state(x)``, passed to and returned by ``stream_step(x, state)``) is a
``StreamState``: a tensor, or a list (or tuple) of ``StreamState`` s. Layers compose it generically:

* a leaf layer returns a list of its own tensors (``TemporalWindowOp``: ``[history (B, C, keep)]``; a time-pointwise
  module: ``[]``);
* a container returns one entry per child, in the order of its children (``TemporalSequential``: ``[state of
  layer 0, state of layer 1, ...]``; ``StreamableClassifier``: ``[features state, pool state]``), and its
  ``stream_step`` zips its children with those entries. Nothing is cached between ``stream_state`` and
  ``stream_step``: any state of the right structure (a zero state, one gathered from some slots, one loaded from an
  ONNX session) can be stepped.

Every tensor in the tree is batched over streams on axis 0. A module that returns a flat list of tensors (the
protocol before state was structured, still what the video layers of ``conv2plus1d.py`` and ``p3d_blocks.py`` do)
is a leaf of this tree and needs no change; a container of its own that splits a flat list by the lengths of its
children's states also keeps working, since each child's state is one entry of its list.

Flattening happens in one place, here: ``flatten_state`` gives the tensors in depth-first order and the tree's
``StateLayout``, and ``StateLayout.unflatten`` rebuilds the tree. The engines batch slots over the flat list (reset,
grow, slot subsets) and the ONNX export turns it into the graph's ``state_i`` inputs and outputs. The depth-first
order is the order in which the layers are stepped, so the code generators of ``vidrec.streaming`` take their state
tensors in that order too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, Union

from torch import Tensor

__all__ = ["StateLayout", "StreamState", "flatten_state", "map_state", "state_layout"]

StreamState: TypeAlias = Union[Tensor, list["StreamState"], tuple["StreamState", ...]]  # noqa: UP007  # recursive


@dataclass(frozen=True)
class StateLayout:
    """The structure of a ``StreamState``, without its tensors.

    Attributes:
        children: None for a tensor; otherwise the layouts of the entries of a list or tuple, in order.
        is_tuple: The node is a tuple (else a list); kept so that a rebuilt state has the types a module returned.
        num_tensors: Tensors in the subtree.
    """

    children: tuple[StateLayout, ...] | None
    is_tuple: bool = False
    num_tensors: int = 1

    def unflatten(self, tensors: Sequence[Tensor]) -> StreamState:
        """The state tree of this layout holding ``tensors`` (depth-first order, as ``flatten_state`` gives them).

        Raises:
            ValueError: ``tensors`` does not hold exactly ``num_tensors`` tensors.
        """
        if len(tensors) != self.num_tensors:
            raise ValueError(f"a state of this layout holds {self.num_tensors} tensors, got {len(tensors)}")
        state, _ = self._build(tensors, 0)
        return state

    def _build(self, tensors: Sequence[Tensor], start: int) -> tuple[StreamState, int]:
        if self.children is None:
            return tensors[start], start + 1
        entries: list[StreamState] = []
        for child in self.children:
            entry, start = child._build(tensors, start)
            entries.append(entry)
        return (tuple(entries) if self.is_tuple else entries), start


def state_layout(state: StreamState) -> StateLayout:
    """The layout of ``state``.

    Raises:
        TypeError: ``state`` holds something that is neither a tensor, a list nor a tuple (with its path).
    """
    return _layout(state, "state")


def _layout(state: object, path: str) -> StateLayout:
    if isinstance(state, Tensor):
        return StateLayout(None)
    if isinstance(state, (list, tuple)):
        children = tuple(_layout(s, f"{path}[{i}]") for i, s in enumerate(state))
        return StateLayout(children, isinstance(state, tuple), sum(c.num_tensors for c in children))
    raise TypeError(
        f"{path} is a {type(state).__name__}; a streaming state is a tensor or a list/tuple of states "
        "(see vidrec.layers.stream_state)"
    )


def flatten_state(state: StreamState) -> list[Tensor]:
    """The tensors of ``state`` in depth-first order (the layer stepping order)."""
    out: list[Tensor] = []
    _flatten(state, out)
    return out


def _flatten(state: StreamState, out: list[Tensor]) -> None:
    if isinstance(state, Tensor):
        out.append(state)
        return
    for s in state:
        _flatten(s, out)


def map_state(fn: Callable[[Tensor], Tensor], state: StreamState) -> StreamState:
    """``state`` with ``fn`` applied to every tensor (same structure), e.g. ``map_state(lambda t: t[:1], s)``."""
    if isinstance(state, Tensor):
        return fn(state)
    entries = [map_state(fn, s) for s in state]
    return tuple(entries) if isinstance(state, tuple) else entries
