"""LightningDataModule of sliding windows over a ``vidrec.timeseries/1`` HDF5 file (wearable-sensor HAR).

Every recording is read whole into memory at ``setup`` (HAPT: 1.1 M x 6 float32 = 27 MB); windows are cut on the
fly (see :mod:`datamodules.timeseries.dataset` for the geometry and label policies). Splits are by subject:

- ``SUBJECTS``: explicit ``train_subjects`` / ``val_subjects`` / ``test_subjects`` (train default: all others).
- ``OFFICIAL``: the recordings' ``split`` attribute; validation = ``val_subjects`` or a ``val_fraction`` of the train
  subjects (drawn with ``seed``).
- ``KFOLD``: subjects shuffled with ``seed`` into ``num_folds`` folds; fold ``fold`` is the test split.
- ``LOSO``: leave one subject out: subject ``fold`` is the test split.

In every mode validation subjects are taken out of the train subjects and must not overlap the test subjects.
Per-channel mean/std come from the labelled samples of the training recordings only (float64), are applied on the
fly, saved with checkpoints through ``state_dict`` and exposed as ``normalization`` for streaming.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from datamodules.samplers import EpochRandomSampler, EpochWeightedRandomSampler, loader_generator, run_seed
from datamodules.timeseries.dataset import (
    ChannelNormalization,
    ContextPadding,
    LabelPolicy,
    WindowDataset,
    WindowTable,
    build_window_table,
    collate_window_batch,
)
from datamodules.timeseries.schema import Recording, read_info, read_recordings
from vidrec.spec import DeploymentSpec, Modality, SplitSpec, edge_fill

log = logging.getLogger(__name__)

_CREATE_HINT = (
    " (create it with `vidrec data hapt --out PATH.h5`, `vidrec data basicmotions --out PATH.h5`, "
    "`vidrec data uci-har DIR --out PATH.h5`, `vidrec data uea ...` or `vidrec data generic ...`)"
)


class SplitMode(enum.Enum):
    """How recordings are assigned to train / val / test (always by subject)."""

    SUBJECTS = "subjects"  # explicit subject lists
    OFFICIAL = "official"  # the file's per-recording `split` attribute
    KFOLD = "kfold"  # k folds by subject; `fold` is the test fold
    LOSO = "loso"  # leave one subject out; `fold` is the test subject


@dataclass(frozen=True)
class SubjectSplit:
    """Subjects of each split (sorted)."""

    train: list[int]
    val: list[int]
    test: list[int]


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


def resolve_subject_split(
    subjects: list[int],
    official: dict[int, str | None],
    *,
    mode: SplitMode,
    train_subjects: list[int] | None,
    val_subjects: list[int] | None,
    test_subjects: list[int] | None,
    val_fraction: float,
    num_folds: int,
    fold: int,
    seed: int,
    where: str,
) -> SubjectSplit:
    """Assign subjects to train / val / test (see module docstring); errors name the offending subjects.

    Args:
        subjects: All subject ids in the file.
        official: Subject -> official split ("train" / "test" / None).
        where: Names the file in errors.
    """
    all_subjects = set(subjects)
    for name, given in (("train_subjects", train_subjects), ("val_subjects", val_subjects)):
        unknown = sorted(set(given or []) - all_subjects)
        if unknown:
            raise ValueError(f"{where}: {name} {unknown} not in the file (subjects {sorted(all_subjects)})")
    unknown = sorted(set(test_subjects or []) - all_subjects)
    if unknown and mode == SplitMode.SUBJECTS:
        raise ValueError(f"{where}: test_subjects {unknown} not in the file (subjects {sorted(all_subjects)})")

    if mode == SplitMode.SUBJECTS:
        test = set(test_subjects or [])
    elif mode == SplitMode.OFFICIAL:
        missing = sorted(s for s, split in official.items() if split is None)
        if missing:
            raise ValueError(
                f"{where}: split_mode OFFICIAL needs attribute 'split' on every recording; subjects {missing} have none"
            )
        test = {s for s, split in official.items() if split == "test"}
    elif mode == SplitMode.KFOLD:
        if not 2 <= num_folds <= len(all_subjects) or not 0 <= fold < num_folds:
            raise ValueError(
                f"{where}: KFOLD needs 2 <= num_folds <= {len(all_subjects)} (subjects) and 0 <= fold < num_folds,"
                f" got num_folds={num_folds}, fold={fold}"
            )
        order = np.random.default_rng(seed).permutation(sorted(all_subjects))
        test = {int(s) for s in np.array_split(order, num_folds)[fold]}
    elif mode == SplitMode.LOSO:
        if fold not in all_subjects:
            raise ValueError(f"{where}: LOSO fold={fold} must be a subject id in the file {sorted(all_subjects)}")
        test = {fold}
    else:
        raise ValueError(f"{where}: unknown split_mode {mode!r}")
    if mode != SplitMode.SUBJECTS and test_subjects is not None:
        raise ValueError(f"{where}: test_subjects is only used with split_mode SUBJECTS (got {mode.name})")

    overlap = sorted(set(val_subjects or []) & test)
    if overlap:
        raise ValueError(f"{where}: validation subjects {overlap} are also test subjects")
    if train_subjects is not None:
        if mode != SplitMode.SUBJECTS:
            raise ValueError(f"{where}: train_subjects is only used with split_mode SUBJECTS (got {mode.name})")
        overlap = sorted(set(train_subjects) & (test | set(val_subjects or [])))
        if overlap:
            raise ValueError(f"{where}: train subjects {overlap} are also validation or test subjects")
        pool = set(train_subjects)
    else:
        pool = all_subjects - test
    if val_subjects is not None:
        val = set(val_subjects)
    elif val_fraction > 0:
        if not val_fraction < 1:
            raise ValueError(f"{where}: val_fraction must be in [0, 1), got {val_fraction}")
        candidates = np.random.default_rng(seed + 1).permutation(sorted(pool))
        val = {int(s) for s in candidates[: max(1, round(val_fraction * len(candidates)))]}
    else:
        val = set()
    train = pool - val
    if not train:
        raise ValueError(
            f"{where}: empty train split (subjects {sorted(all_subjects)}, val {sorted(val)}, test {sorted(test)})"
        )
    return SubjectSplit(sorted(train), sorted(val), sorted(test))


class HDF5WindowDataModule(L.LightningDataModule):
    """Sliding windows over a ``vidrec.timeseries/1`` HDF5 file, split by subject.

    Batches: ``{"inputs": float32 (B, C, context + window), "target": int64 (B,), "group": int64 (B,)}`` where
    ``group`` is the recording's index in the file. Window labels follow ``label_policy`` (default PURE: keep only
    windows whose target samples all carry one class; MAJORITY: most frequent labelled class, dropped when more than
    ``max_unlabelled_fraction`` of the samples are unlabelled; CENTER: the centre sample's label). Unlabelled windows
    are always dropped. Val / test / predict loaders iterate in file order, then time, with hop ``eval_hop``.

    Args:
        path: HDF5 file (``vidrec data ...`` creates it).
        window: Samples per window (the labelled target region).
        hop: Hop between training windows, in samples.
        context: Extra samples of left context before each window (input length = context + window).
        context_padding: DROP (default): windows whose context would start before their recording do not exist.
            EDGE: the missing context is copies of the recording's first sample, so every window of ``context = 0`` is
            kept (streaming: ``first_output = window``; see :mod:`datamodules.timeseries.dataset`).
        context_truncation: Training only: probability that a window's context is cut at a random point and
            edge-filled before it, so the model learns the short histories that EDGE padding produces.
        eval_hop: Hop for val / test / predict windows (default: ``hop``).
        split_mode: How subjects are split (SUBJECTS, OFFICIAL, KFOLD, LOSO).
        train_subjects: SUBJECTS mode: train subjects (default: all not in val / test).
        val_subjects: Validation subjects (taken out of train; never test subjects).
        test_subjects: SUBJECTS mode: test subjects.
        val_fraction: Fraction of the train subjects used for validation when ``val_subjects`` is not given.
        num_folds: KFOLD: number of folds.
        fold: KFOLD: test fold index; LOSO: test subject id.
        seed: Seed of the KFOLD subject shuffle and of the ``val_fraction`` draw.
        label_policy: PURE, MAJORITY or CENTER.
        max_unlabelled_fraction: MAJORITY: largest unlabelled share of a kept window.
        normalize: Apply per-channel training statistics (else identity).
        batch_size: Windows per batch.
        num_workers: DataLoader workers (0 is fastest here: the data are in memory).
        balanced: Train with a class-balanced WeightedRandomSampler (with replacement) instead of shuffling.
        drop_last: Drop the last incomplete training batch.
        pin_memory: Pin batches (GPU training).
    """

    def __init__(
        self,
        path: str,
        window: int = 128,
        hop: int = 64,
        context: int = 0,
        context_padding: ContextPadding = ContextPadding.DROP,
        context_truncation: float = 0.0,
        eval_hop: int | None = None,
        split_mode: SplitMode = SplitMode.OFFICIAL,
        train_subjects: list[int] | None = None,
        val_subjects: list[int] | None = None,
        test_subjects: list[int] | None = None,
        val_fraction: float = 0.0,
        num_folds: int = 5,
        fold: int = 0,
        seed: int = 0,
        label_policy: LabelPolicy = LabelPolicy.PURE,
        max_unlabelled_fraction: float = 0.5,
        normalize: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        balanced: bool = False,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("window", window), ("hop", hop), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if context < 0 or (eval_hop is not None and eval_hop < 1):
            raise ValueError(f"context must be >= 0 and eval_hop >= 1, got context={context}, eval_hop={eval_hop}")
        self.path = str(path)
        if not 0.0 <= context_truncation <= 1.0:
            raise ValueError(f"context_truncation must be a probability in [0, 1], got {context_truncation}")
        if context_truncation > 0 and context == 0:
            raise ValueError("context_truncation > 0 needs context > 0")
        self.window, self.hop, self.context = window, hop, context
        self.context_padding = ContextPadding(context_padding)
        self.context_truncation = float(context_truncation)
        self.eval_hop = hop if eval_hop is None else eval_hop
        self.split_mode = SplitMode(split_mode)
        self.train_subjects, self.val_subjects, self.test_subjects = train_subjects, val_subjects, test_subjects
        self.val_fraction, self.num_folds, self.fold, self.seed = val_fraction, num_folds, fold, seed
        self.label_policy = LabelPolicy(label_policy)
        self.max_unlabelled_fraction = max_unlabelled_fraction
        self.normalize = normalize
        self.batch_size, self.num_workers = batch_size, num_workers
        self.balanced, self.drop_last, self.pin_memory = balanced, drop_last, pin_memory

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
        return self.context + self.window

    @property
    def has_validation(self) -> bool:
        """Whether the split has validation subjects (known after ``setup``; the CLI's checkpoint reads it)."""
        if self.subject_split is None:
            return bool(self.val_subjects) or self.val_fraction > 0
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
        pad = self.context if self.context_padding is ContextPadding.EDGE and self.context > 0 else 0
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
            mode=self.split_mode,
            train_subjects=self.train_subjects,
            val_subjects=self.val_subjects,
            test_subjects=self.test_subjects,
            val_fraction=self.val_fraction,
            num_folds=self.num_folds,
            fold=self.fold,
            seed=self.seed,
            where=self.path,
        )
        self.subject_split = split

        train_recs = [i for i, r in enumerate(recordings) if r.subject in split.train]
        if not self._normalization_loaded:
            self._normalization = self._compute_normalization(train_recs)
        for name, subjects, hop in (
            ("train", split.train, self.hop),
            ("val", split.val, self.eval_hop),
            ("test", split.test, self.eval_hop),
        ):
            recs = [i for i, r in enumerate(recordings) if r.subject in subjects]
            table = build_window_table(
                labels,
                self._offsets,
                recs,
                window=self.window,
                context=self.context,
                hop=hop,
                policy=self.label_policy,
                num_classes=self.num_classes,
                max_unlabelled_fraction=self.max_unlabelled_fraction,
            )
            self._log_split(name, subjects, recs, table)
            if subjects and len(table) == 0:
                raise ValueError(
                    f"{self.path}: {name} split (subjects {subjects}) has no windows of {self.input_length} samples"
                    f" under label_policy {self.label_policy.name}"
                )
            self.datasets[name] = WindowDataset(
                self._data,
                table,
                self.input_length,
                self.normalization,
                context_truncation=self.context_truncation if name == "train" else 0.0,
                context=self.context,
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
            self.label_policy.name,
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

    def _loader(self, dataset: WindowDataset, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_window_batch,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) training windows; each epoch's order is a function of (run seed, epoch)."""
        dataset = self._dataset("train")
        # exact resume (datamodules.samplers): the order of epoch e depends on (run seed, e) only
        seed, epoch = run_seed(self.seed), int(getattr(self.trainer, "current_epoch", 0) or 0)
        generator = loader_generator(seed)
        if self.balanced:
            counts = dataset.table.class_counts(self.num_classes).astype(np.float64)
            weights = 1.0 / counts[dataset.table.targets]
            weighted = EpochWeightedRandomSampler(weights.tolist(), len(dataset), seed, epoch)
            return self._loader(dataset, sampler=weighted, drop_last=self.drop_last, generator=generator)
        sampler = EpochRandomSampler(dataset, seed, epoch)
        return self._loader(dataset, sampler=sampler, drop_last=self.drop_last, generator=generator)

    def val_dataloader(self) -> DataLoader:
        """Validation windows in order (empty when no validation subjects are configured)."""
        dataset = self._dataset("val")
        if len(dataset) == 0:
            log.warning("%s: no validation subjects configured (set val_subjects or val_fraction)", self.path)
        return self._loader(dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test windows in file order, then time."""
        dataset = self._dataset("test")
        if len(dataset) == 0:
            raise ValueError(f"{self.path}: empty test split under split_mode {self.split_mode.name}")
        return self._loader(dataset, shuffle=False)

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
        pad = self.context if self.context_padding is ContextPadding.EDGE and self.context > 0 else 0
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
            window=self.window,
            hop=self.hop,
            eval_hop=self.eval_hop,
            rate=self.sampling_rate,
            channels=list(self.channel_names),
            normalization=self.normalization,
            class_names=list(self.class_names),
            context=self.context,
            context_padding=self.context_padding,
            label_policy=self.label_policy.value,
            max_unlabelled_fraction=self.max_unlabelled_fraction,
            split=SplitSpec(
                mode=self.split_mode.value,
                fold=self.fold,
                num_folds=self.num_folds if self.split_mode is SplitMode.KFOLD else 0,
                seed=self.seed,
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
            window=spec.window,
            hop=spec.hop,
            context=spec.context,
            context_padding=spec.context_padding,
            eval_hop=spec.eval_hop,
            split_mode=SplitMode.SUBJECTS,
            train_subjects=list(spec.split.train_subjects),
            val_subjects=list(spec.split.val_subjects),
            test_subjects=list(spec.split.test_subjects),
            label_policy=LabelPolicy(spec.label_policy),
            max_unlabelled_fraction=spec.max_unlabelled_fraction,
            batch_size=batch_size,
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
