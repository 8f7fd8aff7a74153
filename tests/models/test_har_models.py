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


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("name", ["resnet1d_har", "resnet1d_tiny"])
@pytest.mark.parametrize(("length", "hop"), [(128, 1), (128, 16), (200, 7)])
def test_forward_windows_equals_forward_on_each_window(name: str, length: int, hop: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=6, num_classes=5).eval()
    _randomise_batchnorm(model)
    n = 9
    x = torch.randn(3, 6, length + (n - 1) * hop)
    with torch.no_grad():
        dense = model.forward_windows(x, length, hop)  # (3, n, 5)
        windows = torch.stack([model(x[:, :, k * hop : k * hop + length]) for k in range(n)], dim=1)
    assert dense.shape == (3, n, 5)
    torch.testing.assert_close(dense, windows, atol=1e-5, rtol=1e-5)


def test_forward_windows_with_a_strided_stage_and_its_errors() -> None:
    from vidrec.models.resnet1d import ResNet1D, Stage1d

    torch.manual_seed(0)
    model = ResNet1D(in_channels=3, num_classes=4, stages=[Stage1d(8, 1, 3, stride=2), Stage1d(8, 1, 3)]).eval()
    assert model.stride == 2
    x = torch.randn(2, 3, 64 + 5 * 4)
    with torch.no_grad():
        dense = model.forward_windows(x, 64, 4)
        windows = torch.stack([model(x[:, :, 4 * k : 4 * k + 64]) for k in range(6)], dim=1)
    torch.testing.assert_close(dense, windows, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of the model's total temporal stride 2"):
        model.forward_windows(x, 64, 3)
    with pytest.raises(ValueError, match="shorter than one window"):
        model.forward_windows(x[:, :, :40], 64, 4)
    with pytest.raises(TypeError, match="FusionActNet defines its own forward"):
        build_model("fusionactnet", in_channels=6, num_classes=6).forward_windows(torch.randn(1, 6, 200), 128, 8)
