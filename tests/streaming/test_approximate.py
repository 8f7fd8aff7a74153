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
