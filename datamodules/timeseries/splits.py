"""Subject splits of a time-series file: which subjects train, validate and test.

- ``SUBJECTS``: explicit ``train_subjects`` / ``val_subjects`` / ``test_subjects`` (train default: all others).
- ``OFFICIAL``: the recordings' ``split`` attribute; validation = ``val_subjects`` or a ``val_fraction`` of the train
  subjects (drawn with ``seed``).
- ``KFOLD``: subjects shuffled with ``seed`` into ``num_folds`` folds; fold ``fold`` is the test split.
- ``LOSO``: leave one subject out: subject ``fold`` is the test split.

In every mode validation subjects are taken out of the train subjects and must not overlap the test subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datamodules.timeseries.settings import SplitMode, SplitSettings

__all__ = ["SplitMode", "SubjectSplit", "resolve_subject_split"]


@dataclass(frozen=True)
class SubjectSplit:
    """Subjects of each split (sorted)."""

    train: list[int]
    val: list[int]
    test: list[int]


def resolve_subject_split(
    subjects: list[int], official: dict[int, str | None], settings: SplitSettings, *, where: str
) -> SubjectSplit:
    """Assign subjects to train / val / test (see module docstring); errors name the offending subjects.

    Args:
        subjects: All subject ids in the file.
        official: Subject -> official split ("train" / "test" / None).
        settings: The split settings (mode, subject lists, fraction, folds, seed).
        where: Names the file in errors.
    """
    mode, fold, num_folds, seed = settings.mode, settings.fold, settings.num_folds, settings.seed
    train_subjects, val_subjects, test_subjects = settings.train_subjects, settings.val_subjects, settings.test_subjects
    val_fraction = settings.val_fraction
    all_subjects = set(subjects)
    for name, given in (("split.train_subjects", train_subjects), ("split.val_subjects", val_subjects)):
        unknown = sorted(set(given or []) - all_subjects)
        if unknown:
            raise ValueError(f"{where}: {name} {unknown} not in the file (subjects {sorted(all_subjects)})")
    unknown = sorted(set(test_subjects or []) - all_subjects)
    if unknown and mode == SplitMode.SUBJECTS:
        raise ValueError(f"{where}: split.test_subjects {unknown} not in the file (subjects {sorted(all_subjects)})")

    if mode == SplitMode.SUBJECTS:
        test = set(test_subjects or [])
    elif mode == SplitMode.OFFICIAL:
        missing = sorted(s for s, split in official.items() if split is None)
        if missing:
            raise ValueError(
                f"{where}: split.mode OFFICIAL needs attribute 'split' on every recording; subjects {missing} have none"
            )
        test = {s for s, split in official.items() if split == "test"}
    elif mode == SplitMode.KFOLD:
        if not 2 <= num_folds <= len(all_subjects) or not 0 <= fold < num_folds:
            raise ValueError(
                f"{where}: KFOLD needs 2 <= split.num_folds <= {len(all_subjects)} (subjects) and"
                f" 0 <= split.fold < split.num_folds, got num_folds={num_folds}, fold={fold}"
            )
        order = np.random.default_rng(seed).permutation(sorted(all_subjects))
        test = {int(s) for s in np.array_split(order, num_folds)[fold]}
    elif mode == SplitMode.LOSO:
        if fold not in all_subjects:
            raise ValueError(f"{where}: LOSO split.fold={fold} must be a subject id in the file {sorted(all_subjects)}")
        test = {fold}
    else:
        raise ValueError(f"{where}: unknown split.mode {mode!r}")
    if mode != SplitMode.SUBJECTS and test_subjects is not None:
        raise ValueError(f"{where}: split.test_subjects is only used with split.mode SUBJECTS (got {mode.name})")

    overlap = sorted(set(val_subjects or []) & test)
    if overlap:
        raise ValueError(f"{where}: validation subjects {overlap} are also test subjects")
    if train_subjects is not None:
        if mode != SplitMode.SUBJECTS:
            raise ValueError(f"{where}: split.train_subjects is only used with split.mode SUBJECTS (got {mode.name})")
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
            raise ValueError(f"{where}: split.val_fraction must be in [0, 1), got {val_fraction}")
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
