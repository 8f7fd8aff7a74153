"""The compiled engine on models beyond plain conv stacks: stateless steps, per-channel affines, TS-LSTM, body parts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from vidrec.layers.temporal import TemporalSequential
from vidrec.models._base import StreamableClassifier
from vidrec.models.skeleton import BodyPartNet, ResidualStage, TemporalAttentionPool
from vidrec.models.temporal_inception import InceptionPadding, InceptionStageSettings, TemporalInception
from vidrec.models.ts_lstm import mean_pool_linear, ts_lstm
from vidrec.streaming.runtime import StreamingClassifier

ATOL = 1e-4


class _PointwiseAttention(StreamableClassifier):
    """Time-pointwise features (no state at all) under an attention pool the compiled engine leaves eager."""

    def __init__(self) -> None:
        super().__init__()
        self.features = TemporalSequential(nn.Conv1d(3, 8, 1), nn.ReLU())  # a 1-step nn.Conv1d holds no state
        self.pool = TemporalAttentionPool(8, hidden=4)
        self.classifier = nn.Linear(8, 5)
        self._init_geometry()


def _worst_streamed_vs_offline(
    model: nn.Module, channels: int, window: int, hop: int
) -> tuple[float, StreamingClassifier]:
    """Two streams hop by hop through the compiled engine; the largest difference to the offline windows."""
    torch.manual_seed(3)
    hops = window // hop + 4
    x = torch.randn(2, channels, hops * hop)
    rt = StreamingClassifier(model, window, hop, capacity=2, in_channels=channels, backend="compiled")
    logits, ready = rt.run(x)
    worst = 0.0
    with torch.no_grad():
        for k in range(hops):
            if ready[0, k]:
                end = (k + 1) * hop
                offline = model.eval()(x[:, :, end - window : end])
                worst = max(worst, float((logits[:, k] - offline).abs().max()))
    assert ready.any()
    return worst, rt


def test_stateless_compiled_step_matches_offline() -> None:
    model = _PointwiseAttention().eval()
    worst, rt = _worst_streamed_vs_offline(model, 3, window=6, hop=2)
    assert worst < ATOL
    compiled = rt.engine.compiled  # type: ignore[attr-defined]
    assert rt.describe().engine == "compiled" and compiled.time_first == [] and compiled.traced
    assert compiled.source.rstrip().endswith(", ()")  # no state in, none out
    assert [d.part for d in rt.describe().decisions] == ["pool", "classifier"]  # the eager head, named


@pytest.mark.parametrize("hop", [4, 8])
def test_ts_lstm_runs_compiled_and_matches_offline(hop: int) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(ts_lstm(feature_dim=12, num_classes=4, hidden_sizes=(8, 6), dropout=0.0)).eval()
    worst, rt = _worst_streamed_vs_offline(model, 12, window=12, hop=hop)
    assert worst < ATOL
    described = rt.describe()
    assert described.engine == "compiled" and described.decisions == []
    assert rt.engine.compiled.traced  # type: ignore[attr-defined]


def test_unfolded_batchnorm_lowers_as_affine() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(mean_pool_linear(feature_dim=6, num_classes=3)).eval()
    worst, rt = _worst_streamed_vs_offline(model, 6, window=5, hop=1)
    assert worst < ATOL
    described = rt.describe()
    assert described.decisions == [] and described.ring_buffers  # was an eager call: no rings, no trace
    assert "addcmul" in rt.engine.compiled.source  # type: ignore[attr-defined]


def test_body_part_net_lowers_fully_and_matches_offline() -> None:
    torch.manual_seed(0)
    parts = {"left": [0, 1], "right": [2, 3], "all": [0, 1, 2, 3]}
    net = BodyPartNet(
        in_channels=2 * 4 * 3,  # 2 bodies x 4 joints x 3 coordinates
        num_classes=5,
        stages=[ResidualStage(8), ResidualStage(12, 2)],
        parts=parts,
        num_joints=4,
        kernel_size=3,
        stem_width=8,
    )
    model = randomize_batchnorm(net).eval()
    window = model.receptive_field + 2 * model.stride
    worst, rt = _worst_streamed_vs_offline(model, 24, window=window, hop=model.stride)
    assert worst < ATOL
    described = rt.describe()
    assert described.decisions == [] and described.ring_buffers
    source = rt.engine.compiled.source  # type: ignore[attr-defined]
    # each part's channels are gathered, not multiplied by a one-hot matrix; the batch norm after each part's last
    # residual addition is a per-channel affine, not a (C, C) matmul
    assert source.count("index_select") == len(parts) and source.count(".mul_(") >= len(parts)


def test_body_part_selection_on_the_numpy_engine() -> None:
    torch.manual_seed(0)
    net = BodyPartNet(
        in_channels=4 * 3, num_classes=3, stages=[ResidualStage(6)], parts={"a": [0, 2], "b": [1, 3]}, num_joints=4,
        kernel_size=3, stem_width=6,
    )  # fmt: skip
    model = randomize_batchnorm(net).eval()
    torch.manual_seed(3)
    window = model.receptive_field + 2
    x = torch.randn(1, 12, window + 4)
    rt = StreamingClassifier(model, window, 1, in_channels=12, backend="numpy")
    assert rt.describe().engine == "numpy"
    logits, ready = rt.run(x)
    with torch.no_grad():
        offline = torch.stack([model(x[:, :, k + 1 - window : k + 1])[0] for k in range(window - 1, x.shape[2])])
    torch.testing.assert_close(logits[0, window - 1 :], offline, atol=ATOL, rtol=0)


def test_temporal_inception_rows_lower_as_a_batch() -> None:
    """The per-row network on the rows as a batch inside the compiled step; slot subsets keep per-stream state."""
    torch.manual_seed(1)
    net = TemporalInception(
        feature_dim=5, num_classes=3, stages=[InceptionStageSettings((3, 5), 2)], reductions=[2, 1], hidden=8,
        padding=InceptionPadding.VALID,
    )  # fmt: skip
    model = randomize_batchnorm(net).eval()
    window, hop = model.receptive_field + 2 * model.stride, model.stride
    worst, rt = _worst_streamed_vs_offline(model, 5, window=window, hop=hop)
    assert worst < ATOL
    described = rt.describe()
    assert described.decisions == [] and described.ring_buffers and rt.engine.compiled.traced  # type: ignore[attr-defined]
    # stream 1 alone for a few hops (the concatenating step on one slot's state), then both again
    torch.manual_seed(4)
    rt.reset()
    x = torch.randn(2, 5, window + 3 * hop)
    seen = [0, 0]
    with torch.no_grad():
        for k in range(x.shape[2] // hop):
            slots = [1] if k < 2 else None
            ids = [1] if slots else [0, 1]
            chunk = torch.stack([x[i, :, seen[i] : seen[i] + hop] for i in ids])
            result = rt.step(chunk, slots)
            for row, i in enumerate(ids):
                seen[i] += hop
                if seen[i] >= window:
                    offline = model(x[i : i + 1, :, seen[i] - window : seen[i]])[0]
                    torch.testing.assert_close(result.logits[row], offline, atol=ATOL, rtol=0)
