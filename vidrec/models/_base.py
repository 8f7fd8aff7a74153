"""The interface every streamable window classifier in vidrec shares.

A window classifier maps a window of ``L`` time steps to class logits: ``(B, C, L, ...) -> (B, K)``. Streamable
ones are built from vidrec temporal layers (``vidrec.layers.temporal``) and split, as timm models are, into
``forward_features`` (``features``: a TemporalModule producing per-step features) and ``forward_head`` (``pool``, a
temporal head, then ``classifier``, a time-free module on ``(B, C')``).

The temporal head may be any ``TemporalModule`` that maps the window's per-step features ``(B, C, L')`` to a summary
``(B, C')`` offline, and each hop of new feature steps to the summary of the window ending there when streaming: the
average pool ``TemporalAvgPoolHead``, an attention pool, or a recurrent head over cached per-segment summaries
(TS-LSTM's ``SegmentLSTMHead``). ``configure_stream`` hands it the window and hop in feature steps through its own
``configure_stream(positions, hop)`` (or sets its ``positions`` attribute when it has no such method).

Streaming: ``configure_stream(window, hop)`` checks the hop against the model's temporal stride and configures the
head for the window; then ``stream_step`` turns each hop of new steps into the logits of the window that ends at
that hop, equal to ``forward`` on that window. State is ``[features state, head state]``, batched over streams (see
``vidrec.layers.stream_state``).

``ParallelClassifiers`` joins several such classifiers over the same window by a ``FusionRule`` (mean or product of
probabilities, weighted logits) or a subclass's own ``fuse`` (FusionActNet's gate), inside one streamable model.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import torch
from torch import Tensor, nn

from vidrec.layers.temporal import State, TemporalModule

__all__ = ["FusionRule", "ParallelClassifiers", "StreamableClassifier", "check_stream_geometry"]


def check_stream_geometry(name: str, receptive_field: int, stride: int, window: int, hop: int) -> None:
    """Raise a clear ``ValueError`` when a (window, hop) pair cannot stream exactly through a model."""
    if hop < 1 or window < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    if window < receptive_field:
        raise ValueError(
            f"{name}: window={window} is shorter than the receptive field ({receptive_field} steps); "
            f"use a window of at least {receptive_field}"
        )
    if hop % stride:
        raise ValueError(
            f"{name}: hop={hop} is not a multiple of the model's total temporal stride {stride}; "
            f"use a hop in {{{stride}, {2 * stride}, {3 * stride}, ...}}"
        )


class StreamableClassifier(TemporalModule):
    """Base of window classifiers made of ``features`` -> ``pool`` -> ``classifier``."""

    features: TemporalModule
    # the temporal head: a TemporalAvgPoolHead, or any streamable (B, C, L') -> (B, C') TemporalModule (typed Any:
    # subclasses read their own head's attributes, such as the average pool's `positions`)
    pool: Any
    classifier: nn.Module

    def _init_geometry(self) -> None:
        self.receptive_field, self.stride = self.features.receptive_field, self.features.stride

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, L, ...) -> (B, C', L', ...)`` per-step features, ``L' = features.output_length(L)``."""
        return self.features(x)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, C', L', ...) -> (B, K)`` logits."""
        return self.classifier(self.pool(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def configure_stream(self, window: int, hop: int) -> None:
        """Prepare streaming of windows of ``window`` steps emitted every ``hop`` steps."""
        check_stream_geometry(type(self).__name__, self.receptive_field, self.stride, window, hop)
        positions, feature_hop = self.features.output_length(window), hop // self.features.stride
        configure = getattr(self.pool, "configure_stream", None)
        if callable(configure):
            configure(positions, feature_hop)  # the head checks its own geometry (e.g. whole segments per hop)
        else:
            self.pool.positions = positions

    def stream_state(self, x: Tensor) -> State:
        """``[features state, head state]``; the head's input shape comes from one features step on ``x``."""
        feat_state = self.features.stream_state(x)
        y, _ = self.features.stream_step(x, feat_state)
        return [feat_state, self.pool.stream_state(y)]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if isinstance(state, Tensor) or len(state) != 2:
            raise ValueError(f"{type(self).__name__}.stream_step expects [features state, head state]")
        fs, ps = state
        y, fs = self.features.stream_step(x, fs)
        pooled, ps = self.pool.stream_step(y, ps)
        return self.classifier(pooled), [fs, ps]


