"""tools/bench_har_baselines.py: the windows of a fold and the official split, built through the settings groups."""

import warnings
from pathlib import Path

import numpy as np

from datamodules.timeseries.schema import Recording, write_recordings
from tests.tools.conftest import load_tool


def test_split_windows_holds_out_the_fold_and_never_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recordings = [
        Recording(
            f"s{s}",
            rng.standard_normal((100, 2)).astype(np.float32),
            np.repeat([0, 1], 50),
            subject=s,
            split="test" if s == 5 else "train",
        )
        for s in range(1, 6)
    ]
    path = tmp_path / "f.h5"
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["a", "b"], class_names=["x", "y"])
    bench = load_tool("bench_har_baselines")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated flat datamodule keys
        train, val = bench.split_windows(str(path), 16, 8, [2, 3])
        official = bench.split_windows(str(path), 16, 8, None, context=8)
    assert set(train.subjects) == {1, 4} and set(val.subjects) == {2, 3}
    assert train.x.shape[1:] == (2, 16) and len(val.y) == len(val.x)
    assert set(official[0].subjects) == {1, 2, 3, 4} and set(official[1].subjects) == {5}
    assert official[1].x.shape[1:] == (2, 24)  # 8 samples of edge-filled context before each window
