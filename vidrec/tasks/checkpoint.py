"""Loading trained classifiers from checkpoints for inference, streaming and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidrec.spec import DeploymentSpec

__all__ = ["LoadedClassifier", "load_checkpoint"]


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
        ValueError: the file is not a vidrec checkpoint.
    """
    from vidrec.tasks.classification import Classification

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {file} does not exist")
    raw = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        raise ValueError(f"{file} is not a Lightning checkpoint written by vidrec (no 'state_dict'/'hyper_parameters')")
    if "_instantiator" not in raw["hyper_parameters"]:
        raise ValueError(f"{file} was not written by `vidrec fit` (no model config stored in 'hyper_parameters')")
    task = Classification.load_from_checkpoint(file, map_location="cpu")
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
