"""TS-LSTM and the paper's feature-sequence baselines (mean pooling, an LSTM over all frames).

"TS-LSTM and Temporal-Inception: Exploiting Spatiotemporal Dynamics for Activity Recognition" (Ma, Chen, Kira,
AlRegib, 2017; UCF101 94.1%, HMDB51 69.0% on two-stream ResNet-101 features). The heads read per-frame feature
sequences ``(B, D, T)`` (channels first, as every time series in vidrec), written by ``vidrec extract-features``.

TS-LSTM, as the authors' Torch7 ``RNN/model.lua`` (``model_temporal_BN_max_LSTM_BN_FC``) and ``RNN/train.lua``::

    (B, D, T) ─► first S*L frames, S segments of L = T // S frames  (25 frames -> 3 x 8, the 25th unused)
              ─► segment s: BatchNorm1d_s per frame ─► max over its L frames ─► (B, D)     one BN per segment
              ─► LSTM(D, 512) [─► LSTM(512, ...)]  over the S segment summaries, last output (B, H)
              ─► BatchNorm1d(H) ─► dropout ─► Linear(H, K)

Streaming (``SegmentLSTMHead``): at a hop of whole segments the head keeps, per segment of the window, the raw
per-channel max *and* min of its frames. An eval-mode batch norm is ``a x + b`` per channel, so the max of the
normalised frames is ``a max + b`` where ``a > 0`` and ``a min + b`` where ``a < 0``: each hop rebuilds the exact
summaries of the window's segments from the cache and re-runs the small LSTM over them (``S`` LSTM steps), so
streamed logits equal the offline logits of the same window. The backbone runs once per new frame upstream.

Baselines of the paper: ``MeanPoolClassifier`` (batch norm, temporal mean, linear: a ``StreamableClassifier`` that
streams through the ordinary runtime) and ``FrameLSTM`` (an LSTM over all frames, offline only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from vidrec.layers.lowering import CompiledLoweringBuilder, LoweringBuilder, batchnorm_affine, register_lowering
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalModule, TemporalSequential
from vidrec.models._base import StreamableClassifier, check_stream_geometry
from vidrec.models._registry import Modality, StreamMode, register_model

__all__ = [
    "SegmentLSTMHead",
    "TSLSTM",
    "FrameLSTM",
    "MeanPoolClassifier",
    "ts_lstm",
    "frame_lstm",
    "mean_pool_linear",
]

State = list[Tensor]


def _stacked_lstms(input_size: int, hidden_sizes: Sequence[int]) -> nn.ModuleList:
    """One ``nn.LSTM`` per layer, so stacked layers may differ in width (the authors' ``-hiddenSize {512, ...}``)."""
    if not hidden_sizes or any(h < 1 for h in hidden_sizes):
        raise ValueError(f"hidden_sizes must be a non-empty list of positive widths, got {list(hidden_sizes)}")
    layers, width = [], input_size
    for h in hidden_sizes:
        layers.append(nn.LSTM(width, h, batch_first=True))
        width = h
    return nn.ModuleList(layers)


def _run_lstms(lstms: nn.ModuleList, x: Tensor) -> Tensor:
    """``(B, S, D) -> (B, H)``: the last output of the stacked LSTMs."""
    for lstm in lstms:
        x, _ = lstm(x)  # (B, S, H_i)
    return x[:, -1]


def _check_features(name: str, x: Tensor, feature_dim: int) -> None:
    if x.dim() != 3 or x.shape[1] != feature_dim:
        raise ValueError(
            f"{name}: expected per-frame features (B, D={feature_dim}, T), got {tuple(x.shape)}; a feature file of "
            "another extractor has another D (see the feature file's feature_dim attribute)"
        )


class SegmentLSTMHead(TemporalModule):
    """Per-segment batch norm, max pool over each segment's frames, stacked LSTM: ``(B, D, T) -> (B, H)``.

    Args:
        feature_dim: D, the per-frame feature size.
        num_segments: S temporal segments (the paper: 3).
        hidden_sizes: widths of the stacked LSTMs (the paper: ``[512]``).
        segment_frames: L frames per segment; None takes ``T // S`` of each input (the authors' training code).
            Streaming needs L, from here or from ``configure_stream``'s window.
    """

    def __init__(
        self,
        feature_dim: int,
        num_segments: int = 3,
        hidden_sizes: Sequence[int] = (512,),
        segment_frames: int | None = None,
    ) -> None:
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        if segment_frames is not None and segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.feature_dim, self.num_segments, self.segment_frames = feature_dim, num_segments, segment_frames
        self.norms = nn.ModuleList(nn.BatchNorm1d(feature_dim) for _ in range(num_segments))
        self.lstms = _stacked_lstms(feature_dim, hidden_sizes)
        self.out_features = int(hidden_sizes[-1])
        self._set_geometry(segment_frames or 1)

    def _set_geometry(self, frames: int) -> None:
        self.receptive_field, self.stride = self.num_segments * frames, frames

    def _frames_per_segment(self, length: int) -> int:
        frames = self.segment_frames or length // self.num_segments
        if frames < 1 or length < self.num_segments * frames:
            need = self.num_segments * (self.segment_frames or 1)
            raise ValueError(
                f"TS-LSTM: a sequence of {length} frames is shorter than {self.num_segments} segments"
                f"{f' of {self.segment_frames} frames' if self.segment_frames else ''}; expected at least {need} "
                "frames (extract more frames per video or use fewer segments)"
            )
        return frames

    def summaries(self, x: Tensor) -> Tensor:
        """``(B, D, T) -> (B, S, D)``: the max over each segment's batch-normalised frames."""
        _check_features("TS-LSTM", x, self.feature_dim)
        frames = self._frames_per_segment(x.shape[2])
        segments = x[:, :, : self.num_segments * frames].unflatten(2, (self.num_segments, frames))  # (B, D, S, L)
        pooled = [norm(segments[:, :, s]).amax(dim=2) for s, norm in enumerate(self.norms)]  # S x (B, D)
        return torch.stack(pooled, dim=1)  # (B, S, D)

    def forward(self, x: Tensor) -> Tensor:
        return _run_lstms(self.lstms, self.summaries(x))

    # ------------------------------------------------------------------------------------------------ streaming
    def configure_stream(self, window: int, hop: int) -> None:
        """Stream windows of ``window = S * L`` frames every ``hop`` frames (a multiple of L)."""
        if window % self.num_segments:
            fit = self.num_segments * (window // self.num_segments or 1)
            raise ValueError(
                f"TS-LSTM: window={window} is not a multiple of the {self.num_segments} segments (offline it would "
                f"leave the last {window % self.num_segments} frames unused); stream a window of S * L frames, e.g. "
                f"{fit}: train with FeatureDataModule num_frames: {fit}, the window the deployment spec records"
            )
        frames = window // self.num_segments
        if self.segment_frames is not None and frames != self.segment_frames:
            raise ValueError(
                f"TS-LSTM: window={window} gives segments of {frames} frames but the model has segment_frames="
                f"{self.segment_frames}; use window={self.num_segments * self.segment_frames}"
            )
        self._set_geometry(frames)
        check_stream_geometry("TS-LSTM", self.receptive_field, self.stride, window, hop)
        self._stream_frames = frames

    def min_stream_hop(self, window: int) -> int:
        """The smallest hop at which a window of ``window`` frames streams: one segment, ``window // S`` frames."""
        return max(1, window // self.num_segments)

    def stream_state(self, x: Tensor) -> State:
        """``[max (B, D, S), min (B, D, S)]``: raw per-channel extremes of each segment of the window."""
        if getattr(self, "_stream_frames", None) is None:
            raise RuntimeError("SegmentLSTMHead: call configure_stream(window, hop) before stream_state()")
        shape = (x.shape[0], x.shape[1], self.num_segments)
        return [x.new_zeros(shape), x.new_zeros(shape)]

    def segment_affines(self) -> tuple[Tensor, Tensor]:
        """``(scale, shift)``, each ``(S, D)``: segment ``s``'s eval batch norm is ``scale[s] x + shift[s]``."""
        scales, shifts = zip(*(batchnorm_affine(norm) for norm in self.norms), strict=True)
        return torch.stack(scales), torch.stack(shifts)

    def _normalised_summaries(self, highs: Tensor, lows: Tensor) -> Tensor:
        """``(B, D, S)`` raw extremes -> ``(B, S, D)`` exact max of each segment's normalised frames (eval mode)."""
        scale, shift = self.segment_affines()  # (S, D)
        # max_t (a x_t + b) = a max_t x_t + b for a >= 0, a min_t x_t + b for a < 0
        extremes = torch.where(scale >= 0, highs.transpose(1, 2), lows.transpose(1, 2))  # (B, S, D)
        return extremes * scale + shift

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        frames = self._stream_frames
        if x.shape[2] % frames:
            raise ValueError(f"TS-LSTM: a chunk of {x.shape[2]} frames is not a multiple of the segment ({frames})")
        if self.training:
            raise RuntimeError("SegmentLSTMHead streams in eval mode only (batch norm statistics are used)")
        blocks = x.unflatten(2, (x.shape[2] // frames, frames))  # (B, D, n, L): n new whole segments
        highs = torch.cat([state[0], blocks.amax(dim=3)], dim=2)[:, :, -self.num_segments :]  # (B, D, S)
        lows = torch.cat([state[1], blocks.amin(dim=3)], dim=2)[:, :, -self.num_segments :]
        return _run_lstms(self.lstms, self._normalised_summaries(highs, lows)), [highs, lows]


def _time_first_step(head: SegmentLSTMHead) -> Callable[[Tensor, State], tuple[Tensor, State]]:
    """``head.stream_step`` on time-first values, for the compiled engine (one traced function, constants detached).

    ``x`` is ``(n, B, D)`` (n new frames, whole segments), the state the raw extremes ``(S, B, D)`` of the window's
    segments; returns ``(B, H)`` and the new extremes. The summaries are the eager step's; each LSTM runs as its
    equations (``nn.LSTM``'s gates i, f, g, o) with the input projection of all S segments in one matmul, so its
    input weights are read once per hop rather than once per segment (``tools/bench_feature_heads.py stream``).
    """
    frames, segments = int(head._stream_frames), head.num_segments
    scale, shift = (t[:, None] for t in head.segment_affines())  # (S, 1, D), broadcast over the streams
    use_max = scale >= 0
    layers = []
    for module in head.lstms:
        lstm = cast(nn.LSTM, module)
        w_ih, w_hh = (cast(Tensor, w).detach() for w in lstm._flat_weights[:2])  # (4H, D_in), (4H, H)
        biases = [cast(Tensor, w).detach() for w in lstm._flat_weights[2:4]] if lstm.bias else []
        bias = biases[0] + biases[1] if biases else w_ih.new_zeros(w_ih.shape[0])  # b_ih + b_hh
        layers.append((w_ih.t().contiguous(), w_hh.t().contiguous(), bias, lstm.hidden_size))

    def step(x: Tensor, state: State) -> tuple[Tensor, State]:
        blocks = x.unflatten(0, (x.shape[0] // frames, frames))  # (n / L, L, B, D)
        highs = torch.cat([state[0], blocks.amax(dim=1)], dim=0)[-segments:]  # (S, B, D)
        lows = torch.cat([state[1], blocks.amin(dim=1)], dim=0)[-segments:]
        seq = torch.where(use_max, highs, lows) * scale + shift  # (S, B, D): the exact segment summaries
        hidden_state = seq[-1]
        for w_iht, w_hht, bias, hidden in layers:
            # (S B, D_in) -> (S, B, 4H): every segment's input projection at once
            gates_in = torch.addmm(bias, seq.reshape(-1, seq.shape[2]), w_iht).view(segments, -1, 4 * hidden)
            i, f, g, o = gates_in[0].chunk(4, dim=1)  # (B, H) each; the zero initial state adds nothing
            c = torch.sigmoid(i) * torch.tanh(g)
            outputs = [torch.sigmoid(o) * torch.tanh(c)]
            for t in range(1, segments):
                i, f, g, o = torch.addmm(gates_in[t], outputs[-1], w_hht).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                outputs.append(torch.sigmoid(o) * torch.tanh(c))
            hidden_state = outputs[-1]  # (B, H)
            seq = torch.stack(outputs)  # (S, B, H), the next layer's input
        return hidden_state, [highs, lows]

    return step


@register_lowering(SegmentLSTMHead, target="compiled")
def _lower_segment_head(b: CompiledLoweringBuilder[Any], m: SegmentLSTMHead, x: Any) -> Any:
    """The compiled engine: the head's own time-first step (``_time_first_step``), traced with the program."""
    return b.kernel(m, x, _time_first_step(m))


class TSLSTM(TemporalModule):
    """TS-LSTM: ``SegmentLSTMHead`` -> BatchNorm1d -> dropout -> linear; ``(B, D, T) -> (B, K)``.

    Streams exactly through ``vidrec.streaming.to_streaming(model, window=S*L, hop=multiple of L, in_channels=D)``
    (registered ``StreamMode.EXACT``; ``tests/streaming/test_runtime.py`` streams it with every registered model).
    The compiled engine lowers the whole model (``_lower_ts_lstm``): the head as its own time-first step
    (``_time_first_step``: segment extremes, summaries, the LSTM equations), then the batch norm as a per-channel
    affine and the linear layer, all in one traced function. The head inside a model with lowered features (a
    ``StreamableClassifier`` whose ``pool`` is a ``SegmentLSTMHead``) runs eagerly on the compiled features' output.
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        num_classes: int,
        num_segments: int = 3,
        hidden_sizes: Sequence[int] = (512,),
        segment_frames: int | None = None,
        dropout: float = 0.5,
        init_uniform: float | None = 0.1,
    ) -> None:
        super().__init__()
        self.head = SegmentLSTMHead(feature_dim, num_segments, hidden_sizes, segment_frames)
        self.norm = nn.BatchNorm1d(self.head.out_features)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.head.out_features, num_classes)
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.in_channels = feature_dim  # the streaming runtime's input channels (no convolution to infer them from)
        if init_uniform:  # the authors' `-uniform 0.1`: every parameter uniform in [-0.1, 0.1]
            for name, p in self.named_parameters():
                if "norm" not in name:
                    nn.init.uniform_(p, -init_uniform, init_uniform)
        self.receptive_field, self.stride = self.head.receptive_field, self.head.stride

    def forward_head(self, hidden: Tensor) -> Tensor:
        """``(B, H) -> (B, K)``."""
        return self.classifier(self.dropout(self.norm(hidden)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.head(x))

    def configure_stream(self, window: int, hop: int) -> None:
        """See ``SegmentLSTMHead.configure_stream``."""
        self.head.configure_stream(window, hop)
        self.receptive_field, self.stride = self.head.receptive_field, self.head.stride

    def min_stream_hop(self, window: int) -> int:
        """See ``SegmentLSTMHead.min_stream_hop``."""
        return self.head.min_stream_hop(window)

    def stream_state(self, x: Tensor) -> State:
        return self.head.stream_state(x)

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        hidden, state = self.head.stream_step(x, state)
        return self.forward_head(hidden), state


@register_lowering(TSLSTM, target="compiled")
def _lower_ts_lstm(b: LoweringBuilder[Any], m: TSLSTM, x: Any) -> Any:
    """The compiled engine lowers the whole model: the segment head, then batch norm (a per-channel affine), dropout
    (the identity in eval mode) and the linear layer."""
    return b.lower(m.classifier, b.lower(m.dropout, b.lower(m.norm, b.lower(m.head, x))))


class FrameLSTM(nn.Module):
    """The paper's LSTM baseline: batch norm per frame, stacked LSTM over all T frames, last output, linear.

    Offline only: the LSTM's state after a window depends on the window's start, so a stream would re-run all T steps.
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (512,),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.norm = nn.BatchNorm1d(feature_dim)
        self.lstms = _stacked_lstms(feature_dim, hidden_sizes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(int(hidden_sizes[-1]), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        _check_features("FrameLSTM", x, self.feature_dim)
        frames = self.norm(x).transpose(1, 2)  # (B, D, T) -> (B, T, D)
        return self.classifier(self.dropout(_run_lstms(self.lstms, frames)))


class MeanPoolClassifier(StreamableClassifier):
    """The paper's mean-pooling baseline: batch norm per frame, mean over time, dropout, linear.

    A ``StreamableClassifier`` (pointwise features, ``TemporalAvgPoolHead``), so it streams through the ordinary
    runtime at any hop.
    """

    def __init__(self, *, feature_dim: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.features = TemporalSequential(nn.BatchNorm1d(feature_dim))
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self._init_geometry()

    def forward(self, x: Tensor) -> Tensor:
        _check_features("MeanPoolClassifier", x, self.feature_dim)
        return super().forward(x)


@register_model(streams=StreamMode.EXACT, modality=Modality.FEATURES)
def ts_lstm(
    *,
    feature_dim: int = 4096,
    num_classes: int = 101,
    num_segments: int = 3,
    hidden_sizes: Sequence[int] = (512,),
    segment_frames: int | None = None,
    dropout: float = 0.5,
) -> TSLSTM:
    """TS-LSTM of the paper: 3 segments (of 8 frames for 25), max pool, LSTM 512, BN, dropout, linear.

    ``feature_dim=4096`` is the paper's two-stream ResNet-101 (2048 RGB + 2048 flow).
    """
    return TSLSTM(
        feature_dim=feature_dim,
        num_classes=num_classes,
        num_segments=num_segments,
        hidden_sizes=hidden_sizes,
        segment_frames=segment_frames,
        dropout=dropout,
    )


@register_model(streams=StreamMode.NONE, modality=Modality.FEATURES)
def frame_lstm(
    *, feature_dim: int = 4096, num_classes: int = 101, hidden_sizes: Sequence[int] = (512,), dropout: float = 0.5
) -> FrameLSTM:
    """The paper's LSTM baseline over all frames."""
    return FrameLSTM(feature_dim=feature_dim, num_classes=num_classes, hidden_sizes=hidden_sizes, dropout=dropout)


@register_model(streams=StreamMode.EXACT, modality=Modality.FEATURES)
def mean_pool_linear(*, feature_dim: int = 4096, num_classes: int = 101, dropout: float = 0.5) -> MeanPoolClassifier:
    """The paper's mean-pooling baseline: temporal mean of the per-frame features, linear classifier."""
    return MeanPoolClassifier(feature_dim=feature_dim, num_classes=num_classes, dropout=dropout)
