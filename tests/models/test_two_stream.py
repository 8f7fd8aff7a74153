"""Two-stream models: cross-modality initialisation, local weights only, segment consensus, fusion by video id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from vidrec.models import build_model, list_models
from vidrec.models.two_stream import (
    StreamResNet,
    TwoStreamFusion,
    cross_modality_conv,
    fit_fusion_weight,
    fit_fusion_weights,
    fuse_scores_by_video,
    stream_scores_by_video,
)


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision resnet18 state_dict file standing in for the ImageNet weights (same keys and shapes)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_builders_are_registered() -> None:
    names = set(list_models("spatial_stream_")) | set(list_models("temporal_stream_"))
    assert {f"{k}_stream_resnet{d}" for k in ("spatial", "temporal") for d in (18, 50, 101)} <= names


def test_cross_modality_initialisation_copies_the_colour_mean_to_every_flow_channel(imagenet_like: Path) -> None:
    rgb_conv = torch.load(imagenet_like)["conv1.weight"]  # (64, 3, 7, 7)
    model = build_model("temporal_stream_resnet18", num_classes=5, stack_length=10, pretrained=str(imagenet_like))
    conv = model.stem[0]
    assert conv.weight.shape == (64, 20, 7, 7)
    expected = rgb_conv.mean(dim=1)  # (64, 7, 7)
    for c in range(20):
        assert torch.equal(conv.weight[:, c], expected)
    spatial = build_model("spatial_stream_resnet18", num_classes=5, pretrained=str(imagenet_like))
    assert torch.equal(spatial.stem[0].weight, rgb_conv)  # the RGB stream keeps the filters
    state = torch.load(imagenet_like)
    assert torch.equal(model.stages[0][0].conv1.weight, state["layer1.0.conv1.weight"])


def test_cross_modality_conv_responds_to_a_uniform_stack_like_the_rgb_filter_to_grey() -> None:
    rgb = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    flow = cross_modality_conv(rgb, 6)
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(flow(x.expand(1, 6, 8, 8)) / 6, rgb(x.expand(1, 3, 8, 8)) / 3, atol=1e-5)


def test_weights_are_read_from_a_local_file_only(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        StreamResNet(num_classes=3, pretrained=str(tmp_path / "absent.pth"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision ResNet state_dict"):
        StreamResNet(num_classes=3, pretrained=str(tmp_path / "bad.pth"))


def test_segments_average_the_logits_and_bad_shapes_are_named() -> None:
    model = StreamResNet(num_classes=4, in_channels=6).eval()
    x = torch.randn(2, 3, 6, 32, 32)  # (B, K, 2L, H, W)
    with torch.no_grad():
        consensus = model(x)
        separate = torch.stack([model(x[:, k]) for k in range(3)], dim=1).mean(dim=1)
    assert torch.allclose(consensus, separate, atol=1e-5)
    with pytest.raises(ValueError, match=r"expects \(B, 6, H, W\)"):
        model(torch.randn(1, 3, 32, 32))


def test_fusion_is_the_weighted_mean_of_the_softmax_scores() -> None:
    torch.manual_seed(0)
    rgb, flow = StreamResNet(num_classes=4).eval(), StreamResNet(num_classes=4, in_channels=4).eval()
    fusion = TwoStreamFusion(rgb=rgb, flow=flow, rgb_weight=1.0, flow_weight=1.5).eval()
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "flow": torch.randn(2, 4, 32, 32)}
    with torch.no_grad():
        outputs = fusion.forward_streams(inputs)
        expected = (rgb(inputs["rgb"]).softmax(1) + 1.5 * flow(inputs["flow"]).softmax(1)) / 2.5
    assert torch.allclose(outputs["fused"].exp(), expected, atol=1e-6)
    assert torch.allclose(fusion(inputs).softmax(1), expected, atol=1e-6)  # softmax(log p) = p
    with pytest.raises(KeyError, match="inputs lack 'flow'"):
        fusion({"rgb": inputs["rgb"]})


def test_scores_are_fused_by_video_id_not_by_order() -> None:
    rng = np.random.default_rng(0)
    ids = [f"v{k}" for k in range(6)]
    rgb = {v: rng.dirichlet(np.ones(3)) for v in ids}
    flow = {v: rng.dirichlet(np.ones(3)) for v in reversed(ids)}  # another order
    fused = fuse_scores_by_video({"rgb": rgb, "flow": flow}, {"rgb": 1.0, "flow": 1.5})
    for v in ids:
        assert np.allclose(fused[v], (rgb[v] + 1.5 * flow[v]) / 2.5)
    with pytest.raises(ValueError, match=r"score different videos \(e.g. \['v0'\]\)"):
        fuse_scores_by_video({"rgb": rgb, "flow": {v: flow[v] for v in ids[1:]}}, {"rgb": 1, "flow": 1})


def test_the_flow_weight_is_fitted_on_validation_scores() -> None:
    labels = {f"v{k}": k % 2 for k in range(10)}
    flow = {v: np.eye(2)[y] * 0.6 + 0.2 for v, y in labels.items()}  # right, not very confident
    rgb = {v: np.eye(2)[1 - y] * 0.5 + 0.25 for v, y in labels.items()}  # wrong
    weight, acc = fit_fusion_weight(rgb, flow, labels)
    assert acc == 1.0 and weight >= 1.5


def test_weights_fitted_by_likelihood_silence_a_confidently_wrong_stream() -> None:
    labels = {f"v{k}": k % 3 for k in range(12)}
    flow = {v: np.eye(3)[y] * 0.5 + 0.5 / 3 for v, y in labels.items()}  # right, p(true) = 0.67
    # RGB: confidently wrong on a third of the videos, at chance elsewhere (what an appearance-only stream does on a
    # motion-only set); at 1 : 1.5 it flips those videos, since 0.4 * 0.98 + 0.6 * 0.17 > 0.4 * 0.01 + 0.6 * 0.67
    rgb = {
        v: (np.eye(3)[(y + 1) % 3] * 0.97 + 0.01) if k % 3 == 0 else np.full(3, 1 / 3)
        for k, (v, y) in enumerate(labels.items())
    }
    default = fuse_scores_by_video({"rgb": rgb, "flow": flow}, {"rgb": 1.0, "flow": 1.5})
    assert np.mean([np.argmax(default[v]) == y for v, y in labels.items()]) < 1.0
    fit = fit_fusion_weights(rgb, flow, labels)
    assert fit.flow_weight > 0.6 and fit.accuracy == 1.0 and fit.rgb_weight == pytest.approx(1 - fit.flow_weight)
    assert len(fit.grid) == 21 and min(g[1] for g in fit.grid) == fit.nll
    # an uninformative validation set (both streams identical) keeps the default 1 : 1.5
    same = fit_fusion_weights(flow, flow, labels)
    assert same.flow_weight == pytest.approx(0.6)


def test_stream_scores_are_averaged_per_video_over_its_views() -> None:
    torch.manual_seed(0)
    rgb, flow = StreamResNet(num_classes=3, in_channels=3), StreamResNet(num_classes=3, in_channels=4)
    model = TwoStreamFusion(rgb=rgb, flow=flow)
    x = {"rgb": torch.randn(4, 3, 32, 32), "flow": torch.randn(4, 4, 32, 32)}
    batch = {"inputs": x, "target": torch.tensor([2, 2, 0, 0]), "group": torch.tensor([7, 7, 3, 3])}
    s_rgb, s_flow, labels = stream_scores_by_video(model, [batch])
    assert labels == {"7": 2, "3": 0}
    with torch.no_grad():
        expected = model.rgb(x["rgb"]).softmax(1)[:2].mean(0).double().numpy()
    np.testing.assert_allclose(s_rgb["7"], expected, rtol=1e-6)
    assert set(s_flow) == {"7", "3"}
