"""ParallelClassifiers: fusion rules offline, exact streaming on the engines, FusionActNet compiled per member."""

from __future__ import annotations

import pytest
import torch

from tests.streaming.conftest import randomize_batchnorm
from vidrec.models import build_model
from vidrec.models._base import FusionRule, ParallelClassifiers
from vidrec.streaming import to_streaming


def _pair(rule: FusionRule) -> ParallelClassifiers:
    torch.manual_seed(0)
    a = randomize_batchnorm(build_model("resnet1d_tiny", in_channels=3, num_classes=4), seed=1)
    b = randomize_batchnorm(build_model("resnet1d_tiny", in_channels=3, num_classes=4), seed=2)
    return ParallelClassifiers({"a": a, "b": b}, rule, weights=[0.25, 0.75]).eval()


def test_fusion_rules_offline() -> None:
    x = torch.randn(2, 3, 40)
    with torch.no_grad():
        la, lb = _pair(FusionRule.MEAN_PROBABILITIES).a(x), _pair(FusionRule.MEAN_PROBABILITIES).b(x)
        mean = _pair(FusionRule.MEAN_PROBABILITIES)(x).exp()
        torch.testing.assert_close(mean, 0.25 * la.softmax(1) + 0.75 * lb.softmax(1))
        prod = _pair(FusionRule.PRODUCT_PROBABILITIES)(x).exp()
        expected = la.softmax(1) * lb.softmax(1)
        torch.testing.assert_close(prod, expected / expected.sum(1, keepdim=True))
        torch.testing.assert_close(_pair(FusionRule.WEIGHTED_LOGITS)(x), 0.25 * la + 0.75 * lb)
    with pytest.raises(ValueError, match="at least two members"):
        ParallelClassifiers({"a": _pair(FusionRule.MEAN_PROBABILITIES).a})
    with pytest.raises(ValueError, match="2 fusion weights for 3 members"):
        m = _pair(FusionRule.MEAN_PROBABILITIES)
        ParallelClassifiers({"a": m.a, "b": m.b, "c": m.a}, weights=[0.5, 0.5])


@pytest.mark.parametrize("rule", list(FusionRule))
@pytest.mark.parametrize("engine", ["compiled", "eager"])
def test_streams_exactly(rule: FusionRule, engine: str) -> None:
    model = _pair(rule)
    window, hop = 40, 4
    x = torch.randn(2, 3, window + 5 * hop)
    rt = to_streaming(model, window, hop, capacity=2, backend=engine)
    desc = rt.describe()
    assert desc.engine == engine and desc.decisions == []
    if engine == "compiled":
        assert desc.ring_buffers  # every member compiled over ring buffers
    logits, ready = rt.run(x)
    with torch.no_grad():
        for k in range(logits.shape[1]):
            if ready[0, k]:
                end = (k + 1) * hop
                torch.testing.assert_close(logits[:, k], model(x[:, :, end - window : end]), atol=1e-4, rtol=0)
    sub = rt.step(x[1:, :, :hop], [1])  # a subset of slots steps every member
    assert sub.logits.shape == (1, 4)


def test_fusionactnet_runs_compiled_per_member() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("fusionactnet", in_channels=3, num_classes=6))
    assert sorted(model.state_dict())[0].startswith("dynamic_expert.")  # parameter names kept for checkpoints
    rt = to_streaming(model, 128, 16)
    desc = rt.describe()
    assert desc.engine == "compiled" and desc.decisions == [] and desc.ring_buffers
    x = torch.randn(1, 3, 160)
    logits, _ = rt.run(x)
    with torch.no_grad():
        torch.testing.assert_close(logits[:, -1], model(x[:, :, -128:]), atol=1e-4, rtol=0)
