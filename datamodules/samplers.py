"""Training samplers whose order is a function of (seed, epoch), for exact resume.

``torch.utils.data.RandomSampler`` without a generator seeds itself from torch's global generator when the epoch's
iterator is made; a run restarted from a checkpoint reaches that point with a different global state (and Lightning
may make the iterator before ``on_train_epoch_start``), so the resumed epoch shuffled differently from the
uninterrupted one. These samplers own their generator and reseed it in ``set_epoch``, which Lightning calls before
every training epoch (as for ``DistributedSampler``): epoch ``e`` of a run with seed ``s`` always draws the same
order. The run seed is Lightning's ``PL_GLOBAL_SEED`` (set by ``seed_everything`` and restored from a checkpoint by
``vidrec.tasks.resume.EpochSeeding``), else the given fallback.

``loader_generator`` gives a ``DataLoader`` its own generator for the workers' base seed, which it would otherwise
draw from the global generator whenever an epoch's iterator is made (at a different point of a resumed run). The data
modules build their training loaders with :func:`datamodules.loaders.training_loader`, which adds per-item seeds
(augmentation inside workers) and mid-epoch resume on top of these samplers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence, Sized

import numpy as np
import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler

__all__ = ["EpochRandomSampler", "EpochWeightedRandomSampler", "epoch_seed", "loader_generator", "run_seed"]


def epoch_seed(run_seed: int, epoch: int) -> int:
    """A 32-bit seed for ``epoch`` of a run seeded with ``run_seed`` (independent streams per epoch)."""
    return int(np.random.SeedSequence([run_seed & 0xFFFFFFFF, epoch]).generate_state(1)[0])


def run_seed(fallback: int = 0) -> int:
    """The run's seed: ``PL_GLOBAL_SEED`` when ``seed_everything`` set one, else ``fallback``."""
    env = os.environ.get("PL_GLOBAL_SEED")
    return int(env) if env is not None else fallback


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def loader_generator(seed: int) -> torch.Generator:
    """A private generator for a ``DataLoader`` (its workers' base seed), so it never reads the global one."""
    return torch.Generator().manual_seed(epoch_seed(seed, -1 & 0xFFFFFFFF))


class EpochRandomSampler(RandomSampler):
    """Shuffles without replacement; the permutation of each epoch is a function of (``seed``, epoch).

    ``epoch`` is the epoch the sampler is made for (a loader made when a run resumes at epoch 3 starts at 3).
    """

    def __init__(self, data_source: Sized, seed: int, epoch: int = 0) -> None:
        super().__init__(data_source, generator=_generator(seed, epoch))
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (called by Lightning before each training epoch)."""
        self.generator = _generator(self.seed, epoch)


class EpochWeightedRandomSampler(WeightedRandomSampler):
    """``WeightedRandomSampler`` (with replacement) whose draws of each epoch are a function of (``seed``, epoch)."""

    def __init__(self, weights: Sequence[float], num_samples: int, seed: int, epoch: int = 0) -> None:
        super().__init__(weights, num_samples=num_samples, replacement=True, generator=_generator(seed, epoch))
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch`` (called by Lightning before each training epoch)."""
        self.generator = _generator(self.seed, epoch)
