"""Annotation parsing for the official layouts of the video action data sets.

Each parser turns the official annotation files of one data set into a :class:`VideoIndex`: a list of
``(path, label)`` pairs plus the class names, with labels numbered from 0 in the order of ``class_names``.

* UCF101 (Soomro et al., 2012, "UCF101: A Dataset of 101 Human Actions Classes From Videos in The Wild"):
  class folders; ``classInd.txt`` lines ``"1 ApplyEyeMakeup"``; ``trainlist0N.txt`` lines ``"Class/v_x.avi 1"``;
  ``testlist0N.txt`` lines ``"Class/v_x.avi"``; splits 1-3.
* HMDB51 (Kuehne et al., 2011, "HMDB: A Large Video Database for Human Motion Recognition"): class folders and
  ``<class>_test_split{1,2,3}.txt`` lines ``"name.avi 1|2|0"`` (1 = train, 2 = test, 0 = unused).
* Kinetics-400/600/700 (Kay et al., 2017, "The Kinetics Human Action Video Dataset"): CSV annotations
  ``label,youtube_id,time_start,time_end,split``; clips named ``<youtube_id>_<start:06d>_<end:06d>.mp4`` inside a split
  folder, with or without class subfolders. Clips absent on disk are counted in ``VideoIndex.missing``, not fatal.
* Class folders: ``<root>/<split>/<class>/<video>``.

Malformed lines raise :class:`AnnotationError` naming the file and the line number.
"""

from __future__ import annotations

import csv
import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AnnotationError",
    "Split",
    "VideoIndex",
    "VIDEO_EXTENSIONS",
    "parse_ucf101_classes",
    "parse_ucf101",
    "parse_hmdb51_classes",
    "parse_hmdb51",
    "parse_kinetics_classes",
    "parse_kinetics",
    "parse_class_folder_classes",
    "parse_class_folders",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


class AnnotationError(ValueError):
    """An annotation file is missing, malformed or inconsistent; the message names the file (and line)."""


class Split(enum.Enum):
    """Which part of a data set to list."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass
class VideoIndex:
    """The videos of one split.

    Attributes:
        items: ``(path, label)`` pairs; labels index ``class_names``.
        class_names: class names in label order.
        missing: videos listed by the annotations but absent on disk (Kinetics); they are not in ``items``.
        missing_examples: up to 5 of the missing paths or ids, for the report.
    """

    items: list[tuple[Path, int]]
    class_names: list[str]
    missing: int = 0
    missing_examples: list[str] = field(default_factory=list)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AnnotationError(f"{what} not found: {path}")
    return path


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based line numbers."""
    with open(path, encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]


# --------------------------------------------------------------------------------------------------------------------
# UCF101


def parse_ucf101_classes(annotation_dir: str | Path) -> list[str]:
    """Class names from ``classInd.txt`` (lines ``"1 ApplyEyeMakeup"``), in label order."""
    path = _require_file(Path(annotation_dir) / "classInd.txt", "UCF101 class index")
    by_index: dict[int, str] = {}
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(f"{path}:{n}: expected '<index> <ClassName>', got {line!r}")
        index = int(parts[0])
        if index in by_index:
            raise AnnotationError(f"{path}:{n}: class index {index} appears twice")
        by_index[index] = parts[1]
    expected = list(range(1, len(by_index) + 1))
    if sorted(by_index) != expected:
        raise AnnotationError(f"{path}: class indices must be 1..{len(by_index)}, got {sorted(by_index)}")
    return [by_index[i] for i in expected]


