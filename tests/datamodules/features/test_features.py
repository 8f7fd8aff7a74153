"""Feature files: schema round trip, resume, join, bad input; the data module; the ordered-events generator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.features import (
    FeatureDataModule,
    FeatureFileError,
    FeatureFileInfo,
    FeatureReader,
    FeatureWriter,
    OrderedEventsSettings,
    VideoFeatures,
    generate_ordered_events,
    join_feature_files,
    segment_rows,
)
from datamodules.features.ordered_events import chance, event_orders, render


def _info(dim: int, name: str = "rgb") -> FeatureFileInfo:
    return FeatureFileInfo(
        feature_dim=dim,
        dtype="float32",
        class_names=["a", "b"],
        sampling={"mode": "uniform", "frames": 6},
        extractor={"kind": "test", "name": name},
    )


def _video(key: str, dim: int, frames: int = 6, label: int = 0, split: str = "train", seed: int = 0) -> VideoFeatures:
    rng = np.random.default_rng(seed)
    return VideoFeatures(
        key=key,
        path=key.replace("__", "/"),
        features=rng.standard_normal((frames, dim)).astype(np.float32),
        frame_indices=np.arange(frames) * 2,
        label=label,
        split=split,
        fps=25.0,
        num_frames=frames * 2,
    )


def _write(path: Path, dim: int, videos: list[VideoFeatures], name: str = "rgb") -> Path:
    with FeatureWriter(path, _info(dim, name)) as writer:
        for v in videos:
            writer.write(v)
    return path


def test_round_trip_and_provenance(tmp_path: Path) -> None:
    videos = [_video("A__v1", 8, seed=1), _video("B__v2", 8, label=1, split="test", seed=2)]
    path = _write(tmp_path / "f.h5", 8, videos)
    reader = FeatureReader(path)
    assert reader.keys == ["A__v1", "B__v2"]
    assert reader.info.extractor == {"kind": "test", "name": "rgb"}
    assert len(reader.info.extractor_hash) == 64
    back = list(reader.read())
    np.testing.assert_array_equal(back[1].features, videos[1].features)
    np.testing.assert_array_equal(back[0].frame_indices, videos[0].frame_indices)
    assert (back[1].label, back[1].split, back[1].path, back[1].fps) == (1, "test", "B/v2", 25.0)


def test_resume_and_another_extractor(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.h5", 8, [_video("A__v1", 8)])
    with FeatureWriter(path, _info(8)) as writer:  # same extractor: resumes
        assert writer.done("A__v1") and not writer.done("A__v2")
    with pytest.raises(FeatureFileError, match="written by another extractor"):
        FeatureWriter(path, _info(8, name="flow"))


def test_bad_inputs_name_file_and_expectation(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.h5", 8, [_video("A__v1", 8)])
    with pytest.raises(FeatureFileError, match=r"f\.h5: feature_dim is 8 .*expected 2048"):
        FeatureReader(path, expected_feature_dim=2048)
    with pytest.raises(FeatureFileError, match=r"f\.h5: feature_dim is 8"):
        FeatureDataModule(path, expected_feature_dim=2048)
    with pytest.raises(FeatureFileError, match="video 'A__missing' is not in the feature file"):
        list(FeatureReader(path).read(["A__missing"]))
    with pytest.raises(FeatureFileError, match="does not exist"):
        FeatureReader(tmp_path / "nope.h5")
    with FeatureWriter(tmp_path / "g.h5", _info(8)) as writer, pytest.raises(FeatureFileError, match=r"\(T, 8\)"):
        writer.write(_video("A__v1", 4))


def test_join_rgb_and_flow(tmp_path: Path) -> None:
    rgb = _write(tmp_path / "rgb.h5", 8, [_video("A__v1", 8, seed=1), _video("A__v2", 8, seed=2)])
    flow = _write(tmp_path / "flow.h5", 4, [_video("A__v1", 4, seed=3), _video("A__v3", 4, seed=4)], name="flow")
    report = join_feature_files(rgb, flow, tmp_path / "both.h5")
    assert (report.joined, report.only_in_first, report.only_in_second) == (1, ["A__v2"], ["A__v3"])
    joined = FeatureReader(tmp_path / "both.h5")
    assert joined.info.feature_dim == 12
    assert [p["name"] for p in joined.info.extractor["parts"]] == ["rgb", "flow"]
    (video,) = list(joined.read())
    np.testing.assert_array_equal(video.features[:, :8], _video("A__v1", 8, seed=1).features)
    np.testing.assert_array_equal(video.features[:, 8:], _video("A__v1", 4, seed=3).features)
    with pytest.raises(FeatureFileError, match="videos missing from one file"):
        join_feature_files(rgb, flow, tmp_path / "strict.h5", strict=True)
    other = _write(tmp_path / "other.h5", 4, [_video("A__v1", 4, frames=5)], name="flow5")
    with pytest.raises(FeatureFileError, match="video A/v1: .* disagree on frame indices"):
        join_feature_files(rgb, other, tmp_path / "bad.h5")


def test_segment_rows() -> None:
    np.testing.assert_array_equal(segment_rows(25, 25), np.arange(25))
    np.testing.assert_array_equal(segment_rows(10, 5), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(segment_rows(3, 6), [0, 0, 1, 1, 2, 2])  # fewer rows: repeated evenly
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = segment_rows(50, 25, rng)
        assert len(rows) == 25 and np.all(rows // 2 == np.arange(25))  # one random row in each segment


def test_datamodule_splits_jitter_and_skips(tmp_path: Path) -> None:
    videos = [_video(f"A__t{i}", 8, frames=12, label=i % 2, seed=i) for i in range(6)]
    videos += [_video("A__short", 8, frames=2, seed=9)]  # 4 decodable frames
    videos += [_video(f"A__e{i}", 8, frames=12, label=i % 2, split="test", seed=10 + i) for i in range(3)]
    path = _write(tmp_path / "f.h5", 8, videos)
    with pytest.warns(RuntimeWarning, match="skipped 1 videos with fewer than 6 frames"):
        dm = FeatureDataModule(path, num_frames=6, batch_size=4, min_video_frames=6)
        dm.setup("fit")
    assert dm.skipped == ["A/short"] and (dm.num_classes, dm.feature_dim) == (2, 8)
    assert len(dm.datasets["train"]) == 6 and len(dm.datasets["val"]) == 3  # validates on test (no val split)
    batch = next(iter(dm.val_dataloader()))
    assert batch["inputs"].shape == (3, 8, 6) and batch["inputs"].dtype == torch.float32
    first = dm.datasets["val"][0]["inputs"]
    torch.testing.assert_close(first, dm.datasets["val"][0]["inputs"])  # deterministic evaluation
    draws = {tuple(dm.datasets["train"][0]["inputs"][0].tolist()) for _ in range(10)}
    assert len(draws) > 1  # jittered training rows
    spec = dm.deployment_spec()
    assert (spec.window, spec.input_shape, spec.data_path) == (6, (8, 6), str(path))


def test_render_mean_does_not_depend_on_the_order() -> None:
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 16))
    frames = np.array([5, 9, 11])  # per event
    noise, offset = rng.standard_normal((25, 16)), rng.standard_normal(16)
    sequences = [render(order, frames, prototypes, noise, offset) for order in event_orders(3)]
    assert len(sequences) == 6
    for seq in sequences[1:]:
        np.testing.assert_allclose(seq.mean(axis=0), sequences[0].mean(axis=0), atol=1e-12)
        assert not np.allclose(seq, sequences[0])  # the sequences themselves differ
    np.testing.assert_array_equal(sequences[0][:5], (prototypes[0] + noise + offset)[:5])


def test_ordered_events_file_and_mean_pool_at_chance(tmp_path: Path) -> None:
    settings = OrderedEventsSettings(events=3, feature_dim=16, train_per_class=40, test_per_class=30, seed=1)
    reader = FeatureReader(generate_ordered_events(tmp_path / "oe.h5", settings))
    assert reader.info.class_names[0] == "AthenBthenC" and len(reader.info.class_names) == 6
    videos = list(reader.read())
    assert len(videos) == 6 * 70 and all(v.features.shape == (25, 16) for v in videos)
    # nearest class mean on the temporal mean: at chance (1/6); on the first and last frames: far above
    for statistic, low, high in ((lambda f: f.mean(0), 0.0, 0.30), (lambda f: f[[0, -1]].ravel(), 0.8, 1.0)):
        train = [(statistic(v.features), v.label) for v in videos if v.split == "train"]
        test = [(statistic(v.features), v.label) for v in videos if v.split == "test"]
        centroids = np.stack([np.mean([x for x, y in train if y == k], axis=0) for k in range(6)])
        hits = [int(np.argmin(((centroids - x) ** 2).sum(1)) == y) for x, y in test]
        assert low <= float(np.mean(hits)) <= high
    assert chance(3) == pytest.approx(1 / 6)


def _rows_video(key: str, frames: int, dim: int = 3) -> VideoFeatures:
    """A video whose feature row ``t`` is ``t`` in every channel: a sample's values are the rows it drew."""
    rows = np.repeat(np.arange(frames, dtype=np.float32)[:, None], dim, axis=1)
    return dataclasses.replace(_video(key, dim, frames=frames), features=rows)