class FusionRule(enum.Enum):
    """How ``ParallelClassifiers`` joins its members' logits into one ``(B, K)`` output."""

    MEAN_PROBABILITIES = "mean_probabilities"  # log of the (weighted) mean of the members' softmax
    PRODUCT_PROBABILITIES = "product_probabilities"  # normalised product: log_softmax of the sum of log-probabilities
    WEIGHTED_LOGITS = "weighted_logits"  # weighted sum of the members' logits


class ParallelClassifiers(TemporalModule):
    """Window classifiers over the same input joined by a fusion rule inside one model (ensembles, two experts).

    ::

        x ─┬─► member 0 (StreamableClassifier) ─► (B, K) ─┐
           ├─► member 1                        ─► (B, K) ─┼─► fuse ─► (B, K)
           └─► ...                                        ┘

    Each member right-aligns the window itself, so members with smaller receptive fields see the same window. The
    members are attributes under their given names (their parameters keep those prefixes in the state dict).
    Subclasses with another fusion (FusionActNet's gate) override ``fuse``. Streaming steps every member and fuses;
    the compiled engine compiles each member on its own, time series or video, and fuses their logits
    (``vidrec.streaming.engines.compiled.CompiledParallelEngine``).

    Args:
        members: Name -> streamable classifier, in fusion order.
        rule: The fusion rule.
        weights: One weight per member for the mean of probabilities and the weighted logits (default: equal).
    """

    def __init__(
        self,
        members: dict[str, nn.Module],
        rule: FusionRule = FusionRule.MEAN_PROBABILITIES,
        weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"ParallelClassifiers needs at least two members, got {list(members)}")
        for name, member in members.items():
            missing = [a for a in ("configure_stream", "stream_state", "stream_step") if not hasattr(member, a)]
            if missing:
                raise TypeError(f"member {name!r} ({type(member).__name__}) is not streamable: lacks {missing}")
            self.add_module(name, member)
        self.member_names = list(members)
        self.rule = FusionRule(rule)
        w = [1.0 / len(members)] * len(members) if weights is None else [float(v) for v in weights]
        if len(w) != len(members):
            raise ValueError(f"{len(w)} fusion weights for {len(members)} members")
        self.register_buffer("weights", torch.tensor(w), persistent=False)
        geometry = [(int(getattr(m, "receptive_field")), int(getattr(m, "stride"))) for m in members.values()]  # noqa: B009
        self.receptive_field = max(r for r, _ in geometry)
        self.stride = math.lcm(*(s for _, s in geometry))

    weights: Tensor  # (M,) fusion weights

    def members(self) -> list[nn.Module]:
        """The members in fusion order."""
        return [getattr(self, n) for n in self.member_names]

    def fuse(self, outputs: list[Tensor]) -> Tensor:
        """``[(B, K_i)] -> (B, K)`` by ``rule`` (log-probabilities for the probability rules)."""
        if self.rule is FusionRule.WEIGHTED_LOGITS:
            return sum(w * y for w, y in zip(self.weights, outputs))  # type: ignore[return-value]
        logp = torch.stack([y.log_softmax(dim=1) for y in outputs])  # (M, B, K)
        if self.rule is FusionRule.PRODUCT_PROBABILITIES:
            return logp.sum(dim=0).log_softmax(dim=1)
        return torch.logsumexp(logp + self.weights.log()[:, None, None], dim=0)  # log sum_i w_i p_i

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse([m(x) for m in self.members()])

    def configure_stream(self, window: int, hop: int) -> None:
        """Check the hop against every member's stride and configure each member."""
        check_stream_geometry(type(self).__name__, self.receptive_field, self.stride, window, hop)
        for m in self.members():
            m.configure_stream(window, hop)  # type: ignore[operator]

    def stream_state(self, x: Tensor) -> State:
        """One state per member, in fusion order."""
        return [m.stream_state(x) for m in self.members()]  # type: ignore[operator]

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        members = self.members()
        if isinstance(state, Tensor) or len(state) != len(members):
            raise ValueError(f"{type(self).__name__}.stream_step expects one state per member ({self.member_names})")
        outs, new_state = [], []
        for m, s in zip(members, state):
            y, s = m.stream_step(x, s)  # type: ignore[operator]
            outs.append(y)
            new_state.append(s)
        return self.fuse(outs), new_state
