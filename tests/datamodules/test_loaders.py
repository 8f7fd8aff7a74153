"""The shared training loader: batches are a function of (seed, epoch), whatever the workers; resume mid-epoch.

A run of two epochs on a tiny HDF5 file with random context truncation (augmentation drawn inside the workers)
records every batch it trains on; runs resumed from its mid-epoch and epoch-end checkpoints, with the global RNGs
disturbed first, must train on exactly the batches that follow in the uninterrupted run, with 2 workers.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.loaders import ResumableLoader, SeededItems, seeded_rngs, training_loader
from datamodules.timeseries.datamodule import HDF5WindowDataModule
from datamodules.timeseries.schema import Recording, write_recordings
from datamodules.timeseries.settings import LoaderSettings, SplitMode, SplitSettings, WindowSettings


@pytest.fixture(autouse=True)
def _no_run_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaders' seed argument is a fallback: a run seed left in the environment by another test would win."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


class _Augmented(torch.utils.data.Dataset):
    """Item i: (i, a torch draw, a NumPy draw): what a transform inside a worker would draw."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), torch.rand(()).item(), float(np.random.rand())])


def _epoch(loader: ResumableLoader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    return list(loader)


def test_batches_depend_on_seed_and_epoch_only_not_on_workers_or_global_rngs() -> None:
    dataset = _Augmented()
    runs = {}
    for workers in (0, 2):
        torch.manual_seed(workers)
        np.random.seed(workers)  # the global generators differ between the runs
        loader = training_loader(dataset, batch_size=4, seed=7, num_workers=workers)
        runs[workers] = [_epoch(loader, e) for e in (0, 1)]
    for a, b in zip(runs[0], runs[2]):
        assert len(a) == len(b) == 6
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    first, second = (torch.cat(e) for e in runs[0])
    assert sorted(first[:, 0].tolist()) == list(range(23)) and not torch.equal(first[:, 0], second[:, 0])
    assert not torch.equal(first[:, 1], second[:, 1])  # augmentation differs between epochs
    other = training_loader(dataset, batch_size=4, seed=8)
    assert not torch.equal(torch.cat(_epoch(other, 0)), first)


def test_an_item_does_not_change_the_callers_generators() -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(1)
    np.random.seed(1)
    with seeded_rngs(5):
        inside = torch.rand(()), np.random.rand()
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    with seeded_rngs(5):
        assert torch.equal(torch.rand(()), inside[0]) and np.random.rand() == inside[1]
    assert len(SeededItems(_Augmented())) == 23 and SeededItems(_Augmented())[3][0] == 3.0


def test_load_state_dict_skips_the_batches_already_trained() -> None:
    loader = training_loader(_Augmented(), batch_size=4, seed=3, num_workers=2)
    full = _epoch(loader, 1)
    loader.load_state_dict({"seed": 3, "epoch": 1, "batches": 2})
    rest = list(loader)
    assert len(rest) == 4
    for x, y in zip(rest, full[2:]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert len(list(loader)) == 6  # only the next epoch's iterator skips
    loader.load_state_dict({"seed": 3, "epoch": 0, "batches": 2})  # another epoch's state: nothing skipped
    assert len(list(loader)) == 6


def _file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    recordings = [
        Recording(f"s{s}", rng.normal(size=(120, 2)).astype(np.float32), np.full(120, s % 2), subject=s)
        for s in range(1, 5)
    ]
    return write_recordings(path, recordings, sampling_rate=10.0, channel_names=["a", "b"], class_names=["x", "y"])


class _Recorder(L.LightningModule):
    """A linear probe that records the inputs of every batch it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch["inputs"].clone())
        logits = self.linear(batch["inputs"].mean(-1))  # (B, C, T) -> (B, C) -> (B, K)
        return torch.nn.functional.cross_entropy(logits, batch["target"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(path: Path, root: Path, ckpt: str | None = None) -> list[torch.Tensor]:
    L.seed_everything(0, verbose=False)
    if ckpt is not None:  # a resumed process reaches this point with other global RNG states
        torch.rand(17)
        np.random.rand(5)
    dm = HDF5WindowDataModule(
        str(path),
        windows=WindowSettings(window=8, hop=4, context=8, context_truncation=0.5),
        split=SplitSettings(mode=SplitMode.SUBJECTS, test_subjects=[4]),
        loader=LoaderSettings(batch_size=8, num_workers=2),
    )
    every = ModelCheckpoint(dirpath=root, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[every],
        default_root_dir=str(root),
    )
    module = _Recorder()
    trainer.fit(module, dm, ckpt_path=ckpt)
    return module.seen


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_with_workers_trains_on_the_batches_of_the_uninterrupted_run(tmp_path: Path) -> None:
    path = _file(tmp_path / "tiny.h5")
    full = _fit(path, tmp_path / "full")
    assert len(full) == 22  # 2 epochs of 11 batches
    for step in (4, 12, 20):  # mid-epoch 0 (the checkpoint at step 4), then mid-epoch 1
        resumed = _fit(path, tmp_path / f"resumed{step}", str(tmp_path / "full" / f"step={step}.ckpt"))
        assert len(resumed) == len(full) - step
        for x, y in zip(resumed, full[step:]):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.slow
def test_video_training_clips_and_crops_are_the_same_with_and_without_workers(tmp_path: Path) -> None:
    """The video data module shuffled with ``shuffle=True``; random clip starts and crops now follow (seed, epoch)."""
    pytest.importorskip("av")
    from datamodules.video import UCF101DataModule
    from datamodules.video.dataset import ClipTiming
    from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions
    from datamodules.video.transforms import TransformSettings

    generate_synthetic_actions(tmp_path, SyntheticSettings(num_classes=2, videos_per_class=8, frames=16, size=32))
    batches = {}
    for workers in (0, 2):
        dm = UCF101DataModule(
            tmp_path,
            clip=ClipTiming(4, 2),
            transform=TransformSettings(crop_size=16, train_short_side=24, test_short_side=24),
            batch_size=4,
            num_workers=workers,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert isinstance(loader, ResumableLoader)
        torch.manual_seed(workers)
        batches[workers] = [b["inputs"] for b in loader]
    assert len(batches[0]) == len(batches[2]) == 3  # 12 training videos, drop_last
    for x, y in zip(batches[0], batches[2]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_ddp_ranks_share_one_epoch_order_and_keep_their_item_seeds() -> None:
    """Under DDP each rank takes every n-th key of the one-process order (padded), with the same item seeds."""
    from datamodules.loaders import _KeyedSampler
    from datamodules.samplers import EpochRandomSampler

    data = list(range(23))
    single = list(_KeyedSampler(EpochRandomSampler(data, 5, 2), 5, 2))
    ranks = [list(_KeyedSampler(EpochRandomSampler(data, 5, 2), 5, 2, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [12, 12]
    assert ranks[0] == single[0::2] and ranks[1][:11] == single[1::2]
    assert ranks[1][11].item == single[0].item  # the padding repeats the first item (under its own position's seed)
