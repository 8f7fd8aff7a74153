"""Loading trained classifiers from checkpoints for inference, streaming and export.

Checkpoints and weight files are untrusted input: they are read with ``torch.load(weights_only=True)``, whose
unpickler builds tensors and plain containers only, so a crafted file cannot run code when it is loaded (a plain
pickle can: ``__reduce__`` calls any function). ``load_weights_only`` is the one place that reads such files.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidrec.spec import DeploymentSpec

__all__ = ["LoadedClassifier", "UnsafeCheckpoint", "load_checkpoint", "load_weights_only"]

# the only instantiator a checkpoint written by `vidrec fit` (LightningCLI) names; anything else is refused
_CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


class UnsafeCheckpoint(ValueError):
    """A checkpoint or weights file that holds more than tensors and plain containers (loading it would run code)."""


def load_weights_only(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``), on the CPU.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpoint: the file holds other objects (a pickle that would run code, or an unknown class).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} {file} does not exist")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpoint(
            f"{file}: refusing to load this {what}: it holds objects other than tensors and plain containers, and "
            f"loading it could run code ({first[:200]})"
        ) from err


@dataclass
class LoadedClassifier:
    """A trained model in eval mode and what is needed to feed it."""

    model: nn.Module  # the network (no Lightning), eval mode, on CPU
    class_names: list[str]  # label k -> name
    spec: DeploymentSpec | None = None  # window, hop, rate, inputs, normalisation, label policy, split; None: unknown
    path: str = ""

    def require_spec(self) -> DeploymentSpec:
        """The deployment spec, or an error naming the checkpoint when it has none."""
        if self.spec is None:
            raise ValueError(
                f"{self.path}: the checkpoint has no deployment spec (it was trained without a vidrec data module, "
                "which writes one); retrain it with `vidrec fit -c CONFIG`"
            )
        return self.spec


def load_checkpoint(path: str | Path) -> LoadedClassifier:
    """Rebuild the model of a ``vidrec fit`` checkpoint (its config is stored inside) and its deployment spec.

    Checkpoints written before deployment specs existed stored the data settings (window, hop, context, rate,
    channels, normalisation, label policy) but not the split: their spec is derived from those settings with
    ``split=None``, enough to stream and export; ``evaluate-streaming`` refuses them with an error that says so.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpoint: the file holds more than tensors and plain containers, or names another instantiator.
        ValueError: the file is not a vidrec checkpoint.
    """
    from vidrec.tasks.classification import Classification

    file = Path(path)
    raw = load_weights_only(file)
    if not isinstance(raw, dict) or "state_dict" not in raw or not isinstance(raw.get("hyper_parameters"), dict):
        raise ValueError(f"{file} is not a Lightning checkpoint written by vidrec (no 'state_dict'/'hyper_parameters')")
    instantiator = raw["hyper_parameters"].get("_instantiator")
    if instantiator is None:
        raise ValueError(f"{file} was not written by `vidrec fit` (no model config stored in 'hyper_parameters')")
    if instantiator != _CLI_INSTANTIATOR:
        raise UnsafeCheckpoint(
            f"{file}: hyper_parameters._instantiator is {instantiator!r}; expected {_CLI_INSTANTIATOR!r} "
            "(the model is rebuilt only through the LightningCLI instantiator)"
        )
    task = Classification.load_from_checkpoint(file, map_location="cpu", weights_only=True)
    meta = raw.get("vidrec", {})
    model = task.model.eval()
    k = meta.get("num_classes")
    names = meta.get("class_names") or [str(i) for i in range(k or 0)]
    return LoadedClassifier(
        model=model, class_names=list(names), spec=_spec(meta, list(names), str(file)), path=str(file)
    )


def _spec(meta: dict[str, Any], class_names: list[str], where: str) -> DeploymentSpec | None:
    if meta.get("spec") is not None:
        return DeploymentSpec.from_dict(meta["spec"], where)
    if meta.get("data"):  # written before specs existed: derived from the stored data settings, split unknown
        return DeploymentSpec.from_legacy_metadata(meta["data"], class_names, where)
    return None
