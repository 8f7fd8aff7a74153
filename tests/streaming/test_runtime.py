"""Streaming equals offline for every streamable model in the registry, hop by hop, over many streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from vidrec.layers import TemporalAvgPoolHead, TemporalModule, TemporalSequential, TemporalWindowOp, temporal_conv1d
from vidrec.layers.lowering import batchnorm_fold_for, register_batchnorm_fold
from vidrec.models import StreamableClassifier, StreamMode, build_model, list_models
from vidrec.models.resnet1d import ResNet1D, Stage1d
from vidrec.streaming import StepBackend, StreamingClassifier, fold_batchnorm, to_streaming
from vidrec.streaming.optimize import count_batchnorm, fold_linear_head
from vidrec.streaming.runtime import smallest_stream_geometry

ATOL = 1e-4


def _is_video(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Conv3d, nn.BatchNorm3d)) for m in model.modules())


def _streamable_models() -> list[str]:
    """Registered builders whose registry metadata says they stream exactly (nothing is built here)."""
    return list_models(streams=StreamMode.EXACT)


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(build_model(name))


def _input_shape(model: nn.Module, batch: int, length: int) -> tuple[int, ...]:
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if first is None:  # a head over per-frame features (no convolution): (B, D, T)
        return (batch, int(model.feature_dim), length)
    if not _is_video(model):
        return (batch, int(getattr(model, "in_channels", first.in_channels)), length)
    return (batch, first.in_channels, length, 32, 32)  # tiny video frames


def _check_exact(model: nn.Module, window: int, hop: int, fold_bn: bool, hops_per_stream: int) -> float:
    """Three streams with different start offsets, one reset midway; every ready output vs offline."""
    streams = 3
    starts = [0, 2, 5]  # global tick at which each stream joins (reset there)
    reset_at = {2: starts[2] + window // hop + 3}  # stream 2 restarts after some predictions
    ticks = max(starts) + hops_per_stream + window // hop + 6
    x = torch.randn(_input_shape(model, streams, ticks * hop))
    frame_shape = tuple(x.shape[3:])  # () for time series, (H, W) for video
    rt = StreamingClassifier(model, window, hop, capacity=streams, fold_bn=fold_bn, frame_shape=frame_shape)
    since = [0] * streams  # samples fed since the last (re)start
    origin = [0] * streams  # sample index in x where the current run started
    worst = 0.0
    offline_windows, streamed = [], []
    for tick in range(ticks):
        active = [s for s in range(streams) if tick >= starts[s]]
        for s in active:
            if tick == starts[s] or reset_at.get(s) == tick:
                rt.reset([s])
                since[s], origin[s] = 0, tick * hop
        chunk = x[active, :, tick * hop : (tick + 1) * hop]
        res = rt.step(chunk, active)
        for i, s in enumerate(active):
            since[s] += hop
            assert bool(res.ready[i]) == (since[s] >= window), (s, tick, since[s])
            if res.ready[i]:
                end = (tick + 1) * hop
                assert end - window >= origin[s]
                offline_windows.append(x[s : s + 1, :, end - window : end])
                streamed.append(res.logits[i : i + 1])
    assert streamed, "no prediction was emitted"
    with torch.no_grad():
        ref = model(torch.cat(offline_windows))
    got = torch.cat(streamed)
    worst = float((ref - got).abs().max())
    assert worst <= ATOL, f"max |streamed - offline| = {worst}"
    return worst


@pytest.mark.parametrize("name", _streamable_models())
@pytest.mark.parametrize("fold_bn", [False, True], ids=["plain", "bn_folded"])
def test_every_registered_model_streams_exactly(name: str, fold_bn: bool) -> None:
    model = _build(name)
    if _is_video(model):
        pytest.skip("video models are covered by test_video_models_stream_exactly")
    window, stride = smallest_stream_geometry(model)
    for hop in sorted({stride, 4 * stride, 16 * stride}):
        _check_exact(model, window, hop, fold_bn, hops_per_stream=4 if hop > stride else 6)


@pytest.mark.slow
@pytest.mark.parametrize("name", _streamable_models())
def test_video_models_stream_exactly(name: str) -> None:
    model = _build(name)
    if not _is_video(model):
        pytest.skip(f"{name} is not a streamable video model")
    window = model.receptive_field + model.stride
    # float64: in float32, 18+ layers of differently blocked oneDNN kernels (a window vs one frame) accumulate ~1e-3
    # of rounding on randomised-BN logits; float64 shows the streamed computation itself is exact
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _check_exact(model.double(), window, model.stride, True, hops_per_stream=2)
    finally:
        torch.set_default_dtype(previous)


def test_folding_removes_every_batchnorm_and_keeps_outputs(tiny_model: nn.Module) -> None:
    folded = fold_batchnorm(tiny_model)
    assert count_batchnorm(tiny_model) > 0 and count_batchnorm(folded) == 0
    x = torch.randn(2, 3, 50)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), tiny_model(x), atol=1e-5, rtol=1e-5)


class _WrappedConv(TemporalModule):
    """A new layer type holding its convolution where no generic rule looks (``self.body.op``), registered."""

    def __init__(self) -> None:
        super().__init__()
        self.body = temporal_conv1d(3, 4, 3)
        self.receptive_field = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


register_batchnorm_fold(_WrappedConv, output=lambda m: (m.body, "op"))


def test_batchnorm_folding_follows_each_layers_registration() -> None:
    """fold_batchnorm asks a layer's own registration which convolution makes its output (one file per layer)."""
    torch.manual_seed(0)
    model = randomize_batchnorm(TemporalSequential(_WrappedConv(), nn.BatchNorm1d(4), nn.ReLU()))
    folded = fold_batchnorm(model)
    assert count_batchnorm(model) == 1 and count_batchnorm(folded) == 0
    assert batchnorm_fold_for(model) is not None and batchnorm_fold_for(nn.ReLU()) is None
    x = torch.randn(2, 3, 20)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="_WrappedConv is registered"):
        register_batchnorm_fold(_WrappedConv, output=lambda m: None)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_folding_reaches_every_batchnorm_of_a_video_resnet(padding: str) -> None:
    # BN after the temporal conv of a Conv2Plus1d (its last child) and inside named containers is folded too
    from vidrec.models.r2plus1d import R2Plus1d, R2Plus1dStage

    torch.manual_seed(0)
    stages = [R2Plus1dStage(1, 8, 1, 1, (3, 3)), R2Plus1dStage(1, 16, 2, 2 if padding == "same" else 1, (3, 1))]
    model = randomize_batchnorm(
        R2Plus1d(stages=stages, num_classes=4, stem_channels=(8, 8), stem_temporal_kernel=3, temporal_padding=padding)
    ).eval()
    folded = fold_batchnorm(model)
    assert count_batchnorm(model) > 0 and count_batchnorm(folded) == 0
    x = torch.randn(2, 3, 12, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_folding_the_linear_head_keeps_logits_and_shrinks_the_pool_state(tiny_model: nn.Module) -> None:
    folded = fold_batchnorm(tiny_model)
    k = tiny_model.classifier[-1].out_features
    assert fold_linear_head(folded) and isinstance(folded.classifier, nn.Identity)
    assert not fold_linear_head(folded)  # nothing left to fold
    x = torch.randn(2, 3, 50)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), tiny_model(x), atol=1e-5, rtol=1e-5)
    rt = to_streaming(tiny_model, 40, 1)
    assert rt.flat_state()[-1].shape[1] == k  # the pool buffers (1, K, positions) logits, not (1, C, positions)


