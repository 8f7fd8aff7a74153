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


def test_registry_metadata_plain_and_keyword_forms() -> None:
    from vidrec.models import Modality, StreamableClassifier, StreamMode, model_info
    from vidrec.models._registry import _INFO, _MODELS

    assert model_info("resnet1d_har").streams is StreamMode.EXACT
    assert model_info("resnet1d_har").modality is Modality.TIME_SERIES
    assert "resnet1d_har" in list_models(streams=StreamMode.EXACT, modality=Modality.TIME_SERIES)
    assert "x3d_xs" not in list_models(streams=StreamMode.EXACT)

    def _plain_test_model(*, num_classes: int = 2) -> StreamableClassifier:
        raise NotImplementedError

    def _two_input_test_model(*, num_classes: int = 2) -> torch.nn.Module:
        raise NotImplementedError

    try:
        register_model(_plain_test_model)  # plain form: inferred from the return annotation
        register_model(streams="approximate", modality=Modality.VIDEO, inputs=("rgb", "flow"))(_two_input_test_model)
        plain, two = model_info("_plain_test_model"), model_info("_two_input_test_model")
        assert (plain.streams, plain.modality, plain.inputs, plain.explicit) == (StreamMode.EXACT, None, ("x",), False)
        assert (two.streams, two.modality, two.inputs) == (StreamMode.APPROXIMATE, Modality.VIDEO, ("rgb", "flow"))
        with pytest.raises(ValueError, match="distinct names"):
            register_model(inputs=("x", "x"))(lambda: None)  # type: ignore[arg-type,return-value]
    finally:
        for name in ("_plain_test_model", "_two_input_test_model"):
            _MODELS.pop(name, None)
            _INFO.pop(name, None)
