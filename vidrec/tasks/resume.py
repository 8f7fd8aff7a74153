"""Exact resume of ``vidrec fit``: per-epoch seeding, RNG state in checkpoints, one run folder per run.

A run killed at any step and resumed from ``last.ckpt`` must end with the weights and metrics of the run that was
never interrupted. Lightning restores weights, optimizer, scheduler and loop counters; what it does not make
reproducible is randomness: the shuffling sampler and dropout draw from the global generators, whose state after a
restart depends on everything drawn since the process started (sanity-check loaders, the restart itself).
``EpochSeeding`` therefore reseeds torch, NumPy and ``random`` at the start of every training epoch from the run's
seed and the epoch index, so epoch ``e`` draws the same numbers (dropout, augmentation) whether or not the process
was restarted before it. The shuffling order cannot rely on that hook (Lightning may make the epoch's iterator before
it): the time-series training sampler is a ``datamodules.samplers.EpochRandomSampler``, reseeded in ``set_epoch``.
The run seed and the generators' states are stored in every checkpoint (tensors, ints and lists only, so
``torch.load(weights_only=True)`` reads them); loading one sets ``PL_GLOBAL_SEED`` to the stored seed, so the
samplers of the resumed run follow the original seed even when ``seed_everything: true`` drew it at random.

``run_folder_of``, ``metrics_before`` and ``write_metrics`` let the CLI continue a resumed run in its own folder:
rows of ``metrics.csv`` logged after the checkpoint (the interrupted epoch) are removed before they are logged again
(Lightning's CSV writer deletes a ``metrics.csv`` it finds, so the kept rows are written back after it starts).
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from datamodules.samplers import epoch_seed

__all__ = ["EpochSeeding", "metrics_before", "run_folder_of", "write_metrics"]


class EpochSeeding(Callback):
    """Reseeds torch, NumPy and ``random`` at every training epoch start from ``(run seed, epoch)``.

    Args:
        seed: The run seed; default: the one ``seed_everything`` set (``PL_GLOBAL_SEED``), else a random one. A
            resumed run takes the seed stored in its checkpoint.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    @property
    def state_key(self) -> str:
        return "EpochSeeding"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.seed is None:
            env = os.environ.get("PL_GLOBAL_SEED")
            self.seed = int(env) if env is not None else random.SystemRandom().randrange(2**32)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.seed is not None
        seed = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # CPU and every CUDA device

    def state_dict(self) -> dict[str, Any]:
        np_state = cast(tuple[Any, ...], np.random.get_state())  # ('MT19937', keys (624,), pos, has_gauss, cached)
        return {
            "seed": self.seed,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [str(np_state[0]), np_state[1].tolist(), *(float(v) for v in np_state[2:])],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = int(state_dict["seed"])
        os.environ["PL_GLOBAL_SEED"] = str(self.seed)  # what seed_everything sets; the samplers read it
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))


def run_folder_of(ckpt_path: str | os.PathLike[str] | None) -> Path | None:
    """The run folder of a checkpoint ``<run>/checkpoints/NAME.ckpt`` written by ``vidrec fit``; else None."""
    if ckpt_path is None:
        return None
    file = Path(ckpt_path)
    if not file.is_file() or file.parent.name != "checkpoints":
        return None
    run = file.parent.parent
    if not any((run / name).exists() for name in ("metrics.csv", "config.yaml", "hparams.yaml")):
        return None
    return run


def metrics_before(path: Path, global_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSVLogger ``metrics.csv`` logged before ``global_step`` (([], []) without a file)."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("step") not in (None, "") and int(float(r["step"])) < global_step]
    return header, rows


def write_metrics(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    """Write ``rows`` under ``header`` as ``metrics.csv`` (atomically)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
