"""Model registry: a plain dict of builders keyed by the builder's own name (as torchvision's ``models/_api.py``).

``@register_model`` on ``def resnet1d_har(*, in_channels, num_classes, ...)`` makes ``build_model("resnet1d_har", ...)``
work and ``grep "def resnet1d_har"`` find it. Registering a name twice raises.

Each builder also carries a ``ModelInfo`` (``model_info(name)``): whether the model it builds with its defaults
streams exactly, its modality and its named inputs. Give them in the keyword form,
``@register_model(streams=StreamMode.EXACT, modality=Modality.VIDEO, inputs=("rgb", "flow"))``; the plain form
infers them without building anything: ``streams`` is ``EXACT`` when the builder's return annotation is a
``StreamableClassifier`` or ``ParallelClassifiers`` (else ``NONE``), ``modality`` is ``None`` (unknown), ``inputs``
is ``("x",)``. Tests parametrise over this metadata (``list_models(streams=StreamMode.EXACT)``), not over docstrings.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from torch import nn

__all__ = [
    "Modality",
    "ModelInfo",
    "StreamMode",
    "build_model",
    "get_model_builder",
    "list_models",
    "model_info",
    "register_model",
]


class StreamMode(enum.Enum):
    """How a model streams."""

    EXACT = "exact"  # every streamed window equals the offline output to float rounding
    APPROXIMATE = (
        "approximate"  # streams with a measured deviation ("same" temporal padding, vidrec.streaming.approximate)
    )
    NONE = "none"  # window classifier only


class Modality(enum.Enum):
    """What a model's input is."""

    TIME_SERIES = "time_series"  # (B, C, T) sensor channels
    VIDEO = "video"  # (B, C, T, H, W) frames or flow stacks
    SKELETON = "skeleton"  # joints over time
    FEATURES = "features"  # (B, C, T) per-frame or per-segment feature vectors


@dataclass(frozen=True)
class ModelInfo:
    """Registry metadata of one builder.

    Attributes:
        name: The builder's name.
        streams: How the model built with the builder's defaults streams.
        modality: Its input modality, None when the builder did not say.
        inputs: Names of its inputs (one ``"x"`` for single-input models; multi-input models take a dict keyed so).
        explicit: True when the metadata was given at registration, False when it was inferred.
    """

    name: str
    streams: StreamMode
    modality: Modality | None
    inputs: tuple[str, ...] = ("x",)
    explicit: bool = False


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def _inferred_streams(fn: Callable[..., nn.Module]) -> StreamMode:
    from vidrec.models._base import ParallelClassifiers, StreamableClassifier

    try:
        returned = typing.get_type_hints(fn).get("return")
    except (NameError, TypeError):
        return StreamMode.NONE
    return (
        StreamMode.EXACT
        if isinstance(returned, type) and issubclass(returned, (StreamableClassifier, ParallelClassifiers))
        else StreamMode.NONE
    )


def _register(
    fn: F, streams: StreamMode | str | None, modality: Modality | str | None, inputs: tuple[str, ...] | None
) -> F:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__module__})")
    if inputs is not None and (not inputs or len(set(inputs)) != len(inputs)):
        raise ValueError(f"register_model({name}): inputs must be distinct names, got {inputs!r}")
    _MODELS[name] = fn
    explicit = streams is not None or modality is not None or inputs is not None
    _INFO[name] = ModelInfo(
        name=name,
        streams=StreamMode(streams) if streams is not None else _inferred_streams(fn),
        modality=Modality(modality) if modality is not None else None,
        inputs=tuple(inputs) if inputs is not None else ("x",),
        explicit=explicit,
    )
    return fn


@overload
def register_model(fn: F) -> F: ...


@overload
def register_model(
    *,
    streams: StreamMode | str | None = None,
    modality: Modality | str | None = None,
    inputs: tuple[str, ...] | None = None,
) -> Callable[[F], F]: ...


def register_model(
    fn: F | None = None,
    *,
    streams: StreamMode | str | None = None,
    modality: Modality | str | None = None,
    inputs: tuple[str, ...] | None = None,
) -> F | Callable[[F], F]:
    """Register a keyword-only model builder under its function name (``@register_model`` or with metadata).

    Args:
        fn: The builder (the plain decorator form).
        streams: How the default model streams; inferred from the return annotation when None.
        modality: Its input modality; unknown when None.
        inputs: Its input names; ``("x",)`` when None.

    Raises:
        ValueError: the name is registered already, or ``inputs`` repeats a name.
    """
    if fn is not None:
        return _register(fn, streams, modality, inputs)
    return lambda f: _register(f, streams, modality, inputs)


def list_models(prefix: str = "", *, streams: StreamMode | None = None, modality: Modality | None = None) -> list[str]:
    """Names of the registered builders, sorted, optionally filtered by prefix, stream mode and modality."""
    return sorted(
        n
        for n, info in _INFO.items()
        if n.startswith(prefix)
        and (streams is None or info.streams is streams)
        and (modality is None or info.modality is modality)
    )


def model_info(name: str) -> ModelInfo:
    """The registry metadata of ``name``; the error lists the known names."""
    get_model_builder(name)
    return _INFO[name]


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; the error lists the known names."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name with keyword arguments."""
    return get_model_builder(name)(**kwargs)
