"""Approximate streaming of models with zero "same" padding in time, with measured deviation.

Models whose temporal convolutions zero-pad ("same" padding, e.g. torchvision's r2plus1d_18) cannot stream exactly:
offline, the positions near a window's edges see zeros that a continuous stream never contains. Following StreamiNNC
("StreamiNNC: Streaming Inference of Neural Networks on Continuous data", 2024) such a model is streamed by removing
the temporal padding (each convolution becomes valid and streams with cached activations, see
``vidrec.layers.TemporalWindowOp``) and pooling the last ``P`` feature positions, ``P`` being the number of positions
the padded model pools offline. Every streamed position has full real context, so the result deviates from offline
by the padding effect (and a delay of about half the receptive field).

Two entry points: ``approximate_streaming`` for a padded ``nn.Sequential`` of convolutions plus a head, and
``approximate_model_streaming`` for vidrec models with zero temporal padding. Models built with
``TemporalPadding.SAME`` that record their architecture (torchvision-compatible R(2+1)D, the authors' P3D layout) are
rebuilt with valid temporal convolutions and the same weights (``valid_twin``); other models whose ``features`` is a
padded ``nn.Sequential`` (Temporal-Inception's "same" form: ``k x 1`` Conv2d over feature rows, parallel branches)
are converted layer by layer (``valid_copy``). Either twin streams exactly through the ordinary runtime.

The layer-by-layer conversion is a per-layer registration beside each layer (``register_valid_twin`` of
``vidrec.layers.lowering``, the registry the engines' lowerings use): rules for Conv1d/2d/3d (time on axis 2), max
and average pools and ``nn.Sequential`` live here, a model's own containers register theirs in the model's file.

The deviation is never hidden: ``measure_deviation`` compares offline and streamed logits on the same windows
(NRMSE of logits, argmax agreement, max |delta|), and ``approximate_streaming`` refuses to build a runtime without
calibration data to measure it on.
"""

from __future__ import annotations

import copy as _copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.conv2plus1d import TemporalPadding
from vidrec.layers.lowering import register_valid_twin, valid_twin_rule
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalSequential, TemporalWindowOp, is_time_pointwise
from vidrec.models._base import StreamableClassifier
from vidrec.streaming.runtime import StreamingClassifier

__all__ = [
    "ApproximateTwinModel",
    "approximate_model_streaming",
    "valid_twin",
    "valid_copy",
    "DeviationReport",
    "measure_deviation",
    "ApproximateStreamingModel",
    "approximate_streaming",
    "streamed_window_logits",
]

_log = logging.getLogger("vidrec.streaming")


@dataclass(frozen=True)
class DeviationReport:
    """How far streamed logits are from offline logits on the same windows."""

    windows: int
    nrmse: float  # RMS(streamed - offline) / std(offline logits)
    argmax_agreement: float  # fraction of windows with the same predicted class
    max_abs_delta: float

    def __str__(self) -> str:
        return (
            f"approximate streaming over {self.windows} windows: logit NRMSE {self.nrmse:.4g}, "
            f"argmax agreement {self.argmax_agreement:.4f}, max |delta logit| {self.max_abs_delta:.4g}"
        )


def measure_deviation(
    offline_fn: Callable[[Tensor], Tensor], streaming_fn: Callable[[Tensor], Tensor], data: Tensor
) -> DeviationReport:
    """Compare two ways of computing per-window logits on ``data``.

    Args:
        offline_fn: ``data -> (N, K)`` logits computed offline.
        streaming_fn: ``data -> (N, K)`` logits of the same N windows computed by streaming.
        data: Whatever both functions read (e.g. ``(B, C, T)`` sequences).
    """
    with torch.inference_mode():
        a = offline_fn(data).double()
        b = streaming_fn(data).double()
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"offline and streamed logits must both be (N, K); got {tuple(a.shape)} and {tuple(b.shape)}")
    scale = float(a.std()) if a.numel() > 1 and float(a.std()) > 0 else 1.0
    return DeviationReport(
        windows=int(a.shape[0]),
        nrmse=float(torch.sqrt(torch.mean((a - b) ** 2))) / scale,
        argmax_agreement=float((a.argmax(1) == b.argmax(1)).double().mean()),
        max_abs_delta=float((a - b).abs().max()),
    )


