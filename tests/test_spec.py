"""The deployment spec: plain-type storage (weights_only loads), one normalisation and one edge fill for all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidrec.spec import ChannelNormalization, ContextPadding, DeploymentSpec, Modality, SplitSpec, edge_fill


def _spec() -> DeploymentSpec:
    return DeploymentSpec(
        modality=Modality.TIMESERIES,
        window=128,
        hop=64,
        eval_hop=32,
        rate=50.0,
        channels=["ax", "ay", "az"],
        normalization=ChannelNormalization(np.array([0.1, -0.2, 9.8]), np.array([1.5, 2.0, 0.5])),
        class_names=["walk", "sit"],
        context=64,
        context_padding=ContextPadding.EDGE,
        label_policy="majority",
        split=SplitSpec(mode="kfold", fold=2, num_folds=5, seed=3, train_subjects=[1, 2], test_subjects=[7, 9]),
        data_path="data/hapt.h5",
    )


def test_spec_round_trips_through_a_weights_only_load(tmp_path: Path) -> None:
    spec = _spec()
    torch.save({"vidrec": {"spec": spec.to_dict()}}, tmp_path / "x.ckpt")
    loaded = torch.load(tmp_path / "x.ckpt", weights_only=True)["vidrec"]["spec"]
    back = DeploymentSpec.from_dict(loaded)
    assert back.to_dict() == spec.to_dict()
    assert back.split == spec.split and back.context_padding is ContextPadding.EDGE
    assert (back.input_length, back.first_output, back.input_shape) == (192, 128, (3, 192))


def test_a_spec_missing_a_key_names_it() -> None:
    d = _spec().to_dict()
    del d["eval_hop"]
    with pytest.raises(ValueError, match="run.ckpt: spec lacks 'eval_hop'"):
        DeploymentSpec.from_dict(d, "run.ckpt")
    with pytest.raises(ValueError, match="normalisation statistics for 3"):
        DeploymentSpec(**{**_spec().__dict__, "channels": ["a", "b"]})


def test_normalisation_is_the_same_for_arrays_tensors_and_layouts() -> None:
    norm = _spec().normalization
    x = np.random.default_rng(0).normal(size=(4, 3, 10)).astype(np.float32)  # (B, C, T)
    ref = ((x - norm.mean[:, None]) / norm.std[:, None]).astype(np.float32)
    out = norm.apply(x)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert np.array_equal(norm.apply(torch.from_numpy(x)).numpy(), out)  # tensors: bit for bit
    in_place = x.copy()
    norm.apply(in_place, channel_axis=1, out=in_place)
    assert np.array_equal(in_place, out)
    video = np.moveaxis(x, 1, 0)[:, :, :, None, None]  # (C, B, T, 1, 1): channels first of a clip
    assert np.array_equal(norm.apply(video, channel_axis=0)[:, :, :, 0, 0], np.moveaxis(out, 1, 0))
    with pytest.raises(ValueError, match="input has 4 channels"):
        norm.apply(np.zeros((4, 10)))


def test_edge_fill_repeats_the_first_step_for_arrays_and_tensors() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)  # (C, T)
    filled = edge_fill(x, 2, axis=1)
    assert filled.shape == (3, 6) and np.array_equal(filled[:, :3], np.repeat(x[:, :1], 3, axis=1))
    assert np.array_equal(edge_fill(torch.from_numpy(x), 2, axis=1).numpy(), filled)
    assert np.array_equal(edge_fill(x.T, 2, axis=0), filled.T)  # (T, C) recordings
