"""LightningDataModule of sliding windows over a ``vidrec.timeseries/1`` HDF5 file (wearable-sensor HAR).

Every recording is read whole into memory at ``setup`` (HAPT: 1.1 M x 6 float32 = 27 MB); windows are cut on the
fly (see :mod:`datamodules.timeseries.dataset` for the geometry and label policies). Splits are by subject
(:mod:`datamodules.timeseries.splits`). The settings come in groups (:mod:`datamodules.timeseries.settings`):
``windows``, ``labels``, ``split``, ``loader``, plus ``normalize``.

Per-channel mean/std come from the labelled samples of the training recordings only (float64), are applied on the
fly, saved with checkpoints through ``state_dict`` and exposed as ``normalization`` for streaming.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from datamodules.loaders import evaluation_loader, training_loader
from datamodules.timeseries.dataset import (
    ChannelNormalization,
    LabelPolicy,
    WindowDataset,
    WindowTable,
    build_window_table,
    collate_window_batch,
)
from datamodules.timeseries.schema import Recording, read_info, read_recordings
from datamodules.timeseries.settings import (
    LEGACY_KEYS,
    LabelSettings,
    LoaderSettings,
    SplitMode,
    SplitSettings,
    WindowSettings,
    move_legacy_keys,
)
from datamodules.timeseries.splits import SubjectSplit, resolve_subject_split
from vidrec.spec import DeploymentSpec, Modality, SplitSpec, edge_fill

__all__ = [
    "HDF5WindowDataModule",
    "LabelSettings",
    "LoaderSettings",
    "SplitMode",
    "SplitSettings",
    "SubjectSplit",
    "TestRecording",
    "WindowSettings",
]

log = logging.getLogger(__name__)

_S = TypeVar("_S")


def _settings(kind: type[_S], value: _S | Mapping[str, Any] | None) -> _S:
    """``value`` as a ``kind`` settings object (a mapping's keys are its fields; None: the defaults)."""
    if value is None:
        return kind()
    if isinstance(value, Mapping):
        return kind(**value)
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__} or a mapping of its fields, got {type(value).__name__}")
    return value


_CREATE_HINT = (
    " (create it with `vidrec data hapt --out PATH.h5`, `vidrec data basicmotions --out PATH.h5`, "
    "`vidrec data uci-har DIR --out PATH.h5`, `vidrec data uea ...` or `vidrec data generic ...`)"
)


