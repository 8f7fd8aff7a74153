"""Named multi-input streaming: each input at its own rate and hop; fused scores equal the offline fused scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidrec.models import build_model
from vidrec.models._base import FusionRule
from vidrec.models.multi_input import NamedInputClassifiers
from vidrec.models.two_stream import StreamResNet, WindowScores, two_stream_window
from vidrec.streaming.multi import InputClock, MultiInputStreaming
from vidrec.streaming.runtime import to_streaming


def _tiny_pair(rule: FusionRule) -> NamedInputClassifiers:
    torch.manual_seed(0)
    a = build_model("resnet1d_tiny", in_channels=3, num_classes=5)
    b = build_model("resnet1d_tiny", in_channels=2, num_classes=5)
    return NamedInputClassifiers({"a": a, "b": b}, rule=rule, weights=[0.3, 0.7]).eval()


@pytest.mark.parametrize("rule", list(FusionRule))
def test_inputs_at_different_rates_fuse_where_windows_align(rule: FusionRule) -> None:
    """Input a: a sample every tick, hop 2; input b: a sample every other tick (from tick 1), hop 1."""
    model = _tiny_pair(rule)
    wa, wb = 40, 32
    rt = MultiInputStreaming(
        model,
        windows={"a": wa, "b": wb},
        hops={"a": 2, "b": 1},
        clocks={"a": InputClock(1, 0), "b": InputClock(2, 1)},
        backend="compiled",
    )
    ticks = 100
    xa, xb = torch.randn(1, 3, ticks), torch.randn(1, 2, ticks // 2)
    reported = 0
    for t in range(1, ticks, 2):  # ticks t-1, t: two samples of a, one of b (its sample at tick t)
        res = rt.step({"a": xa[:, :, t - 1 : t + 1], "b": xb[:, :, t // 2 : t // 2 + 1]})
        na, nb = t + 1, t // 2 + 1
        assert bool(res.ready[0]) == (na >= wa and nb >= wb)
        if res.ready[0]:
            assert res.ticks[0] == t
            with torch.no_grad():
                offline = model({"a": xa[:, :, na - wa : na], "b": xb[:, :, nb - wb : nb]})
            torch.testing.assert_close(res.logits, offline, atol=1e-4, rtol=1e-4)
            reported += 1
    assert reported == len([t for t in range(1, ticks, 2) if t + 1 >= wa and t // 2 + 1 >= wb]) > 0
    # a step of one input only: b lags a by one of its steps, so nothing is fused
    res = rt.step({"a": xa[:, :, :2]})
    assert not res.ready[0] and np.isnan(res.ticks[0])
    text = str(rt.describe())
    assert "input 'a': window 40, hop 2" in text and "input 'b'" in text and rule.value in text


def test_errors_name_the_inputs() -> None:
    model = _tiny_pair(FusionRule.MEAN_PROBABILITIES)
    with pytest.raises(ValueError, match=r"windows must name the model's inputs \['a', 'b'\]; unknown \[\], missing"):
        MultiInputStreaming(model, windows={"a": 40})
    rt = MultiInputStreaming(model, windows={"a": 40, "b": 40})
    with pytest.raises(KeyError, match="unknown inputs"):
        rt.step({"c": torch.zeros(1, 3, 1)})
    with pytest.raises(TypeError, match="MultiInputStreaming"):
        to_streaming(model, 40, 1)


def test_two_stream_window_streams_frame_by_frame_exactly() -> None:
    torch.manual_seed(1)
    L, W, size = 3, 6, 32
    rgb = StreamResNet(num_classes=4, in_channels=3, dropout=0.0)
    flow = StreamResNet(num_classes=4, in_channels=2 * L, dropout=0.0)
    model = two_stream_window(rgb, flow, L).eval()
    frames = torch.randn(1, 3, 10, size, size)
    fields = torch.randn(1, 2, 9, size, size)  # field k: frames k -> k + 1
    rt = MultiInputStreaming(
        model,
        windows={"rgb": W, "flow": W - 1},
        clocks={"rgb": InputClock(), "flow": InputClock(1, 1)},
        member_kwargs={"rgb": {"frame_shape": (size, size)}, "flow": {"frame_shape": (size, size)}},
    )
    for t in range(10):
        step = {"rgb": frames[:, :, t : t + 1]}
        if t:
            step["flow"] = fields[:, :, t - 1 : t]
        res = rt.step(step)
        assert bool(res.ready[0]) == (t >= W - 1)
        if res.ready[0]:
            with torch.no_grad():
                offline = model({"rgb": frames[:, :, t - W + 1 : t + 1], "flow": fields[:, :, t - W + 1 : t]})
                p_rgb = rgb.eval()(frames[0, :, t - W + 1 : t + 1].transpose(0, 1)).softmax(1).mean(0)
            torch.testing.assert_close(res.logits, offline, atol=1e-5, rtol=1e-4)
            # the RGB member's window score is the mean softmax of its frames, as the papers' test averages them
            torch.testing.assert_close(res.members["rgb"][0].exp(), p_rgb, atol=1e-5, rtol=1e-4)
    assert isinstance(model.rgb, WindowScores) and model.flow.receptive_field == L
