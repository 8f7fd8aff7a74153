"""LightningDataModules of decoded video clips: UCF101, HMDB51, Kinetics and plain class folders.

All share :class:`VideoClipDataModule`: official split parsing (``layouts.py``), clip sampling with pytorchvideo's
samplers (``dataset.py``), torchvision v2 transforms (``transforms.py``) and the robust clip reader
(``decoding.py``). ``num_classes`` and ``class_names`` are read from the annotations in ``__init__``.

Splits: ``fit`` trains on the train list and validates on the val list (UCF101 and HMDB51 have no official
validation split, so their test list serves, with ``val_clips x val_crops`` views, default one center clip);
``test`` uses ``test_clips x test_crops`` views per video (default 10 x 3) with ``"group"`` = video index.

Unreadable files are quarantined to ``quarantine_path`` (each listed once, whatever the workers and epochs); left
unset, the file is ``<trainer.log_dir>/quarantine.tsv`` once a trainer is attached (else kept in memory). Batches keep
their size: the dataset substitutes another video. Files of which only some frames are readable (truncated) follow
``decode.damaged``: ``readable_frames`` (default: clips from the readable frames, one warning per file) or ``skip``
(quarantined). ``vidrec data check-videos --full`` finds damage in the middle of files before a run.
"""

from __future__ import annotations

import abc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from datamodules.loaders import split_loader
from datamodules.video.dataset import ClipTiming, SamplingMode, VideoClipDataset
from datamodules.video.decoding import DecodeSettings, RobustVideoReader
from datamodules.video.layouts import (
    Split,
    VideoIndex,
    parse_class_folder_classes,
    parse_class_folders,
    parse_hmdb51,
    parse_hmdb51_classes,
    parse_kinetics,
    parse_kinetics_classes,
    parse_ucf101,
    parse_ucf101_classes,
)
from datamodules.video.transforms import EvalClipTransform, TrainClipTransform, TransformSettings
from vidrec.spec import ChannelNormalization, DeploymentSpec, Modality, SplitSpec

__all__ = [
    "VideoClipDataModule",
    "UCF101DataModule",
    "HMDB51DataModule",
    "KineticsDataModule",
    "ClassFolderDataModule",
]


