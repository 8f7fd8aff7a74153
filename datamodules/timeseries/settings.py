"""Settings of :class:`~datamodules.timeseries.datamodule.HDF5WindowDataModule`, one typed dataclass per concern.

In a LightningCLI config each group is a nested mapping under ``data.init_args``::

    data:
      class_path: datamodules.timeseries.HDF5WindowDataModule
      init_args:
        path: data/hapt.h5
        windows: {window: 128, hop: 64, eval_hop: 64}
        labels: {policy: PURE}
        split: {mode: OFFICIAL, val_fraction: 0.15}
        loader: {batch_size: 64}

and one field is overridden as ``--data.init_args.windows.hop 32``. The flat keys of earlier versions
(``window``, ``split_mode``, ``batch_size``, ...) are listed in :data:`LEGACY_KEYS` with the key that replaced each;
:func:`move_legacy_keys` moves them (the data module and ``vidrec fit`` both call it and warn with the new key).
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from datamodules.timeseries.dataset import ContextPadding, LabelPolicy

__all__ = [
    "LEGACY_KEYS",
    "LabelSettings",
    "LegacyKeyWarning",
    "LoaderSettings",
    "SplitMode",
    "SplitSettings",
    "WindowSettings",
    "move_legacy_keys",
]


_E = TypeVar("_E", bound=enum.Enum)


def _member(kind: type[_E], value: _E | str, key: str) -> _E:
    """``value`` as a member of ``kind``, given as a member, its name (``EDGE``) or its value (``edge``)."""
    if isinstance(value, kind):
        return value
    for member in kind:
        if value in (member.name, member.value):
            return member
    raise ValueError(f"{key} must be one of {[m.name for m in kind]}, got {value!r}")


class SplitMode(enum.Enum):
    """How recordings are assigned to train / val / test (always by subject)."""

    SUBJECTS = "subjects"  # explicit subject lists
    OFFICIAL = "official"  # the file's per-recording `split` attribute
    KFOLD = "kfold"  # k folds by subject; `fold` is the test fold
    LOSO = "loso"  # leave one subject out; `fold` is the test subject


@dataclass
class WindowSettings:
    """Window geometry (see :mod:`datamodules.timeseries.dataset`).

    Attributes:
        window: Samples per window (the labelled target region).
        hop: Hop between training windows, in samples.
        eval_hop: Hop of the val / test / predict windows (default: ``hop``).
        context: Extra samples of left context before each window (input length = context + window).
        context_padding: DROP: windows whose context would start before their recording do not exist. EDGE: the
            missing context is copies of the recording's first sample, so every window of ``context = 0`` is kept
            (streaming: ``first_output = window``).
        context_truncation: Training only: probability that a window's context is cut at a random point and
            edge-filled before it, so the model learns the short histories that EDGE padding produces.
    """

    window: int = 128
    hop: int = 64
    eval_hop: int | None = None
    context: int = 0
    context_padding: ContextPadding = ContextPadding.DROP
    context_truncation: float = 0.0

    def __post_init__(self) -> None:
        self.context_padding = _member(ContextPadding, self.context_padding, "windows.context_padding")
        for name, value in (("window", self.window), ("hop", self.hop)):
            if value < 1:
                raise ValueError(f"windows.{name} must be >= 1, got {value}")
        if self.eval_hop is not None and self.eval_hop < 1:
            raise ValueError(f"windows.eval_hop must be >= 1 (or null: the training hop), got {self.eval_hop}")
        if self.context < 0:
            raise ValueError(f"windows.context must be >= 0, got {self.context}")
        if not 0.0 <= self.context_truncation <= 1.0:
            raise ValueError(f"windows.context_truncation must be in [0, 1], got {self.context_truncation}")
        if self.context_truncation > 0 and self.context == 0:
            raise ValueError("windows.context_truncation > 0 needs windows.context > 0")

    @property
    def input_length(self) -> int:
        """Samples per model input: context + window."""
        return self.context + self.window

    @property
    def edge_fill_length(self) -> int:
        """Copies of the first sample put in front of each recording: ``context`` under EDGE, else 0."""
        return self.context if self.context_padding is ContextPadding.EDGE else 0

    @property
    def evaluation_hop(self) -> int:
        """The hop of val / test / predict windows (``eval_hop``, else ``hop``)."""
        return self.hop if self.eval_hop is None else self.eval_hop


@dataclass
class LabelSettings:
    """How a window gets its label from its samples' labels (unlabelled windows are always dropped).

    Attributes:
        policy: PURE: keep only windows whose target samples all carry one class; MAJORITY: most frequent labelled
            class; CENTER: the centre sample's label.
        max_unlabelled_fraction: MAJORITY: largest unlabelled share of a kept window.
    """

    policy: LabelPolicy = LabelPolicy.PURE
    max_unlabelled_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.policy = _member(LabelPolicy, self.policy, "labels.policy")
        if not 0.0 <= self.max_unlabelled_fraction <= 1.0:
            raise ValueError(f"labels.max_unlabelled_fraction must be in [0, 1], got {self.max_unlabelled_fraction}")


@dataclass
class SplitSettings:
    """Which subjects train, validate and test (see :func:`datamodules.timeseries.splits.resolve_subject_split`).

    Attributes:
        mode: SUBJECTS, OFFICIAL, KFOLD or LOSO.
        train_subjects: SUBJECTS: train subjects (default: all not in val / test).
        val_subjects: Validation subjects (taken out of train; never test subjects).
        test_subjects: SUBJECTS: test subjects.
        val_fraction: Fraction of the train subjects used for validation when ``val_subjects`` is not given.
        num_folds: KFOLD: number of folds.
        fold: KFOLD: test fold index; LOSO: test subject id.
        seed: Seed of the KFOLD subject shuffle and of the ``val_fraction`` draw (and of the training order when
            no run seed is set).
    """

    mode: SplitMode = SplitMode.OFFICIAL
    train_subjects: list[int] | None = None
    val_subjects: list[int] | None = None
    test_subjects: list[int] | None = None
    val_fraction: float = 0.0
    num_folds: int = 5
    fold: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        self.mode = _member(SplitMode, self.mode, "split.mode")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"split.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class LoaderSettings:
    """Batching and the training order.

    Attributes:
        batch_size: Windows per batch.
        num_workers: DataLoader workers (0 is fastest here: the data are in memory).
        balanced: Train with class-balanced draws (with replacement) instead of shuffling.
        drop_last: Drop the last incomplete training batch.
        pin_memory: Pin batches (GPU training).
    """

    batch_size: int = 64
    num_workers: int = 0
    balanced: bool = False
    drop_last: bool = False
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(
                f"loader.batch_size must be >= 1 and loader.num_workers >= 0, got {self.batch_size}, {self.num_workers}"
            )


# flat key of earlier versions -> (settings group, field)
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "window": ("windows", "window"),
    "hop": ("windows", "hop"),
    "eval_hop": ("windows", "eval_hop"),
    "context": ("windows", "context"),
    "context_padding": ("windows", "context_padding"),
    "context_truncation": ("windows", "context_truncation"),
    "label_policy": ("labels", "policy"),
    "max_unlabelled_fraction": ("labels", "max_unlabelled_fraction"),
    "split_mode": ("split", "mode"),
    "train_subjects": ("split", "train_subjects"),
    "val_subjects": ("split", "val_subjects"),
    "test_subjects": ("split", "test_subjects"),
    "val_fraction": ("split", "val_fraction"),
    "num_folds": ("split", "num_folds"),
    "fold": ("split", "fold"),
    "seed": ("split", "seed"),
    "batch_size": ("loader", "batch_size"),
    "num_workers": ("loader", "num_workers"),
    "balanced": ("loader", "balanced"),
    "drop_last": ("loader", "drop_last"),
    "pin_memory": ("loader", "pin_memory"),
}


class LegacyKeyWarning(FutureWarning):
    """A flat ``HDF5WindowDataModule`` key of an earlier version was given; the message names the new key."""


def move_legacy_keys(init_args: MutableMapping[str, Any], where: str = "data.init_args") -> list[str]:
    """Move the flat keys of :data:`LEGACY_KEYS` in ``init_args`` into their groups (in place), with a warning.

    A group given as a settings object is turned into a mapping first; a key given both ways is an error.

    Returns:
        ``"old -> group.name"`` for each moved key.

    Raises:
        ValueError: a key is given both flat and in its group.
    """
    moved = []
    for old, (group, name) in LEGACY_KEYS.items():
        if old not in init_args:
            continue
        section = init_args.get(group)
        if section is None:
            section = {}
        elif not isinstance(section, MutableMapping):
            section = {k: v for k, v in vars(section).items()}
        if name in section:
            raise ValueError(f"{where}: {old} is given twice, as {old} and as {group}.{name}; keep {group}.{name}")
        section[name] = init_args.pop(old)
        init_args[group] = section
        moved.append(f"{old} -> {group}.{name}")
    if moved:
        warnings.warn(
            f"{where}: HDF5WindowDataModule's flat keys are deprecated and will be removed; moved "
            + ", ".join(moved)
            + " (write the new keys)",
            LegacyKeyWarning,
            stacklevel=3,
        )
    return moved
