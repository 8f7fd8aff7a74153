"""Loading trained classifiers from checkpoints for inference, streaming and export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["LoadedClassifier", "load_checkpoint"]


@dataclass
class LoadedClassifier:
    """A trained model in eval mode and what is needed to feed it."""

    model: nn.Module  # the network (no Lightning), eval mode, on CPU
    class_names: list[str]  # label k -> name
    data: dict[str, Any] = field(default_factory=dict)  # datamodule metadata: window, hop, context, mean, std, ...
    path: str = ""


def load_checkpoint(path: str | Path) -> LoadedClassifier:
    """Rebuild the model of a checkpoint written by ``vidrec fit`` (its config is stored inside).

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
    return LoadedClassifier(model=model, class_names=list(names), data=dict(meta.get("data") or {}), path=str(file))