def test_run_whole_sequences_warms_up_then_matches_offline(tiny_model: nn.Module) -> None:
    window, hop = 40, 4
    rt = to_streaming(tiny_model, window, hop, capacity=2)
    x = torch.randn(2, 3, 100)
    logits, ready = rt.run(x)  # (2, 25, K), (2, 25)
    assert logits.shape == (2, 25, 3)
    np.testing.assert_array_equal(ready[0], (np.arange(1, 26) * hop) >= window)
    with torch.no_grad():
        ref = tiny_model(torch.stack([x[:, :, e - window : e] for e in range(window, 101, hop)], dim=1).flatten(0, 1))
    torch.testing.assert_close(logits[:, ready[0]].flatten(0, 1), ref, atol=ATOL, rtol=0)


def test_normalisation_is_applied_in_the_runtime(tiny_model: nn.Module) -> None:
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 4.0]
    rt = StreamingClassifier(tiny_model, 32, 8, mean=mean, std=std)
    raw = torch.randn(1, 3, 64) * 3 + 1
    logits, ready = rt.run(raw)
    norm = (raw - torch.tensor(mean)[:, None]) / torch.tensor(std)[:, None]
    with torch.no_grad():
        ref = tiny_model(norm[:, :, -32:])
    torch.testing.assert_close(logits[:, -1], ref, atol=ATOL, rtol=0)