@dataclass
class TestRecording:
    """A normalised test recording for streaming evaluation.

    Attributes:
        id: Recording id in the file.
        group: Recording index (the ``group`` of its windows).
        subject: Subject id.
        samples: (C, T) float32, normalised with the training statistics.
        labels: (T,) int64 per-sample labels, -1 = unlabelled.
        window_ends: (N,) int64 exclusive end, in this recording's samples, of each test window ``vidrec test``
            scores in it (time order); an edge-filled window's context may start before sample 0.
        window_targets: (N,) int64 label of each of those windows under the label policy.
    """

    id: str
    group: int
    subject: int
    samples: np.ndarray
    labels: np.ndarray
    window_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    window_targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class HDF5WindowDataModule(L.LightningDataModule):
    """Sliding windows over a ``vidrec.timeseries/1`` HDF5 file, split by subject.

    Batches: ``{"inputs": float32 (B, C, context + window), "target": int64 (B,), "group": int64 (B,)}`` where
    ``group`` is the recording's index in the file. Window labels follow ``labels.policy`` (default PURE).
    Unlabelled windows are always dropped. Val / test / predict loaders iterate in file order, then time, with hop
    ``windows.eval_hop``.

    Args:
        path: HDF5 file (``vidrec data ...`` creates it).
        windows: Window, hop, evaluation hop and left context (:class:`WindowSettings`).
        labels: Label policy of a window (:class:`LabelSettings`).
        split: Which subjects train, validate and test (:class:`SplitSettings`).
        loader: Batch size, workers, class-balanced draws (:class:`LoaderSettings`).
        normalize: Apply per-channel training statistics (else identity).
        **legacy: The flat keys of earlier versions (``window=``, ``split_mode=``, ``batch_size=``, ...): moved into
            their group with a :class:`LegacyKeyWarning` that names the new key (see ``settings.LEGACY_KEYS``).
    """

    def __init__(
        self,
        path: str,
        windows: WindowSettings | None = None,
        labels: LabelSettings | None = None,
        split: SplitSettings | None = None,
        loader: LoaderSettings | None = None,
        normalize: bool = True,
        **legacy: Any,
    ) -> None:
        super().__init__()
        if legacy:
            unknown = sorted(set(legacy) - set(LEGACY_KEYS))
            if unknown:
                raise TypeError(f"HDF5WindowDataModule got unexpected keyword arguments {unknown}")
            groups: dict[str, Any] = {"windows": windows, "labels": labels, "split": split, "loader": loader}
            groups.update(legacy)
            move_legacy_keys(groups, where="HDF5WindowDataModule")
            windows, labels, split, loader = (groups[k] for k in ("windows", "labels", "split", "loader"))
        self.path = str(path)
        self.windows = _settings(WindowSettings, windows)
        self.labels = _settings(LabelSettings, labels)
        self.split = _settings(SplitSettings, split)
        self.loader = _settings(LoaderSettings, loader)
        self.normalize = normalize

        info = read_info(self.path, missing_hint=_CREATE_HINT)
        self.sampling_rate: float = info.sampling_rate
        self.channel_names: list[str] = info.channel_names
        self.class_names: list[str] = info.class_names
        self.num_classes: int = info.num_classes
        self.in_channels: int = info.num_channels
        self.source: str | None = info.source

        self._recordings: list[Recording] | None = None
        self._data: np.ndarray | None = None  # (C, N) all recordings concatenated
        self._offsets: np.ndarray | None = None  # (R,) start of each recording in _data
        self.subject_split: SubjectSplit | None = None
        self.datasets: dict[str, WindowDataset] = {}
        self._normalization: ChannelNormalization | None = None
        self._normalization_loaded = False

    @property
    def input_length(self) -> int:
        """Samples per input window: context + window."""
        return self.windows.input_length

    @property
    def has_validation(self) -> bool:
        """Whether the split has validation subjects (known after ``setup``; the CLI's checkpoint reads it)."""
        if self.subject_split is None:
            return bool(self.split.val_subjects) or self.split.val_fraction > 0
        return bool(self.subject_split.val)

    @property
    def normalization(self) -> ChannelNormalization:
        """Per-channel (mean, std) applied to inputs; computed at setup or loaded with ``load_state_dict``."""
        if self._normalization is None:
            raise RuntimeError(f"{self.path}: normalization is known after setup() or load_state_dict()")
        return self._normalization

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Load every recording, resolve the subject split, build the window tables (once; all stages)."""
        if self.datasets:
            return
        info, recordings = read_recordings(self.path)
        if info.channel_names != self.channel_names or info.class_names != self.class_names:
            raise ValueError(f"{self.path}: channel_names / class_names changed since the datamodule was created")
        self._recordings = recordings
        # EDGE: `context` copies of the first sample (unlabelled) in front of each recording in the window array
        pad = self.windows.edge_fill_length
        samples = [edge_fill(r.samples, pad, axis=0) for r in recordings]  # (pad + T, C) each
        labels = [np.concatenate([np.full(pad, -1, dtype=r.labels.dtype), r.labels]) for r in recordings]
        lengths = np.array([len(x) for x in labels], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._data = np.ascontiguousarray(np.concatenate(samples).T)  # (C, N)

        official: dict[int, str | None] = {}
        for r in recordings:
            if official.setdefault(r.subject, r.split) != r.split:
                raise ValueError(f"{self.path}: subject {r.subject} has recordings in both official splits")
        split = resolve_subject_split(
            sorted(official),
            official,
            self.split,
            where=self.path,
        )
        self.subject_split = split

        train_recs = [i for i, r in enumerate(recordings) if r.subject in split.train]
        if not self._normalization_loaded:
            self._normalization = self._compute_normalization(train_recs)
        for name, subjects, hop in (
            ("train", split.train, self.windows.hop),
            ("val", split.val, self.windows.evaluation_hop),
            ("test", split.test, self.windows.evaluation_hop),
        ):
            recs = [i for i, r in enumerate(recordings) if r.subject in subjects]
            table = build_window_table(
                labels,
                self._offsets,
                recs,
                window=self.windows.window,
                context=self.windows.context,
                hop=hop,
                policy=self.labels.policy,
                num_classes=self.num_classes,
                max_unlabelled_fraction=self.labels.max_unlabelled_fraction,
            )
            self._log_split(name, subjects, recs, table)
            if subjects and len(table) == 0:
                raise ValueError(
                    f"{self.path}: {name} split (subjects {subjects}) has no windows of {self.input_length} samples"
                    f" under labels.policy {self.labels.policy.name}"
                )
            self.datasets[name] = WindowDataset(
                self._data,
                table,
                self.input_length,
                self.normalization,
                context_truncation=self.windows.context_truncation if name == "train" else 0.0,
                context=self.windows.context,
            )

    def _compute_normalization(self, train_recs: list[int]) -> ChannelNormalization:
        if not self.normalize:
            return ChannelNormalization.identity(self.in_channels)
        assert self._recordings is not None
        total = np.zeros(self.in_channels)
        total_sq = np.zeros(self.in_channels)
        count = 0
        for i in train_recs:
            x = self._recordings[i].samples[self._recordings[i].labels >= 0].astype(np.float64)  # (T', C)
            total += x.sum(axis=0)
            total_sq += np.square(x).sum(axis=0)
            count += len(x)
        if count == 0:
            raise ValueError(f"{self.path}: the training recordings have no labelled samples to compute mean/std")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        return ChannelNormalization(mean, np.where(std > 1e-8, std, 1.0))

    def _log_split(self, name: str, subjects: list[int], recs: list[int], table: WindowTable) -> None:
        dropped = table.dropped_unlabelled + table.dropped_mixed
        counts = table.class_counts(self.num_classes)
        log.info(
            "%s: %s split: %d subjects, %d recordings, %d windows kept, %d dropped (%d unlabelled, %d mixed/"
            "too unlabelled, policy %s), %d recordings shorter than %d samples; per class %s",
            self.path,
            name,
            len(subjects),
            len(recs),
            len(table),
            dropped,
            table.dropped_unlabelled,
            table.dropped_mixed,
            self.labels.policy.name,
            table.too_short,
            self.input_length,
            dict(zip(self.class_names, counts.tolist())),
        )
        if table.too_short:
            log.warning(
                "%s: %s split: %d of %d recordings are shorter than a window (%d samples) and were skipped",
                self.path,
                name,
                table.too_short,
                len(recs),
                self.input_length,
            )

    # ----------------------------------------------------------------------------------------- dataloaders
    def _dataset(self, name: str) -> WindowDataset:
        if not self.datasets:
            raise RuntimeError(f"{self.path}: call setup() before asking for the {name} dataloader")
        return self.datasets[name]

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) training windows; each epoch's batches are a function of (run seed, epoch)
        and a run resumed from any checkpoint continues with the same batches (:mod:`datamodules.loaders`)."""
        dataset = self._dataset("train")
        weights = None
        if self.loader.balanced:
            counts = dataset.table.class_counts(self.num_classes).astype(np.float64)
            weights = (1.0 / counts[dataset.table.targets]).tolist()
        return training_loader(
            dataset,
            batch_size=self.loader.batch_size,
            trainer=self.trainer,
            seed=self.split.seed,
            num_workers=self.loader.num_workers,
            drop_last=self.loader.drop_last,
            pin_memory=self.loader.pin_memory,
            collate_fn=collate_window_batch,
            weights=weights,
        )

    def _eval_loader(self, dataset: WindowDataset) -> DataLoader:
        return evaluation_loader(
            dataset,
            batch_size=self.loader.batch_size,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            collate_fn=collate_window_batch,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation windows in order (empty when no validation subjects are configured)."""
        dataset = self._dataset("val")
        if len(dataset) == 0:
            log.warning("%s: no validation subjects (set split.val_subjects or split.val_fraction)", self.path)
        return self._eval_loader(dataset)

    def test_dataloader(self) -> DataLoader:
        """Test windows in file order, then time."""
        dataset = self._dataset("test")
        if len(dataset) == 0:
            raise ValueError(f"{self.path}: empty test split under split.mode {self.split.mode.name}")
        return self._eval_loader(dataset)

    def predict_dataloader(self) -> DataLoader:
        """Same windows and order as :meth:`test_dataloader`."""
        return self.test_dataloader()

    def test_recordings(self) -> list[TestRecording]:
        """The test recordings, normalised like the windows, with the windows ``vidrec test`` scores in each.

        For streaming evaluation (file order): the offline model on ``samples[:, e - context - window:e]`` (edge-filled
        before sample 0 under EDGE) sees exactly the test loader's input for the window ending at ``e``.
        """
        table = self._dataset("test").table
        assert self._recordings is not None and self.subject_split is not None and self._offsets is not None
        pad = self.windows.edge_fill_length
        out = []
        for i, r in enumerate(self._recordings):
            if r.subject in self.subject_split.test:
                samples = self.normalization.apply(r.samples.T)  # (T, C) -> (C, T)
                rows = table.groups == i
                ends = table.starts[rows] - self._offsets[i] - pad + self.input_length  # (N,) exclusive ends
                out.append(TestRecording(r.id, i, r.subject, samples, r.labels, ends, table.targets[rows]))
        return out

    def group_info(self) -> dict[int, dict[str, Any]]:
        """What each batch ``group`` index stands for: ``{group: {"recording": id, "subject": subject id}}``.

        The classification task uses it to report test accuracy per recording and per subject.
        """
        if self._recordings is None:
            self.setup("test")
        assert self._recordings is not None
        return {i: {"recording": r.id, "subject": int(r.subject)} for i, r in enumerate(self._recordings)}

    # ------------------------------------------------------------------------------------------ checkpoint
    def deployment_spec(self) -> DeploymentSpec:
        """How a deployed model is fed like in training and which split ``vidrec test`` scores (after ``setup``).

        The classification task stores it in every checkpoint; :meth:`from_spec` rebuilds this data module's test
        split from it.
        """
        if self.subject_split is None:
            raise RuntimeError(f"{self.path}: the deployment spec is known after setup() (it names the split)")
        split = self.subject_split
        return DeploymentSpec(
            modality=Modality.TIMESERIES,
            window=self.windows.window,
            hop=self.windows.hop,
            eval_hop=self.windows.evaluation_hop,
            rate=self.sampling_rate,
            channels=list(self.channel_names),
            normalization=self.normalization,
            class_names=list(self.class_names),
            context=self.windows.context,
            context_padding=self.windows.context_padding,
            label_policy=self.labels.policy.value,
            max_unlabelled_fraction=self.labels.max_unlabelled_fraction,
            split=SplitSpec(
                mode=self.split.mode.value,
                fold=self.split.fold,
                num_folds=self.split.num_folds if self.split.mode is SplitMode.KFOLD else 0,
                seed=self.split.seed,
                train_subjects=list(split.train),
                val_subjects=list(split.val),
                test_subjects=list(split.test),
            ),
            data_path=self.path,
        )

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, path: str | None = None, *, batch_size: int = 256) -> HDF5WindowDataModule:
        """The data module of a checkpoint's spec: same windows, label policy, normalisation and subject split.

        The split is rebuilt from the spec's resolved subject lists (mode SUBJECTS), so the test windows are those
        ``vidrec test`` scored whatever mode drew them (official, k-fold, leave-one-subject-out).

        Args:
            spec: A time-series deployment spec with a split.
            path: The HDF5 file (default: the one the spec names).
            batch_size: Windows per batch of the loaders.
        """
        file = path or spec.data_path
        if spec.modality is not Modality.TIMESERIES:
            raise ValueError(f"{file}: a {spec.modality.value} deployment spec does not describe an HDF5 window file")
        if spec.split is None:
            raise ValueError(
                f"{file}: the checkpoint's deployment spec names no split (written before vidrec stored one); "
                "retrain it, or test it with `vidrec test -c CONFIG --ckpt_path ...`"
            )
        if not file:
            raise ValueError("the deployment spec names no data file; pass its path")
        dm = cls(
            file,
            windows=WindowSettings(
                window=spec.window,
                hop=spec.hop,
                eval_hop=spec.eval_hop,
                context=spec.context,
                context_padding=spec.context_padding,
            ),
            labels=LabelSettings(LabelPolicy(spec.label_policy), spec.max_unlabelled_fraction),
            split=SplitSettings(
                mode=SplitMode.SUBJECTS,
                train_subjects=list(spec.split.train_subjects),
                val_subjects=list(spec.split.val_subjects),
                test_subjects=list(spec.split.test_subjects),
                seed=spec.split.seed,
            ),
            loader=LoaderSettings(batch_size=batch_size),
        )
        if dm.channel_names != spec.channels:
            raise ValueError(f"{file}: channels {dm.channel_names} differ from the checkpoint's {spec.channels}")
        if dm.class_names != spec.class_names:
            raise ValueError(f"{file}: classes {dm.class_names} differ from the checkpoint's {spec.class_names}")
        dm._normalization, dm._normalization_loaded = spec.normalization, True
        return dm

    def state_dict(self) -> dict[str, Any]:
        """Normalisation statistics (saved in Lightning checkpoints)."""
        if self._normalization is None:
            return {}
        return {
            "normalization_mean": self._normalization.mean.tolist(),
            "normalization_std": self._normalization.std.tolist(),
            "channel_names": list(self.channel_names),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore normalisation statistics (from a checkpoint); they replace the computed ones."""
        if not state_dict:
            return
        for key in ("normalization_mean", "normalization_std", "channel_names"):
            if key not in state_dict:
                raise KeyError(f"{self.path}: datamodule state_dict lacks key {key!r}")
        if list(state_dict["channel_names"]) != self.channel_names:
            raise ValueError(
                f"{self.path}: checkpoint channel_names {state_dict['channel_names']} differ from {self.channel_names}"
            )
        self._normalization = ChannelNormalization(
            np.asarray(state_dict["normalization_mean"], dtype=np.float64),
            np.asarray(state_dict["normalization_std"], dtype=np.float64),
        )
        self._normalization_loaded = True
        for dataset in self.datasets.values():
            dataset.set_normalization(self._normalization)
