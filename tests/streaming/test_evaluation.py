"""evaluate_streaming on a tiny synthetic data set: both sides agree exactly; JSON and PNG are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidrec.streaming.evaluation import EvalRecording, evaluate_streaming, write_report


def _recordings() -> list[EvalRecording]:
    rng = np.random.default_rng(0)
    recs = []
    for i, length in enumerate([150, 118]):
        labels = np.repeat(np.arange(3), length // 3 + 1)[:length].copy()
        labels[:5] = -1  # unlabelled start
        samples = rng.standard_normal((3, length)).astype(np.float32) + labels.clip(0)[None] * 1.5
        recs.append(EvalRecording(f"rec{i}", samples, labels))
    return recs


def test_evaluate_streaming_equals_offline_and_writes_outputs(tiny_model: nn.Module, tmp_path: Path) -> None:
    result = evaluate_streaming(tiny_model, _recordings(), 40, 4, ["a", "b", "c"], sampling_rate=50.0, timing_repeats=5)
    rep = result.report
    assert rep["emitted_windows"] == len(range(40, 151, 4)) + len(range(40, 119, 4))
    assert rep["offline"]["accuracy"] == rep["streaming"]["accuracy"]
    assert rep["offline"]["macro_f1"] == rep["streaming"]["macro_f1"]
    assert rep["argmax_agreement"] == 1.0 and rep["accuracy_gap"] == 0.0
    assert rep["max_abs_logit_delta"] <= 1e-4
    assert 0 < rep["flops_per_hop_streaming"] < rep["flops_per_window_offline"]
    lat = rep["streaming"]["decision_latency"]
    assert lat["decided"] + lat["missed"] == 6  # per recording: end of the unlabelled prefix + two class changes
    assert lat == rep["offline"]["decision_latency"]
    js, png = write_report(result, tmp_path / "out")
    saved = json.loads(js.read_text())
    assert saved["argmax_agreement"] == 1.0 and saved["timeline_recording"] == "rec0"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bfloat16_streaming_reports_its_deviation(tiny_model: nn.Module) -> None:
    result = evaluate_streaming(
        tiny_model, _recordings(), 40, 4, ["a", "b", "c"], timing_repeats=3, dtype=torch.bfloat16
    )
    rep = result.report
    assert rep["streaming_dtype"] == "bfloat16"
    assert 0.0 < rep["max_abs_logit_delta"] < 0.25  # rounded, not exact, and not broken
    assert rep["argmax_agreement"] >= 0.9


def test_edge_filled_start_is_evaluated_from_the_first_output_on_both_sides(tiny_model: nn.Module) -> None:
    recs = _recordings()
    result = evaluate_streaming(tiny_model, recs, 40, 4, ["a", "b", "c"], timing_repeats=3, first_output=16)
    rep = result.report
    assert rep["first_output"] == 16
    assert rep["emitted_windows"] == len(range(16, 151, 4)) + len(range(16, 119, 4))
    assert rep["argmax_agreement"] == 1.0 and rep["max_abs_logit_delta"] <= 1e-4
    assert result.ends["rec0"][0] == 16
    # offline side: the window ending at 16 is 24 copies of sample 0 followed by samples [0, 16)
    x = torch.from_numpy(recs[0].samples).float()
    window = torch.cat([x[:, :1].expand(-1, 24), x[:, :16]], dim=1)[None]
    with torch.no_grad():
        assert int(result.offline_pred["rec0"][0]) == int(tiny_model(window).argmax())


def _scored_every(recs: list[EvalRecording], first: int, eval_hop: int) -> list[EvalRecording]:
    """The recordings with the windows a data module with left context scores: ending at first + k eval_hop."""
    out = []
    for r in recs:
        ends = np.arange(first, r.samples.shape[1] + 1, eval_hop)
        out.append(EvalRecording(r.id, r.samples, r.labels, ends, r.labels[ends - 1]))
    return out


def test_windows_scored_off_the_hop_grid_are_streamed_from_an_earlier_start(tiny_model: nn.Module) -> None:
    # window 40 = 8 samples of edge-filled context + 32; `vidrec test` scores windows ending at 32, 44, 56, ...
    recs = _scored_every(_recordings(), 32, 12)
    reports = {}
    for hop in (4, 12):
        result = evaluate_streaming(tiny_model, recs, 40, hop, ["a", "b", "c"], timing_repeats=2, first_output=32)
        rep = reports[hop] = result.report
        assert rep["windows"] == sum(len(r.window_ends) for r in recs if r.window_ends is not None)
        assert rep["argmax_agreement"] == 1.0 and rep["max_abs_logit_delta"] <= 1e-4
        scored_ends = result.ends["rec0"][result.scored["rec0"]]
        assert scored_ends.tolist() == list(range(32, 151, 12))
    # hop 12: each stream starts 4 samples early (36 = 32 + 4 is on its grid), edge fill like the context
    assert reports[12]["stream_offsets"] == {"rec0": 4, "rec1": 4} and reports[4]["stream_offsets"] == {}
    for side in ("offline", "streaming"):  # the same scored windows (latency differs: hop 4 emits more of them)
        for metric in ("accuracy", "macro_f1"):
            assert reports[12][side][metric] == reports[4][side][metric]


def test_a_hop_that_cannot_emit_the_scored_windows_names_the_hops_that_can(tiny_model: nn.Module) -> None:
    recs = _scored_every(_recordings(), 32, 12)
    stride = int(tiny_model.stride)
    valid = ", ".join(str(h) for h in range(stride, 13, stride) if 12 % h == 0)
    expected = rf"they end every 12 samples .* divides 12 .* stride {stride}: {valid} \(--hop\)"
    with pytest.raises(ValueError, match=expected):
        evaluate_streaming(tiny_model, recs, 40, 8, ["a", "b", "c"], timing_repeats=2, first_output=32)
