"""LightningDataModule of skeleton action samples from a ``vidrec.skeleton/1`` HDF5 file.

Each sample becomes one fixed-length input ``(M * V * C, L)`` (see :mod:`datamodules.skeleton.transforms`), with
batches ``{"inputs": (B, M V C, L), "target": (B,), "group": (B,)}``; ``group`` is the sample's index in the file, so
test reports can be joined by sample and broken down by performer. Splits:

* an NTU protocol (``Protocol.NTU60_XSUB`` ...) decided from each sample's performer, camera or setup;
* ``Protocol.FILE``: the samples' ``split`` attribute (pose-pickle imports, generic folders);
* ``Protocol.CUSTOM``: ``test_performers`` (train: every other performer);
* ``train_list`` / ``test_list``: text files of sample names, one a line (as the NTU authors' split lists); a listed
  name that is not in the file is skipped with a warning naming the list and the sample.

Validation takes ``val_fraction`` of the training performers (drawn with ``seed``), never test performers. Samples
are read into memory at ``setup``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.loaders import evaluation_loader, training_loader
from datamodules.skeleton.protocols import Protocol, is_training_sample
from datamodules.skeleton.schema import SampleInfo, read_skeleton_info, read_skeleton_sample
from datamodules.skeleton.transforms import (
    LengthMode,
    SkeletonAugmentation,
    SkeletonPreprocessing,
    augment_joints,
    fix_length,
    joints_to_channels,
    preprocess_joints,
)
from vidrec.skeleton_spec import Centring
from vidrec.spec import ChannelNormalization, DeploymentSpec, Modality, SplitSpec

__all__ = ["SkeletonDataset", "SkeletonDataModule", "read_split_list"]

log = logging.getLogger(__name__)


def read_split_list(path: str | Path, known: Sequence[str]) -> tuple[list[str], list[str]]:
    """Names listed in ``path`` (one a line, ``#`` comments) split into ``(present, missing)`` against ``known``."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"split list {file} does not exist (expected one sample name a line)")
    names = [s.strip().split(".")[0] for s in file.read_text().splitlines() if s.strip() and not s.startswith("#")]
    have = set(known)
    present = [n for n in names if n in have]
    missing = [n for n in names if n not in have]
    for n in missing[:20]:
        log.warning("%s lists %s, which is not in the data file: skipped", file, n)
    if len(missing) > 20:
        log.warning("%s: %d more listed samples are not in the data file", file, len(missing) - 20)
    return present, missing


class SkeletonDataset(Dataset):
    """Fixed-length inputs of in-memory samples; augmentation when ``augmentation`` is given.

    An augmented item draws its crop, rotation and scaling from a NumPy generator seeded by one draw of torch's
    global generator, which the training loader seeds per (run seed, epoch, position in the epoch)
    (``datamodules.loaders.SeededItems``): an item is the same whichever worker builds it, and two positions differ.
    """

    def __init__(
        self,
        joints: list[np.ndarray],
        labels: list[int],
        groups: list[int],
        *,
        length: int,
        length_mode: LengthMode,
        max_bodies: int,
        augmentation: SkeletonAugmentation | None,
    ) -> None:
        self.joints, self.labels, self.groups = joints, labels, groups
        self.length, self.length_mode, self.max_bodies = length, length_mode, max_bodies
        self.augmentation = augmentation
        self.draws_random = augmentation is not None  # unaugmented items are not seeded by the loader

    def __len__(self) -> int:
        return len(self.joints)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.joints[i]
        rng = None
        if self.augmentation is not None:
            rng = np.random.default_rng(int(torch.randint(0, 1 << 62, ()).item()))  # the item's seed (see above)
            x = augment_joints(x, self.augmentation, rng)
        x = fix_length(x, self.length, self.length_mode, rng)
        return {
            "inputs": torch.from_numpy(joints_to_channels(x, self.max_bodies)),
            "target": torch.tensor(self.labels[i], dtype=torch.long),
            "group": torch.tensor(self.groups[i], dtype=torch.long),
        }


class SkeletonDataModule(L.LightningDataModule):
    """Train / val / test samples of a ``vidrec.skeleton/1`` file under a protocol.

    Args:
        path: The HDF5 file.
        protocol: How samples are split (see the module docstring).
        test_performers: Test performers under ``Protocol.CUSTOM``.
        train_list: Optional file of training sample names (overrides the protocol's training side).
        test_list: Optional file of test sample names (overrides the protocol's test side).
        length: Frames per input L.
        length_mode: ``CROP`` or ``RESAMPLE``.
        max_bodies: Bodies per input M (zero-padded).
        center: Centre on the main actor's spine base.
        align_view: Rotate hips onto x and the spine onto y.
        normalize_scale: Divide by the main actor's mean spine length.
        rotation_deg: Training augmentation: random rotation range (degrees).
        scale: Training augmentation: per-axis scaling range.
        min_crop: Training augmentation: smallest temporal crop fraction.
        val_fraction: Fraction of the training performers held out for validation (0: no validation).
        stream_hop: Frames between the windows a deployment streams (the deployment spec's hop; a multiple of the
            model's temporal stride, 4 for the skeleton networks).
        frame_rate: Frames per second of the recordings (Kinect v2: 30).
        batch_size: Batch size.
        num_workers: DataLoader workers.
        seed: Seed of the validation draw, and of the training order and augmentation when the run sets no seed
            (``seed_everything`` wins, see ``datamodules.loaders.training_loader``).
    """

    def __init__(
        self,
        path: str,
        *,
        protocol: Protocol = Protocol.NTU60_XSUB,
        test_performers: list[int] | None = None,
        train_list: str | None = None,
        test_list: str | None = None,
        length: int = 64,
        length_mode: LengthMode = LengthMode.RESAMPLE,
        max_bodies: int = 2,
        center: bool = True,
        align_view: bool = False,
        normalize_scale: bool = False,
        rotation_deg: float = 0.0,
        scale: float = 0.0,
        min_crop: float = 1.0,
        val_fraction: float = 0.0,
        stream_hop: int = 4,
        frame_rate: float = 30.0,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if length < 1 or max_bodies < 1 or not 0 <= val_fraction < 1 or not 0 < min_crop <= 1:
            raise ValueError(
                f"{path}: need length >= 1, max_bodies >= 1, 0 <= val_fraction < 1 and 0 < min_crop <= 1; got "
                f"{length}, {max_bodies}, {val_fraction}, {min_crop}"
            )
        if protocol is Protocol.CUSTOM and not test_performers and test_list is None:
            raise ValueError(f"{path}: protocol CUSTOM needs test_performers (or a test_list)")
        self.path = path
        self.protocol, self.test_performers = protocol, test_performers
        self.train_list, self.test_list = train_list, test_list
        self.length, self.length_mode, self.max_bodies = length, length_mode, max_bodies
        self.preprocessing = SkeletonPreprocessing(
            center=center, align_view=align_view, normalize_scale=normalize_scale
        )
        self.augmentation = SkeletonAugmentation(rotation_deg=rotation_deg, scale=scale, min_crop=min_crop)
        self.val_fraction, self.batch_size, self.num_workers, self.seed = val_fraction, batch_size, num_workers, seed
        self.stream_hop, self.frame_rate = stream_hop, frame_rate
        self.info = read_skeleton_info(path)
        self.class_names = list(self.info.class_names)
        self.num_classes = len(self.class_names)
        self.in_channels = max_bodies * self.info.num_joints * len(self.info.coords)
        self.datasets: dict[str, SkeletonDataset] = {}
        self.split_names: dict[str, list[str]] = {}
        self.missing_from_lists: list[str] = []

    @property
    def has_validation(self) -> bool:
        """Whether a validation split exists (the CLI's checkpoint reads it)."""
        return self.val_fraction > 0

    def _is_train(self, s: SampleInfo) -> bool:
        if self.protocol is Protocol.FILE:
            if s.split not in ("train", "test"):
                raise ValueError(f"{self.path}: protocol FILE needs a 'split' attribute on /samples/{s.name}")
            return s.split == "train"
        if self.protocol is Protocol.CUSTOM:
            return s.performer not in set(self.test_performers or [])
        return is_training_sample(self.protocol, s)

    def _resolve(self) -> dict[str, list[SampleInfo]]:
        by_name = {s.name: s for s in self.info.samples}
        names = list(by_name)
        train = [s for s in self.info.samples if self._is_train(s)] if self.train_list is None else []
        test = [s for s in self.info.samples if not self._is_train(s)] if self.test_list is None else []
        for attr, side in (("train_list", train), ("test_list", test)):
            listed = getattr(self, attr)
            if listed is not None:
                present, missing = read_split_list(listed, names)
                self.missing_from_lists += missing
                side.extend(by_name[n] for n in present)
        if not train or not test:
            raise ValueError(
                f"{self.path}: protocol {self.protocol.name} gives {len(train)} training and {len(test)} test samples;"
                " both must be non-empty"
            )
        val: list[SampleInfo] = []
        if self.val_fraction > 0:
            performers = sorted({s.performer for s in train})
            n_val = max(1, int(round(len(performers) * self.val_fraction)))
            if n_val >= len(performers):
                raise ValueError(f"{self.path}: val_fraction {self.val_fraction} leaves no training performer")
            held = set(np.random.default_rng(self.seed).permutation(performers)[:n_val].tolist())
            val = [s for s in train if s.performer in held]
            train = [s for s in train if s.performer not in held]
        return {"train": train, "val": val, "test": test}

    def setup(self, stage: str | None = None) -> None:
        """Resolve the split and read every sample of it into memory (once)."""
        if self.datasets:
            return
        splits = self._resolve()
        index = {s.name: i for i, s in enumerate(self.info.samples)}
        with h5py.File(self.path, "r") as f:
            for name, samples in splits.items():
                joints = [preprocess_joints(read_skeleton_sample(f, s.name), self.preprocessing) for s in samples]
                self.datasets[name] = SkeletonDataset(
                    joints,
                    [s.label for s in samples],
                    [index[s.name] for s in samples],
                    length=self.length,
                    length_mode=self.length_mode,
                    max_bodies=self.max_bodies,
                    augmentation=self.augmentation if name == "train" else None,
                )
                self.split_names[name] = [s.name for s in samples]
                log.info("%s: %s split: %d samples", self.path, name, len(samples))

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            raise RuntimeError(f"{self.path}: call setup() before asking for the {name} dataloader")
        if shuffle:  # seeded per (run seed, epoch, position) and resumable; ``seed`` when the run sets none
            return training_loader(
                self.datasets[name],
                batch_size=self.batch_size,
                trainer=self.trainer,
                seed=self.seed,
                num_workers=self.num_workers,
            )
        return evaluation_loader(self.datasets[name], batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training samples."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation samples in file order (empty without ``val_fraction``)."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        """Test samples in file order."""
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        """Same samples and order as :meth:`test_dataloader`."""
        return self.test_dataloader()

    def group_info(self) -> dict[int, dict[str, Any]]:
        """``{group: {"sample": name, "subject": performer, "camera": camera}}`` for every sample of the file."""
        return {
            i: {"sample": s.name, "subject": s.performer, "camera": s.camera} for i, s in enumerate(self.info.samples)
        }

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, path: str | None = None, *, batch_size: int = 64) -> SkeletonDataModule:
        """The data module of a skeleton checkpoint's spec: its protocol, window, length mode and anchoring.

        The test side is decided again by the protocol (or the performers, for ``custom``) on ``path`` (default: the
        file the spec names) and checked against the spec's test performers, so the test clips are those
        ``vidrec test`` scored. A model trained with split lists is evaluated on its protocol's test side; when
        that has other performers, the error says so.

        Raises:
            ValueError: not a skeleton spec, no split or data file, an unknown protocol, or another test side.
        """
        file = path or spec.data_path
        if spec.modality is not Modality.SKELETON or spec.skeleton is None:
            raise ValueError(f"{file}: a {spec.modality.value} deployment spec does not describe a skeleton file")
        if spec.split is None:
            raise ValueError(f"{file}: the checkpoint's deployment spec names no split; test it with `vidrec test`")
        if not file:
            raise ValueError("the deployment spec names no skeleton file; pass its path (--data)")
        known = {p.value: p for p in Protocol}
        if spec.split.mode not in known:
            raise ValueError(
                f"{file}: the spec's split mode {spec.split.mode!r} is not a skeleton protocol {sorted(known)}"
            )
        protocol, sk = known[spec.split.mode], spec.skeleton
        dm = cls(
            file,
            protocol=protocol,
            test_performers=list(spec.split.test_subjects) if protocol is Protocol.CUSTOM else None,
            length=spec.window,
            length_mode=LengthMode(sk.length_mode),
            max_bodies=sk.bodies,
            center=sk.centring is Centring.FIRST_FRAME,
            align_view=sk.align_view,
            normalize_scale=sk.normalize_scale,
            stream_hop=spec.hop,
            frame_rate=spec.rate,
            batch_size=batch_size,
            seed=spec.split.seed,
        )
        if dm.in_channels != len(spec.channels):
            raise ValueError(
                f"{file}: {dm.in_channels} channels per frame ({sk.bodies} bodies x {dm.info.num_joints} joints x "
                f"{len(dm.info.coords)} coords), the checkpoint expects {len(spec.channels)}"
            )
        dm.setup("test")
        by_name = {s.name: s for s in dm.info.samples}
        have = sorted({by_name[n].performer for n in dm.split_names["test"]})
        if have != sorted(spec.split.test_subjects):
            raise ValueError(
                f"{file}: protocol {spec.split.mode} gives test performers {have}, the checkpoint was tested on "
                f"{sorted(spec.split.test_subjects)} (another file, or split lists)"
            )
        return dm

    def deployment_spec(self) -> DeploymentSpec:
        """Window, hop, frame rate, joint layout and anchoring of this data, for checkpoints (``vidrec.spec``).

        The anchoring (centring on the spine base, view alignment) is described so that ``vidrec stream`` applies
        it to live joint frames as ``setup`` applied it to clips (``vidrec.skeleton_spec``). No mean/std
        normalisation: the identity statistics.
        """
        skeleton = replace(
            self.preprocessing.spec(self.max_bodies, self.info.num_joints, tuple(self.info.coords)),
            length_mode=self.length_mode.value,
        )
        channels = skeleton.channel_names()
        split = None
        if self.split_names:
            by_name = {s.name: s for s in self.info.samples}
            split = SplitSpec(
                mode=self.protocol.name.lower(),
                train_subjects=sorted({by_name[n].performer for n in self.split_names.get("train", [])}),
                val_subjects=sorted({by_name[n].performer for n in self.split_names.get("val", [])}),
                test_subjects=sorted({by_name[n].performer for n in self.split_names.get("test", [])}),
                seed=self.seed,
            )
        return DeploymentSpec(
            modality=Modality.SKELETON,
            window=self.length,
            hop=self.stream_hop,
            eval_hop=self.stream_hop,
            rate=self.frame_rate,
            channels=channels,
            normalization=ChannelNormalization.identity(len(channels)),
            class_names=list(self.class_names),
            label_policy="clip",
            split=split,
            data_path=str(self.path),
            skeleton=skeleton,
        )
