"""HAR models: registry, shapes, gradients, exact streaming, FusionActNet's joint loss."""

import pytest
import torch

from vidrec.models import build_model, list_models
from vidrec.models._registry import register_model
from vidrec.models.fusionactnet import FusionActNet

HAR_MODELS = ["resnet1d_har", "resnet1d_tiny", "fusionactnet"]


def test_registry_lists_and_rejects() -> None:
    assert set(HAR_MODELS) <= set(list_models())
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_model(build_model.__globals__["_MODELS"]["resnet1d_har"])


@pytest.mark.parametrize("name", HAR_MODELS)
def test_shape_and_backward(name: str) -> None:
    model = build_model(name, in_channels=6, num_classes=6)
    x = torch.randn(4, 6, 128)
    out = model(x)
    assert out.shape == (4, 6)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", HAR_MODELS)
@pytest.mark.parametrize("hop", [1, 8])
def test_streaming_equals_offline(name: str, hop: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=6, num_classes=6).eval()
    window = 128
    model.configure_stream(window, hop)
    x = torch.randn(2, 6, 128 + 40 * hop)
    with torch.no_grad():
        state = model.stream_state(x[:, :, :hop])
        checked = 0
        for t in range(0, x.shape[2], hop):
            out, state = model.stream_step(x[:, :, t : t + hop], state)
            end = t + hop
            if end >= window:
                torch.testing.assert_close(out, model(x[:, :, end - window : end]), atol=1e-4, rtol=0)
                checked += 1
    assert checked >= 40


def test_configure_stream_errors() -> None:
    model = build_model("resnet1d_har")
    with pytest.raises(ValueError, match="shorter than the receptive field"):
        model.configure_stream(50, 1)


def test_fusionactnet_fuses_probabilities_and_joint_loss() -> None:
    torch.manual_seed(0)
    model = build_model("fusionactnet", in_channels=6, num_classes=6, static_classes=[3, 4, 5]).eval()
    x = torch.randn(3, 6, 128)
    logp = model(x)
    torch.testing.assert_close(logp.exp().sum(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    g = torch.sigmoid(model.guidance(x))
    torch.testing.assert_close(logp.exp()[:, 3:].sum(dim=1, keepdim=True), g, atol=1e-5, rtol=0)
    model.train()
    loss, fused = model.training_loss(x, torch.tensor([0, 4, 5]))
    assert loss.ndim == 0 and fused.shape == (3, 6)
    loss.backward()
    with pytest.raises(ValueError, match="proper subset"):
        FusionActNet(in_channels=6, num_classes=3, static_classes=[0, 1, 2], stages=[])
