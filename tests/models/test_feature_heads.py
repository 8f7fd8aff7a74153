"""TS-LSTM, Temporal-Inception and the paper's baselines: shapes, the authors' layout, errors, exact streaming."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidrec.models import build_model
from vidrec.models.temporal_inception import InceptionPadding, InceptionStageSettings, TemporalInception
from vidrec.models.ts_lstm import TSLSTM
from vidrec.streaming import to_streaming
from vidrec.streaming.runtime import StepBackend

D, K = 16, 5


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch norm statistics, some negative scales (the streaming min path), eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 2 - 1)  # signs of both kinds
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "name,kwargs,frames",
    [
        ("ts_lstm", {}, 25),
        ("frame_lstm", {}, 25),
        ("mean_pool_linear", {}, 25),
        ("temporal_inception", {}, 25),
        ("temporal_inception", {"padding": "valid"}, 114),
    ],
)
def test_shapes_and_gradients(name: str, kwargs: dict[str, object], frames: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, feature_dim=D, num_classes=K, **kwargs)
    out = model(torch.randn(3, D, frames))
    assert out.shape == (3, K)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ts_lstm_uses_three_segments_of_eight_of_25_frames() -> None:
    torch.manual_seed(0)
    model = _randomize(build_model("ts_lstm", feature_dim=D, num_classes=K))
    x = torch.randn(2, D, 25)
    y = x.clone()
    y[:, :, 24] += 100.0  # the 25th frame is not in any segment (floor(25 / 3) = 8 frames each)
    z = x.clone()
    z[:, :, 3] = x[:, :, 5]  # one frame of a segment changed: the segment's max changes
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(y))
        assert not torch.allclose(model(x), model(z))
    assert model.head.summaries(x).shape == (2, 3, D)
    assert len(model.head.norms) == 3  # one batch norm per segment, as the authors' pBN table
    assert model.head.lstms[0].hidden_size == 512


def test_temporal_inception_same_form_follows_the_authors_shapes() -> None:
    model = TemporalInception(feature_dim=D, num_classes=K).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, D, 25))
    assert feats.shape == (2, D, 1)  # 25 -> 12 -> 6 -> 3 -> 1 positions, one map of D rows
    stage_channels = [
        sum(b[0].out_channels for b in m.branches) for m in model.features if type(m).__name__ == "_SameConcat"
    ]
    assert stage_channels == [2, 4, 8, 16]
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [1024, K]
    with pytest.raises(ValueError, match="cannot stream exactly"):
        model.configure_stream(25, 1)


def test_bad_inputs_are_named() -> None:
    ts = build_model("ts_lstm", feature_dim=D, num_classes=K)
    with pytest.raises(ValueError, match="shorter than 3 segments"):
        ts(torch.randn(2, D, 2))
    with pytest.raises(ValueError, match=r"expected per-frame features \(B, D=16, T\)"):
        ts(torch.randn(2, D + 1, 25))
    fixed = TSLSTM(feature_dim=D, num_classes=K, segment_frames=8)
    with pytest.raises(ValueError, match="at least 24 frames"):
        fixed(torch.randn(2, D, 20))
    valid = build_model("temporal_inception", feature_dim=D, num_classes=K, padding="valid")
    with pytest.raises(ValueError, match="fewer than its receptive field"):
        valid(torch.randn(1, D, 100))
    with pytest.raises(ValueError, match="not a multiple of the 3 segments"):
        ts.configure_stream(25, 8)
    with pytest.raises(ValueError, match="not a multiple of the model's total temporal stride 8"):
        ts.configure_stream(24, 4)


def _streamed_vs_offline(model: nn.Module, window: int, hop: int, steps: int, **kwargs: object) -> float:
    """Largest |streamed - offline| logit over every reported window of 2 streams."""
    runtime = to_streaming(model, window, hop, capacity=2, in_channels=D, **kwargs)
    x = torch.randn(2, D, window + steps * hop)
    logits, ready = runtime.run(x)
    worst, checked = 0.0, 0
    with torch.no_grad():
        for k in range(logits.shape[1]):
            end = (k + 1) * hop
            assert bool(ready[0, k]) == (end >= window)
            if end >= window:
                worst = max(worst, float((logits[:, k] - model(x[:, :, end - window : end])).abs().max()))
                checked += 1
    assert checked >= steps
    return worst


@pytest.mark.parametrize("hop", [8, 16])
def test_ts_lstm_streams_exactly(hop: int) -> None:
    torch.manual_seed(0)
    model = _randomize(build_model("ts_lstm", feature_dim=D, num_classes=K, hidden_sizes=[32, 24]))
    assert _streamed_vs_offline(model, 24, hop, steps=6) < 1e-5


def test_temporal_inception_valid_streams_exactly() -> None:
    torch.manual_seed(0)
    model = _randomize(build_model("temporal_inception", feature_dim=D, num_classes=K, padding="valid"))
    assert (model.receptive_field, model.stride) == (114, 24)
    for window, backend in ((114, StepBackend.TORCH), (138, StepBackend.TORCH_EAGER)):
        assert _streamed_vs_offline(model, window, 24, steps=3, backend=backend) < 1e-4
    assert _streamed_vs_offline(model, 114, 24, steps=3, fold_bn=False) < 1e-4  # the twin folds batch norm itself


def test_valid_temporal_inception_is_built_of_vidrec_layers_per_feature_row() -> None:
    """TemporalConcat of conv -> BN -> ReLU -> TemporalMaxPool1d branches per row; streamed on the rows as a batch,
    its state per layer viewed (streams, D c, ...); the compiled engine lowers all of it."""
    from vidrec.layers import TemporalConcat, TemporalMaxPool1d
    from vidrec.models.temporal_inception import RowwiseTemporalNet

    model = _randomize(build_model("temporal_inception", feature_dim=D, num_classes=K, padding="valid"))
    assert isinstance(model.features, RowwiseTemporalNet)
    stages = [m for m in model.features if isinstance(m, TemporalConcat)]
    assert len(stages) == 4 and all(isinstance(b[-1], TemporalMaxPool1d) for m in stages for b in m.branches)
    rt = to_streaming(model, 114, 24, capacity=3, in_channels=D)
    d = rt.describe()
    assert d.engine == "compiled"
    assert d.decisions == []  # the rows lowered as a batch (rows_as_batch), the head's batch norm as an affine
    first_stage = rt.state()[0][1]  # features state, layer 1 (stage 1): one state per branch
    assert tuple(first_stage[1][0][0].shape) == (
        3,
        D * 1,
        6,
    )  # branch k=7, its conv keeps 6 steps of D rows x 1 channel


def test_valid_temporal_inception_loads_the_earlier_image_layout() -> None:
    """Checkpoints of the earlier valid form (Conv2d k x 1 kernels over a (B, 1, T, D) image) load strictly."""
    torch.manual_seed(0)
    model = _randomize(build_model("temporal_inception", feature_dim=D, num_classes=K, padding="valid"))
    earlier = {
        k: v[..., None] if k.startswith("features.") and k.endswith(".weight") and v.dim() == 3 else v
        for k, v in model.state_dict().items()
    }
    assert earlier["features.layers.1.branches.1.layers.0.op.weight"].shape == (1, 1, 7, 1)
    fresh = build_model("temporal_inception", feature_dim=D, num_classes=K, padding="valid").eval()
    fresh.load_state_dict(earlier)
    x = torch.randn(2, D, 120)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_ts_lstm_registers_as_exactly_streaming() -> None:
    from vidrec.models import Modality, StreamMode, list_models, model_info

    info = model_info("ts_lstm")
    assert (info.streams, info.modality) == (StreamMode.EXACT, Modality.FEATURES)
    assert set(list_models(streams=StreamMode.EXACT, modality=Modality.FEATURES)) == {"ts_lstm", "mean_pool_linear"}
    model = _randomize(build_model("ts_lstm", feature_dim=D, num_classes=K, hidden_sizes=[12]))
    d = to_streaming(model, 24, 8, in_channels=D).describe()  # the whole model lowered (its registered lowering)
    assert d.engine == "compiled" and d.decisions == []


def test_small_temporal_inception_streams_at_several_hops() -> None:
    torch.manual_seed(1)
    stages = [InceptionStageSettings((3, 5), 2), InceptionStageSettings((3, 5), 2)]
    model = _randomize(
        TemporalInception(
            feature_dim=D, num_classes=K, stages=stages, reductions=[2, 1], hidden=32, padding=InceptionPadding.VALID
        )
    )
    assert (model.receptive_field, model.stride) == (16, 4)
    for hop in (4, 8):
        assert _streamed_vs_offline(model, 20, hop, steps=3) < 1e-4


def test_mean_pool_streams_through_the_default_runtime() -> None:
    torch.manual_seed(0)
    model = _randomize(build_model("mean_pool_linear", feature_dim=D, num_classes=K))
    assert to_streaming(model, 25, 1, in_channels=D).compiled  # the compiled 1D step (no lowered conv before the pool)
    assert _streamed_vs_offline(model, 25, 1, steps=10) < 1e-5