class VideoClipDataModule(LightningDataModule, abc.ABC):
    """Clips of labelled videos for ``tasks.Classification``; subclasses say where the videos and labels are.

    Args:
        root: data root of the layout.
        clip: frames per clip and frame stride or target fps.
        transform: crop size, resize, augmentation, normalisation.
        decode: backend, time bound and timestamp tolerance of the reader; clips are decoded to the transform's
            short side (``train_short_side`` / ``test_short_side``), by swscale when ``decode.scale_in_decoder``.
        batch_size: clips per batch (per process under DDP).
        num_workers: DataLoader worker processes.
        val_clips: clips per video for validation.
        val_crops: spatial crops per clip for validation.
        test_clips: clips per video for testing (multi-view).
        test_crops: spatial crops per clip for testing (1 = center, 3 = three-crop).
        quarantine_path: TSV receiving unreadable files; default ``<trainer.log_dir>/quarantine.tsv``.
        pin_memory: pin batches (useful on GPU).
    """

    def __init__(
        self,
        root: str | Path,
        clip: ClipTiming | None = None,
        transform: TransformSettings | None = None,
        decode: DecodeSettings | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        val_clips: int = 1,
        val_crops: int = 1,
        test_clips: int = 10,
        test_crops: int = 3,
        quarantine_path: str | Path | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video data root not found: {self.root}")
        self.clip = clip or ClipTiming()
        self.transform = transform or TransformSettings()
        self.decode = decode or DecodeSettings()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_views = (val_clips, val_crops)
        self.test_views = (test_clips, test_crops)
        self.pin_memory = pin_memory
        self.reader = RobustVideoReader(self.decode, quarantine_path)
        self._explicit_quarantine = quarantine_path is not None
        self.class_names: list[str] = self._read_class_names()
        self.num_classes: int = len(self.class_names)
        self.missing: dict[str, int] = {}  # split -> clips listed but absent on disk
        self.datasets: dict[Split, VideoClipDataset] = {}

    @abc.abstractmethod
    def _read_class_names(self) -> list[str]:
        """Class names in label order, from the annotations (cheap: no video is opened)."""

    @abc.abstractmethod
    def _index(self, split: Split) -> VideoIndex:
        """The (path, label) list of one split."""

    def _dataset(self, split: Split) -> VideoClipDataset:
        index = self._index(split)
        if index.class_names != self.class_names:
            raise ValueError(f"{split.value} split of {self.root} lists classes that differ from the class index")
        if index.missing:
            self.missing[split.value] = index.missing
            warnings.warn(
                f"{index.missing} {split.value} videos listed in the annotations are absent under {self.root} "
                f"(e.g. {', '.join(index.missing_examples)}); continuing with {len(index.items)}",
                RuntimeWarning,
                stacklevel=2,
            )
        if not index.items:
            raise ValueError(f"no {split.value} videos found for {type(self).__name__} under {self.root}")
        if split is Split.TRAIN:
            return VideoClipDataset(
                index.items,
                self.clip,
                SamplingMode.TRAIN,
                TrainClipTransform(self.transform),
                self.reader,
                short_side=self.transform.train_short_side,
            )
        clips, crops = self.test_views if split is Split.TEST else self.val_views
        return VideoClipDataset(
            index.items,
            self.clip,
            SamplingMode.EVAL,
            EvalClipTransform(self.transform, num_crops=crops),
            self.reader,
            clips_per_video=clips,
            crops_per_clip=crops,
            short_side=self.transform.test_short_side,
        )

    def setup(self, stage: str | None = None) -> None:
        """Parse the splits the stage needs and point the quarantine file at the trainer's log dir."""
        if not self._explicit_quarantine and self.trainer is not None:
            log_dir = self.trainer.log_dir or self.trainer.default_root_dir
            self.reader.set_quarantine_path(Path(log_dir) / "quarantine.tsv")
        wanted = {
            "fit": (Split.TRAIN, Split.VAL),
            "validate": (Split.VAL,),
            "test": (Split.TEST,),
            "predict": (Split.TEST,),
        }.get(stage or "", (Split.TRAIN, Split.VAL, Split.TEST))
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self._dataset(split)

    def _loader(self, split: Split, train: bool) -> DataLoader[dict[str, Any]]:
        if split not in self.datasets:
            self.setup({Split.TRAIN: "fit", Split.VAL: "validate", Split.TEST: "test"}[split])
        return split_loader(  # training: seeded and resumable (datamodules.loaders)
            self.datasets[split],
            train=train,
            batch_size=self.batch_size,
            trainer=self.trainer,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,  # fixed batch size in training; evaluation sees every view
        )

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """One random clip per training video per epoch, shuffled; same batches per (run seed, epoch), resumable."""
        return self._loader(Split.TRAIN, train=True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """``val_clips x val_crops`` views per validation video, in order."""
        return self._loader(Split.VAL, train=False)

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """``test_clips x test_crops`` views per test video, in order, with ``"group"``."""
        return self._loader(Split.TEST, train=False)

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Same views as the test loader."""
        return self._loader(Split.TEST, train=False)

    def _source_args(self) -> dict[str, Any]:
        """The constructor arguments that name the videos and their split (``deployment_spec().data_source``)."""
        return {"root": str(self.root)}

    def deployment_spec(self) -> DeploymentSpec:
        """How a deployed model is fed: clip length and frame rate, frame size, normalisation, the test split.

        Streams step one clip frame at a time (``hop = eval_hop = 1``); ``data_source`` rebuilds this data module's
        test split for ``vidrec evaluate-streaming``.
        """
        cls = type(self)
        fold = int(getattr(self, "fold", 0))
        return DeploymentSpec(
            modality=Modality.VIDEO,
            window=self.clip.frames_per_clip,
            hop=1,
            eval_hop=1,
            rate=float(self.clip.target_fps or 0.0),
            channels=["R", "G", "B"],
            normalization=ChannelNormalization(np.asarray(self.transform.mean), np.asarray(self.transform.std)),
            class_names=list(self.class_names),
            label_policy="video",
            split=SplitSpec(mode="official", fold=fold),
            data_path=str(self.root),
            frame_size=(self.transform.crop_size, self.transform.crop_size),
            short_side=self.transform.test_short_side,
            frame_stride=self.clip.frame_stride,
            data_source={"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self._source_args()},
        )


class UCF101DataModule(VideoClipDataModule):
    """UCF101 official splits (Soomro et al., 2012).

    Args:
        root: folder of class folders (``<root>/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``).
        annotation_dir: folder with ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``;
            default ``<root>/ucfTrainTestlist``.
        fold: official split 1, 2 or 3.
        **kwargs: :class:`VideoClipDataModule` arguments.
    """

    def __init__(
        self, root: str | Path, annotation_dir: str | Path | None = None, fold: int = 1, **kwargs: Any
    ) -> None:
        self.annotation_dir = Path(annotation_dir) if annotation_dir else Path(root) / "ucfTrainTestlist"
        self.fold = fold
        super().__init__(root, **kwargs)

    def _read_class_names(self) -> list[str]:
        return parse_ucf101_classes(self.annotation_dir)

    def _source_args(self) -> dict[str, Any]:
        return {"root": str(self.root), "annotation_dir": str(self.annotation_dir), "fold": self.fold}

    def _index(self, split: Split) -> VideoIndex:
        return parse_ucf101(self.root, self.annotation_dir, split, self.fold)


class HMDB51DataModule(VideoClipDataModule):
    """HMDB51 official splits (Kuehne et al., 2011).

    Args:
        root: folder of class folders (``<root>/brush_hair/<name>.avi``).
        annotation_dir: folder with ``<class>_test_split{1,2,3}.txt``; default ``<root>/testTrainMulti_7030_splits``.
        fold: official split 1, 2 or 3.
        **kwargs: :class:`VideoClipDataModule` arguments.
    """

    def __init__(
        self, root: str | Path, annotation_dir: str | Path | None = None, fold: int = 1, **kwargs: Any
    ) -> None:
        self.annotation_dir = Path(annotation_dir) if annotation_dir else Path(root) / "testTrainMulti_7030_splits"
        self.fold = fold
        super().__init__(root, **kwargs)

    def _read_class_names(self) -> list[str]:
        return parse_hmdb51_classes(self.annotation_dir, self.fold)

    def _source_args(self) -> dict[str, Any]:
        return {"root": str(self.root), "annotation_dir": str(self.annotation_dir), "fold": self.fold}

    def _index(self, split: Split) -> VideoIndex:
        return parse_hmdb51(self.root, self.annotation_dir, split, self.fold)


class KineticsDataModule(VideoClipDataModule):
    """Kinetics-400/600/700 (Kay et al., 2017) from the official CSVs; clips absent on disk are counted and reported.

    Args:
        root: folder with ``train/``, ``val/`` (or ``validate/``) and ``test/`` clip folders (class subfolders
            optional), clips named ``<youtube_id>_<start:06d>_<end:06d>.mp4``.
        annotation_dir: folder with ``train.csv``, ``validate.csv`` (or ``val.csv``), ``test.csv``;
            default ``<root>/annotations``.
        test_split: which split the test stage reads: ``val`` (the usual Kinetics benchmark) or ``test``.
        **kwargs: :class:`VideoClipDataModule` arguments.
    """

    def __init__(
        self,
        root: str | Path,
        annotation_dir: str | Path | None = None,
        test_split: str = "val",
        **kwargs: Any,
    ) -> None:
        self.annotation_dir = Path(annotation_dir) if annotation_dir else Path(root) / "annotations"
        if test_split not in ("val", "test"):
            raise ValueError(f"test_split must be 'val' or 'test', got {test_split!r}")
        self.test_split = Split(test_split)
        super().__init__(root, **kwargs)

    def _read_class_names(self) -> list[str]:
        return parse_kinetics_classes(self.annotation_dir)

    def _source_args(self) -> dict[str, Any]:
        return {"root": str(self.root), "annotation_dir": str(self.annotation_dir), "test_split": self.test_split.value}

    def _index(self, split: Split) -> VideoIndex:
        return parse_kinetics(self.root, self.annotation_dir, self.test_split if split is Split.TEST else split)


class ClassFolderDataModule(VideoClipDataModule):
    """Videos in ``<root>/{train,val,test}/<class>/<video>``; classes are the train split's folders, sorted."""

    def _read_class_names(self) -> list[str]:
        return parse_class_folder_classes(self.root, Split.TRAIN)

    def _index(self, split: Split) -> VideoIndex:
        return parse_class_folders(self.root, split)
