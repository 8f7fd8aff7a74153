"""The compiled video engine: streamed logits equal offline ones for any slot pattern, fully lowered, checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import vidrec.streaming.engines.video as video_engine
from tests.streaming.conftest import randomize_batchnorm
from vidrec.layers import TemporalAvgPoolHead, TemporalModule, TemporalSequential, TemporalWindowOp
from vidrec.layers.stream_state import flatten_state
from vidrec.models import StreamableClassifier, build_model
from vidrec.models.p3d import P3D, P3DStage
from vidrec.models.r2plus1d import R2Plus1d, R2Plus1dStage
from vidrec.streaming import to_streaming
from vidrec.streaming.engines.video import CompiledVideoEngine

SIZE = 16  # frames of 16 x 16 pixels: every stage of the video ResNets keeps at least one pixel


def _tiny_r2plus1d() -> nn.Module:
    torch.manual_seed(0)
    stages = [
        R2Plus1dStage(1, 8, 1, 1, (3, 1)),
        R2Plus1dStage(2, 16, 2, 1, (3, 1, 3, 3)),  # a strided block with a projection shortcut, then t = 3 twice
    ]
    model = R2Plus1d(stages=stages, num_classes=5, stem_channels=(6, 8), stem_temporal_kernel=3)
    return randomize_batchnorm(model)


def _tiny_p3d() -> nn.Module:
    torch.manual_seed(0)
    stages = [P3DStage(1, 4, 1, ()), P3DStage(3, 8, 2, (0, 1, 2))]  # a 2D bottleneck, then P3D blocks A, B, C
    return randomize_batchnorm(P3D(stages=stages, num_classes=5, dropout=0.0))


def _stream_and_compare(
    model: nn.Module, hop: int, *, backend: str = "compiled", fold_bn: bool = True, device: str = "cpu"
) -> float:
    """Three slots, each fed its own sequence: slot 2 joins late, slot 1 is reset midway and skips some steps
    (steps of a subset of slots), more steps than the rings' period (wrap-arounds); every ready output vs offline."""
    window = model.receptive_field + 2 * hop  # type: ignore[operator]
    ticks = window // hop + 12
    x = torch.randn(3, 3, ticks * hop, SIZE, SIZE)
    rt = to_streaming(
        model, window, hop, capacity=2, frame_shape=(SIZE, SIZE), backend=backend, fold_bn=fold_bn, device=device
    )
    pos, origin = [0, 0, 0], [0, 0, 0]  # next sample of each slot's sequence; where its current run started
    streamed, offline = [], []
    for tick in range(ticks):
        if tick == 2:
            rt.grow(3)  # slot 2 joins: new slots start zeroed, the others keep their history
        if tick == 9:
            rt.reset([1])
            origin[1] = pos[1]
        active = [0, 1] if tick < 2 else ([0, 2] if tick % 3 == 1 else [0, 1, 2])
        chunk = torch.stack([x[s, :, pos[s] : pos[s] + hop] for s in active])
        res = rt.step(chunk, active if len(active) < rt.capacity else None)
        for i, s in enumerate(active):
            pos[s] += hop
            assert bool(res.ready[i]) == (pos[s] - origin[s] >= window)
            if res.ready[i]:
                offline.append(x[s : s + 1, :, pos[s] - window : pos[s]])
                streamed.append(res.logits[i : i + 1])
    assert len(streamed) > 10
    with torch.no_grad():
        ref = model(torch.cat(offline))
    return float((torch.cat(streamed) - ref).abs().max())


@pytest.mark.parametrize("hop", [1, 2])
@pytest.mark.parametrize("build", [_tiny_r2plus1d, _tiny_p3d], ids=["r2plus1d", "p3d"])
def test_video_engine_streams_exactly_and_lowers_everything(build: object, hop: int) -> None:
    model = build()  # type: ignore[operator]
    rt = to_streaming(model, model.receptive_field + hop, hop, frame_shape=(SIZE, SIZE))
    desc = rt.describe()
    assert (desc.engine, desc.ring_buffers, desc.decisions) == ("compiled", True, [])
    assert isinstance(rt.engine, CompiledVideoEngine)
    assert _stream_and_compare(model, hop) < 1e-4


def test_unfolded_batchnorm_runs_as_a_channel_affine() -> None:
    assert _stream_and_compare(_tiny_p3d(), 1, fold_bn=False) < 1e-4


@pytest.mark.parametrize("name", ["r2plus1d_18", pytest.param("p3d63", marks=pytest.mark.slow)])
def test_registered_video_models_run_fully_lowered(name: str) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(name, num_classes=6))
    window = model.receptive_field + 1
    rt = to_streaming(model, window, 1, frame_shape=(SIZE, SIZE))
    assert rt.describe().engine == "compiled" and rt.describe().decisions == []
    x = torch.randn(1, 3, window + 2, SIZE, SIZE)
    logits, ready = rt.run(x)
    with torch.no_grad():
        ref = torch.cat([model(x[:, :, t - window : t]) for t in (window, window + 1, window + 2)])
    assert ready[0].tolist()[-3:] == [True, True, True]
    torch.testing.assert_close(logits[0, -3:], ref, atol=1e-3 * max(1.0, float(ref.abs().max())), rtol=0)


def test_state_is_the_layer_protocols() -> None:
    model = _tiny_p3d()
    engines = {
        b: to_streaming(model, 9, 1, capacity=2, frame_shape=(SIZE, SIZE), backend=b) for b in ("compiled", "eager")
    }
    x = torch.randn(2, 3, 5, SIZE, SIZE)
    for rt in engines.values():
        rt.run(x)
    # the eager engine may hold the structured state tree (vidrec.layers.stream_state); compare depth-first tensors
    compiled, eager = flatten_state(engines["compiled"].state()), flatten_state(engines["eager"].state())
    assert engines["compiled"].num_state_tensors == len(eager) == len(compiled)
    for c, e in zip(compiled, eager):
        assert c.shape == e.shape
        torch.testing.assert_close(c, e, atol=1e-4, rtol=1e-4)


