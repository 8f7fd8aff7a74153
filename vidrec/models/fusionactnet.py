"""FusionActNet: static and dynamic residual experts fused by a guidance network.

"Decoding Human Activities: Analyzing Wearable Accelerometer and Gyroscope Data for Activity Recognition"
(Saha et al., IEEE Sensors Letters 2024, arXiv:2310.02011). Two residual 1D CNNs specialise in static activities
(the body is immobile: sitting, standing, laying) and dynamic ones (walking, stairs); a guidance network of
MobileNet-style inverted residual blocks emits a gate ``g`` and the prediction is ``g * y_static + (1 - g) * y_dynamic``
with each expert's class probabilities placed in its own classes' slots::

    x ─┬─► static expert  (ResNet1D, K_s classes) ─► softmax ─► y_s ─┐
       ├─► dynamic expert (ResNet1D, K_d classes) ─► softmax ─► y_d ─┼─► g·y_s ⊕ (1-g)·y_d ─► log ─► (B, K)
       └─► guidance (InvertedResidual1d stack) ─► sigmoid ─► g ──────┘

The paper trains in two stages (experts on their own subsets first, then the guidance module). vidrec trains all
three jointly with the same supervision in one run: ``training_loss`` adds each expert's cross-entropy on the
samples of its own superclass and a binary static/dynamic loss on the gate to the fused negative log-likelihood.
All parts are valid in time, so the whole ensemble streams exactly; it is a ``ParallelClassifiers`` (the three
networks as members, the gate as its fusion), so the compiled engine compiles each member.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.residual1d import InvertedResidual1d, conv_bn_relu_1d
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalSequential
from vidrec.models._base import ParallelClassifiers, StreamableClassifier
from vidrec.models._registry import Modality, StreamMode, register_model
from vidrec.models.resnet1d import ResNet1D, Stage1d

__all__ = ["GuidanceNet1D", "FusionActNet", "fusionactnet"]


class GuidanceNet1D(StreamableClassifier):
    """Residual MobileNet-style 1D network: stem -> inverted residual blocks -> pool -> linear (one gate logit)."""

    def __init__(self, *, in_channels: int, width: int = 32, blocks: int = 4, kernel_size: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu_1d(in_channels, width, kernel_size)]
        layers += [InvertedResidual1d(width, width, kernel_size, expansion=4) for _ in range(blocks)]
        self.features = TemporalSequential(*layers)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Linear(width, 1)
        self._init_geometry()


class FusionActNet(ParallelClassifiers):
    """Static and dynamic ``ResNet1D`` experts fused by a ``GuidanceNet1D`` gate; returns log-probabilities.

    A ``ParallelClassifiers`` whose fusion is the gate: streaming and the compiled engine (each member compiled on
    its own) come from the combinator.
    """

    static_index: Tensor  # (K_s,) class indices of the static expert
    dynamic_index: Tensor  # (K_d,) class indices of the dynamic expert
    is_static: Tensor  # (K,) bool

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        static_classes: list[int],
        stages: list[Stage1d],
        stem_width: int = 64,
        guidance_width: int = 32,
        guidance_blocks: int = 4,
        dropout: float = 0.2,
    ) -> None:
        static = sorted(set(static_classes))
        if not static or any(not 0 <= c < num_classes for c in static) or len(static) == num_classes:
            raise ValueError(
                f"static_classes={static_classes} must be a non-empty proper subset of range({num_classes})"
            )
        dynamic = [c for c in range(num_classes) if c not in static]
        common = dict(in_channels=in_channels, stages=stages, stem_width=stem_width, dropout=dropout)
        members: dict[str, nn.Module] = {
            "static_expert": ResNet1D(num_classes=len(static), **common),  # type: ignore[arg-type]
            "dynamic_expert": ResNet1D(num_classes=len(dynamic), **common),  # type: ignore[arg-type]
            "guidance": GuidanceNet1D(in_channels=in_channels, width=guidance_width, blocks=guidance_blocks),
        }
        super().__init__(members)
        self.static_expert: ResNet1D
        self.dynamic_expert: ResNet1D
        self.guidance: GuidanceNet1D
        self.num_classes = num_classes
        self.register_buffer("static_index", torch.tensor(static), persistent=False)
        self.register_buffer("dynamic_index", torch.tensor(dynamic), persistent=False)
        self.register_buffer("is_static", torch.isin(torch.arange(num_classes), torch.tensor(static)), persistent=False)

    def fuse(self, outputs: list[Tensor]) -> Tensor:
        """The gate's fusion of ``[static logits, dynamic logits, gate logit]`` (log-probabilities)."""
        return self._fuse(*outputs)

    def _fuse(self, static_logits: Tensor, dynamic_logits: Tensor, gate_logit: Tensor) -> Tensor:
        # (B, K_s), (B, K_d), (B, 1) -> (B, K) log-probabilities, exact in log space:
        # log(g * p_s) = logsigmoid(gate) + log_softmax(static), log((1 - g) * p_d) = logsigmoid(-gate) + ...
        out = static_logits.new_empty(static_logits.shape[0], self.num_classes)
        out[:, self.static_index] = F.logsigmoid(gate_logit) + static_logits.log_softmax(dim=1)
        out[:, self.dynamic_index] = F.logsigmoid(-gate_logit) + dynamic_logits.log_softmax(dim=1)
        return out

    def _parts_forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # each part right-aligns the window itself, so parts with smaller receptive fields see the same window
        return self.static_expert(x), self.dynamic_expert(x), self.guidance(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Concatenated pooled features of both experts, ``(B, 2 C')``."""
        return torch.cat(
            [
                self.static_expert.pool(self.static_expert.forward_features(x)),
                self.dynamic_expert.pool(self.dynamic_expert.forward_features(x)),
            ],
            dim=1,
        )

    def forward_head(self, features: Tensor) -> Tensor:
        raise NotImplementedError("FusionActNet fuses three networks; call forward() on the input window")

    def training_loss(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """vidrec's joint loss (replacing the paper's two stages); returns ``(loss, fused log-probabilities)``.

        Fused NLL (trains all parts, where the paper's second stage would keep the experts frozen), plus each expert's
        cross-entropy on the samples of its own superclass (the paper's first stage), plus a binary static/dynamic
        loss on the gate (vidrec's own extra supervision).
        """
        s_logits, d_logits, gate = self._parts_forward(x)
        fused = self._fuse(s_logits, d_logits, gate)
        loss = F.nll_loss(fused, target)
        is_static = self.is_static[target]
        # class index -> index inside each expert's own class list
        local = torch.empty(self.num_classes, dtype=torch.long, device=target.device)
        local[self.static_index] = torch.arange(len(self.static_index), device=target.device)
        local[self.dynamic_index] = torch.arange(len(self.dynamic_index), device=target.device)
        if is_static.any():
            loss = loss + F.cross_entropy(s_logits[is_static], local[target[is_static]])
        if (~is_static).any():
            loss = loss + F.cross_entropy(d_logits[~is_static], local[target[~is_static]])
        loss = loss + F.binary_cross_entropy_with_logits(gate.squeeze(1), is_static.float())
        return loss, fused


@register_model(streams=StreamMode.EXACT, modality=Modality.TIME_SERIES)
def fusionactnet(
    *, in_channels: int = 6, num_classes: int = 6, static_classes: list[int] | None = None, dropout: float = 0.2
) -> FusionActNet:
    """FusionActNet for 50 Hz IMU windows; ``static_classes`` defaults to HAPT's sitting, standing, laying (3, 4, 5)."""
    stages = [Stage1d(64, 2, 5, 1, 1), Stage1d(128, 2, 5, 1, 2), Stage1d(128, 1, 3, 1, 4)]
    return FusionActNet(
        in_channels=in_channels,
        num_classes=num_classes,
        static_classes=static_classes if static_classes is not None else [3, 4, 5],
        stages=stages,
        dropout=dropout,
    )
