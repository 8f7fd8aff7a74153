"""Tests of the video models: every registered one runs and trains, torchvision parity, exact streaming."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

import vidrec.models.p3d as p3d_module
import vidrec.models.r2plus1d as r2plus1d_module
import vidrec.models.reference as reference_module
from vidrec.layers.conv2plus1d import TemporalPadding
from vidrec.layers.p3d_blocks import Bottleneck2d, P3DBlockA, P3DBlockB, P3DBlockC
from vidrec.models._registry import get_model_builder, list_models
from vidrec.models.r2plus1d import load_torchvision_r2plus1d, r2plus1d_18, torchvision_r2plus1d_key

_VIDEO_MODULES = {p3d_module.__name__, r2plus1d_module.__name__, reference_module.__name__}
VIDEO_MODELS = [n for n in list_models() if get_model_builder(n).__module__ in _VIDEO_MODULES]
STREAMABLE = [n for n in VIDEO_MODELS if get_model_builder(n).__module__ != reference_module.__name__]
SLOW = {"p3d131", "p3d199", "r2plus1d_34", "slow_r50"}
REFERENCE_SIZE = {"clip_length": 4, "crop_size": 32}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny clips gain nothing from threads, and on a busy 2-core machine threads contend; restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _calibrate(model: nn.Module, x: Tensor) -> None:
    """Set BN statistics from one batch and give the classifier O(1) logits, so values are well conditioned."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_var.clamp_(min=0.05)  # dead channels would amplify rounding by 1 / sqrt(eps)
        nn.init.normal_(model.classifier[-1].weight, std=0.05)  # type: ignore[index]
    model.eval()


def test_registry_has_the_video_models() -> None:
    expected = {"r2plus1d_18", "r2plus1d_34", "p3d63", "p3d131", "p3d199", "x3d_xs", "x3d_s", "slow_r50"}
    assert expected <= set(VIDEO_MODELS)
    assert "r2plus1d_r50" in VIDEO_MODELS


@pytest.mark.parametrize("name", _params(VIDEO_MODELS))
def test_model_runs_and_trains_on_a_tiny_clip(name: str) -> None:
    torch.manual_seed(0)
    builder: Callable[..., nn.Module] = get_model_builder(name)
    reference = name in {"x3d_xs", "x3d_s", "slow_r50", "r2plus1d_r50"}
    model = builder(num_classes=5, **(REFERENCE_SIZE if reference else {}))
    frames = REFERENCE_SIZE["clip_length"] if reference else model.min_frames  # type: ignore[attr-defined]
    x = torch.randn(2, 3, frames, 32, 32)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), f"{name}: some parameters got no gradient"
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
    feats = model.forward_features(x)
    assert feats.dim() == 5 and feats.shape[0] == 2
    assert model.forward_head(feats).shape == (2, 5)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("r2plus1d_18", torch.float32)]
    + [pytest.param(n, torch.float64, marks=[pytest.mark.slow] if n in SLOW else []) for n in STREAMABLE],
)
def test_streaming_equals_offline_window(name: str, dtype: torch.dtype) -> None:
    """Feed a long clip frame by frame; every streamed logit vector equals the offline logits of its window.

    Deep nets amplify float32 rounding (streaming convs see one frame, offline ones many, so their summation
    orders differ) to ~1e-3 at the logits, so the deep ones are checked in float64, where any real misalignment
    still shows as O(1) differences.
    """
    torch.manual_seed(0)
    model = get_model_builder(name)(num_classes=5).to(dtype)
    features, pool = model.features, model.pool  # type: ignore[attr-defined]
    window = features.receptive_field + features.stride  # two feature positions per window
    _calibrate(model, torch.randn(2, 3, window, 32, 32, dtype=dtype))
    hop = features.stride
    pool.positions = features.output_length(window)
    clip = torch.randn(1, 3, window + hop, 32, 32, dtype=dtype)
    checked = 0
    with torch.no_grad():
        state = features.stream_state(clip[:, :, :hop])
        pool_state = None
        for t in range(hop, clip.shape[2] + 1, hop):
            y, state = features.stream_step(clip[:, :, t - hop : t], state)
            if pool_state is None:
                pool_state = pool.stream_state(y)
            pooled, pool_state = pool.stream_step(y, pool_state)
            streamed = model.classifier(pooled)  # type: ignore[attr-defined]
            if t >= window:
                offline = model(clip[:, :, t - window : t])
                torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-4)
                checked += 1
    assert checked == 2