def _unpadded_in_time(module: nn.Module) -> nn.Module:
    """A copy of a conv or pool with its temporal (first spatial axis) padding removed, same weights."""
    copy = _copy.deepcopy(module)
    pad = getattr(module, "padding", 0)
    if isinstance(pad, str):
        raise ValueError(f"{module}: string padding {pad!r} is not supported; use explicit integers")
    if isinstance(pad, tuple):
        copy.padding = (0, *pad[1:])  # type: ignore[assignment]
    elif pad:
        if not isinstance(module, (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d)):
            raise ValueError(f"{module}: an integer padding pads every axis; give (time, ...) padding explicitly")
        copy.padding = (0,) if isinstance(module, nn.Conv1d) else 0  # type: ignore[assignment]
    return copy


def _first(v: object) -> int:
    return int(v if isinstance(v, int) else v[0])  # type: ignore[index]


@register_valid_twin(nn.Conv1d)
@register_valid_twin(nn.Conv2d)  # (B, C, T, D): kernels k x 1 over feature rows (Temporal-Inception)
@register_valid_twin(nn.Conv3d)
def _conv_twin(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, twin: Callable[[nn.Module], nn.Module]) -> nn.Module:
    conv = _unpadded_in_time(module)
    if isinstance(conv, (nn.Conv1d, nn.Conv3d)) and is_time_pointwise(conv):
        return conv
    r = module.dilation[0] * (module.kernel_size[0] - 1) + 1
    return TemporalWindowOp(conv, r, module.stride[0])


@register_valid_twin(nn.MaxPool1d)
@register_valid_twin(nn.MaxPool2d)
@register_valid_twin(nn.MaxPool3d)
@register_valid_twin(nn.AvgPool2d)
@register_valid_twin(nn.AvgPool3d)
def _pool_twin(module: nn.Module, twin: Callable[[nn.Module], nn.Module]) -> nn.Module:
    if getattr(module, "ceil_mode", False):
        raise ValueError(f"{module}: ceil_mode pools read past the window; approximate streaming needs floor mode")
    kernel = _first(module.kernel_size)  # type: ignore[arg-type]
    stride = _first(module.stride if module.stride is not None else module.kernel_size)  # type: ignore[arg-type]
    if kernel == 1 and stride == 1 and is_time_pointwise(module):
        return module
    return TemporalWindowOp(_unpadded_in_time(module), kernel, stride)


@register_valid_twin(nn.Sequential)
def _sequential_twin(module: nn.Sequential, twin: Callable[[nn.Module], nn.Module]) -> nn.Module:
    return TemporalSequential(*(twin(m) for m in module))


def valid_copy(module: nn.Module) -> nn.Module:
    """The valid (unpadded in time) streaming twin of a module, through the per-layer ``register_valid_twin`` rules
    (``vidrec.layers.lowering``); time-pointwise modules are shared unchanged.

    Raises:
        TypeError: a module with no rule that is not time-pointwise.
    """
    rule = valid_twin_rule(module)
    if rule is not None:
        return rule(module, valid_copy)
    if is_time_pointwise(module):
        return module
    raise TypeError(
        f"approximate streaming cannot convert {type(module).__name__}; register its valid twin with "
        "vidrec.layers.lowering.register_valid_twin beside the layer"
    )


