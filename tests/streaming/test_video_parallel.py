"""Video classifiers joined by a fusion rule stream on the compiled video engine, each member compiled.

``ParallelClassifiers`` of video members (one clip) and ``NamedInputClassifiers`` of an RGB and a flow member (a
two-stream pair, the flow member reading ``2 L`` channels of stacked fields per step): streamed == offline for every
fusion rule, equal to the eager engine, over slot subsets, late slots and resets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from tests.streaming.test_video_engine import SIZE, _stream_and_compare, _tiny_p3d, _tiny_r2plus1d
from vidrec.models._base import FusionRule, ParallelClassifiers
from vidrec.models.multi_input import NamedInputClassifiers
from vidrec.models.p3d import P3D, P3DStage
from vidrec.streaming import to_streaming
from vidrec.streaming.engines.compiled import CompiledParallelEngine
from vidrec.streaming.engines.video import CompiledVideoEngine
from vidrec.streaming.multi import InputClock, MultiInputStreaming

_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


def _pair(rule: FusionRule) -> ParallelClassifiers:
    return ParallelClassifiers({"r2p": _tiny_r2plus1d(), "p3d": _tiny_p3d()}, rule=rule, weights=[0.4, 0.6]).eval()


@pytest.mark.parametrize("rule", list(FusionRule))
def test_parallel_video_classifiers_compile_every_member_and_stream_exactly(rule: FusionRule) -> None:
    model = _pair(rule)
    rt = to_streaming(model, model.receptive_field + 1, 1, frame_shape=(SIZE, SIZE))
    desc = rt.describe()
    assert (desc.engine, desc.ring_buffers, desc.decisions) == ("compiled", True, [])
    assert isinstance(rt.engine, CompiledParallelEngine)
    assert all(isinstance(e, CompiledVideoEngine) for e in rt.engine.members)
    assert _stream_and_compare(model, 1) < 1e-4  # slot subsets, a late slot, a reset, ring wrap-arounds


@pytest.mark.usefixtures("exact_cuda")
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=_NO_CUDA)])
def test_parallel_video_classifiers_equal_the_eager_engine(device: str) -> None:
    model = _pair(FusionRule.PRODUCT_PROBABILITIES)
    window = model.receptive_field + 2
    x = torch.randn(2, 3, window + 4, SIZE, SIZE)
    out = {}
    for backend in ("compiled", "eager"):
        rt = to_streaming(model, window, 2, capacity=2, frame_shape=(SIZE, SIZE), backend=backend, device=device)
        assert rt.describe().engine == backend
        logits, ready = rt.run(x)
        sub = rt.step(x[1:, :, :2], [1])  # one slot only
        out[backend] = (logits, ready, sub.logits)
    torch.testing.assert_close(out["compiled"][0], out["eager"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["compiled"][2], out["eager"][2], atol=1e-4, rtol=1e-4)
    assert (out["compiled"][1] == out["eager"][1]).all()


def _two_stream(rule: FusionRule, fields: int) -> NamedInputClassifiers:
    """An RGB r2plus1d member and a flow P3D member reading ``2 L`` channels (L stacked fields) per step."""
    torch.manual_seed(1)
    flow = randomize_batchnorm(
        P3D(stages=[P3DStage(1, 4, 1, (0,)), P3DStage(1, 8, 2, (0,))], in_channels=2 * fields, num_classes=5)
    )
    return NamedInputClassifiers({"rgb": _tiny_r2plus1d(), "flow": flow}, rule=rule, weights=[0.3, 0.7]).eval()


# every fusion rule is covered by the single-clip pair above; here one rule on each device
CASES = [(FusionRule.WEIGHTED_LOGITS, "cpu"), pytest.param(FusionRule.MEAN_PROBABILITIES, "cuda", marks=_NO_CUDA)]


@pytest.mark.usefixtures("exact_cuda")
@pytest.mark.parametrize(("rule", "device"), CASES)
def test_a_two_stream_pair_streams_both_members_compiled(rule: FusionRule, device: str) -> None:
    L = 2
    model = _two_stream(rule, L)
    w_rgb, w_flow = model.rgb.receptive_field + 2, model.flow.receptive_field + 1
    need = max(w_rgb, w_flow + 1)  # frames of a run before it reports (the flow window starts a frame later)
    ticks = 2 * need + 6
    frames = torch.randn(2, 3, ticks, SIZE, SIZE)
    stacks = torch.randn(2, 2 * L, ticks, SIZE, SIZE)  # stack k: L fields from frame k on (flow step k at frame k+1)
    results = {}
    for backend in ("compiled", "eager"):
        rt = MultiInputStreaming(
            model,
            windows={"rgb": w_rgb, "flow": w_flow},
            clocks={"rgb": InputClock(), "flow": InputClock(1, 1)},
            capacity=2,
            backend=backend,
            device=device,
            member_kwargs={"rgb": {"frame_shape": (SIZE, SIZE)}, "flow": {"frame_shape": (SIZE, SIZE)}},
        )
        for n, member in rt.members.items():
            desc = member.describe()
            assert (desc.engine, desc.decisions) == (backend, []), n
            assert isinstance(member.engine, CompiledVideoEngine) == (backend == "compiled")
        fused, reported = [], 0
        pos, origin = [0, 0], [0, 0]  # next frame of each slot's sequence; where its current run started
        for tick in range(ticks):
            if tick == need + 3:
                rt.reset([1])  # slot 1 restarts: it warms up again on both inputs
                origin[1] = pos[1]
            slots = [0] if tick % 3 == 2 else [0, 1]  # some steps of slot 0 alone
            flow_slots = [s for s in slots if pos[s] > origin[s]]  # field k needs frames k and k + 1 of the run
            if flow_slots:  # stack p - 1: the fields from frame p - 1 on (its clock: one tick after its first frame)
                rt.step({"flow": torch.stack([stacks[s, :, pos[s] - 1 : pos[s]] for s in flow_slots])}, flow_slots)
            res = rt.step({"rgb": torch.stack([frames[s, :, pos[s] : pos[s] + 1] for s in slots])}, slots)
            for i, s in enumerate(slots):
                pos[s] += 1
                end = pos[s]
                assert bool(res.ready[i]) == (end - origin[s] >= max(w_rgb, w_flow + 1))
                if res.ready[i]:
                    with torch.no_grad():
                        offline = model(
                            {
                                "rgb": frames[s : s + 1, :, end - w_rgb : end],
                                "flow": stacks[s : s + 1, :, end - 1 - w_flow : end - 1],
                            }
                        )
                    torch.testing.assert_close(res.logits[i : i + 1], offline, atol=1e-4, rtol=1e-4)
                    fused.append(res.logits[i])
                    reported += 1
        assert reported > 5
        results[backend] = torch.stack(fused)
    torch.testing.assert_close(results["compiled"], results["eager"], atol=1e-4, rtol=1e-4)


def test_members_not_a_classifier_run_eagerly_by_name() -> None:
    class _Flat(nn.Module):  # streamable but not a StreamableClassifier: the video engine cannot lower it
        receptive_field, stride = 1, 1

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x[:, :, -1].mean(dim=(2, 3)))

        def configure_stream(self, window: int, hop: int) -> None:
            pass

        def stream_state(self, x: torch.Tensor) -> list[torch.Tensor]:
            return []

        def stream_step(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
            return self.forward(x), state

    torch.manual_seed(0)
    model = ParallelClassifiers({"r2p": _tiny_r2plus1d(), "flat": _Flat()}).eval()
    rt = to_streaming(model, model.receptive_field + 1, 1, frame_shape=(SIZE, SIZE), in_channels=3)
    assert [(d.part, d.engine) for d in rt.describe().decisions] == [("flat", "eager")]
    assert "not a StreamableClassifier" in rt.describe().decisions[0].reason
    assert _stream_and_compare(model, 1) < 1e-4
    assert np.isfinite(rt.step(torch.randn(1, 3, 1, SIZE, SIZE)).logits.numpy()).all()
