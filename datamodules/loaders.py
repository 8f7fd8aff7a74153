"""The data modules' DataLoaders: a seeded, resumable training order and ordered evaluation.

:func:`training_loader` returns a :class:`ResumableLoader` whose batches are a function of (run seed, epoch) alone,
whatever the number of workers and however often the run was interrupted:

- **order**: epoch ``e`` draws its permutation (or its class-balanced draws) from a generator seeded with
  ``(seed, e)`` (:mod:`datamodules.samplers`); Lightning calls ``set_epoch`` before every epoch.
- **randomness inside items** (random clips, crops, flips, context truncation): each item is built under torch,
  NumPy and ``random`` generators seeded with ``(seed, e, position in the epoch)`` (:class:`SeededItems`), so what a
  worker draws does not depend on which worker builds the item or what it built before; the caller's generators are
  restored after each item (with ``num_workers=0`` the training RNG is untouched).
- **resume**: the loader is stateful (``state_dict`` / ``load_state_dict``, which Lightning saves in every
  checkpoint and restores before the first batch): a run resumed from a mid-epoch checkpoint skips the batches the
  interrupted run had trained on (at the sampler: they are never loaded) and continues with the next one.

The number of batches trained in the current epoch comes from the trainer
(``fit_loop.epoch_loop.batch_progress.current.processed``): counting what the loader yielded would include the batch
that Lightning prefetches. :func:`evaluation_loader` is the ordered loader of val / test / predict, and
:func:`split_loader` picks one of the two for a data module's split.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.samplers import EpochRandomSampler, EpochWeightedRandomSampler, epoch_seed, run_seed

__all__ = [
    "ItemKey",
    "ResumableLoader",
    "SeededItems",
    "evaluation_loader",
    "item_seed",
    "seeded_rngs",
    "split_loader",
    "training_loader",
]

log = logging.getLogger(__name__)


class ItemKey(NamedTuple):
    """What the training sampler yields: the dataset index and the seed its item is built under."""

    item: int
    seed: int


_MASK64 = (1 << 64) - 1


def item_seed(base: int, position: int) -> int:
    """A 63-bit seed for item ``position`` of an epoch whose seed is ``base`` (SplitMix64 finaliser: ~1 us)."""
    z = (base * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Run the block under torch (CPU), NumPy and ``random`` global generators seeded with ``seed``.

    In the main process the caller's generator states are restored after the block (the training RNG is not
    touched); a DataLoader worker builds items only, so its states are just reseeded (restoring NumPy's costs
    ~0.2 ms).
    """
    restore = torch.utils.data.get_worker_info() is None
    if restore:
        torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)  # torch.manual_seed would also seed every accelerator (~0.3 ms)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    try:
        yield
    finally:
        if restore:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededItems(Dataset):
    """A map-style dataset whose items, asked for by :class:`ItemKey`, are built under the key's seed.

    Plain integer indices (evaluation) pass through unseeded. A dataset with ``__getitems__`` (a whole batch in one
    gather) gets the batch under the seed of its first key. A dataset whose ``draws_random`` is False (its items
    draw no random numbers) is not seeded at all. Other attributes are the wrapped dataset's.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.seeded = bool(getattr(dataset, "draws_random", True))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: ItemKey | int) -> Any:
        if isinstance(key, ItemKey):
            if not self.seeded:
                return self.dataset[key.item]
            with seeded_rngs(key.seed):
                return self.dataset[key.item]
        return self.dataset[key]

    def __getitems__(self, keys: Sequence[ItemKey | int]) -> Any:
        batch = getattr(self.dataset, "__getitems__", None)
        if batch is None or not keys:
            return [self[key] for key in keys]
        first = keys[0]
        if not isinstance(first, ItemKey):  # plain indices: evaluation, or items that draw nothing
            return batch(list(keys))
        with seeded_rngs(first.seed):
            return batch([key.item if isinstance(key, ItemKey) else key for key in keys])

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _KeyedSampler(DistributedSampler):
    """Keys of one epoch in the order of ``order``, each with the seed of its position; ``skip`` keys left out once.

    With ``keyed=False`` (items that draw no random numbers) it yields the plain indices. Under DDP it shards the
    epoch itself as ``DistributedSampler`` does (rank ``r`` of ``n`` takes positions ``r, r + n, ...`` of the order,
    padded by repetition to a multiple of ``n``); being a ``DistributedSampler``, Lightning keeps it instead of
    replacing it with its own.
    """

    def __init__(  # noqa: D107  # no DistributedSampler.__init__: it asks for a process group
        self,
        order: EpochRandomSampler | EpochWeightedRandomSampler,
        seed: int,
        epoch: int,
        keyed: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.order, self.seed, self.epoch, self.skip, self.keyed = order, seed, epoch, 0, keyed
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = math.ceil(len(order) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """The order and item seeds of ``epoch`` (Lightning calls it before each training epoch)."""
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[ItemKey | int]:  # type: ignore[override]
        skip, self.skip = self.skip, 0
        self.order.set_epoch(self.epoch)  # a fresh generator: every pass over an epoch draws the same order
        indices: Iterator[int] = iter(self.order)
        if self.num_replicas > 1:
            everything = list(self.order)
            everything += everything[: self.total_size - len(everything)]
            indices = iter(everything[self.rank : self.total_size : self.num_replicas])
        indices = itertools.islice(indices, skip, None)
        if not self.keyed:
            yield from indices
            return
        base = epoch_seed(self.seed, self.epoch)
        for local, index in enumerate(indices, start=skip):
            yield ItemKey(int(index), item_seed(base, local * self.num_replicas + self.rank))

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """The training ``DataLoader`` of :func:`training_loader`: same batches per (seed, epoch), resumable mid-epoch.

    Args:
        dataset: The :class:`SeededItems` of the training set.
        sampler: Its keyed sampler.
        seed: Run seed (checked against a checkpoint's).
        progress: Batches trained so far in the current epoch (the trainer's count); None: the batches yielded.
        **kwargs: ``DataLoader`` arguments (batch size, workers, collate, drop_last, pin_memory).
    """

    def __init__(
        self,
        dataset: SeededItems,
        sampler: _KeyedSampler,
        seed: int,
        progress: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.seed, self.progress = seed, progress
        self._resume: tuple[int, int] | None = None
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.sampler
        assert isinstance(sampler, _KeyedSampler)
        self._yielded = 0
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            if epoch == sampler.epoch and 0 < batches < len(self):
                assert self.batch_size is not None
                sampler.skip, self._yielded = batches * self.batch_size, batches
                log.info("resuming epoch %d at batch %d of %d", epoch, batches, len(self))
        # the workers' base seed: a function of (seed, epoch), not of how many iterators were made before
        self.generator = torch.Generator().manual_seed(epoch_seed(self.seed, sampler.epoch) ^ 0x5EED)
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Seed, epoch and batches trained in it (saved by Lightning in every checkpoint)."""
        sampler = self.sampler
        assert isinstance(sampler, _KeyedSampler)
        batches = self.progress() if self.progress is not None else self._yielded
        return {"seed": self.seed, "epoch": sampler.epoch, "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the checkpoint's epoch after the batches it had trained (on the next ``iter``)."""
        if int(state.get("seed", self.seed)) != self.seed:
            log.warning(
                "the checkpoint's training order was drawn with seed %s, this run's is %s: the resumed epoch's "
                "order differs from the interrupted run's",
                state.get("seed"),
                self.seed,
            )
        self._resume = (int(state["epoch"]), int(state["batches"]))


def _trained_batches(trainer: Any) -> Callable[[], int] | None:
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if loop is None:
        return None
    return lambda: int(loop.batch_progress.current.processed)


def training_loader(
    dataset: Any,
    *,
    batch_size: int,
    trainer: Any = None,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
    weights: Sequence[float] | None = None,
    persistent_workers: bool | None = None,
) -> ResumableLoader:
    """The training loader of a data module: shuffled (or class-balanced with ``weights``), seeded, resumable.

    Args:
        dataset: Map-style training set.
        batch_size: Items per batch.
        trainer: The data module's trainer (its epoch and batch count), or None outside a fit.
        seed: Fallback seed when the run sets none (``PL_GLOBAL_SEED`` wins, see :func:`run_seed`).
        num_workers: Worker processes.
        drop_last: Drop the last incomplete batch.
        pin_memory: Pin batches (GPU training).
        collate_fn: Batch collation (default: torch's).
        weights: Per-item draw weights: ``len(dataset)`` draws with replacement per epoch instead of a permutation.
        persistent_workers: Keep workers between epochs (default: when there are workers).
    """
    run, epoch = run_seed(seed), int(getattr(trainer, "current_epoch", 0) or 0)
    order: EpochRandomSampler | EpochWeightedRandomSampler
    if weights is not None:
        order = EpochWeightedRandomSampler(list(weights), len(dataset), run, epoch)
    else:
        order = EpochRandomSampler(dataset, run, epoch)
    items = SeededItems(dataset)
    return ResumableLoader(
        items,
        _KeyedSampler(
            order,
            run,
            epoch,
            keyed=items.seeded,
            num_replicas=int(getattr(trainer, "world_size", 1) or 1),
            rank=int(getattr(trainer, "global_rank", 0) or 0),
        ),
        run,
        _trained_batches(trainer),
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0 if persistent_workers is None else persistent_workers,
    )


def evaluation_loader(
    dataset: Any,
    *,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
) -> DataLoader:
    """The val / test / predict loader of a data module: every item once, in dataset order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
    )


def split_loader(
    dataset: Any,
    *,
    train: bool,
    batch_size: int,
    trainer: Any = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
) -> DataLoader:
    """:func:`training_loader` for the training split (``drop_last`` applies), else :func:`evaluation_loader`."""
    if not train:
        return evaluation_loader(
            dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate_fn
        )
    return training_loader(
        dataset,
        batch_size=batch_size,
        trainer=trainer,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
    )
