"""Approximate streaming of a zero-padded ("same") 1D conv model: deviation is measured and reported."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from vidrec.streaming.approximate import approximate_streaming, measure_deviation


def _padded_model() -> tuple[nn.Sequential, nn.Module]:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv1d(3, 16, 5, padding=2),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Conv1d(16, 16, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv1d(16, 16, 1),
    )
    randomize_batchnorm(features)
    return features.eval(), nn.Linear(16, 4)


def test_measure_deviation_figures() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [2.0, 1.0], [2.0, 0.0]])
    rep = measure_deviation(lambda d: a, lambda d: b, torch.zeros(1))
    assert rep.windows == 3 and rep.max_abs_delta == 2.0
    assert rep.argmax_agreement == pytest.approx(2 / 3)
    assert rep.nrmse == pytest.approx((4 / 6) ** 0.5 / float(a.double().std()))
    same = measure_deviation(lambda d: a, lambda d: a.clone(), torch.zeros(1))
    assert same.nrmse == 0.0 and same.argmax_agreement == 1.0


def test_approximate_streaming_reports_its_deviation(caplog: pytest.LogCaptureFixture) -> None:
    features, head = _padded_model()
    calibration = torch.randn(2, 3, 160)
    with caplog.at_level(logging.WARNING, logger="vidrec.streaming"):
        runtime, rep = approximate_streaming(features, head, 48, 4, in_channels=3, calibration=calibration)
    assert "approximate streaming over" in caplog.text
    assert runtime.deviation is rep and rep.windows > 10
    # the padded model is not exact in streaming, but close: deviation is real, finite and reported
    assert 0 < rep.nrmse < 1.0 and rep.max_abs_delta > 1e-4
    assert runtime.warmup > 48  # the pooled buffer needs more than a window of real samples
    # the valid (padding removed) copy streams its own positions exactly: a window of W + R - 1 samples
    model = runtime.model
    x = torch.randn(1, 3, 200)
    logits, ready = runtime.run(x)
    r = model.receptive_field
    positions = model.pool.positions
    with torch.no_grad():
        feats = model.features(x[:, :, 200 - (positions - 1) - r : 200])  # exactly `positions` valid positions
        ref = model.classifier(feats.mean(dim=2))
    torch.testing.assert_close(logits[:, -1], ref, atol=1e-4, rtol=0)


def _tiny_same_r2plus1d() -> nn.Module:
    """A torchvision-layout (zero temporal padding, temporal strides 2) R(2+1)D small enough for a test."""
    from vidrec.layers.conv2plus1d import TemporalPadding
    from vidrec.models.r2plus1d import R2Plus1d, R2Plus1dStage

    torch.manual_seed(0)
    stages = [
        R2Plus1dStage(1, 8, 1, 1, (3, 3)),
        R2Plus1dStage(1, 8, 2, 2, (3, 3)),
        R2Plus1dStage(1, 16, 2, 2, (3, 3)),
        R2Plus1dStage(1, 16, 2, 1, (3, 3)),
    ]
    model = R2Plus1d(
        stages=stages,
        num_classes=5,
        stem_channels=(8, 8),
        stem_temporal_kernel=3,
        temporal_padding=TemporalPadding.SAME,
    )
    return randomize_batchnorm(model).eval()


def test_valid_twin_shares_weights_and_refuses_models_that_stream_exactly() -> None:
    from vidrec.models import build_model
    from vidrec.streaming.approximate import valid_twin

    same = _tiny_same_r2plus1d()
    twin = valid_twin(same)
    assert twin.receptive_field > 1 and twin.stride == 4  # the zero padding is gone, the strides stay
    for (k1, v1), (k2, v2) in zip(same.state_dict().items(), twin.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    with pytest.raises(TypeError, match="streams exactly"):
        valid_twin(build_model("r2plus1d_18", num_classes=3))
    with pytest.raises(TypeError, match="arch"):
        valid_twin(nn.Linear(2, 2))


def test_approximate_streaming_of_a_same_padded_video_model_reports_its_deviation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from vidrec.streaming.approximate import approximate_model_streaming

    model = _tiny_same_r2plus1d()
    window, hop = 8, 4  # offline: 8 frames -> 2 pooled positions (temporal stride 4)
    calibration = torch.randn(2, 3, 64, 16, 16)
    with pytest.raises(ValueError, match="warm-up"):
        approximate_model_streaming(model, window, hop, calibration=calibration[:, :, :12])
    with caplog.at_level(logging.WARNING, logger="vidrec.streaming"):
        runtime, rep = approximate_model_streaming(model, window, hop, calibration=calibration, capacity=2)
    assert "approximate streaming over" in caplog.text and runtime.deviation is rep
    assert rep.windows >= 2 * 4 and rep.max_abs_delta > 0 and rep.nrmse == rep.nrmse  # measured, finite
    approx = runtime.model
    assert approx.pool.positions == 2 and runtime.warmup == (2 - 1) * 4 + approx.receptive_field
    # what is streamed is exact for the twin: the mean of its last 2 valid positions, frame by frame
    x = torch.randn(1, 3, 48, 16, 16)
    runtime.reset()
    logits, ready = runtime.run(torch.cat([x, x]))
    assert ready[0, -1] and not ready[0, 0]
    r = approx.receptive_field
    with torch.no_grad():
        feats = approx.features(x[:, :, 48 - 4 - r : 48])  # exactly 2 valid positions at stride 4
        ref = approx.classifier(feats.flatten(3).mean(3).mean(2))
    torch.testing.assert_close(logits[0, -1], ref[0], atol=1e-4, rtol=0)


def test_same_padded_temporal_inception_streams_approximately_through_its_layer_twins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Conv2d (k x 1) over feature rows, parallel branches and pools: twinned layer by layer, deviation measured."""
    from vidrec.layers.lowering import valid_twin_rule
    from vidrec.models import list_models
    from vidrec.models._registry import StreamMode
    from vidrec.models.temporal_inception import TemporalConcat, temporal_inception
    from vidrec.streaming.approximate import approximate_model_streaming, valid_copy

    # measured at chance on ordered events at its 24-25 frame window (tools/bench_feature_heads.py approximate)
    assert "temporal_inception" in list_models(streams=StreamMode.NONE)
    torch.manual_seed(0)
    model = randomize_batchnorm(temporal_inception(feature_dim=8, num_classes=4))
    for m in model.modules():  # weights of both signs, so the 1-channel maps do not die in the ReLUs
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.6)
    assert valid_twin_rule(nn.Conv2d(1, 1, (5, 1))) is not None
    stage = valid_copy(model.features[1])
    assert isinstance(stage, TemporalConcat) and stage.receptive_field == 8 and stage.stride == 2  # k=7 + pool 2
    with pytest.raises(TypeError, match="register its valid twin"):
        valid_copy(nn.LSTM(2, 2))
    window, hop = 24, 24  # offline 24 -> 12 -> 6 -> 3 -> 1 position; the twin's receptive field is 114
    calibration = torch.randn(2, 8, 24 * 9)
    with caplog.at_level(logging.WARNING, logger="vidrec.streaming"):
        runtime, rep = approximate_model_streaming(model, window, hop, calibration=calibration)
    approx = runtime.model
    assert (approx.receptive_field, approx.stride, approx.pool.positions, runtime.warmup) == (114, 24, 1, 114)
    assert rep.windows == 2 * 5 and rep.max_abs_delta > 1e-3  # hops 5..9; a real deviation: zeros vs 90 more frames
    # the twin streams its own (valid) positions exactly: the position ending at the last frame
    x = calibration[:1]
    runtime.reset()
    logits, ready = runtime.run(x)
    with torch.no_grad():
        ref = approx.classifier(approx.features(x[:, :, -114:]).mean(dim=2))
    assert ready[0, -1] and not ready[0, 3]
    torch.testing.assert_close(logits[0, -1], ref[0], atol=1e-4, rtol=0)
