"""LightningDataModule of two-stream inputs (RGB frames, flow stacks or both) over the video layouts.

One class for every layout the video datamodules read (UCF101, HMDB51, Kinetics, class folders; the same official
splits through ``datamodules.video.layouts``): ``input: rgb`` trains the spatial stream, ``input: flow`` the temporal
stream (flow from ``vidrec data flow`` under ``flow_root``), ``input: both`` feeds a fused two-stream model the two
inputs of each view, joined by video id.

Splits as the video datamodules: ``fit`` trains on the train list and validates on the val list (the test list for
UCF101 and HMDB51, which have no official validation split); ``test`` reads ``test_frames x test_crops`` views per
video (default the papers' 25 frames, 1 crop) with ``"group"`` = video index, so ``tasks.Classification`` reports
video-level top-1/top-5 from the per-video mean of the softmax scores.

Problems (unreadable videos, missing or inconsistent flow files) go to ``quarantine_path``, by default
``<trainer.log_dir>/quarantine.tsv``; the item is taken from another video, so batches keep their size.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from datamodules.flow.dataset import Mode, SegmentSampling, StreamInput, TwoStreamDataset, VideoEntry
from datamodules.flow.schema import FlowFileError, flow_path, verify_flow_file
from datamodules.flow.transforms import FrameTransformSettings
from datamodules.loaders import split_loader
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
from vidrec.spec import ChannelNormalization, DeploymentSpec, Modality, SplitSpec
from vidrec.two_stream_spec import TwoStreamSpec

__all__ = ["Layout", "TwoStreamDataModule"]


class Layout(enum.Enum):
    """Which data set layout the videos and annotations follow."""

    UCF101 = "ucf101"
    HMDB51 = "hmdb51"
    KINETICS = "kinetics"
    CLASS_FOLDERS = "class_folders"


_DEFAULT_ANNOTATIONS = {
    Layout.UCF101: "ucfTrainTestlist",
    Layout.HMDB51: "testTrainMulti_7030_splits",
    Layout.KINETICS: "annotations",
    Layout.CLASS_FOLDERS: "",
}


class TwoStreamDataModule(LightningDataModule):
    """RGB frames, flow stacks or both, for the spatial, temporal and fused two-stream models.

    Args:
        root: video data root of the layout.
        layout: ucf101, hmdb51, kinetics or class_folders.
        input: rgb, flow or both.
        flow_root: folder of flow files mirroring the video tree (``vidrec data flow --out``); flow and both.
        annotation_dir: annotation folder; default the layout's folder under ``root``.
        fold: official split 1-3 (UCF101, HMDB51).
        test_split: Kinetics: which split ``test`` reads (``val`` or ``test``).
        sampling: stack length L, TSN segments, evaluation positions and crops.
        transform: crop size, short side, multi-scale crops, flip, normalisation, flow mean subtraction.
        decode: the video reader's settings.
        batch_size: items per batch.
        num_workers: DataLoader worker processes.
        quarantine_path: TSV receiving unreadable videos and bad flow files.
        pin_memory: pin batches (GPU).
    """

    def __init__(
        self,
        root: str | Path,
        layout: Layout = Layout.UCF101,
        input: StreamInput = StreamInput.RGB,
        flow_root: str | Path | None = None,
        annotation_dir: str | Path | None = None,
        fold: int = 1,
        test_split: str = "val",
        sampling: SegmentSampling | None = None,
        transform: FrameTransformSettings | None = None,
        decode: DecodeSettings | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        quarantine_path: str | Path | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"TwoStreamDataModule: video data root not found: {self.root}")
        self.layout = Layout(layout)
        self.input = StreamInput(input)
        if self.input is not StreamInput.RGB:
            if flow_root is None:
                raise ValueError(f"TwoStreamDataModule: input {self.input.value!r} needs flow_root")
            if not Path(flow_root).is_dir():
                raise FileNotFoundError(f"TwoStreamDataModule: flow_root not found: {flow_root}")
        self.flow_root = Path(flow_root) if flow_root is not None else None
        self.annotation_dir = Path(annotation_dir) if annotation_dir else self.root / _DEFAULT_ANNOTATIONS[self.layout]
        self.fold = fold
        if test_split not in ("val", "test"):
            raise ValueError(f"TwoStreamDataModule: test_split must be 'val' or 'test', got {test_split!r}")
        self.test_split = Split(test_split)
        self.sampling = sampling or SegmentSampling()
        self.transform = transform or FrameTransformSettings()
        self.decode = decode or DecodeSettings()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.reader = RobustVideoReader(self.decode, quarantine_path)
        self._explicit_quarantine = quarantine_path is not None
        self.class_names: list[str] = self._class_names()
        self.num_classes: int = len(self.class_names)
        self.datasets: dict[Split, TwoStreamDataset] = {}
        self._flow_params: dict[str, Any] | None = None

    def _class_names(self) -> list[str]:
        if self.layout is Layout.UCF101:
            return parse_ucf101_classes(self.annotation_dir)
        if self.layout is Layout.HMDB51:
            return parse_hmdb51_classes(self.annotation_dir, self.fold)
        if self.layout is Layout.KINETICS:
            return parse_kinetics_classes(self.annotation_dir)
        return parse_class_folder_classes(self.root, Split.TRAIN)

    def _index(self, split: Split) -> VideoIndex:
        if self.layout is Layout.UCF101:
            return parse_ucf101(self.root, self.annotation_dir, split, self.fold)
        if self.layout is Layout.HMDB51:
            return parse_hmdb51(self.root, self.annotation_dir, split, self.fold)
        if self.layout is Layout.KINETICS:
            return parse_kinetics(self.root, self.annotation_dir, self.test_split if split is Split.TEST else split)
        return parse_class_folders(self.root, split)

    def video_id(self, path: Path) -> str:
        """The id joining a video to its flow file: the path relative to ``root``, without the suffix."""
        return path.relative_to(self.root).with_suffix("").as_posix()

    def _dataset(self, split: Split) -> TwoStreamDataset:
        index = self._index(split)
        if not index.items:
            raise ValueError(f"no {split.value} videos found for {self.layout.value} under {self.root}")
        videos = [VideoEntry(self.video_id(Path(p)), Path(p), label) for p, label in index.items]
        train = split is Split.TRAIN
        frames, crops = {
            Split.TRAIN: (1, 1),
            Split.VAL: (self.sampling.val_frames, self.sampling.val_crops),
            Split.TEST: (self.sampling.test_frames, self.sampling.test_crops),
        }[split]
        dataset = TwoStreamDataset(
            videos,
            self.input,
            Mode.TRAIN if train else Mode.EVAL,
            self.sampling,
            self.transform,
            self.reader if self.input is not StreamInput.FLOW else None,
            self.flow_root,
            frames=frames,
            crops=crops,
        )
        dataset.set_quarantine_path(self.reader.quarantine.path)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        """Parse the splits the stage needs; the quarantine file goes to the trainer's log dir unless given."""
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
            self.datasets[split].set_quarantine_path(self.reader.quarantine.path)

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
            drop_last=len(self.datasets[split]) > self.batch_size,
        )

    def flow_params(self) -> dict[str, Any]:
        """The extractor parameters of the flow this module reads (``FlowSettings.as_dict()``), from the first
        training video's flow file that verifies.

        Raises:
            ValueError: RGB input (no flow), or no training video has a valid flow file (the error names the root).
        """
        if self.flow_root is None:
            raise ValueError("TwoStreamDataModule: input 'rgb' reads no flow")
        if self._flow_params is None:
            for path, _ in self._index(Split.TRAIN).items:
                file = flow_path(self.flow_root, self.video_id(Path(path)))
                if not file.is_file():
                    continue
                try:
                    self._flow_params = dict(verify_flow_file(file).params)
                except FlowFileError:
                    continue
                break
            else:
                raise ValueError(f"TwoStreamDataModule: no training video has a valid flow file under {self.flow_root}")
        return self._flow_params

    def deployment_spec(self) -> DeploymentSpec:
        """How a stream trained on this module is fed, written into its checkpoints (``vidrec.spec``).

        RGB: one frame per input (``window = 1``), channels R, G, B, the transform's mean/std, the crop as
        ``frame_size`` and the resize's short side. FLOW: ``window = L`` fields of channels x, y (fed as v / bound,
        no per-channel statistics), ``short_side`` the extractor's. BOTH: as RGB. ``data_source`` rebuilds this
        module's test split; ``two_stream`` (``vidrec.two_stream_spec.TwoStreamSpec``) carries what streaming needs
        beyond the spec: the input, the extractor's ``FlowSettings`` (flow and both), the stack length, the
        transform's short side and flow mean (``vidrec.streaming.two_stream.two_stream_settings`` reads it).
        """
        crop = int(self.transform.crop_size)
        info = TwoStreamSpec(
            input=self.input.value,
            stack_length=int(self.sampling.stack_length),
            transform_short_side=int(self.transform.short_side),
            flow_mean=self.transform.flow_mean.value,
            flow={} if self.input is StreamInput.RGB else self.flow_params(),
        )
        flow = self.input is StreamInput.FLOW
        cls = type(self)
        init_args = {
            "root": str(self.root),
            "layout": self.layout.value,
            "input": self.input.value,
            "flow_root": None if self.flow_root is None else str(self.flow_root),
            "annotation_dir": str(self.annotation_dir),
            "fold": int(self.fold),
            "test_split": self.test_split.value,
        }
        flow_side = info.flow.get("short_side") if flow else None
        return DeploymentSpec(
            modality=Modality.VIDEO,
            window=int(self.sampling.stack_length) if flow else 1,
            hop=1,
            eval_hop=1,
            rate=0.0,
            channels=["x", "y"] if flow else ["R", "G", "B"],
            normalization=ChannelNormalization.identity(2)
            if flow
            else ChannelNormalization(np.asarray(self.transform.mean), np.asarray(self.transform.std)),
            class_names=list(self.class_names),
            label_policy="video",
            split=SplitSpec(mode="official", fold=int(self.fold)),
            data_path=str(self.root),
            frame_size=(crop, crop),
            short_side=int(flow_side or 0) if flow else int(self.transform.short_side),
            data_source={"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args},
            two_stream=info,
        )

    def example_input(self) -> torch.Tensor | None:
        """One model input of the deployed shape for the model summary: ``(1, 3, S, S)`` or ``(1, 2L, S, S)``; None
        for BOTH (a dict of inputs)."""
        crop = int(self.transform.crop_size)
        if self.input is StreamInput.RGB:
            return torch.zeros(1, 3, crop, crop)
        if self.input is StreamInput.FLOW:
            return torch.zeros(1, 2 * int(self.sampling.stack_length), crop, crop)
        return None

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """One TSN-sampled item per training video per epoch, shuffled."""
        return self._loader(Split.TRAIN, train=True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """``val_frames x val_crops`` views per validation video."""
        return self._loader(Split.VAL, train=False)

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """``test_frames x test_crops`` views per test video, with ``"group"``."""
        return self._loader(Split.TEST, train=False)

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Same views as the test loader."""
        return self._loader(Split.TEST, train=False)