def test_bad_geometry_and_inputs_are_refused(tiny_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="receptive field"):
        StreamingClassifier(tiny_model, 10, 1)
    strided = ResNet1D(in_channels=3, num_classes=3, stages=[Stage1d(8, 1, 3, 2, 1)], stem_width=8)
    with pytest.raises(ValueError, match="multiple of the model's total temporal stride 2"):
        StreamingClassifier(strided, 40, 3)
    with pytest.raises(TypeError, match="not streamable"):
        StreamingClassifier(nn.Conv1d(3, 3, 3), 10, 1)
    rt = StreamingClassifier(tiny_model, 40, 4)
    with pytest.raises(ValueError, match="chunk must be"):
        rt.step(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="expected 3 channels"):
        StreamingClassifier(tiny_model, 40, 4, mean=[0.0], std=[1.0])


def test_grow_keeps_existing_state(tiny_model: nn.Module) -> None:
    window, hop = 36, 4
    x = torch.randn(1, 3, 60)
    a = StreamingClassifier(tiny_model, window, hop, capacity=1)
    b = StreamingClassifier(tiny_model, window, hop, capacity=1)
    a_logits, _ = a.run(x)
    b.run(x[:, :, :24])
    b.grow(5)
    assert b.capacity == 5 and b.samples_seen.tolist() == [24, 0, 0, 0, 0]
    rest = torch.zeros(5, 3, 36)
    rest[0] = x[0, :, 24:]
    b_logits, _ = b.run(rest)
    torch.testing.assert_close(b_logits[0, -1], a_logits[0, -1], atol=ATOL, rtol=0)


def test_onnxruntime_backend_matches_torch(tiny_model: nn.Module) -> None:
    x = torch.randn(3, 3, 80)
    t_logits, ready = StreamingClassifier(tiny_model, 40, 4, capacity=3).run(x)
    o_logits, _ = StreamingClassifier(tiny_model, 40, 4, capacity=3, backend=StepBackend.ONNXRUNTIME).run(x)
    torch.testing.assert_close(o_logits[:, ready[0]], t_logits[:, ready[0]], atol=ATOL, rtol=0)


