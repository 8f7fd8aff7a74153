"""Precise BatchNorm: running statistics recomputed with the current weights before each evaluation.

A BatchNorm layer's running mean and variance are an exponential average (momentum 0.1) of the statistics of the
batches it saw, each computed with the weights of that step. When the weights move fast (short schedules, high
learning rates) the average lags behind them, and the eval-mode network normalises with statistics of a network that
no longer exists: training accuracy is high while validation collapses to one class. Wu & Johnson, "Rethinking
'Batch' in BatchNorm" (2021), call the fix *precise BN*: recompute the statistics with the final weights as a plain
average over a number of training batches (pycls ``compute_precise_bn_stats``, fvcore ``update_bn_stats``,
``torch.optim.swa_utils.update_bn``).

:class:`PreciseBatchNorm` does that before every validation of a fit (``trainer.callbacks: - class_path:
vidrec.tasks.precise_bn.PreciseBatchNorm``), at the end of a training epoch that had no validation, and before
``test`` / ``predict`` of the model this trainer has just trained (not when they load a checkpoint: its statistics
were made precise when it was saved). The statistics stay in the model, so checkpoints hold them.

The pass is invisible to the rest of the run, which keeps resume exact: it draws its batches from a fresh training
loader of the data module (vidrec's loaders yield the same batches for a given run seed and epoch), runs under
``torch.no_grad`` with every module but the BatchNorms in eval mode (dropout off), restores the torch, NumPy and
``random`` generator states afterwards, and restores each BatchNorm's momentum and batch count and every module's
training flag. Under DDP each rank averages its own batches and the ranks' averages are combined with one
``all_reduce``, weighted by their batch counts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import is_lazy

__all__ = ["PreciseBatchNorm", "batchnorm_layers", "recompute_batchnorm_statistics"]

log = logging.getLogger(__name__)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm of ``model`` (1d/2d/3d, SyncBatchNorm, inside any container) that keeps running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
        and not is_lazy(m.running_mean)
    ]


@contextmanager
def _rngs_restored(devices: Iterable[torch.device]) -> Iterator[None]:
    """Run the block and put back the torch (CPU and the given CUDA devices), NumPy and ``random`` generator states."""
    cuda = [d.index if d.index is not None else torch.cuda.current_device() for d in devices if d.type == "cuda"]
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=sorted(set(cuda))):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _buffers(bn: _BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    """Running mean, running variance and batch count of a layer :func:`batchnorm_layers` returned."""
    mean, var, count = bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert mean is not None and var is not None and count is not None
    return mean, var, count


def _inputs(batch: Any) -> Any:
    """The model input of a batch: vidrec's ``{"inputs": ...}``, the first item of a tuple, or the batch itself."""
    if isinstance(batch, dict) and "inputs" in batch:
        return batch["inputs"]
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch


@torch.no_grad()
def recompute_batchnorm_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int,
    forward: Any = None,
    device: torch.device | None = None,
) -> int:
    """Replace every BatchNorm's running mean and variance by their average over ``num_batches`` batches.

    The average is cumulative (each batch weighs the same, as BatchNorm does with ``momentum=None``), computed with
    the current weights, every other module in eval mode and no gradient. Momentum, batch counts and every module's
    training flag are restored; a BatchNorm no batch reached keeps its statistics. Under an initialised process group
    with several ranks the averages are combined over ranks, weighted by each rank's batch count (every rank must
    call this).

    Args:
        model: The network (any container: ensembles and parallel classifiers have all their BatchNorms updated).
        batches: Batches of training data (a DataLoader); only the first ``num_batches`` are read.
        num_batches: How many batches to average.
        forward: Called with a batch's inputs (default: ``model``).
        device: Where batches are moved before the forward (default: where they are).

    Returns:
        The number of batches this process averaged (0 for a model without BatchNorm: nothing is run).
    """
    layers = batchnorm_layers(model)
    if not layers or num_batches <= 0:
        return 0
    modes = {m: m.training for m in model.modules()}
    buffers = [_buffers(bn) for bn in layers]
    saved = [(bn.momentum, mean.clone(), var.clone(), count.clone()) for bn, (mean, var, count) in zip(layers, buffers)]
    seen = 0
    try:
        model.eval()
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: running = mean over the batches seen so far
            bn.train()
        run = forward if forward is not None else model
        for batch in islice(batches, num_batches):
            if device is not None:
                batch = move_data_to_device(batch, device)
            run(_inputs(batch))
            seen += 1
        _combine_over_ranks(layers)
        for (mean, var, count), (_, old_mean, old_var, _) in zip(buffers, saved):
            if int(count) == 0:  # not on the forward path of these batches: keep what it had
                mean.copy_(old_mean)
                var.copy_(old_var)
    except BaseException:
        for (mean, var, _), (_, old_mean, old_var, _) in zip(buffers, saved):
            mean.copy_(old_mean)
            var.copy_(old_var)
        raise
    finally:
        for bn, (_, _, count), (momentum, _, _, old_count) in zip(layers, buffers, saved):
            bn.momentum = momentum
            count.copy_(old_count)  # the count of training steps, which the checkpoint keeps
        for m, training in modes.items():
            m.training = training
    return seen


