"""The lowering registry's "video" target: the engine walks every model through it; a new layer is one registration.

A module with no video lowering is a decision naming it and runs through its own ``stream_step`` (after the head: as
it is on ``(B, C)``); a layer registered beside it (target-specific or generic) is lowered.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from tests.streaming.test_video_engine import SIZE, _stream_and_compare, _tiny_p3d, _tiny_r2plus1d
from vidrec.layers import TemporalAvgPoolHead, TemporalModule, TemporalSequential, TemporalWindowOp
from vidrec.layers.lowering import register_lowering
from vidrec.models import StreamableClassifier
from vidrec.models.p3d import P3D, P3DStage
from vidrec.streaming import to_streaming


def test_the_engine_walks_the_model_through_the_registry() -> None:
    from vidrec.layers.conv2plus1d import SpatialConv3d, TemporalConv3d
    from vidrec.layers.lowering import TARGETS, lowering_for

    assert "video" in TARGETS
    # the video layers' own lowerings, registered beside them; P3D/R(2+1)D blocks reach the generic residual's
    for layer in (SpatialConv3d(3, 4, 3), TemporalConv3d(3, 4, 1)):
        fn = lowering_for(layer, "video")
        assert fn is not None and fn.__module__ == "vidrec.layers.conv2plus1d"
    model = _tiny_p3d()
    block = getattr(model.features.layer2, "1")
    assert lowering_for(block, "video") is lowering_for(block, "compiled")  # ResidualReLU: generic
    unlowered = [
        name for name, m in model.named_modules() if lowering_for(m, "video") is None and not isinstance(m, type(model))
    ]
    assert unlowered == []  # every module of the model has a video lowering (the model itself is the engine's)


class _SpatialGain(TemporalModule):
    """A new time-pointwise video layer: a learnt gain per channel (nothing in vidrec knows how to lower it)."""

    receptive_field, stride = 1, 1

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain[:, None, None, None]  # (B, C, T, H, W)

    def stream_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        return []

    def stream_step(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.forward(x), state


class _RegisteredGain(_SpatialGain):
    """The same layer with its one video lowering registered beside it (below)."""


@register_lowering(_RegisteredGain, target="video")
def _lower_gain(b: object, m: _RegisteredGain, x: int) -> int:
    gain = m.gain.detach()
    return b.elementwise(lambda v: v * gain, x)  # type: ignore[attr-defined,no-any-return]  # channels last


class _SpatioTemporal(TemporalModule):
    """A new layer made of existing ones: a spatial conv then a temporal one (its own forward and stream_step)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        from vidrec.layers.conv2plus1d import SpatialConv3d, temporal_conv

        self.s, self.t = SpatialConv3d(c_in, c_out, 3), temporal_conv(c_out, c_out, 3)
        self.receptive_field, self.stride = 3, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.t(self.s(x))

    def stream_state(self, x: torch.Tensor) -> list[object]:
        return [self.t.stream_state(self.s(x))]

    def stream_step(self, x: torch.Tensor, state: list[object]) -> tuple[torch.Tensor, list[object]]:
        y, st = self.t.stream_step(self.s(x), state[0])
        return y, [st]


@register_lowering(_SpatioTemporal)  # generic: every engine's code generator
def _lower_spatio_temporal(b: object, m: _SpatioTemporal, x: object) -> object:
    return b.lower(m.t, b.lower(m.s, x))  # type: ignore[attr-defined]


class _WithLayer(StreamableClassifier):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        from vidrec.layers.conv2plus1d import SpatialConv3d

        self.features = TemporalSequential(
            SpatialConv3d(3, 6, 3),
            layer,
            nn.ReLU(),
            _SpatioTemporal(6, 8),
            TemporalWindowOp(nn.MaxPool3d((2, 1, 1), stride=1), 2),
        )
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Linear(8, 4)
        self._init_geometry()


def test_a_new_video_layer_needs_one_registration_beside_it() -> None:
    torch.manual_seed(0)
    plain = _WithLayer(_SpatialGain(6)).eval()
    rt = to_streaming(plain, 8, 1, frame_shape=(SIZE, SIZE))
    assert [(d.part, d.module, d.engine) for d in rt.describe().decisions] == [
        ("features.layers.1", "_SpatialGain", "eager")
    ]
    assert "no video lowering of _SpatialGain" in rt.describe().decisions[0].reason
    registered = _WithLayer(_RegisteredGain(6)).eval()
    registered.load_state_dict(plain.state_dict())
    rt = to_streaming(registered, 8, 1, frame_shape=(SIZE, SIZE))
    assert rt.describe().decisions == []  # the gain, the composite layer and the temporal max pool all lowered
    assert _stream_and_compare(plain, 1) < 1e-5
    assert _stream_and_compare(registered, 1) < 1e-5


def test_a_temporal_max_pool_between_stages_is_lowered() -> None:
    torch.manual_seed(0)
    stages = [P3DStage(1, 4, 1, (0,), temporal_pool=True), P3DStage(1, 8, 2, (0,))]
    model = randomize_batchnorm(P3D(stages=stages, num_classes=5, dropout=0.0))
    assert model.stride == 2
    rt = to_streaming(model, model.receptive_field + 2, 2, frame_shape=(SIZE, SIZE))
    assert rt.describe().decisions == []
    assert _stream_and_compare(model, 2) < 1e-4


class _LastStepHead(TemporalModule):
    """A temporal head with no video lowering: the spatial mean of the last step, ``(B, C, T, H, W) -> (B, C)``."""

    receptive_field, stride = 1, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, -1].mean(dim=(2, 3))

    def stream_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        return []

    def stream_step(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.forward(x), state


def test_another_temporal_head_runs_eagerly_after_compiled_features() -> None:
    model = _tiny_r2plus1d()
    model.pool = _LastStepHead()
    model.classifier = nn.Sequential(nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 5))
    rt = to_streaming(model, model.receptive_field + 1, 1, frame_shape=(SIZE, SIZE))
    decisions = {d.part: d for d in rt.describe().decisions}
    assert set(decisions) == {"pool", "classifier.1"}
    assert "own stream_step" in decisions["pool"].reason and "as it is on (B, C)" in decisions["classifier.1"].reason
    assert _stream_and_compare(model, 1) < 1e-4
