"""The interface every streamable window classifier in vidrec shares.

A window classifier maps a window of ``L`` time steps to class logits: ``(B, C, L, ...) -> (B, K)``. Streamable
ones are built from vidrec temporal layers (``vidrec.layers.temporal``) and split, as timm models are, into
``forward_features`` (``features``: a TemporalModule producing per-step features) and ``forward_head`` (``pool``, a
TemporalAvgPoolHead, then ``classifier``, a time-free module on ``(B, C')``).

Streaming: ``configure_stream(window, hop)`` checks the hop against the model's temporal stride and sizes the pooling
buffer for the window; then ``stream_step`` turns each hop of new steps into the logits of the window that ends at
that hop, equal to ``forward`` on that window (state batched over streams, see ``vidrec.layers.temporal``).
"""

from __future__ import annotations

from torch import Tensor, nn

from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalModule

__all__ = ["StreamableClassifier", "check_stream_geometry"]


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
    pool: TemporalAvgPoolHead
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
        self.pool.positions = self.features.output_length(window)

    def stream_state(self, x: Tensor) -> list[Tensor]:
        feat_state = self.features.stream_state(x)
        self._n_feat = len(feat_state)
        y, _ = self.features.stream_step(x, feat_state)
        return feat_state + self.pool.stream_state(y)

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        y, fs = self.features.stream_step(x, state[: self._n_feat])
        pooled, ps = self.pool.stream_step(y, state[self._n_feat :])
        return self.classifier(pooled), fs + ps