def parse_ucf101(root: str | Path, annotation_dir: str | Path, split: Split, fold: int = 1) -> VideoIndex:
    """List one UCF101 split.

    Args:
        root: folder holding the class folders (``<root>/<Class>/v_x.avi``).
        annotation_dir: folder holding ``classInd.txt``, ``trainlist0N.txt`` and ``testlist0N.txt``.
        split: TRAIN reads ``trainlist0{fold}.txt``; VAL and TEST read ``testlist0{fold}.txt`` (UCF101 has no
            official validation split).
        fold: official split number, 1-3.

    Returns:
        The split's videos; test labels come from the class folder of each line.
    """
    if fold not in (1, 2, 3):
        raise AnnotationError(f"UCF101 fold must be 1, 2 or 3, got {fold}")
    annotation_dir = Path(annotation_dir)
    class_names = parse_ucf101_classes(annotation_dir)
    # Folder names differ in case from classInd.txt in the official release (HandstandPushups / HandStandPushups).
    label_of = {name.lower(): i for i, name in enumerate(class_names)}
    name = f"trainlist0{fold}.txt" if split is Split.TRAIN else f"testlist0{fold}.txt"
    path = _require_file(annotation_dir / name, "UCF101 split list")
    items: list[tuple[Path, int]] = []
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise AnnotationError(f"{path}:{n}: expected 'Class/v_x.avi[ <label>]', got {line!r}")
        folder = parts[0].split("/")[0]
        if folder.lower() not in label_of:
            raise AnnotationError(f"{path}:{n}: class folder {folder!r} is not in classInd.txt")
        label = label_of[folder.lower()]
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                raise AnnotationError(
                    f"{path}:{n}: label {parts[1]!r} does not match class {folder!r} (classInd says {label + 1})"
                )
        items.append((Path(root) / parts[0], label))
    return VideoIndex(items=items, class_names=class_names)


# --------------------------------------------------------------------------------------------------------------------
# HMDB51

_HMDB_SUFFIX = "_test_split{fold}.txt"


def parse_hmdb51_classes(annotation_dir: str | Path, fold: int = 1) -> list[str]:
    """Class names (sorted) from the ``<class>_test_split{fold}.txt`` file names."""
    annotation_dir = Path(annotation_dir)
    suffix = _HMDB_SUFFIX.format(fold=fold)
    if not annotation_dir.is_dir():
        raise AnnotationError(f"HMDB51 split folder not found: {annotation_dir}")
    names = sorted(p.name[: -len(suffix)] for p in annotation_dir.iterdir() if p.name.endswith(suffix))
    if not names:
        raise AnnotationError(f"no '*{suffix}' files in HMDB51 split folder {annotation_dir}")
    return names


def parse_hmdb51(root: str | Path, annotation_dir: str | Path, split: Split, fold: int = 1) -> VideoIndex:
    """List one HMDB51 split.

    Args:
        root: folder holding the class folders (``<root>/<class>/<name>.avi``).
        annotation_dir: folder holding ``<class>_test_split{1,2,3}.txt``.
        split: TRAIN keeps lines marked 1; VAL and TEST keep lines marked 2 (no official validation split);
            lines marked 0 are unused.
        fold: official split number, 1-3.
    """
    if fold not in (1, 2, 3):
        raise AnnotationError(f"HMDB51 fold must be 1, 2 or 3, got {fold}")
    class_names = parse_hmdb51_classes(annotation_dir, fold)
    wanted = "1" if split is Split.TRAIN else "2"
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(class_names):
        path = Path(annotation_dir) / (name + _HMDB_SUFFIX.format(fold=fold))
        for n, line in _read_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(f"{path}:{n}: expected '<video> 0|1|2', got {line!r}")
            if parts[1] == wanted:
                items.append((Path(root) / name / parts[0], label))
    return VideoIndex(items=items, class_names=class_names)


# --------------------------------------------------------------------------------------------------------------------
# Kinetics

_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
_KINETICS_CSV = {Split.TRAIN: ("train.csv",), Split.VAL: ("validate.csv", "val.csv"), Split.TEST: ("test.csv",)}
_KINETICS_DIRS = {Split.TRAIN: ("train",), Split.VAL: ("val", "validate", "valid"), Split.TEST: ("test",)}


def _kinetics_csv(annotation_dir: Path, split: Split) -> Path:
    for name in _KINETICS_CSV[split]:
        if (annotation_dir / name).is_file():
            return annotation_dir / name
    raise AnnotationError(
        f"Kinetics annotation for {split.value} not found: expected one of "
        f"{[str(annotation_dir / n) for n in _KINETICS_CSV[split]]}"
    )


def _kinetics_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        absent = [c for c in _KINETICS_COLUMNS if c not in columns]
        if absent:
            raise AnnotationError(f"{path}:1: missing column(s) {absent}; expected header with {_KINETICS_COLUMNS}")
        # DictReader line numbers: header is line 1, so data row k sits on line k + 1.
        return [(n, row) for n, row in enumerate(reader, start=2)]