def _combine_over_ranks(layers: list[_BatchNorm]) -> None:
    """Average the per-rank statistics over the process group, each rank weighted by its batch count."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    buffers = [_buffers(bn) for bn in layers]
    parts = []
    for mean, var, count in buffers:
        n = count.to(mean).reshape(1)
        parts += [mean * n, var * n, n]
    flat = torch.cat(parts)
    dist.all_reduce(flat)  # sums over ranks: sum_r n_r * mean_r, sum_r n_r * var_r, sum_r n_r
    offset = 0
    for mean, var, count in buffers:
        c = mean.numel()
        total = flat[offset + 2 * c]
        if total > 0:
            mean.copy_(flat[offset : offset + c] / total)
            var.copy_(flat[offset + c : offset + 2 * c] / total)
        count.fill_(int(total))
        offset += 2 * c + 1


class PreciseBatchNorm(Callback):
    """Recompute every BatchNorm's running statistics with the current weights before each evaluation of a fit.

    Args:
        num_batches: Training batches averaged per recomputation (the whole epoch when it has fewer). pycls uses
            ~200 images' worth of batches per GPU; 50 batches of 32 clips estimate the statistics to well under 1%.
    """

    def __init__(self, num_batches: int = 50) -> None:
        if num_batches < 1:
            raise ValueError(f"PreciseBatchNorm: num_batches must be >= 1, got {num_batches}")
        self.num_batches = num_batches
        self._updated_at: int | None = None  # global step of the last recomputation
        self._fitted = False  # this trainer has trained the model (test / predict then recompute if it moved)

    def _update(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._updated_at == trainer.global_step or not batchnorm_layers(pl_module):
            return
        batches = self._training_batches(trainer)
        if batches is None:
            log.warning("PreciseBatchNorm: no training dataloader to recompute the BatchNorm statistics from; skipped")
            return
        with _rngs_restored([pl_module.device]), trainer.precision_plugin.forward_context():
            seen = recompute_batchnorm_statistics(pl_module, batches, self.num_batches, device=pl_module.device)
        self._updated_at = trainer.global_step
        log.debug("PreciseBatchNorm: statistics of step %d from %d batches", trainer.global_step, seen)

    @staticmethod
    def _training_batches(trainer: Trainer) -> Iterable[Any] | None:
        """A fresh training loader (its own iterator: the fit's is not advanced), set to the current epoch."""
        dm = getattr(trainer, "datamodule", None)
        loader: Any = None
        if dm is not None and callable(getattr(dm, "train_dataloader", None)):
            try:
                loader = dm.train_dataloader()
            except (RuntimeError, KeyError) as error:  # a data module set up for test only has no training split
                log.warning("PreciseBatchNorm: the data module has no training loader (%s)", error)
                return None
        else:  # loaders given to fit(): a second iterator over the same DataLoader
            loader = trainer.train_dataloader
        if loader is None:
            return None
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(trainer.current_epoch)
        return loader  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._fitted = True

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        # not the sanity check: it runs on the weights a resumed run loaded, whose statistics the checkpoint holds
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._update(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        # after a validation at this step this is a no-op; without one it runs before the epoch's checkpoint
        self._update(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self._fitted and trainer.ckpt_path is None:
            self._update(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self._fitted and trainer.ckpt_path is None:
            self._update(trainer, pl_module)
