"""TemporalConcat and TemporalMaxPool1d: offline semantics, exact streaming on every engine, fully lowered."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from vidrec.layers import TemporalAvgPoolHead, TemporalConcat, TemporalMaxPool1d, TemporalSequential, temporal_conv1d
from vidrec.models import StreamableClassifier
from vidrec.streaming import to_streaming


class _InceptionLike(StreamableClassifier):
    """conv -> concat(conv k3, conv k5, max pool 5) -> conv -> max pool (stride s) -> pool -> linear."""

    def __init__(self, pool_stride: int = 1) -> None:
        super().__init__()
        self.features = TemporalSequential(
            temporal_conv1d(3, 8, 3, bias=True),
            nn.ReLU(),
            TemporalConcat(
                temporal_conv1d(8, 4, 3, bias=True),
                temporal_conv1d(8, 4, 5, bias=True),
                TemporalMaxPool1d(5, 1),
            ),
            temporal_conv1d(16, 6, 1, bias=True),
            nn.ReLU(),
            TemporalMaxPool1d(2 * pool_stride, pool_stride),
        )
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Linear(6, 3)
        self._init_geometry()


def test_offline_semantics() -> None:
    x = torch.arange(7.0).reshape(1, 1, 7)
    assert TemporalMaxPool1d(2)(x).tolist() == [[[2.0, 4.0, 6.0]]]  # right-aligned: the first step is dropped
    assert TemporalMaxPool1d(3, 1)(-x).tolist() == [[[0.0, -1.0, -2.0, -3.0, -4.0]]]
    cat = TemporalConcat(TemporalMaxPool1d(3, 1), nn.Identity())
    y = cat(x)
    assert y.shape == (1, 2, 5) and y[0, 1].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # identity cropped on the left
    assert (cat.receptive_field, cat.stride) == (3, 1)
    with pytest.raises(ValueError, match="different strides"):
        TemporalConcat(TemporalMaxPool1d(2), nn.Identity())


@pytest.mark.parametrize("engine", ["compiled", "eager", "numpy", "onnxruntime"])
@pytest.mark.parametrize("pool_stride", [1, 2])
def test_streams_exactly_on_every_engine(engine: str, pool_stride: int) -> None:
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _InceptionLike(pool_stride).eval()
    window, hop = model.receptive_field + 4 * pool_stride, pool_stride
    x = torch.randn(2, 3, window + 6 * hop)
    falls_back = engine == "numpy" and pool_stride > 1  # numpy lowers stride 1 only
    with pytest.warns(UserWarning, match="numpy backend unavailable") if falls_back else contextlib.nullcontext():
        rt = to_streaming(model, window, hop, capacity=2, backend=engine)
    desc = rt.describe()
    assert desc.engine == ("compiled" if falls_back else engine)
    if desc.engine in ("compiled", "numpy"):
        assert [d for d in desc.decisions if d.part] == []  # every module lowered, nothing run eagerly
    logits, ready = rt.run(x)
    with torch.no_grad():
        for k in range(logits.shape[1]):
            end = (k + 1) * hop
            if ready[0, k]:
                torch.testing.assert_close(logits[:, k], model(x[:, :, end - window : end]), atol=1e-4, rtol=0)
    assert ready[0].sum() == 7