@pytest.mark.parametrize("name", ["r2plus1d_18", "p3d63"])
def test_same_padding_models_refuse_to_stream(name: str) -> None:
    model = get_model_builder(name)(num_classes=5, temporal_padding=TemporalPadding.SAME).eval()
    with pytest.raises(ValueError, match="cannot stream"):
        model.features.stream_state(torch.zeros(1, 3, 16, 32, 32))  # type: ignore[attr-defined]


def test_geometry_and_parameter_counts() -> None:
    valid = r2plus1d_18()
    assert (valid.features.receptive_field, valid.features.stride) == (13, 1)
    assert valid.features.output_length(16) == 4
    same = r2plus1d_18(temporal_padding=TemporalPadding.SAME)
    tv = torchvision.models.video.r2plus1d_18(weights=None)
    n_same = sum(p.numel() for p in same.parameters())
    assert n_same == sum(p.numel() for p in tv.parameters()) == 31_505_325  # the paper's 31.5M
    assert same.features.output_length(16) == 2  # temporal stride 8 as torchvision: 16 -> 2
    p3d = get_model_builder("p3d63")(temporal_padding=TemporalPadding.SAME)
    assert (p3d.features.receptive_field, p3d.features.stride) == (16, 16)


@pytest.mark.slow
def test_p3d199_has_the_papers_size() -> None:
    model = get_model_builder("p3d199")(temporal_padding=TemporalPadding.SAME, num_classes=487)  # Sports-1M
    n = sum(p.numel() for p in model.parameters())
    assert 65e6 < n < 68e6, n  # paper: ~66M (261 MB)


def test_p3d_blocks_cycle_a_b_c() -> None:
    model = get_model_builder("p3d63")(temporal_padding=TemporalPadding.SAME)
    blocks = [
        b for layer in ("layer1", "layer2", "layer3", "layer4") for b in getattr(model.features, layer).children()
    ]
    types = [type(b) for b in blocks]
    cycle = [P3DBlockA, P3DBlockB, P3DBlockC]
    assert types[:13] == [cycle[i % 3] for i in range(13)]  # res2-res4: 3 + 4 + 6 P3D blocks
    assert types[13:] == [Bottleneck2d] * 3  # res5 is 2D in the paper's layout
    valid = get_model_builder("p3d63")()
    v_types = [
        type(b) for layer in ("layer1", "layer2", "layer3", "layer4") for b in getattr(valid.features, layer).children()
    ]
    assert [t for t in v_types if t is not Bottleneck2d] == cycle * 2


def _torchvision_with_random_bn() -> nn.Module:
    torch.manual_seed(0)
    tv = torchvision.models.video.r2plus1d_18(weights=None)
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return tv.eval()


def test_torchvision_r2plus1d_18_parity(tmp_path: Path) -> None:
    tv = _torchvision_with_random_bn()
    ours = r2plus1d_18(temporal_padding=TemporalPadding.SAME).eval()
    load_torchvision_r2plus1d(ours, tv.state_dict())
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = tv(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
        # from a local file, as users load the Kinetics-400 file torchvision downloaded
        path = tmp_path / "r2plus1d_18.pth"
        torch.save(tv.state_dict(), path)
        from_file = r2plus1d_18(temporal_padding=TemporalPadding.SAME, torchvision_weights=str(path)).eval()
        torch.testing.assert_close(from_file(x), expected, atol=1e-5, rtol=0)
        # fine-tuning to other classes keeps a fresh classifier, everything else loaded
        with pytest.warns(UserWarning, match="fresh classifier"):
            other = r2plus1d_18(temporal_padding=TemporalPadding.SAME, num_classes=7, torchvision_weights=path).eval()
        torch.testing.assert_close(other.forward_features(x), ours.forward_features(x), atol=1e-5, rtol=0)


def test_torchvision_loading_errors(tmp_path: Path) -> None:
    tv = torchvision.models.video.r2plus1d_18(weights=None)
    with pytest.raises(ValueError, match="TemporalPadding.SAME"):
        load_torchvision_r2plus1d(r2plus1d_18(), tv.state_dict())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_torchvision_r2plus1d(r2plus1d_18(temporal_padding=TemporalPadding.SAME), tmp_path / "missing.pth")
    with pytest.raises(KeyError, match="head.weight"):
        torchvision_r2plus1d_key("head.weight")
    assert torchvision_r2plus1d_key("layer2.0.conv1.0.3.weight") == (
        "features.layer2.0.residual.branch.conv1.temporal.op.weight"
    )
