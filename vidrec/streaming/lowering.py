"""What the code generators of the streaming engines share: decisions about modules they do not lower.

``vidrec.streaming.fastpath`` (torch) and ``vidrec.streaming.numpy_step`` (NumPy) each lower a converted model into
straight-line code. A module an engine does not lower is never skipped silently: it becomes a ``LoweringDecision``
(the module's qualified name, its class, the engine that runs it instead and the reason), logged on the
``vidrec.streaming`` logger and listed by ``StreamingClassifier.describe()``.
"""

from __future__ import annotations

import logging

from torch import nn

from vidrec.layers.lowering import LoweringDecision

__all__ = ["LoweringDecision", "logger", "module_names"]

logger = logging.getLogger("vidrec.streaming")


def module_names(model: nn.Module) -> dict[int, str]:
    """``id(module) -> qualified name`` for every module of ``model`` (the first name of a shared module)."""
    names: dict[int, str] = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    return names