def _epoch(dm: FeatureDataModule, workers: int) -> tuple[np.ndarray, np.ndarray]:
    dm.num_workers = workers
    batches = list(dm.train_dataloader())
    rows = np.concatenate([b["inputs"][:, 0].numpy() for b in batches])  # (videos, F) drawn rows
    return np.concatenate([b["group"].numpy() for b in batches]), rows


def test_jitter_is_seeded_per_item_not_per_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # the data module's seed is the run's
    videos = [_rows_video(f"A__v{i}", 40) for i in range(8)]
    videos.append(dataclasses.replace(_rows_video("A__e0", 40), split="test"))
    path = _write(tmp_path / "f.h5", 3, videos)
    dm = FeatureDataModule(path, num_frames=5, batch_size=3, seed=7)
    order0, rows0 = _epoch(dm, 0)
    order2, rows2 = _epoch(dm, 2)
    np.testing.assert_array_equal(order0, order2)  # the same order ...
    np.testing.assert_array_equal(rows0, rows2)  # ... and the same jittered rows whichever worker built an item
    assert np.all(rows0 // 8 == np.arange(5))  # one row in each of the 5 segments of 40 rows
    assert len({tuple(r) for r in rows0}) > 4  # positions draw their own rows (identical videos here)
    dm.seed = 8
    assert not np.array_equal(_epoch(dm, 0)[1], rows0)  # another run seed, other draws
