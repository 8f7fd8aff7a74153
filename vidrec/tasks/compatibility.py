"""Checking a model against its data before training: channels, classes and window length.

Without this check a model built for 6 channels met a 5-channel file inside its first convolution
(``expected input[32, 5, 64] to have 6 channels``) and a 4-class head met 3-class data at the first validation step.
``check_model_fits_data`` runs at the task's ``setup`` on the datamodule's metadata (``in_channels``,
``input_length``, ``num_classes``, ``path``) and raises one ``ValueError`` naming the file, the key and what was
expected. Data modules without that metadata (video) are checked on classes only.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

__all__ = ["ModelDataMismatch", "check_model_fits_data"]


class ModelDataMismatch(ValueError):
    """The model cannot consume the data module's windows or predict its classes."""


def check_model_fits_data(model: nn.Module, datamodule: Any, num_classes: int) -> None:
    """Raise ``ModelDataMismatch`` when ``model`` does not fit the windows and classes of ``datamodule``.

    Time-series data modules (with ``in_channels`` and ``input_length``) are checked with one forward pass of two
    zero windows in eval mode (no gradients, no state or RNG change): channels, receptive field and logits shape.
    """
    where = str(getattr(datamodule, "path", type(datamodule).__name__))
    channels, length = getattr(datamodule, "in_channels", None), getattr(datamodule, "input_length", None)
    if not isinstance(channels, int) or not isinstance(length, int):
        return
    field = getattr(model, "receptive_field", None)
    if isinstance(field, int) and length < field:
        raise ModelDataMismatch(
            f"{where}: windows of {length} samples (data.init_args.windows.context + windows.window) are shorter than"
            f" the receptive field of {type(model).__name__} ({field} samples); use a window of at least {field}"
        )
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, channels, length, device=device, dtype=dtype))  # (B, C, T) -> (B, K)
    except RuntimeError as err:
        text = str(err)
        wanted = re.search(r"to have (\d+) channels", text)
        if wanted:
            raise ModelDataMismatch(
                f"{where}: the data has {channels} channels, {type(model).__name__} expects {wanted.group(1)} "
                f"(set model.model.init_args.in_channels: {channels}, or use a file with {wanted.group(1)} channels)"
            ) from err
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise ModelDataMismatch(
            f"{where}: {type(model).__name__} cannot take windows of shape (B, {channels}, {length}): {first}"
        ) from err
    finally:
        model.train(was_training)
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        outputs = logits.shape[1] if logits.dim() == 2 else tuple(logits.shape)
        raise ModelDataMismatch(
            f"{where}: the data has {num_classes} classes, {type(model).__name__} outputs {outputs} "
            f"(set model.model.init_args.num_classes: {num_classes})"
        )