class ApproximateStreamingModel(StreamableClassifier):
    """A padded ``features`` stack made valid in time, average pooling, and the original classifier.

    Args:
        features: ``nn.Sequential`` of convolutions (temporal padding is removed) and time-pointwise modules.
        classifier: Time-free head on pooled features ``(B, C')``.
        in_channels: Input channels (to size the pooled positions from the padded features).
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.padded_features = features
        self.features = TemporalSequential(*(valid_copy(m) for m in features))
        self.pool = TemporalAvgPoolHead()
        self.classifier = classifier
        self.in_channels = in_channels
        self._init_geometry()

    def offline(self, x: Tensor) -> Tensor:
        """The original padded model on a window: ``(B, C, L) -> (B, K)``."""
        return self.classifier(self.pool(self.padded_features(x)))

    def configure_stream(self, window: int, hop: int) -> None:
        if hop % self.stride:
            raise ValueError(f"hop={hop} is not a multiple of the model's temporal stride {self.stride}")
        weight = next(self.parameters(), None)  # the probe runs where the model was moved (--device)
        with torch.no_grad():
            probe = self.padded_features(
                torch.zeros(1, self.in_channels, window, device=weight.device if weight is not None else None)
            )  # (1, C', P, ...)
        self.pool.positions = int(probe.shape[2])

    def stream_warmup(self, window: int) -> int:
        """Samples before the pooled buffer holds only positions computed from real samples."""
        positions = self.pool.positions if self.pool.positions is not None else window
        return max(window, (positions - 1) * self.stride + self.receptive_field)


def valid_twin(model: nn.Module) -> StreamableClassifier:
    """The same network with valid (unpadded) temporal convolutions and the same weights, in eval mode.

    Args:
        model: A vidrec model built with ``temporal_padding=TemporalPadding.SAME`` that records its other constructor
            arguments in ``model.arch`` (``R2Plus1d``, ``P3D``).

    Raises:
        TypeError: the model does not record its architecture or is not zero-padded in time.
    """
    arch = getattr(model, "arch", None)
    padding = getattr(model, "temporal_padding", None)
    if not isinstance(arch, dict) or padding is None:
        raise TypeError(
            f"{type(model).__name__} does not record its architecture (model.arch) and temporal_padding; "
            "approximate streaming of padded vidrec models needs both"
        )
    if TemporalPadding(padding) is not TemporalPadding.SAME:
        raise TypeError(f"{type(model).__name__} has temporal_padding={padding}; it streams exactly, use the runtime")
    twin = type(model)(**arch, temporal_padding=TemporalPadding.VALID)
    if not isinstance(twin, StreamableClassifier):
        raise TypeError(f"{type(model).__name__} is not a StreamableClassifier")
    twin.load_state_dict(model.state_dict())  # same parameter names and shapes: only the padding differs
    return twin.eval()


class ApproximateTwinModel(StreamableClassifier):
    """A zero-padded vidrec model (offline) and its valid twin (streamed), pooling as many positions as the original.

    Args:
        padded: The model built with ``TemporalPadding.SAME``; ``offline`` runs it.
    """

    def __init__(self, padded: StreamableClassifier) -> None:
        super().__init__()
        twin = valid_twin(padded)
        self.padded: StreamableClassifier = padded.eval()
        self.features, self.pool, self.classifier = twin.features, twin.pool, twin.classifier
        self._init_geometry()

    def offline(self, x: Tensor) -> Tensor:
        """The original padded model on a window: ``(B, C, L, ...) -> (B, K)``."""
        return self.padded(x)

    def configure_stream(self, window: int, hop: int) -> None:
        if hop % self.stride:
            raise ValueError(
                f"hop={hop} is not a multiple of the model's total temporal stride {self.stride}; "
                f"use a hop in {{{self.stride}, {2 * self.stride}, ...}}"
            )
        # the padded model pools this many positions of a window offline; the twin pools as many real ones
        self.pool.positions = int(self.padded.features.output_length(window))

    def stream_warmup(self, window: int) -> int:
        """Samples before the pooled buffer holds only positions computed from real samples."""
        positions = self.pool.positions if self.pool.positions is not None else 1
        return max(window, (positions - 1) * self.stride + self.receptive_field)


def approximate_model_streaming(
    model: nn.Module,
    window: int,
    hop: int,
    *,
    calibration: Tensor,
    capacity: int = 1,
) -> tuple[StreamingClassifier, DeviationReport]:
    """Approximate streaming runtime for a vidrec model with zero temporal padding, deviation measured.

    Args:
        model: A ``TemporalPadding.SAME`` vidrec model (e.g. ``r2plus1d_18(temporal_padding="same")`` with
            torchvision's Kinetics weights).
        window: Offline clip length in frames (samples).
        hop: Frames per step, a multiple of the model's temporal stride.
        calibration: ``(B, C, T, ...)`` sequences (video: ``(B, 3, T, H, W)``), ``T`` beyond the warm-up
            (``runtime.warmup``); every emitted window is compared with the padded model on the same window.
        capacity: Slots of the returned runtime.

    Returns:
        The runtime (``runtime.deviation`` holds the report, which is also logged) and the report.
    """
    if not isinstance(model, StreamableClassifier):
        raise TypeError(f"approximate_model_streaming needs a vidrec StreamableClassifier, got {type(model).__name__}")
    in_channels, frame_shape = int(calibration.shape[1]), tuple(int(v) for v in calibration.shape[3:])
    approx: ApproximateStreamingModel | ApproximateTwinModel
    features = getattr(model, "features", None)
    if getattr(model, "arch", None) is None and isinstance(features, nn.Sequential):
        # a padded features stack (e.g. Temporal-Inception's "same" form): twins layer by layer, same weights
        approx = ApproximateStreamingModel(features, model.classifier, in_channels).eval()
    else:
        approx = ApproximateTwinModel(model).eval()
    return _calibrated_runtime(approx, window, hop, calibration, capacity, in_channels, frame_shape)


def streamed_window_logits(runtime: StreamingClassifier, x: Tensor, window: int) -> tuple[Tensor, np.ndarray]:
    """Run ``x`` (B, C, T) through a fresh runtime; return ``(N, K)`` ready logits and their window ends ``(N,)``."""
    runtime.grow(x.shape[0])
    runtime.reset()
    logits, ready = runtime.run(x[: runtime.capacity])  # (B, n_hops, K), (B, n_hops)
    ends = (np.arange(logits.shape[1]) + 1) * runtime.hop
    keep = ready[0]
    del window
    return logits[:, torch.from_numpy(keep)].reshape(-1, logits.shape[2]), np.repeat(ends[keep][None], x.shape[0], 0)


def approximate_streaming(
    features: nn.Sequential,
    classifier: nn.Module,
    window: int,
    hop: int,
    *,
    in_channels: int,
    calibration: Tensor,
    capacity: int = 1,
) -> tuple[StreamingClassifier, DeviationReport]:
    """Build an approximate streaming runtime for a padded model and measure its deviation on ``calibration``.

    Args:
        features: The padded model's temporal feature stack (``nn.Sequential``).
        classifier: Its head on pooled features.
        window: Offline window length.
        hop: Samples per step.
        in_channels: Input channels.
        calibration: ``(B, C, T)`` sequences, ``T`` well beyond the warm-up; deviation is measured on every emitted
            window against the padded model on the same window.
        capacity: Slots of the returned runtime.

    Returns:
        The runtime (``runtime.deviation`` holds the report, which is also logged) and the report.
    """
    model = ApproximateStreamingModel(features, classifier, in_channels).eval()
    return _calibrated_runtime(model, window, hop, calibration, capacity, in_channels, ())


def _calibrated_runtime(
    model: ApproximateStreamingModel | ApproximateTwinModel,
    window: int,
    hop: int,
    calibration: Tensor,
    capacity: int,
    in_channels: int,
    frame_shape: tuple[int, ...],
) -> tuple[StreamingClassifier, DeviationReport]:
    """Measure the deviation of ``model``'s streaming from its ``offline`` on ``calibration``; build the runtime."""
    kwargs: dict[str, object] = dict(fold_bn=False, in_channels=in_channels, frame_shape=frame_shape)
    probe = StreamingClassifier(model, window, hop, capacity=calibration.shape[0], **kwargs)  # type: ignore[arg-type]
    if calibration.shape[2] < probe.warmup + hop:
        raise ValueError(
            f"calibration has {calibration.shape[2]} steps; approximate streaming of this model needs more than its "
            f"warm-up of {probe.warmup} steps (window {window}, receptive field {model.receptive_field})"
        )

    def streamed(x: Tensor) -> Tensor:
        logits, _ = streamed_window_logits(probe, x, window)
        return logits

    def offline(x: Tensor) -> Tensor:
        _, ends = streamed_window_logits(probe, x, window)
        wins = [x[b : b + 1, :, e - window : e] for b in range(x.shape[0]) for e in ends[b]]
        return model.offline(torch.cat(wins))  # (N, K) in the same (stream, end) order

    report = measure_deviation(offline, streamed, calibration)
    _log.warning("%s", report)
    runtime = StreamingClassifier(model, window, hop, capacity=capacity, **kwargs)  # type: ignore[arg-type]
    runtime.deviation = report  # type: ignore[attr-defined]
    return runtime, report