def parse_kinetics_classes(annotation_dir: str | Path) -> list[str]:
    """Sorted class names: the distinct ``label`` values of ``train.csv``."""
    path = _kinetics_csv(Path(annotation_dir), Split.TRAIN)
    return sorted({row["label"].strip() for _, row in _kinetics_rows(path)})


def _index_clip_files(root: Path, split: Split) -> dict[str, Path]:
    """Map file stem -> path for every video under the split folder (any depth: class subfolders optional)."""
    folders = [root / d for d in _KINETICS_DIRS[split] if (root / d).is_dir()]
    if not folders:
        raise AnnotationError(
            f"Kinetics clip folder for {split.value} not found: expected one of "
            f"{[str(root / d) for d in _KINETICS_DIRS[split]]}"
        )
    found: dict[str, Path] = {}
    for folder in folders:
        for dirpath, _, filenames in os.walk(folder):
            for filename in filenames:
                stem, ext = os.path.splitext(filename)
                if ext.lower() in VIDEO_EXTENSIONS:
                    found.setdefault(stem, Path(dirpath) / filename)
    return found


def parse_kinetics(root: str | Path, annotation_dir: str | Path, split: Split) -> VideoIndex:
    """List one Kinetics split; clips absent on disk are counted in ``missing``.

    Args:
        root: folder holding the split folders (``train/``, ``val/`` or ``validate/``, ``test/``), each holding the
            clips directly or in class subfolders.
        annotation_dir: folder holding ``train.csv``, ``validate.csv`` (or ``val.csv``) and ``test.csv``.
        split: which CSV and clip folder to read.
    """
    annotation_dir = Path(annotation_dir)
    class_names = parse_kinetics_classes(annotation_dir)
    label_of = {name: i for i, name in enumerate(class_names)}
    path = _kinetics_csv(annotation_dir, split)
    on_disk = _index_clip_files(Path(root), split)
    index = VideoIndex(items=[], class_names=class_names)
    for n, row in _kinetics_rows(path):
        label_name = (row.get("label") or "").strip()
        if label_name not in label_of:
            raise AnnotationError(f"{path}:{n}: label {label_name!r} is not a class of train.csv")
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (TypeError, ValueError):
            raise AnnotationError(
                f"{path}:{n}: time_start/time_end must be numbers, got {row['time_start']!r}, {row['time_end']!r}"
            ) from None
        youtube_id = (row.get("youtube_id") or "").strip()
        if not youtube_id:
            raise AnnotationError(f"{path}:{n}: empty youtube_id")
        stem = f"{youtube_id}_{start:06d}_{end:06d}"
        clip = on_disk.get(stem)
        if clip is None:
            index.missing += 1
            if len(index.missing_examples) < 5:
                index.missing_examples.append(stem)
            continue
        index.items.append((clip, label_of[label_name]))
    return index


# --------------------------------------------------------------------------------------------------------------------
# Plain class folders


def parse_class_folder_classes(root: str | Path, split: Split = Split.TRAIN) -> list[str]:
    """Sorted names of the class subfolders of ``<root>/<split>``."""
    folder = Path(root) / split.value
    if not folder.is_dir():
        raise AnnotationError(f"class-folder split not found: {folder} (expected <root>/<split>/<class>/<video>)")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise AnnotationError(f"no class folders in {folder}")
    return names


def parse_class_folders(root: str | Path, split: Split) -> VideoIndex:
    """List ``<root>/<split>/<class>/<video>``; classes come from the train split so labels agree across splits."""
    class_names = parse_class_folder_classes(root, Split.TRAIN)
    label_of = {name: i for i, name in enumerate(class_names)}
    folder = Path(root) / split.value
    items: list[tuple[Path, int]] = []
    for name in parse_class_folder_classes(root, split):
        if name not in label_of:
            raise AnnotationError(f"class folder {folder / name} is not a class of {Path(root) / 'train'}")
        for video in sorted((folder / name).iterdir()):
            if video.suffix.lower() in VIDEO_EXTENSIONS:
                items.append((video, label_of[name]))
    return VideoIndex(items=items, class_names=class_names)
