"""Sliding windows over in-memory continuous recordings: window tables, label policies, batched gathering.

Window geometry (aligned with streaming): with ``L = context + window``, window k of a recording of length T reads
input samples ``[k*hop, k*hop + L)``; its target region is the last ``window`` samples ``[k*hop + context, k*hop + L)``,
so the ``context`` samples before it are real signal (windows whose context would fall before the recording start
do not exist on this grid). A stream that starts at sample 0 emits an output every ``hop`` samples once ``L``
samples have arrived, i.e. exactly at the ends of these windows.

Context padding (:class:`ContextPadding`): with ``EDGE`` the data module puts ``context`` copies of each recording's
first sample in front of it, so windows near the start read that copy instead of missing history. Their target grid is
then the one of ``context = 0`` (every window of the recording is kept), and a streaming runtime built with
``first_output = window`` fills a new stream's history the same way.

All recordings are concatenated into one (C, N) float32 array; a batch is gathered with one fancy-indexing op by
:meth:`WindowDataset.__getitems__`, which torch's DataLoader calls with a whole batch of indices (use
:func:`collate_window_batch` as ``collate_fn``). The gather indexes a (N - L + 1, C, L) strided view of the data, so
each window is one contiguous row copy (~280k windows/s at B = 64).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset

from datamodules.timeseries.schema import UNLABELLED
from vidrec.spec import ChannelNormalization, ContextPadding

__all__ = [
    "ChannelNormalization",
    "ContextPadding",
    "LabelPolicy",
    "WindowDataset",
    "WindowTable",
    "build_window_table",
    "collate_window_batch",
    "window_labels",
]


class LabelPolicy(enum.Enum):
    """How a window gets its label from the per-sample labels of its target region (context excluded).

    Windows that end up unlabelled are always dropped.
    """

    PURE = "pure"  # keep only windows whose samples are all labelled with one class
    MAJORITY = "majority"  # most frequent labelled class (ties: lowest index); drop if unlabelled share > threshold
    CENTER = "center"  # label of the centre sample (index window // 2); drop if it is unlabelled


@dataclass
class WindowTable:
    """Windows of one split, one row per window.

    Attributes:
        starts: (N,) int64 global index (into the concatenated recordings) of the first input sample.
        targets: (N,) int64 class.
        groups: (N,) int64 recording index (position of the recording in the file).
        dropped_unlabelled: windows dropped because their label was undefined (-1 under the policy).
        dropped_mixed: windows dropped for mixed labels (PURE) or too many unlabelled samples (MAJORITY).
        too_short: recordings shorter than one window (no windows).
    """

    starts: np.ndarray
    targets: np.ndarray
    groups: np.ndarray
    dropped_unlabelled: int = 0
    dropped_mixed: int = 0
    too_short: int = 0

    def __len__(self) -> int:
        return len(self.starts)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """(K,) windows per class."""
        return np.bincount(self.targets, minlength=num_classes)


def window_labels(
    labels: np.ndarray,
    *,
    window: int,
    context: int,
    hop: int,
    policy: LabelPolicy,
    num_classes: int,
    max_unlabelled_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label the windows of one recording.

    Args:
        labels: (T,) per-sample labels, -1 = unlabelled.
        window, context, hop: Window geometry (see module docstring).
        policy: Label policy.
        num_classes: K.
        max_unlabelled_fraction: MAJORITY drops windows with a larger unlabelled share.

    Returns:
        (offsets (N,) of the first input sample, targets (N,) with -1 = drop, mixed (N,) bool = dropped for mixed
        labels / unlabelled share). All O(T): no (N, window) temporaries.
    """
    length = context + window
    if len(labels) < length:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    offsets = np.arange(0, len(labels) - length + 1, hop, dtype=np.int64)
    first = offsets + context  # first target sample
    mixed = np.zeros(len(offsets), dtype=bool)
    if policy == LabelPolicy.CENTER:
        targets = labels[first + window // 2].astype(np.int64)
    elif policy == LabelPolicy.PURE:
        # run_start[t]: first index of the run of equal labels containing t
        change = np.flatnonzero(np.diff(labels) != 0) + 1
        run_start = np.zeros(len(labels), dtype=np.int64)
        run_start[change] = change
        run_start = np.maximum.accumulate(run_start)
        last = first + window - 1
        pure = run_start[last] <= first
        targets = np.where(pure, labels[last], UNLABELLED).astype(np.int64)
        mixed = ~pure
    elif policy == LabelPolicy.MAJORITY:
        one_hot = np.zeros((len(labels) + 1, num_classes + 1), dtype=np.int32)  # column K counts unlabelled
        one_hot[np.arange(1, len(labels) + 1), np.where(labels < 0, num_classes, labels)] = 1
        cumulative = np.cumsum(one_hot, axis=0)  # (T + 1, K + 1)
        counts = cumulative[first + window] - cumulative[first]  # (N, K + 1)
        unlabelled = counts[:, num_classes]
        mixed = (unlabelled > max_unlabelled_fraction * window) & (unlabelled < window)
        targets = np.where(mixed | (unlabelled == window), UNLABELLED, np.argmax(counts[:, :num_classes], axis=1))
    else:
        raise ValueError(f"label_policy: unknown policy {policy!r}")
    return offsets, targets.astype(np.int64), mixed


def build_window_table(
    labels: Sequence[np.ndarray],
    recording_offsets: np.ndarray,
    recording_indices: Sequence[int],
    *,
    window: int,
    context: int,
    hop: int,
    policy: LabelPolicy,
    num_classes: int,
    max_unlabelled_fraction: float = 0.5,
) -> WindowTable:
    """Window table over the given recordings, in recording order then time.

    Args:
        labels: Per recording (all of the file) the (T,) labels.
        recording_offsets: (R,) start of each recording in the concatenated array.
        recording_indices: Recordings of this split.
        window, context, hop, policy, num_classes, max_unlabelled_fraction: See :func:`window_labels`.
    """
    starts, targets, groups = [], [], []
    dropped_unlabelled = dropped_mixed = too_short = 0
    for r in recording_indices:
        offsets, target, mixed = window_labels(
            labels[r],
            window=window,
            context=context,
            hop=hop,
            policy=policy,
            num_classes=num_classes,
            max_unlabelled_fraction=max_unlabelled_fraction,
        )
        too_short += int(len(offsets) == 0)
        keep = target >= 0
        dropped_mixed += int(mixed.sum())
        dropped_unlabelled += int((~keep & ~mixed).sum())
        starts.append(offsets[keep] + recording_offsets[r])
        targets.append(target[keep])
        groups.append(np.full(int(keep.sum()), r, dtype=np.int64))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return WindowTable(cat(starts), cat(targets), cat(groups), dropped_unlabelled, dropped_mixed, too_short)


class WindowDataset(Dataset):
    """Map-style dataset of windows over a shared in-memory (C, N) array.

    ``dataset[i]`` gives ``{"inputs": (C, L) float32, "target": int64 scalar, "group": int64 scalar}``;
    ``dataset.__getitems__(indices)`` gives the whole batch ``{"inputs": (B, C, L), "target": (B,), "group": (B,)}``
    with one gather.

    Args:
        data: (C, N) float32 concatenation of all recordings (not normalised).
        table: Windows of this split.
        length: L = context + window samples per input.
        normalization: Applied on the fly; replace with :meth:`set_normalization`.
        context_truncation: Training augmentation: the probability that a window's left context is cut at a random
            point and filled with copies of the sample there, as at the start of a stream (see :class:`ContextPadding`).
            The cut falls in the first ``context`` samples, never in the labelled ``window``. 0 = off.
        context: Samples of left context in each window (``length - window``); needed when ``context_truncation > 0``.
    """

    def __init__(
        self,
        data: np.ndarray,
        table: WindowTable,
        length: int,
        normalization: ChannelNormalization,
        *,
        context_truncation: float = 0.0,
        context: int = 0,
    ):
        if data.shape[1] < length and len(table):
            raise ValueError(f"{len(table)} windows of {length} samples over only {data.shape[1]} samples")
        if not 0.0 <= context_truncation <= 1.0:
            raise ValueError(f"context_truncation must be a probability in [0, 1], got {context_truncation}")
        if context_truncation > 0 and not 0 < context < length:
            raise ValueError(f"context_truncation needs 0 < context < length, got context={context}, length={length}")
        self.data = data
        self.table = table
        self.length = length
        self.context_truncation, self.context = float(context_truncation), int(context)
        # whether items draw random numbers (datamodules.loaders seeds each batch only then)
        self.draws_random = self.context_truncation > 0
        # (N - L + 1, C, L) strided view: row s is the window starting at sample s; indexing rows copies B windows
        self._windows = (
            sliding_window_view(data, length, axis=1).transpose(1, 0, 2) if data.shape[1] >= length else None
        )
        self.set_normalization(normalization)

    def set_normalization(self, normalization: ChannelNormalization) -> None:
        """Use new per-channel statistics from now on."""
        self.normalization = normalization

    def __len__(self) -> int:
        return len(self.table)

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Normalised inputs (B, C, L) float32 for window indices (B,)."""
        if self._windows is None:
            return np.zeros((0, self.data.shape[0], self.length), dtype=np.float32)
        x = self._windows[self.table.starts[indices]]  # (B, C, L), a contiguous copy
        self.normalization.apply(x, channel_axis=1, out=x)  # in place: (B, C, L)
        if self.context_truncation > 0 and len(x):
            x = self._truncate_context(x)
        return x

    def _truncate_context(self, x: np.ndarray) -> np.ndarray:
        """Edge-fill the context of a random share of the rows before a random cut in ``[1, context]``."""
        # torch's generator: seeded by Lightning's seed_everything and per DataLoader worker
        rows = torch.rand(len(x)).numpy() < self.context_truncation
        if not rows.any():
            return x
        cuts = torch.randint(1, self.context + 1, (int(rows.sum()),)).numpy()  # first real sample of each row
        index = np.maximum(np.arange(self.length)[None, :], cuts[:, None])  # (b, L): t < cut reads the cut sample
        x[rows] = np.take_along_axis(x[rows], index[:, None, :], axis=2)
        return x

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        return {
            "inputs": torch.from_numpy(self.gather(idx)),
            "target": torch.from_numpy(self.table.targets[idx]),
            "group": torch.from_numpy(self.table.groups[idx]),
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window index {index} out of range for {len(self)} windows")
        batch = self.__getitems__([index])
        return {key: value[0] for key, value in batch.items()}  # (C, L), (), ()


def collate_window_batch(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for :class:`WindowDataset`: passes through a batch made by ``__getitems__``.

    A list of single-window dicts (a DataLoader without ``__getitems__`` support) is stacked instead.
    """
    if isinstance(batch, dict):
        return batch
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}
