"""Flow-stream features: the temporal stream of a two-stream model over stacks of optical-flow fields.

The paper's features ("TS-LSTM and Temporal-Inception", Ma et al. 2017) are two-stream ResNet-101 features: the RGB
stream on a frame and the temporal stream on a stack of ``L`` flow fields (Simonyan & Zisserman 2014), each 2048-D,
concatenated per frame into 4096. This module writes the flow half: for every sampled frame ``t`` (the same
sampling as the RGB extraction, ``sampled_frames``) the ``L`` fields centred on ``t`` (``stack_field_range``, as the
two-stream data set reads them; short videos repeat their last field) from the video's ``vidrec.flow/1`` file go
through the temporal stream's ``forward_features`` after the evaluation transform (centre crop, flow in units of
the bound, ``transform_flow``). The feature file has the RGB file's video keys, labels and splits, so
``vidrec data join-features rgb.h5 flow.h5`` joins them per video into ``(T, D_rgb + D_flow)``.

Flow files come from ``vidrec data flow --videos ROOT --out FLOW_ROOT``; a video without a (complete) flow file, or
one computed with other flow settings than the others, is quarantined and the run goes on. The extractor record
keeps those settings (``"flow"``), so a live stream computes the same fields (``vidrec.streaming.features``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from datamodules.features.extract import (
    ExtractionSummary,
    ExtractorKind,
    FrameEncoder,
    LabelledVideo,
    _progress,
    file_sha256,
    sampled_frames,
)
from datamodules.features.schema import FeatureFileInfo, FeatureWriter, VideoFeatures, video_key

__all__ = ["FlowFeatureSettings", "flow_stream_encoder", "flow_model_encoder", "extract_flow_features"]


@dataclass
class FlowFeatureSettings:
    """Sampling and preprocessing of flow-stream features.

    Attributes:
        frames: F evenly spaced frames per video (the RGB file's); None: every ``frame_step``-th frame.
        frame_step: with ``frames=None``: native frames between sampled frames.
        crop_size: the centre crop fed to the stream (its training crop).
        flow_mean: ``"none"`` or ``"field"`` (subtract each field's mean: the stream's training ``flow_mean``).
        batch_size: stacks per forward pass.
        dtype: stored feature dtype.
    """

    frames: int | None = 25
    frame_step: int = 1
    crop_size: int = 224
    flow_mean: str = "none"
    batch_size: int = 32
    dtype: str = "float16"

    @property
    def sampling(self) -> dict[str, Any]:
        """The feature file's ``sampling`` record (as ``ExtractionSettings.sampling``)."""
        if self.frames is not None:
            return {"mode": "uniform", "frames": self.frames}
        if self.frame_step == 1:
            return {"mode": "every", "frames": None}
        return {"mode": "every", "frames": None, "step": self.frame_step}


def flow_model_encoder(model: nn.Module, description: dict[str, Any]) -> FrameEncoder:
    """A temporal-stream model (``StreamResNet`` with ``2L`` input channels) as an encoder of ``(N, 2L, S, S)``."""
    in_channels = int(getattr(model, "in_channels", 0))
    forward_features = getattr(model, "forward_features", None)
    if in_channels < 2 or in_channels % 2 or not callable(forward_features):
        raise ValueError(
            f"{type(model).__name__} is not a temporal stream (expected forward_features and 2L input channels, "
            f"got in_channels={in_channels})"
        )
    model.eval()
    dim = int(getattr(model, "num_features", 0)) or int(forward_features(torch.zeros(1, in_channels, 32, 32)).shape[1])
    return FrameEncoder(
        encode=lambda x: forward_features(x), context_frames=in_channels // 2, feature_dim=dim, description=description
    )


def flow_stream_encoder(path: str | Path) -> FrameEncoder:
    """The temporal stream of a ``vidrec fit`` checkpoint (``temporal_stream_resnet*``) as a flow-stack encoder."""
    from vidrec.tasks.checkpoint import load_checkpoint

    model = load_checkpoint(path).model
    description = {
        "kind": ExtractorKind.FLOW_CHECKPOINT.value,
        "name": type(model).__name__,
        "checkpoint": str(Path(path).resolve()),
        "checkpoint_sha256": file_sha256(path),
    }
    try:
        return flow_model_encoder(model, description)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _stacks(flow: Any, positions: np.ndarray, length: int) -> np.ndarray:
    """``(N, L, 2, H, W)`` uint8: the L fields centred on each position (the two-stream data set's reading)."""
    from datamodules.flow.dataset import stack_field_range

    stacks = []
    for t in positions:
        start, stop = stack_field_range(int(t), length, flow.num_fields)
        fields = flow.read_fields(start, stop)  # (l, 2, H, W), l <= L
        if len(fields) < length:
            fields = np.concatenate([fields, np.repeat(fields[-1:], length - len(fields), axis=0)])
        stacks.append(fields)
    return np.stack(stacks)


def _flow_params(videos: Sequence[LabelledVideo], flow_root: str | Path) -> dict[str, Any] | None:
    """The flow extractor's parameters (``FlowSettings.as_dict``) of the first readable flow file, or None."""
    from datamodules.flow.schema import FlowFile, FlowFileError, flow_path

    for video in videos:
        path = flow_path(flow_root, str(Path(video.relative).with_suffix("")))
        if path.is_file():
            try:
                with FlowFile(path) as flow:
                    return dict(flow.header.params)
            except (FlowFileError, OSError):
                continue
    return None


def extract_flow_features(
    videos: Sequence[LabelledVideo],
    encoder: FrameEncoder,
    flow_root: str | Path,
    out: str | Path,
    settings: FlowFeatureSettings,
    *,
    class_names: Sequence[str],
    source: str = "",
    progress: bool = True,
) -> ExtractionSummary:
    """Flow-stream features of ``videos`` from their flow files under ``flow_root`` into ``out`` (resumable)."""
    from datamodules.flow.schema import FlowFile, FlowFileError, flow_path
    from datamodules.flow.transforms import FlowMean, FrameTransformSettings, crop_boxes, transform_flow

    out = Path(out)
    length = encoder.context_frames  # L fields per stack
    flow_params = _flow_params(videos, flow_root)
    info = FeatureFileInfo(
        feature_dim=encoder.feature_dim,
        dtype=settings.dtype,
        class_names=list(class_names),
        sampling=settings.sampling,
        # "flow": how the flow files were computed (a live stream computes the same fields, vidrec.streaming.features)
        extractor={**encoder.description, "stack_length": length, "settings": asdict(settings), "flow": flow_params},
        source=source,
    )
    summary = ExtractionSummary()
    started = time.perf_counter()
    with FeatureWriter(out, info) as writer, _progress(progress, len(videos)) as advance:
        for video in videos:
            key = video_key(video.relative)
            if writer.done(key):
                summary.skipped += 1
                advance()
                continue
            path = flow_path(flow_root, str(Path(video.relative).with_suffix("")))
            try:
                if not path.is_file():
                    raise FlowFileError(f"{path}: no flow file (run `vidrec data flow`)")
                with FlowFile(path) as flow:
                    if flow.num_fields < 1:
                        raise FlowFileError(f"{path}: no flow fields")
                    if flow_params is not None and flow.header.params != flow_params:
                        raise FlowFileError(
                            f"{path}: computed with other flow settings than the data set's first flow file "
                            f"({flow.header.params} vs {flow_params}); one feature file holds one flow extraction"
                        )
                    num_frames, fps = int(flow.header.video_frames), float(flow.header.fps)
                    positions = sampled_frames(num_frames, settings.frames, settings.frame_step)
                    stacks = _stacks(flow, positions, length)  # (N, L, 2, H, W)
            except (FlowFileError, OSError) as error:
                writer.quarantine(video.relative, str(error))
                summary.quarantined.append(video.relative)
                advance()
                continue
            height, width = stacks.shape[-2:]
            transform = FrameTransformSettings(
                crop_size=settings.crop_size, short_side=min(height, width), flow_mean=FlowMean(settings.flow_mean)
            )
            box = crop_boxes(transform, height, width, 1)[0]  # the centre crop at the stored size
            t0 = time.perf_counter()
            feats: list[Tensor] = []
            with torch.inference_mode():
                for start in range(0, len(stacks), settings.batch_size):
                    x = transform_flow(stacks[start : start + settings.batch_size], box, transform)  # (n, 2L, S, S)
                    feats.append(encoder.encode(x).float())
            summary.encode_seconds += time.perf_counter() - t0
            writer.write(
                VideoFeatures(
                    key=key,
                    path=video.relative,
                    features=torch.cat(feats).numpy(),  # (N, D)
                    frame_indices=positions,
                    label=video.label,
                    split=video.split,
                    fps=fps,
                    num_frames=num_frames,
                )
            )
            summary.written += 1
            summary.clips += len(stacks)
            advance()
    summary.seconds = time.perf_counter() - started
    return summary
