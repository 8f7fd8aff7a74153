"""Tests of the sliding-window dataset and HDF5WindowDataModule on tiny files written by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from datamodules.timeseries.datamodule import HDF5WindowDataModule, SplitMode
from datamodules.timeseries.dataset import ContextPadding, LabelPolicy, window_labels
from datamodules.timeseries.schema import Recording, write_recordings
from datamodules.timeseries.settings import (
    LEGACY_KEYS,
    LabelSettings,
    LegacyKeyWarning,
    LoaderSettings,
    SplitSettings,
    WindowSettings,
)


def _file(
    tmp_path: Path, lengths: dict[int, list[int]], test: frozenset[int] | set[int] = frozenset(), seed: int = 0
) -> Path:
    """One recording per entry of lengths[subject]; label = subject % 3 with the last 5 samples unlabelled."""
    rng = np.random.default_rng(seed)
    recordings = []
    for subject, subject_lengths in lengths.items():
        for k, length in enumerate(subject_lengths):
            samples = (rng.normal(size=(length, 2)) * [1.0, 3.0] + [subject, -subject]).astype(np.float32)
            labels = np.full(length, subject % 3)
            labels[-5:] = -1
            split = "test" if subject in test else "train"
            recordings.append(Recording(f"s{subject}_{k}", samples, labels, subject=subject, split=split))
    path = tmp_path / "tiny.h5"
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["a", "b"], class_names=["c0", "c1", "c2"])
    return path


def _dm(path: str | Path, normalize: bool = True, **fields: Any) -> HDF5WindowDataModule:
    """The data module with each field put in its settings group (``window=8`` -> ``WindowSettings(window=8)``)."""
    groups: dict[str, dict[str, Any]] = {"windows": {}, "labels": {}, "split": {}, "loader": {}}
    for key, value in fields.items():
        group, name = LEGACY_KEYS[key]
        groups[group][name] = value
    return HDF5WindowDataModule(
        str(path),
        windows=WindowSettings(**groups["windows"]),
        labels=LabelSettings(**groups["labels"]),
        split=SplitSettings(**groups["split"]),
        loader=LoaderSettings(**groups["loader"]),
        normalize=normalize,
    )


def test_metadata_known_after_init_and_missing_file_hint(tmp_path: Path) -> None:
    dm = HDF5WindowDataModule(str(_file(tmp_path, {1: [40]})))
    assert (dm.num_classes, dm.class_names, dm.in_channels) == (3, ["c0", "c1", "c2"], 2)
    assert dm.channel_names == ["a", "b"] and dm.sampling_rate == 50.0
    with pytest.raises(FileNotFoundError, match=r"missing\.h5.*vidrec data hapt --out"):
        HDF5WindowDataModule(str(tmp_path / "missing.h5"))


def test_window_counts_and_contents_match_numpy_slicing(tmp_path: Path) -> None:
    path = _file(tmp_path, {1: [100, 37], 2: [64], 4: [19, 60]})
    dm = _dm(
        str(path),
        window=10,
        hop=6,
        context=4,
        eval_hop=3,
        split_mode=SplitMode.SUBJECTS,
        train_subjects=[1, 2],
        test_subjects=[4],
        normalize=False,
    )
    dm.setup("fit")
    length = 14
    # PURE drops windows touching the 5 unlabelled samples at the end: usable length T - 5
    expected_train = [(t - 5 - length) // 6 + 1 for t in (100, 37, 64)]
    expected_test = [max(0, (t - 5 - length) // 3 + 1) for t in (19, 60)]
    train, test = dm.datasets["train"], dm.datasets["test"]
    assert len(train) == sum(expected_train) and len(test) == sum(expected_test)
    recs = {r.id: r for r in dm._recordings or []}
    k = 0
    assert expected_train == [14, 4, 8] and expected_test == [1, 14]
    for rec_id, n in zip(["s1_0", "s1_1", "s2_0"], expected_train):
        for j in range(n):
            item = train[k]
            np.testing.assert_array_equal(item["inputs"].numpy(), recs[rec_id].samples[j * 6 : j * 6 + length].T)
            assert item["inputs"].shape == (2, length)
            assert int(item["target"]) == recs[rec_id].subject % 3
            k += 1
    assert k == len(train)
    batch = train.__getitems__([5, 0, 15, 20])
    assert batch["inputs"].shape == (4, 2, 14) and batch["inputs"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and batch["group"].tolist() == [0, 0, 1, 2]
    np.testing.assert_array_equal(batch["inputs"][0].numpy(), train[5]["inputs"].numpy())
    # test windows (eval_hop 3) in order, groups are file positions of the recordings
    first = test[0]["inputs"].numpy()
    np.testing.assert_array_equal(first, recs["s4_0"].samples[:14].T)
    assert test.table.groups.tolist() == [3] * expected_test[0] + [4] * expected_test[1]


def test_label_policies() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, -1, -1, -1, 1, 2, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1])
    kwargs: dict[str, Any] = dict(window=4, context=0, hop=4, num_classes=3)
    _, pure, mixed = window_labels(labels, policy=LabelPolicy.PURE, **kwargs)
    assert pure.tolist() == [0, -1, -1, -1, -1, 1] and mixed.tolist() == [False, True, True, True, False, False]
    _, major, _ = window_labels(labels, policy=LabelPolicy.MAJORITY, **kwargs)
    assert major.tolist() == [0, 0, -1, -1, -1, 1]  # tie 0/1 -> lowest index; 3/4 unlabelled > 0.5 -> drop
    _, loose, _ = window_labels(labels, policy=LabelPolicy.MAJORITY, max_unlabelled_fraction=0.8, **kwargs)
    assert loose.tolist() == [0, 0, 1, 2, -1, 1]
    _, center, _ = window_labels(labels, policy=LabelPolicy.CENTER, **kwargs)
    assert center.tolist() == [0, 1, -1, -1, -1, 1]  # labels[4k + 2]
    # context shifts the target region: window k's targets are samples [2k + 2, 2k + 6)
    offsets, with_context, _ = window_labels(labels, policy=LabelPolicy.PURE, window=4, context=2, hop=2, num_classes=3)
    assert offsets.tolist() == list(range(0, 19, 2))
    assert with_context.tolist() == [0, -1, -1, -1, -1, -1, -1, -1, -1, 1]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(LabelPolicy.PURE, [0, 1]), (LabelPolicy.MAJORITY, [0, 0, 1]), (LabelPolicy.CENTER, [0, 1, 1])],
)
def test_label_policy_through_datamodule(tmp_path: Path, policy: LabelPolicy, expected: list[int]) -> None:
    labels = np.array([0] * 4 + [0, 0, 1, 1] + [1] * 4)
    rec = Recording("r", np.arange(24, dtype=np.float32).reshape(12, 2), labels, subject=1)
    other = Recording("t", np.zeros((4, 2), np.float32), np.zeros(4, np.int64), subject=2)
    path = write_recordings(
        tmp_path / "p.h5", [rec, other], sampling_rate=1, channel_names=["a", "b"], class_names=["x", "y"]
    )
    dm = _dm(str(path), window=4, hop=4, split_mode=SplitMode.SUBJECTS, test_subjects=[2], label_policy=policy)
    dm.setup()
    assert dm.datasets["train"].table.targets.tolist() == expected


def _subjects(dm: HDF5WindowDataModule, split: str) -> set[int]:
    recs = dm._recordings or []
    return {recs[g].subject for g in dm.datasets[split].table.groups.tolist()}


def test_split_modes(tmp_path: Path) -> None:
    path = str(_file(tmp_path, {s: [30] for s in range(1, 7)}, test={5, 6}))
    common: dict[str, Any] = dict(window=8, hop=4)
    dm = _dm(path, split_mode=SplitMode.SUBJECTS, train_subjects=[1, 2], val_subjects=[3], test_subjects=[4], **common)
    dm.setup()
    assert (_subjects(dm, "train"), _subjects(dm, "val"), _subjects(dm, "test")) == ({1, 2}, {3}, {4})

    dm = _dm(path, split_mode=SplitMode.OFFICIAL, val_subjects=[1], **common)
    dm.setup()
    assert (_subjects(dm, "train"), _subjects(dm, "val"), _subjects(dm, "test")) == ({2, 3, 4}, {1}, {5, 6})
    dm = _dm(path, split_mode=SplitMode.OFFICIAL, val_fraction=0.25, **common)
    dm.setup()
    assert len(_subjects(dm, "val")) == 1 and _subjects(dm, "val") | _subjects(dm, "train") == {1, 2, 3, 4}

    folds = []
    for fold in range(3):
        dm = _dm(path, split_mode=SplitMode.KFOLD, num_folds=3, fold=fold, val_fraction=0.25, **common)
        dm.setup()
        test, train, val = _subjects(dm, "test"), _subjects(dm, "train"), _subjects(dm, "val")
        assert len(test) == 2 and not (test & train) and not (test & val) and not (train & val)
        assert test | train | val == set(range(1, 7))
        folds.append(test)
    assert set().union(*folds) == set(range(1, 7))

    dm = _dm(path, split_mode=SplitMode.LOSO, fold=3, val_subjects=[1], **common)
    dm.setup()
    assert (_subjects(dm, "train"), _subjects(dm, "val"), _subjects(dm, "test")) == ({2, 4, 5, 6}, {1}, {3})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(split_mode=SplitMode.OFFICIAL, val_subjects=[2, 5]), r"validation subjects \[5\] are also test subjects"),
        (dict(split_mode=SplitMode.SUBJECTS, val_subjects=[3], test_subjects=[3]), r"validation subjects \[3\]"),
        (dict(split_mode=SplitMode.SUBJECTS, train_subjects=[1, 4], test_subjects=[4]), r"train subjects \[4\]"),
        (dict(split_mode=SplitMode.SUBJECTS, test_subjects=[9]), r"test_subjects \[9\] not in the file"),
        (dict(split_mode=SplitMode.LOSO, fold=42), r"LOSO split.fold=42"),
        (dict(split_mode=SplitMode.KFOLD, num_folds=3, fold=3), r"KFOLD"),
        (dict(split_mode=SplitMode.SUBJECTS, test_subjects=[1, 2, 3, 4, 5, 6]), r"empty train split"),
    ],
)
def test_split_errors_name_subjects(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = str(_file(tmp_path, {s: [30] for s in range(1, 7)}, test={5, 6}))
    dm = _dm(path, window=8, hop=4, **kwargs)
    with pytest.raises(ValueError, match=rf"tiny\.h5: .*{message}"):
        dm.setup()


def test_official_split_needs_split_attribute(tmp_path: Path) -> None:
    path = _file(tmp_path, {1: [30], 2: [30]})
    with h5py.File(path, "a") as f:
        del f["recordings/s2_0"].attrs["split"]
    with pytest.raises(ValueError, match=r"OFFICIAL needs attribute 'split'.*\[2\]"):
        _dm(str(path), window=8).setup()


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    path = str(_file(tmp_path, {1: [40], 2: [10]}))  # subject 2 is shorter than a window
    dm = _dm(path, window=16, split_mode=SplitMode.SUBJECTS, test_subjects=[2])
    with pytest.raises(ValueError, match=r"test split \(subjects \[2\]\) has no windows"):
        dm.setup()


def test_normalization_from_train_only_and_state_dict_round_trip(tmp_path: Path) -> None:
    path = str(_file(tmp_path, {1: [50], 2: [70], 3: [40]}))
    kwargs: dict[str, Any] = dict(window=8, hop=4, split_mode=SplitMode.SUBJECTS, val_subjects=[2], test_subjects=[3])
    dm = _dm(path, **kwargs)
    dm.setup()
    rec = (dm._recordings or [])[0]
    labelled = rec.samples[rec.labels >= 0].astype(np.float64)  # subject 1 only, unlabelled tail excluded
    np.testing.assert_allclose(dm.normalization.mean, labelled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(dm.normalization.std, labelled.std(axis=0), rtol=1e-8)
    x = dm.datasets["test"][0]["inputs"].numpy()
    raw = (dm._recordings or [])[2].samples[:8].T
    expected = (raw - dm.normalization.mean[:, None]) / dm.normalization.std[:, None]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)

    state = dm.state_dict()
    fresh = _dm(path, **kwargs)
    fresh.load_state_dict(state)
    fresh.setup()  # keeps the loaded statistics
    np.testing.assert_array_equal(fresh.normalization.mean, dm.normalization.mean)
    torch.testing.assert_close(fresh.datasets["test"][0]["inputs"], dm.datasets["test"][0]["inputs"])

    other = dict(state, normalization_mean=[0.0, 0.0], normalization_std=[2.0, 2.0])
    dm.load_state_dict(other)  # after setup: applies to the existing datasets
    np.testing.assert_allclose(dm.datasets["test"][0]["inputs"].numpy(), raw / 2.0, rtol=1e-6)
    test_rec = dm.test_recordings()
    assert [(r.id, r.subject, r.group) for r in test_rec] == [("s3_0", 3, 2)]
    np.testing.assert_allclose(test_rec[0].samples, (dm._recordings or [])[2].samples.T / 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="channel_names"):
        dm.load_state_dict(dict(state, channel_names=["q", "r"]))


def test_dataloaders_deterministic_length_and_order(tmp_path: Path) -> None:
    path = str(_file(tmp_path, {1: [300], 2: [200], 3: [150]}, test={3}))
    dm = _dm(path, window=16, hop=8, eval_hop=4, batch_size=7, val_subjects=[2])
    dm.setup()
    again = _dm(path, window=16, hop=8, eval_hop=4, batch_size=7, val_subjects=[2])
    again.setup()
    for split in ("train", "val", "test"):
        assert len(dm.datasets[split]) == len(again.datasets[split]) > 0
    train = list(dm.train_dataloader())
    assert sum(len(b["target"]) for b in train) == len(dm.datasets["train"])
    assert train[0]["inputs"].shape == (7, 2, 16) and train[0]["inputs"].dtype == torch.float32
    starts = [b["inputs"] for b in dm.test_dataloader()]
    np.testing.assert_array_equal(
        torch.cat(starts).numpy(), dm.datasets["test"].gather(np.arange(len(dm.datasets["test"])))
    )
    predicted = torch.cat([b["inputs"] for b in dm.predict_dataloader()])
    torch.testing.assert_close(predicted, torch.cat(starts))
    balanced = _dm(path, window=16, hop=8, balanced=True, batch_size=16, val_subjects=[2])
    balanced.setup()
    assert sum(len(b["target"]) for b in balanced.train_dataloader()) == len(balanced.datasets["train"])


def test_constructor_is_configurable_from_jsonargparse(tmp_path: Path) -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(HDF5WindowDataModule, "data")
    path = str(_file(tmp_path, {1: [40], 2: [40]}))
    cfg = parser.parse_args(
        ["--data.path", path, "--data.split.mode", "LOSO", "--data.split.fold", "2", "--data.labels.policy", "MAJORITY"]
        + ["--data.split.val_subjects", "[1]", "--data.windows.eval_hop", "2", "--data.loader", '{"batch_size": 3}']
    )
    dm = parser.instantiate_classes(cfg).data
    assert dm.split.mode == SplitMode.LOSO and dm.labels.policy == LabelPolicy.MAJORITY and dm.split.val_subjects == [1]
    assert dm.windows.evaluation_hop == 2 and dm.windows.hop == 64 and dm.loader.batch_size == 3


def test_flat_keyword_arguments_of_earlier_versions_warn_with_the_new_key_and_build_the_same_module(
    tmp_path: Path,
) -> None:
    path = str(_file(tmp_path, {1: [60], 2: [60], 3: [60]}))
    grouped = HDF5WindowDataModule(
        path,
        windows=WindowSettings(window=8, hop=4, eval_hop=2),
        split=SplitSettings(mode=SplitMode.SUBJECTS, test_subjects=[3]),
        labels=LabelSettings(policy=LabelPolicy.MAJORITY),
        loader=LoaderSettings(batch_size=5),
    )
    with pytest.warns(
        LegacyKeyWarning, match=r"HDF5WindowDataModule: .*window -> windows\.window.*split_mode -> split\.mode"
    ):
        flat = HDF5WindowDataModule(
            path, window=8, hop=4, eval_hop=2, split_mode="SUBJECTS", test_subjects=[3], label_policy="MAJORITY",
            batch_size=5,
        )  # fmt: skip
    assert (flat.windows, flat.split, flat.labels, flat.loader) == (
        grouped.windows, grouped.split, grouped.labels, grouped.loader,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"hop is given twice, as hop and as windows\.hop"):
        HDF5WindowDataModule(path, windows=WindowSettings(hop=4), hop=8)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['windw'\]"):
        HDF5WindowDataModule(path, windw=8)
    with pytest.raises(ValueError, match=r"windows\.context_truncation > 0 needs windows\.context > 0"):
        WindowSettings(context_truncation=0.5)


def test_normalization_travels_with_lightning_checkpoint(tmp_path: Path) -> None:
    import lightning as L

    from datamodules.timeseries.converters.uea import convert_basicmotions

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(6, 4)

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            logits = self.linear(batch["inputs"].mean(-1))  # (B, C, T) -> (B, C) -> (B, K)
            return torch.nn.functional.cross_entropy(logits, batch["target"])

        def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            pass

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    path = str(convert_basicmotions(tmp_path / "bm.h5"))
    quiet: dict[str, Any] = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)
    dm = _dm(path, window=50, hop=25, batch_size=16)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, default_root_dir=str(tmp_path), **quiet)
    trainer.fit(Probe(), dm)
    ckpt = trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    saved = torch.load(ckpt, weights_only=False)["HDF5WindowDataModule"]
    np.testing.assert_allclose(saved["normalization_mean"], dm.normalization.mean)

    restored = _dm(path, window=50, hop=25, batch_size=16)
    restored.setup()
    restored.load_state_dict(dict(saved, normalization_mean=[0.0] * 6))  # stale stats, replaced by the checkpoint's
    L.Trainer(default_root_dir=str(tmp_path), **quiet).test(Probe(), restored, ckpt_path=ckpt, verbose=False)
    np.testing.assert_allclose(restored.normalization.mean, dm.normalization.mean)
    torch.testing.assert_close(restored.datasets["test"][3]["inputs"], dm.datasets["test"][3]["inputs"])


def test_edge_context_padding_keeps_every_window_and_fills_history_with_the_first_sample(tmp_path: Path) -> None:
    path = _file(tmp_path, {1: [100, 37], 2: [64]})
    common: dict[str, Any] = dict(
        window=10, hop=6, split_mode=SplitMode.SUBJECTS, train_subjects=[1, 2], normalize=False
    )
    plain = _dm(str(path), context=0, **common)
    edge = _dm(str(path), context=16, context_padding=ContextPadding.EDGE, **common)
    drop = _dm(str(path), context=16, **common)
    for dm in (plain, edge, drop):
        dm.setup("fit")
    t_plain, t_edge = plain.datasets["train"].table, edge.datasets["train"].table
    # EDGE keeps the windows (targets, recordings) of context 0; DROP loses those without 16 samples of history
    np.testing.assert_array_equal(t_edge.targets, t_plain.targets)
    np.testing.assert_array_equal(t_edge.groups, t_plain.groups)
    assert len(drop.datasets["train"]) < len(t_edge)
    recs = {r.id: r.samples.T for r in edge._recordings or []}  # (C, T)
    ds = edge.datasets["train"]
    assert ds[0]["inputs"].shape == (2, 26)
    first = ds[0]["inputs"].numpy()  # window 0 of s1_0: 16 copies of sample 0, then samples [0, 10)
    np.testing.assert_array_equal(first[:, :16], np.repeat(recs["s1_0"][:, :1], 16, axis=1))
    np.testing.assert_array_equal(first[:, 16:], recs["s1_0"][:, :10])
    # window 3 (target [18, 28)) has 16 samples of real history
    np.testing.assert_array_equal(ds[3]["inputs"].numpy(), recs["s1_0"][:, 2:28])
    # window 1 (target [6, 16)): 10 copies, then samples [0, 16)
    np.testing.assert_array_equal(ds[1]["inputs"].numpy()[:, :10], np.repeat(recs["s1_0"][:, :1], 10, axis=1))
    np.testing.assert_array_equal(ds[1]["inputs"].numpy()[:, 10:], recs["s1_0"][:, :16])
    # the first window of the second recording does not read the end of the first one
    k = int(np.flatnonzero(t_edge.groups == 1)[0])
    np.testing.assert_array_equal(ds[k]["inputs"].numpy()[:, :16], np.repeat(recs["s1_1"][:, :1], 16, axis=1))
    spec = edge.deployment_spec()
    assert spec.context_padding is ContextPadding.EDGE and spec.first_output == 10 and spec.input_length == 26


def test_context_truncation_edge_fills_a_random_prefix_of_the_context_only(tmp_path: Path) -> None:
    path = _file(tmp_path, {1: [200], 2: [200]}, test={2})
    common: dict[str, Any] = dict(window=10, hop=2, context=20, split_mode=SplitMode.OFFICIAL, normalize=False)
    always = _dm(str(path), context_truncation=1.0, **common)
    never = _dm(str(path), **common)
    for dm in (always, never):
        dm.setup("fit")
    idx = list(range(len(never.datasets["train"])))
    torch.manual_seed(0)
    cut = always.datasets["train"].__getitems__(idx)["inputs"].numpy()  # (N, C, 30)
    real = never.datasets["train"].__getitems__(idx)["inputs"].numpy()
    np.testing.assert_array_equal(cut[:, :, 20:], real[:, :, 20:])  # the labelled window is never touched
    cuts = []
    for row_cut, row_real in zip(cut, real):
        same = np.all(row_cut == row_real, axis=0)  # (30,) samples left as they were
        c = int(np.argmax(same))  # the first real sample; everything before it is a copy of it
        assert same[c:].all() and 1 <= c <= 20
        np.testing.assert_array_equal(row_cut[:, :c], np.repeat(row_real[:, c : c + 1], c, axis=1))
        cuts.append(c)
    assert len(set(cuts)) > 10  # the cut points vary
    # only training windows are truncated
    np.testing.assert_array_equal(
        always.datasets["test"].__getitems__([0, 1])["inputs"].numpy(),
        never.datasets["test"].__getitems__([0, 1])["inputs"].numpy(),
    )
    with pytest.raises(ValueError, match="context_truncation"):
        _dm(str(path), window=10, context_truncation=0.5)
