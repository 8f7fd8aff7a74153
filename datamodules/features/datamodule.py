"""LightningDataModule over per-frame feature files: fixed-length feature sequences for TS-LSTM and friends.

Each sample is one video: ``{"inputs": (D, F) float32, "target": label, "group": video index}``, ``F =
num_frames`` frames sampled from the video's ``T`` stored rows. Evaluation takes the centre row of each of ``F``
equal segments of the stored rows; training with ``jitter`` takes a random row in each segment (temporal jitter,
as TSN samples). With ``T == F`` (the paper's 25 uniformly sampled frames) there is nothing to jitter: extract more
frames per video (``--frames 50`` or ``--every-frame``) to train with it. ``T < F`` repeats rows evenly. Every
sample has the same length, so the length of a split is its number of videos (exact distributed sampling).

Splits are the official ones stored per video in the file (``train`` / ``val`` / ``test``); data sets without a
validation split (UCF101, HMDB51) validate on ``test`` (``val_split``).

Bad input: a file of another extractor (``expected_feature_dim``) fails at construction naming the file and both
dimensions; videos with fewer decodable frames than ``min_video_frames`` are skipped and reported (a data set run goes
on); quarantined videos of the extraction are reported.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.features.schema import FeatureFileError, FeatureReader, VideoFeatures
from datamodules.loaders import evaluation_loader, training_loader
from vidrec.spec import ChannelNormalization, DeploymentSpec, Modality, SplitSpec

__all__ = ["FeatureSequenceDataset", "FeatureDataModule", "segment_rows"]


def segment_rows(stored: int, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Rows of ``frames`` samples out of ``stored`` rows: one per equal segment, its centre or (``rng``) random."""
    if stored < 1:
        raise ValueError("a video with no feature rows")
    edges = np.arange(frames + 1) * stored / frames  # segment boundaries in rows
    if rng is None or stored <= frames:
        rows = np.floor((edges[:-1] + edges[1:]) / 2)
    else:
        rows = np.floor(edges[:-1] + rng.random(frames) * (edges[1:] - edges[:-1]))
    return np.clip(rows.astype(np.int64), 0, stored - 1)


class FeatureSequenceDataset(Dataset[dict[str, Any]]):
    """Fixed-length feature sequences of a list of videos held in memory.

    With ``jitter`` each read draws its rows from torch's global generator, which the training loader seeds per item
    with ``(run seed, epoch, position in the epoch)`` (``datamodules.loaders.SeededItems``): an item's rows do not
    depend on the DataLoader worker that builds it or on what was read before, and a resumed run draws the same.
    """

    def __init__(self, videos: list[VideoFeatures], num_frames: int, jitter: bool) -> None:
        self.videos = videos
        self.num_frames = num_frames
        self.jitter = jitter
        self.draws_random = jitter  # the training loader seeds the items only then

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if self.jitter else None
        rows = segment_rows(len(video.features), self.num_frames, rng)
        feats = torch.from_numpy(np.ascontiguousarray(video.features[rows].T, dtype=np.float32))  # (T, D) -> (D, F)
        return {"inputs": feats, "target": video.label, "group": index}


