"""Tests of the ring-buffer streaming step (vidrec.streaming.rings) against the concatenating compiled step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from tests.streaming.test_fastpath import _MobileNet1d
from vidrec.layers.stream_state import flatten_state
from vidrec.streaming.fastpath import compile_stream_step
from vidrec.streaming.optimize import fold_batchnorm, fold_linear_head
from vidrec.streaming.rings import RingStep, default_period
from vidrec.streaming.runtime import StreamingClassifier


def _prepared(model: nn.Module, window: int, hop: int) -> nn.Module:
    folded = fold_batchnorm(model)
    fold_linear_head(folded)
    folded.configure_stream(window, hop)  # type: ignore[operator]
    return folded


@pytest.mark.parametrize(
    ("hop", "period", "trace"),
    [(1, None, True), (1, 3, False), (1, 1, False), (2, 2, True), (4, None, False)],
    ids=["hop1-default", "hop1-p3", "hop1-p1-overlapping-wrap", "hop2-p2", "hop4-default"],
)
def test_ring_step_equals_concatenating_step_across_wraps(
    tiny_model: nn.Module, hop: int, period: int | None, trace: bool
) -> None:
    model = _prepared(tiny_model, 40, hop)
    chunk = torch.zeros(1, 3, hop)
    compiled = compile_stream_step(model, chunk)
    rings = RingStep(model, compiled, chunk, period, trace=trace)
    assert sum(n > 0 for _, n in rings.geometry) >= 5  # every conv with history and the pool live in rings
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        zero = compiled.to_compiled(flatten_state(model.stream_state(chunk)))
        state = [torch.randn(t.shape, generator=gen) for t in zero]
        state = [t.expand(t.shape[0], 4, *t.shape[2:]).clone() if t.dim() == 3 else t for t in state]  # 4 slots
        rings.load([t.clone() for t in state])
        for _ in range(2 * rings.period + 3):  # several wrap-arounds
            x = torch.randn(4, 3, hop, generator=gen)
            expected, state = compiled(x, state)
            got = rings(x)
            assert torch.equal(got, expected)  # the same matmuls on the same rows
            for a, b in zip(state, rings.history()):
                assert torch.equal(a, b)


def test_strided_model_in_rings_matches_offline() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(_MobileNet1d())
    hop = 2
    window = model.receptive_field + 4 * hop
    rt = StreamingClassifier(model, window, hop, capacity=2)
    assert rt.describe().ring_buffers
    x = torch.randn(2, 3, 3 * window)
    logits, ready = rt.run(x)
    with torch.no_grad():
        for k in range(x.shape[2] // hop):
            end = (k + 1) * hop
            if ready[0, k]:
                torch.testing.assert_close(logits[:, k], model(x[:, :, end - window : end]), atol=1e-4, rtol=0)
    assert bool(ready[:, -1].all())


def test_runtime_mixing_full_and_subset_steps_matches_runtime_without_rings(tiny_model: nn.Module) -> None:
    window, hop, slots = 40, 1, 5
    with_rings = StreamingClassifier(tiny_model, window, hop, capacity=slots)
    plain = StreamingClassifier(tiny_model, window, hop, capacity=slots, ring_buffers=False)
    assert with_rings.describe().ring_buffers and not plain.describe().ring_buffers
    rng = np.random.default_rng(0)
    for step in range(70):  # full steps through several wrap-arounds, subsets, a reset and a grow in between
        if step == 30:
            with_rings.reset([1, 3])
            plain.reset([1, 3])
        if step == 45:
            with_rings.grow(7)
            plain.grow(7)
        n = with_rings.capacity
        subset = None if step % 4 else np.sort(rng.choice(n, size=int(rng.integers(1, n)), replace=False))
        rows = n if subset is None else len(subset)
        x = torch.from_numpy(rng.standard_normal((rows, 3, hop)).astype(np.float32))
        a, b = with_rings.step(x, subset), plain.step(x, subset)
        assert torch.equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.ready, b.ready)
    for a_state, b_state in zip(with_rings.flat_state(), plain.flat_state()):
        assert torch.equal(a_state, b_state)


def test_default_period_bounds() -> None:
    assert default_period(1) == 8 and default_period(4) == 4 and default_period(16) == 2 and default_period(64) == 2
