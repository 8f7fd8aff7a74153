"""Model registry: a plain dict of builders keyed by the builder's own name (as torchvision's ``models/_api.py``).

``@register_model`` on ``def resnet1d_har(*, in_channels, num_classes, ...)`` makes ``build_model("resnet1d_har", ...)``
work and ``grep "def resnet1d_har"`` find it. Registering a name twice raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "build_model", "list_models", "get_model_builder"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Register a keyword-only model builder under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__module__})")
    _MODELS[name] = fn
    return fn


def list_models(prefix: str = "") -> list[str]:
    """Names of the registered builders, sorted, optionally filtered by prefix."""
    return sorted(n for n in _MODELS if n.startswith(prefix))


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; the error lists the known names."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name with keyword arguments."""
    return get_model_builder(name)(**kwargs)
