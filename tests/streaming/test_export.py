"""The exported ONNX streaming step matches the torch step for many hops, at several batch sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from vidrec.streaming.export import export_streaming_onnx, onnx_session
from vidrec.streaming.runtime import StreamingClassifier


def test_onnx_step_matches_torch_for_many_hops(tiny_model: nn.Module, tmp_path: Path) -> None:
    window, hop = 40, 2
    path = export_streaming_onnx(tiny_model, window, hop, tmp_path / "step.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].name == "chunk" and graph.output[0].name == "logits"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnx_session(path)
    for batch in (1, 3):
        rt = StreamingClassifier(tiny_model, window, hop, capacity=batch, fold_bn=False)
        state = [s.numpy().copy() for s in rt.flat_state()]
        x = torch.randn(batch, 3, 60 * hop)
        worst = 0.0
        for k in range(60):
            chunk = x[:, :, k * hop : (k + 1) * hop]
            ref = rt.step(chunk)
            feeds = {"chunk": chunk.numpy()} | {f"state_{i}": s for i, s in enumerate(state)}
            outs = session.run(None, feeds)
            state = outs[1:]
            if ref.ready.all():
                worst = max(worst, float(np.abs(outs[0] - ref.logits.numpy()).max()))
        assert worst <= 1e-4
        np.testing.assert_allclose(state[0], rt.flat_state()[0].numpy(), atol=1e-4)


def test_a_recurrent_head_is_refused_not_exported_for_one_batch(tmp_path: Path) -> None:
    from vidrec.models import build_model

    model = build_model("ts_lstm", feature_dim=16, num_classes=3, hidden_sizes=(8,)).eval()
    with pytest.raises(ValueError, match="recurrent layer 'head.lstms.0'.*compiled or eager engine"):
        export_streaming_onnx(model, 24, 8, tmp_path / "ts_lstm.onnx", in_channels=16)
    assert not (tmp_path / "ts_lstm.onnx").exists()


def test_minirocket_exports_and_its_onnx_step_counts_the_same_thresholds(tmp_path: Path) -> None:
    """MiniRocket's eager step counts thresholds by binary search; its ONNX graph (no searchsorted) by comparison."""
    from vidrec.models import build_model

    model = build_model(
        "minirocket_har",
        in_channels=3,
        num_classes=3,
        window=40,
        num_features=168,
        pooling="per_dilation",
        level_combinations=6,
    ).eval()
    walks = (torch.randn(24, 3, 40).cumsum(2) * 720).round() / 720  # quantised, as sensor data: ties happen
    model.fit_closed_form(walks, torch.arange(24) % 3)
    window, hop = 40, 8
    path = export_streaming_onnx(model, window, hop, tmp_path / "minirocket.onnx")
    session = onnx_session(path)
    rt = StreamingClassifier(model, window, hop, capacity=2)
    state = [s.numpy().copy() for s in rt.flat_state()]
    x = (torch.randn(2, 3, 20 * hop).cumsum(2) * 720).round() / 720
    checked = 0
    for k in range(20):
        chunk = x[:, :, k * hop : (k + 1) * hop]
        ref = rt.step(chunk)
        outs = session.run(None, {"chunk": chunk.numpy()} | {f"state_{i}": s for i, s in enumerate(state)})
        state = outs[1:]
        if ref.ready.all():
            np.testing.assert_allclose(outs[0], ref.logits.numpy(), atol=1e-5, rtol=0)
            torch.testing.assert_close(
                ref.logits, model(x[:, :, (k + 1) * hop - window : (k + 1) * hop]), atol=1e-5, rtol=0
            )
            checked += 1
    assert checked >= 15