class _Doubler(TemporalModule):
    """A temporal module the video engine has no lowering for: ``y_t = x_t + x_{t-1}`` with its own state."""

    receptive_field, stride = 2, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:] + x[:, :, :-1]

    def stream_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.new_zeros(x.shape[0], x.shape[1], 1, *x.shape[3:])]

    def stream_step(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        buf = torch.cat([state[0], x], dim=2)
        return buf[:, :, 1:] + buf[:, :, :-1], [buf[:, :, -1:]]


class _Mixed(StreamableClassifier):
    """A full 3 x 3 x 3 conv (no matmul lowering), a module with no lowering, a GELU and a temporal t x 1 x 1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.features = TemporalSequential(
            TemporalWindowOp(nn.Conv3d(3, 4, (3, 3, 3), padding=(0, 1, 1)), 3),
            nn.GELU(),
            _Doubler(),
            TemporalWindowOp(nn.Conv3d(4, 6, (2, 1, 1)), 2),
            nn.ReLU(),
        )
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Linear(6, 3)
        self._init_geometry()


def test_modules_without_a_lowering_are_logged_decisions_and_stay_exact(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = _Mixed().eval()
    with caplog.at_level("INFO", logger="vidrec.streaming"):
        rt = to_streaming(model, 6, 1, frame_shape=(SIZE, SIZE))
    decisions = {d.part: d for d in rt.describe().decisions}
    assert rt.describe().engine == "compiled"
    assert set(decisions) == {"features.layers.0", "features.layers.2"}
    assert "ring buffer" in decisions["features.layers.0"].reason
    assert "own stream_step" in decisions["features.layers.2"].reason
    assert "features.layers.2 (_Doubler): eager" in caplog.text
    assert _stream_and_compare(model, 1) < 1e-5


def test_the_build_time_check_catches_a_wrong_lowering(monkeypatch: pytest.MonkeyPatch) -> None:
    original = video_engine._TemporalConv.__init__

    def reversed_taps(self: video_engine._TemporalConv, weight: torch.Tensor, *args: object) -> None:
        original(self, weight.flip(2), *args)  # type: ignore[arg-type]

    monkeypatch.setattr(video_engine._TemporalConv, "__init__", reversed_taps)
    model = _tiny_r2plus1d().eval()
    model.configure_stream(model.receptive_field, 1)
    with pytest.raises(RuntimeError, match="disagrees with the eager step"):
        CompiledVideoEngine(model, (3, 1, SIZE, SIZE), torch.float32, torch.device("cpu"))


def test_float64_steps_match_offline_to_1e_9() -> None:
    model = _tiny_p3d().double()
    window = model.receptive_field + 1
    rt = to_streaming(model, window, 1, frame_shape=(SIZE, SIZE), dtype=torch.float64)
    assert rt.describe().engine == "compiled"
    x = torch.randn(1, 3, window + 3, SIZE, SIZE, dtype=torch.float64)
    logits, _ = rt.run(x)
    with torch.no_grad():
        ref = torch.cat([model(x[:, :, t - window : t]) for t in range(window, window + 4)])
    assert float((logits[0, -4:] - ref).abs().max()) < 1e-9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.usefixtures("exact_cuda")
@pytest.mark.parametrize("build", [_tiny_r2plus1d, _tiny_p3d], ids=["r2plus1d", "p3d"])
def test_video_engine_on_cuda_streams_exactly_over_any_slot_pattern(build: object) -> None:
    model = build()  # type: ignore[operator]
    rt = to_streaming(model, model.receptive_field + 2, 2, frame_shape=(SIZE, SIZE), device="cuda")
    assert rt.describe().decisions == [] and isinstance(rt.engine, CompiledVideoEngine)
    assert all(t.device.type == "cuda" for t in rt.engine.rings.tensors)
    assert _stream_and_compare(model, 2, device="cuda") < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.usefixtures("exact_cuda")
def test_video_engine_on_cuda_matches_the_cpu() -> None:
    model = _tiny_p3d()
    x = torch.randn(2, 3, 12, SIZE, SIZE)
    cpu, _ = to_streaming(model, 9, 1, capacity=2, frame_shape=(SIZE, SIZE)).run(x)
    rt = to_streaming(model, 9, 1, capacity=2, frame_shape=(SIZE, SIZE), device="cuda")
    assert rt.describe().engine == "compiled" and rt.describe().device.startswith("cuda")
    cuda, _ = rt.run(x)
    sub = rt.step(np.random.default_rng(0).standard_normal((1, 3, 1, SIZE, SIZE)).astype(np.float32), [1])
    assert sub.logits.device.type == "cpu"
    torch.testing.assert_close(cuda, cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_video_engine_builds_under_cudas_default_tf32_convolutions() -> None:
    model = _tiny_r2plus1d()
    window = model.receptive_field + 1
    rt = to_streaming(model, window, 1, frame_shape=(SIZE, SIZE), device="cuda")  # checked against a TF32 eager step
    assert rt.describe().engine == "compiled" and rt.describe().decisions == []
    x = torch.randn(1, 3, window + 2, SIZE, SIZE)
    logits, _ = rt.run(x)
    with torch.no_grad():
        ref = torch.cat([model(x[:, :, t - window : t]) for t in range(window, window + 3)])
    torch.testing.assert_close(logits[0, -3:], ref, atol=5e-2 * max(1.0, float(ref.abs().max())), rtol=0)
