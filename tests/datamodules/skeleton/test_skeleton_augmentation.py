"""Skeleton training augmentation is seeded per item: the same with and without workers, different per position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.loaders import training_loader
from datamodules.skeleton.datamodule import SkeletonDataset
from datamodules.skeleton.transforms import LengthMode, SkeletonAugmentation


def _dataset(n: int = 8) -> SkeletonDataset:
    rng = np.random.default_rng(0)
    clip = rng.normal(0.0, 0.3, (2, 30, 25, 3)).astype(np.float32)
    clip[1] = 0.0  # one body
    return SkeletonDataset(
        [clip] * n,  # one clip at every index: any difference between items is the augmentation's
        [0] * n,
        list(range(n)),
        length=24,
        length_mode=LengthMode.CROP,
        max_bodies=2,
        augmentation=SkeletonAugmentation(rotation_deg=20.0, scale=0.1, min_crop=0.7),
    )


def _epochs(loader: torch.utils.data.DataLoader, epochs: int = 2) -> list[torch.Tensor]:
    out = []
    for e in range(epochs):
        loader.sampler.set_epoch(e)  # type: ignore[attr-defined]
        out.append(torch.cat([b["inputs"] for b in loader]))
    return out


def test_augmented_items_are_the_same_with_and_without_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # the loader's fallback seed, not another test's run seed
    runs = {}
    for workers in (0, 2):
        torch.manual_seed(workers)
        np.random.seed(workers)  # the global generators differ between the runs
        runs[workers] = _epochs(training_loader(_dataset(), batch_size=4, seed=5, num_workers=workers))
    for a, b in zip(runs[0], runs[2]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    first, second = runs[0]
    flat = first.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1.0).min() > 0  # every position augments differently
    assert not torch.equal(first, second)  # and so does every epoch
    other = _epochs(training_loader(_dataset(), batch_size=4, seed=6, num_workers=0), 1)[0]
    assert not torch.equal(first, other)  # another run seed, other draws


def test_evaluation_items_are_not_augmented() -> None:
    ds = _dataset(2)
    ds.augmentation = None
    ds.draws_random = False
    torch.testing.assert_close(ds[0]["inputs"], ds[1]["inputs"], atol=0, rtol=0)