def test_bfloat16_runtime_is_close_to_float32_and_returns_float32(tiny_model: nn.Module) -> None:
    x = torch.randn(3, 3, 80)
    ref, ready = StreamingClassifier(tiny_model, 40, 4, capacity=3).run(x)
    low = StreamingClassifier(tiny_model, 40, 4, capacity=3, dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16 and low.compiled
    got, ready_low = low.run(x)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(ready, ready_low)
    scale = float(ref[ready].abs().max())
    assert 0.0 < float((got - ref)[ready].abs().max()) <= 0.05 * max(1.0, scale)


def test_reduced_precision_is_refused_where_it_cannot_run(tiny_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="float32 only"):
        StreamingClassifier(tiny_model, 40, 4, dtype=torch.bfloat16, backend=StepBackend.NUMPY)
    with pytest.raises(ValueError, match="dtype must be one of"):
        StreamingClassifier(tiny_model, 40, 4, dtype=torch.int8)


def _edge_filled_reference(model: nn.Module, x: torch.Tensor, window: int, first: int, hop: int) -> torch.Tensor:
    """Offline logits (N, n, K) of the windows ending at first, first + hop, ... with edge-filled history."""
    lead = window - first
    padded = torch.cat([x[:, :, :1].expand(-1, -1, lead), x], dim=2)
    ends = range(first, x.shape[2] + 1, hop)
    with torch.no_grad():
        return torch.stack([model(padded[:, :, e + lead - window : e + lead]) for e in ends], dim=1)


@pytest.mark.parametrize("backend", [StepBackend.TORCH, StepBackend.TORCH_EAGER, StepBackend.NUMPY])
@pytest.mark.parametrize("first", [32, 36])  # lead-in 24 (6 hops) and 20 (5 hops)
def test_edge_filled_start_reports_early_and_matches_offline(tiny_model: nn.Module, backend, first: int) -> None:
    window, hop = 56, 4
    rt = StreamingClassifier(tiny_model, window, hop, capacity=2, backend=backend, first_output=first)
    x = torch.randn(2, 3, 96)
    logits, ready = rt.run(x)
    np.testing.assert_array_equal(ready[0], np.arange(1, 25) * hop >= first)
    ref = _edge_filled_reference(tiny_model, x, window, first, hop)
    torch.testing.assert_close(logits[:, ready[0]], ref, atol=ATOL, rtol=0)


def test_edge_filled_start_applies_per_slot_after_reset_and_in_subset_steps(tiny_model: nn.Module) -> None:
    window, hop, first = 48, 4, 16
    rt = StreamingClassifier(tiny_model, window, hop, capacity=3, first_output=first)
    x = torch.randn(3, 3, 64)
    rt.run(x[:, :, :20])  # all slots 20 samples in; now slot 1 restarts and is stepped alone for a while
    rt.reset([1])
    y = torch.randn(1, 3, 32)
    steps = [rt.step(y[:, :, k : k + hop], slots=[1]) for k in range(0, 32, hop)]
    assert [bool(s.ready[0]) for s in steps] == [k + hop >= first for k in range(0, 32, hop)]
    got = torch.cat([s.logits for s in steps if s.ready[0]])[None]  # windows ending at 16, 20, ..., 32
    torch.testing.assert_close(got, _edge_filled_reference(tiny_model, y, window, first, hop), atol=ATOL, rtol=0)
    # the other slots kept their streams: one more full step still matches their offline windows
    res = rt.step(torch.cat([x[:1, :, 20:24], y[:, :, :4], x[2:, :, 20:24]]))
    assert res.ready.tolist() == [True, True, True]
    full = _edge_filled_reference(tiny_model, x[[0, 2], :, :24], window, 24, hop)[:, -1]
    torch.testing.assert_close(res.logits[[0, 2]], full, atol=ATOL, rtol=0)


def test_edge_filled_start_is_refused_where_it_is_undefined(tiny_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="first_output must be in"):
        StreamingClassifier(tiny_model, 40, 4, first_output=0)
    with pytest.raises(ValueError, match="first_output must be in"):
        StreamingClassifier(tiny_model, 40, 4, first_output=44)


@pytest.mark.parametrize(
    ("name", "engine"),
    [
        ("compiled", StepBackend.COMPILED),
        ("eager", StepBackend.EAGER),
        ("numpy", StepBackend.NUMPY),
        ("onnxruntime", StepBackend.ONNXRUNTIME),
        ("torch", StepBackend.COMPILED),
        ("torch-eager", StepBackend.EAGER),
        (StepBackend.NUMPY, StepBackend.NUMPY),
    ],
)
def test_backend_accepts_strings_and_enums(name: object, engine: StepBackend) -> None:
    assert StepBackend.parse(name) is engine  # type: ignore[arg-type]


def test_backend_string_selects_the_engine(tiny_model: nn.Module) -> None:
    rt = to_streaming(tiny_model, 40, 1, backend="numpy")
    assert rt.backend is StepBackend.NUMPY and rt.engine.name == "numpy"


@pytest.mark.parametrize("bad", ["nonsense", "", 3])
def test_unknown_backend_is_an_error_listing_the_engines(tiny_model: nn.Module, bad: object) -> None:
    with pytest.raises(ValueError, match="unknown streaming engine.*'compiled', 'eager', 'numpy', 'onnxruntime'"):
        to_streaming(tiny_model, 40, 1, backend=bad)


def test_describe_names_the_engine_and_every_module_it_does_not_lower(
    tiny_model: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    plain = to_streaming(tiny_model, 40, 1, backend="compiled").describe()
    assert plain.engine == "compiled" and plain.ring_buffers and plain.decisions == []
    assert "every module runs in the compiled engine" in str(plain)
    tiny_model.stem.layers[2] = nn.GELU()  # no compiled lowering: called as it is inside the compiled step
    with caplog.at_level("INFO", logger="vidrec.streaming"):
        rt = to_streaming(tiny_model, 40, 1, backend=StepBackend.COMPILED)
    desc = rt.describe()
    assert desc.engine == "compiled" and not desc.ring_buffers
    assert [(d.part, d.module, d.engine) for d in desc.decisions] == [("stem.layers.2", "GELU", "eager")]
    assert "stem.layers.2 (GELU): eager" in caplog.text


class _TinyVideo(StreamableClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.features = TemporalSequential(
            TemporalWindowOp(nn.Conv3d(3, 4, (3, 3, 3), padding=(0, 1, 1)), 3), nn.ReLU()
        )
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Linear(4, 2)
        self._init_geometry()


def test_video_on_the_compiled_engine_logs_what_it_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = _TinyVideo().eval()
    with caplog.at_level("INFO", logger="vidrec.streaming"):
        rt = to_streaming(model, 6, 2, frame_shape=(8, 8))
    desc = rt.describe()  # the video engine (engines/video.py) runs the full 3x3x3 conv eagerly on its ring's window
    assert desc.requested == "compiled" and desc.engine == "compiled"
    assert [(d.part, d.engine) for d in desc.decisions] == [("features.layers.0", "eager")]
    assert "features.layers.0 (TemporalWindowOp): eager" in caplog.text
    x = torch.randn(1, 3, 8, 8, 8)
    logits, ready = rt.run(x)
    with torch.no_grad():
        torch.testing.assert_close(logits[0, -1], model(x[:, :, 2:])[0], atol=1e-5, rtol=0)
    assert ready[0].tolist() == [False, False, True, True]


def test_numpy_and_onnx_engines_refuse_other_devices(tiny_model: nn.Module) -> None:
    for engine in ("numpy", "onnxruntime"):
        with pytest.raises(ValueError, match="runs on the CPU only"):
            to_streaming(tiny_model, 40, 4, backend=engine, device="meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.usefixtures("exact_cuda")
@pytest.mark.parametrize("engine", ["compiled", "eager"])
def test_cuda_engines_match_the_cpu(tiny_model: nn.Module, engine: str) -> None:
    x = torch.randn(3, 3, 60)
    cpu_logits, _ = to_streaming(tiny_model, 40, 4, capacity=3, backend=engine).run(x)
    rt = to_streaming(tiny_model, 40, 4, capacity=3, backend=engine, device="cuda")
    assert rt.describe().device.startswith("cuda")
    cuda_logits, _ = rt.run(x)
    sub = rt.step(torch.randn(1, 3, 4), [1])  # a subset of slots on the device
    assert cuda_logits.device.type == "cpu" and sub.logits.shape == (1, 3)
    torch.testing.assert_close(cuda_logits, cpu_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_compiled_engine_builds_under_cudas_default_tf32_convolutions(tiny_model: nn.Module) -> None:
    # the build-time check compares with an eager step whose cuDNN convolutions round to TF32 (~1e-3)
    rt = to_streaming(tiny_model, 40, 4, backend="compiled", device="cuda")
    assert rt.describe().engine == "compiled"
    x = torch.randn(1, 3, 60)
    cuda_logits, _ = rt.run(x)
    cpu_logits, _ = to_streaming(tiny_model, 40, 4, backend="compiled").run(x)
    torch.testing.assert_close(cuda_logits, cpu_logits, atol=5e-2, rtol=0)
