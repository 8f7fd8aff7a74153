"""The skeleton 1D-CNN ensemble: shapes, exact streaming of every subnet, attention that acts, fusion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidrec.models import build_model
from vidrec.models.skeleton import (
    AttentionNet,
    FrameDifference,
    SkeletonEnsemble,
    TemporalAttentionPool,
    skeleton_resnet1d,
)
from vidrec.streaming import to_streaming

SMALL = dict(in_channels=150, num_classes=5, width=8, kernel_size=3)
WINDOW, HOP = 48, 4
SUBNETS = ["skeleton_resnet1d", "skeleton_frame_difference", "skeleton_attention", "skeleton_body_part"]
FULLY_LOWERED = {"skeleton_resnet1d", "skeleton_frame_difference", "skeleton_body_part"}  # traced, ring buffers


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = dict(SMALL, window=WINDOW) if name in ("skeleton_two_stream", "skeleton_ensemble") else SMALL
    model = build_model(name, **kwargs)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is tested too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_the_paper_network_has_nine_convolutions_and_three_residual_additions() -> None:
    model = skeleton_resnet1d(num_classes=60)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] == 8]
    assert [c.out_channels for c in convs] == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256]  # stem + nine
    assert [c.stride[0] for c in convs] == [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert model.stride == 4 and model.receptive_field == 134
    assert model(torch.randn(2, 150, 150)).shape == (2, 60)


@pytest.mark.parametrize("name", [*SUBNETS, "skeleton_two_stream"])
def test_every_subnet_streams_exactly(name: str) -> None:
    model = _build(name)
    x = torch.randn(2, 150, 64)
    rt = to_streaming(model, WINDOW, HOP, capacity=2, in_channels=150)
    if name in FULLY_LOWERED:  # part networks with their channel selection, the frame difference, the output BN
        description = rt.describe()
        assert description.engine == "compiled" and description.ring_buffers and not description.decisions
    logits, ready = rt.run(x)
    ends = [(k + 1) * HOP for k in range(64 // HOP) if ready[0, k]]
    assert ends[0] == WINDOW and len(ends) == 5
    with torch.no_grad():
        ref = torch.stack([model(x[:, :, e - WINDOW : e]) for e in ends], dim=1)  # (2, n, K)
    torch.testing.assert_close(logits[:, ready[0]], ref, atol=2e-5, rtol=0)


def test_frame_difference_keeps_one_frame_of_state() -> None:
    fd = FrameDifference()
    x = torch.randn(1, 3, 10)
    state = fd.stream_state(x[:, :, :2])
    assert [tuple(s.shape) for s in state] == [(1, 3, 1)]
    outs = []
    for k in range(5):
        y, state = fd.stream_step(x[:, :, 2 * k : 2 * k + 2], state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 2)[:, :, 1:], fd(x))


def test_attention_changes_the_output() -> None:
    model = _build("skeleton_attention")
    assert isinstance(model, AttentionNet) and isinstance(model.pool, TemporalAttentionPool)
    x = torch.randn(3, 150, WINDOW)
    with torch.no_grad():
        feats = model.forward_features(x)
        weights = model.pool.weights(feats)  # (B, 1, T')
        assert torch.allclose(weights.sum(dim=2), torch.ones(3, 1))
        assert (weights.max(dim=2).values - weights.min(dim=2).values).min() > 1e-3  # not uniform
        attended = model(x)
        averaged = model.classifier(feats.mean(dim=2))  # the same network with a plain average pool
        assert (attended - averaged).abs().max() > 1e-3
        channel_w = model.channel_attention.weights(x)
        torch.testing.assert_close(channel_w.mean(dim=1), torch.ones(3, WINDOW))
        assert channel_w.std() > 1e-3
        model.channel_attention.score[-1].weight.zero_()  # uniform channel weights: the input passes unchanged
        model.channel_attention.score[-1].bias.zero_()
        torch.testing.assert_close(model.channel_attention(x), x)
        assert (model(x) - attended).abs().max() > 1e-4


def test_ensemble_fuses_mean_probabilities_and_trains_every_subnet() -> None:
    model = _build("skeleton_ensemble")
    assert isinstance(model, SkeletonEnsemble)
    assert list(model.subnets) == ["two_stream", "body_part", "attention", "frame_difference"]
    x = torch.randn(4, 150, WINDOW)
    with torch.no_grad():
        parts = model.subnet_logits(x)
        fused = model(x)
    mean_probs = torch.stack([v.softmax(1) for v in parts.values()]).mean(0)
    torch.testing.assert_close(fused.exp(), mean_probs)
    model.train()
    loss, _ = model.training_loss(x, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, net in model.subnets.items():
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad), name


def test_two_stream_refuses_other_window_lengths() -> None:
    model = _build("skeleton_two_stream")
    with pytest.raises(ValueError, match="windows of 48 frames, got 40"):
        model(torch.randn(1, 150, 40))
    with pytest.raises(ValueError, match="receptive field"):
        build_model("skeleton_two_stream", in_channels=30, num_classes=3, window=64, width=8, kernel_size=8)


def test_the_ensemble_streams_as_one_model_equal_to_offline() -> None:
    """Fused streamed logits == offline ensemble logits of each window; subnets on the compiled engine."""
    model = _build("skeleton_ensemble")
    x = torch.randn(3, 150, 72)
    rt = to_streaming(model, WINDOW, HOP, capacity=3)  # in_channels from the ensemble itself
    description = rt.describe()
    assert rt.compiled and description.engine == "compiled"
    eager_parts = {d.part for d in description.decisions if d.reason.startswith("not lowered")}
    assert eager_parts == {"two_stream.spatial"}  # only the whole-window spatial stream is recomputed eagerly
    eager_modules = {d.part for d in description.decisions} - eager_parts  # inside compiled steps: attention only
    assert eager_modules == {"attention.channel_attention", "attention.pool", "attention.classifier"}
    logits, ready = rt.run(x)
    ends = [(k + 1) * HOP for k in range(72 // HOP) if ready[0, k]]
    assert ends[0] == WINDOW and len(ends) == 7
    with torch.no_grad():
        ref = torch.stack([model(x[:, :, e - WINDOW : e]) for e in ends], dim=1)
    torch.testing.assert_close(logits[:, ready[0]], ref, atol=2e-5, rtol=0)


def test_ensemble_checkpoint_names_are_subnet_prefixed() -> None:
    model = _build("skeleton_ensemble")
    names = list(model.state_dict())
    assert all(n.startswith("subnets.") for n in names)
    assert any(n.startswith("subnets.two_stream.spatial.") for n in names)
    copy = build_model("skeleton_ensemble", **dict(SMALL, window=WINDOW))
    copy.load_state_dict(model.state_dict())  # strict: the names are those of the subnets' ModuleDict