class FeatureDataModule(LightningDataModule):
    """Feature sequences of one feature file (``datamodules.features.schema``).

    Args:
        path: the HDF5 feature file.
        num_frames: F frames per sample (the paper: 25).
        jitter: random row per segment in training (see the module docstring).
        batch_size: samples per batch.
        num_workers: DataLoader workers (0 is fastest for in-memory features on 2 cores).
        val_split: split validated on when the file has no ``val`` videos.
        expected_feature_dim: fail when the file's D differs (a file of another extractor).
        min_video_frames: skip (and report) videos with fewer decodable frames than this.
        seed: seed of the training order and jitter when the run sets none (``seed_everything`` /
            ``PL_GLOBAL_SEED`` wins, as for every vidrec data module).
    """

    def __init__(
        self,
        path: str | Path,
        num_frames: int = 25,
        jitter: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        val_split: str = "test",
        expected_feature_dim: int | None = None,
        min_video_frames: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.path = Path(path)
        self.reader = FeatureReader(self.path, expected_feature_dim)
        self.num_frames, self.jitter = num_frames, jitter
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.val_split, self.min_video_frames = val_split, min_video_frames
        self.class_names: list[str] = list(self.reader.info.class_names)
        self.num_classes: int = len(self.class_names)
        self.feature_dim: int = self.reader.info.feature_dim
        self.skipped: list[str] = []  # videos with too few frames
        if self.reader.quarantined:
            warnings.warn(
                f"{self.path}: {len(self.reader.quarantined)} videos were quarantined at extraction "
                f"(e.g. {self.reader.quarantined[0][0]}: {self.reader.quarantined[0][1]})",
                RuntimeWarning,
                stacklevel=2,
            )
        self._by_split: dict[str, list[VideoFeatures]] | None = None
        self.datasets: dict[str, FeatureSequenceDataset] = {}

    def _load(self) -> dict[str, list[VideoFeatures]]:
        if self._by_split is None:
            by_split: dict[str, list[VideoFeatures]] = {}
            for video in self.reader.read():
                if video.num_frames < self.min_video_frames:
                    self.skipped.append(video.path)
                    continue
                by_split.setdefault(video.split, []).append(video)
            if self.skipped:
                warnings.warn(
                    f"{self.path}: skipped {len(self.skipped)} videos with fewer than {self.min_video_frames} frames "
                    f"(e.g. {', '.join(self.skipped[:3])})",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self._by_split = by_split
        return self._by_split

    def _split(self, name: str) -> str:
        splits = self._load()
        if name == "val" and "val" not in splits:
            name = self.val_split
        if name not in splits:
            raise FeatureFileError(f"{self.path} has no {name!r} videos (splits present: {sorted(splits)})")
        return name

    @property
    def has_validation(self) -> bool:
        """True: the val (or ``val_split``) videos validate."""
        return True

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )
        for name in wanted:
            if name not in self.datasets:
                videos = self._load()[self._split(name)]
                self.datasets[name] = FeatureSequenceDataset(
                    videos, self.num_frames, jitter=self.jitter and name == "train"
                )

    def _loader(self, name: str, train: bool) -> DataLoader[dict[str, Any]]:
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[name])
        if not train:
            return evaluation_loader(self.datasets[name], batch_size=self.batch_size, num_workers=self.num_workers)
        return training_loader(  # seeded per (run seed, epoch, position) and resumable (datamodules.loaders)
            self.datasets[name],
            batch_size=self.batch_size,
            trainer=self.trainer,
            seed=self.seed,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Training videos, shuffled, jittered."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Validation videos (or ``val_split``), centre rows."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Test videos, centre rows, one sample per video (``group`` = video)."""
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Same as the test loader."""
        return self._loader("test", False)

    def deployment_spec(self) -> DeploymentSpec:
        """How a head trained here is fed: ``(D, num_frames)`` feature sequences, no normalisation, official split.

        ``data_path`` is the feature file; the extractor behind it is in the file's root attributes (its
        ``extractor_hash`` names it). Streaming a head over a live feature stream uses every sampled frame
        (``hop = 1``). ``data_source["features"]`` is what a live stream needs to make the same features
        (``vidrec.streaming.features``): the extractor record (backbone, weights sha256, preprocessing, clip context),
        the sampling, D, the video root, and ``frame_step``, the native frames between the head's time steps: the
        file's step for every-frame sampling (live features then equal the file's), else the median video length
        over ``num_frames`` (uniformly sampled files have no live equivalent; ``exact_sampling`` is False).
        """
        info = self.reader.info
        sampling = dict(info.sampling)
        exact = sampling.get("mode") == "every"
        if exact:
            frame_step = int(sampling.get("step", 1))
        else:
            lengths = [v.num_frames for videos in self._load().values() for v in videos] or [self.num_frames]
            frame_step = max(1, round(float(np.median(lengths)) / self.num_frames))
        features = {
            "feature_file": str(self.path),
            "feature_dim": int(self.feature_dim),
            "extractor": info.extractor,
            "extractor_hash": info.extractor_hash,
            "sampling": sampling,
            "video_root": info.source,
            "frame_step": frame_step,
            "exact_sampling": exact,
        }
        return DeploymentSpec(
            modality=Modality.TIMESERIES,
            window=self.num_frames,
            hop=1,
            eval_hop=1,
            rate=0.0,
            channels=[f"feature{i}" for i in range(self.feature_dim)],
            normalization=ChannelNormalization.identity(self.feature_dim),
            class_names=list(self.class_names),
            label_policy="video",
            split=SplitSpec(mode="official"),
            data_path=str(self.path),
            data_source={
                "class_path": "datamodules.features.FeatureDataModule",
                "init_args": {"path": str(self.path), "num_frames": self.num_frames},
                "features": features,
            },
        )
