"""Live feature heads: the video backbone once per new frame, its feature cached, the head streamed over the cache.

A feature head (TS-LSTM, valid Temporal-Inception, the mean-pool baseline; "TS-LSTM and Temporal-Inception", Ma et
al. 2017) is trained on a feature file of ``vidrec extract-features``. Its checkpoint's deployment spec records, in
``data_source["features"]``, the extractor of that file (backbone, weights sha256, preprocessing, clip context) and
its sampling, so a live stream makes the features the head was trained on::

    native frame uint8 (H, W, 3), in order
      -> LiveFrameFeatures   every ``frame_step``-th native frame (the feature file's sampling) is a head time step;
                             its clip is the ``context_frames`` frames ending at it, ``frame_stride`` apart,
                             edge-filled with frame 0 (as ``extract-features``); frames are resized and cropped
                             exactly as the extraction's reader and transform do; the backbone runs on that one clip
      -> (D,) feature        cached by the head's streaming state (nothing is recomputed for old frames)
      -> StreamingClassifier(head, window, hop)   one step per ``hop`` new features: logits of the last ``window``

For a file sampled at every (``frame_step``-th) frame the live features equal the file's rows of the same frames, and
the streamed logits equal the head offline on the window of those features (``tests/streaming/test_features.py``).
A file of ``F`` uniformly spaced frames per video has no live equivalent: the head steps every ``frame_step`` native
frames, the median video length over F, and the report says the sampling is approximate.

Cost: a stream pays one backbone clip and one head step per new frame, where recomputing the window pays ``window``
backbone clips and the head on the whole window (``tools/bench_feature_heads.py live``).

Flow-stream features (``extract-features --flow-root``) come from ``LiveFlowFeatures``: one flow field per new frame
from the cached previous frame (the settings the feature file records), the temporal stream on the ``L`` fields
centred on each sampled frame, so a feature is ready ``L - L // 2`` frames after its frame; joined RGB + flow files
(``join-features``) from ``LiveJoinedFeatures``. ``live_features`` picks the source from the extractor record.

``vidrec stream --input VIDEO`` and ``vidrec evaluate-streaming`` of a feature-head checkpoint come here
(``vidrec.streaming.command``). The backbone is found where the feature file says; ``--extractor PATH`` names it when
it moved (its sha256 must still match).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.spec import DeploymentSpec
from vidrec.streaming.devices import cpu_only

__all__ = [
    "FeatureHeadError",
    "FeatureSourceSpec",
    "FeatureHeadStream",
    "LiveFlowFeatures",
    "LiveFrameFeatures",
    "LiveJoinedFeatures",
    "evaluate_feature_head",
    "head_runtime",
    "is_feature_head",
    "live_features",
    "load_encoder",
    "run_evaluate_streaming",
    "run_stream",
]


class FeatureHeadError(ValueError):
    """A feature head cannot be streamed live as its checkpoint and feature file describe (names what and why)."""


@dataclass(frozen=True)
class FeatureSourceSpec:
    """Where a feature head's features come from: ``DeploymentSpec.data_source["features"]``.

    Attributes:
        feature_file: the feature file the head was trained on.
        feature_dim: D.
        extractor: the file's extractor record (kind, name, checkpoint or weights path and sha256, settings).
        extractor_hash: sha256 of that record.
        sampling: the file's sampling record (``{"mode": "every", "step": N}`` or ``{"mode": "uniform", ...}``).
        video_root: the data set root the file's video paths are relative to.
        frame_step: native frames between the head's time steps.
        exact_sampling: True when live features are the file's rows (every-frame sampling).
    """

    feature_file: str
    feature_dim: int
    extractor: dict[str, Any]
    extractor_hash: str
    sampling: dict[str, Any]
    video_root: str
    frame_step: int
    exact_sampling: bool

    @staticmethod
    def of(spec: DeploymentSpec, where: str = "checkpoint") -> FeatureSourceSpec:
        """The feature source of a head's spec; raises naming ``where`` when the spec has none."""
        d = spec.data_source.get("features")
        if not isinstance(d, dict):
            raise FeatureHeadError(
                f"{where}: the deployment spec names no feature source (data_source.features); it was not trained "
                "on a feature file by datamodules.features.FeatureDataModule, or before the spec recorded one"
            )
        return FeatureSourceSpec(
            feature_file=str(d["feature_file"]),
            feature_dim=int(d["feature_dim"]),
            extractor=dict(d["extractor"]),
            extractor_hash=str(d["extractor_hash"]),
            sampling=dict(d["sampling"]),
            video_root=str(d.get("video_root", "")),
            frame_step=int(d["frame_step"]),
            exact_sampling=bool(d["exact_sampling"]),
        )

    def settings(self) -> Any:
        """The extraction's ``ExtractionSettings`` (preprocessing and clip context) from the extractor record."""
        from datamodules.features.extract import ExtractionSettings

        s = dict(self.extractor.get("settings") or {})
        if not s:
            raise FeatureHeadError(
                f"{self.feature_file}: the extractor record has no settings (kind {self.extractor.get('kind')!r}); "
                "only files of `vidrec extract-features` can be reproduced live"
            )
        return ExtractionSettings(
            frames=None,
            frame_step=self.frame_step,
            batch_size=int(s.get("batch_size", 32)),
            short_side=int(s["short_side"]),
            crop_size=int(s["crop_size"]),
            mean=tuple(float(v) for v in s["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in s["std"]),  # type: ignore[arg-type]
            frame_stride=int(s.get("frame_stride", 1)),
            context_frames=int(s["context_frames"]) if s.get("context_frames") else None,
            dtype=str(s.get("dtype", "float32")),
        )


def is_feature_head(spec: DeploymentSpec) -> bool:
    """True when the spec is a head trained on a feature file (its data source names the features)."""
    return isinstance(spec.data_source.get("features"), dict)


def load_encoder(source: FeatureSourceSpec, override: str | Path | None = None, check_dim: bool = True) -> Any:
    """The backbone of the feature file as a ``FrameEncoder``, its weights file checked against the recorded sha256.

    Args:
        source: the head's feature source.
        override: the checkpoint (or torchvision weights) file when it is no longer where the record says.
        check_dim: compare the backbone's feature size with the head's D (not for one part of joined features).

    Raises:
        FeatureHeadError: the record names no reproducible backbone (a generator, random initialisation), the file
            is missing, or its sha256 or feature size differ from the record.
    """
    from datamodules.features.extract import ExtractorKind, checkpoint_encoder, file_sha256, torchvision_encoder

    record = source.extractor
    kind = record.get("kind")
    if kind == ExtractorKind.CHECKPOINT.value:
        key, sha_key = "checkpoint", "checkpoint_sha256"
    elif kind == ExtractorKind.TORCHVISION.value:
        key, sha_key = "weights", "weights_sha256"
    else:
        raise FeatureHeadError(
            f"{source.feature_file}: features written by {kind or record.get('name')!r}, not a video backbone; "
            "there is nothing to run on live frames"
        )
    recorded = record.get(key)
    if recorded is None and override is None:
        raise FeatureHeadError(
            f"{source.feature_file}: the backbone {record.get('name')!r} was randomly initialised (--random-init); "
            "its features cannot be reproduced live"
        )
    path = Path(override if override is not None else str(recorded))
    if not path.is_file():
        raise FeatureHeadError(
            f"the feature file's backbone {path} does not exist (extractor {record.get('name')!r} of "
            f"{source.feature_file}); pass --extractor PATH where it is now"
        )
    digest = file_sha256(path)
    if record.get(sha_key) and digest != record[sha_key]:
        raise FeatureHeadError(
            f"{path}: sha256 {digest[:12]}... differs from the {record[sha_key][:12]}... that {source.feature_file} "
            "records: another backbone than the one the head's features came from"
        )
    settings = source.settings()
    if kind == ExtractorKind.CHECKPOINT.value:
        encoder = checkpoint_encoder(path, settings.context_frames)
    else:
        encoder = torchvision_encoder(str(record["name"]), path)
    if check_dim and encoder.feature_dim != source.feature_dim:
        raise FeatureHeadError(
            f"{path}: the backbone gives D={encoder.feature_dim}, the head reads D={source.feature_dim}"
        )
    return encoder


def live_features(source: FeatureSourceSpec, override: str | Path | None = None) -> Any:
    """The live source of a head's features, as its feature file's extractor record says: the RGB backbone
    (``LiveFrameFeatures``), the temporal stream over incremental flow (``LiveFlowFeatures``), or both joined per frame
    (``LiveJoinedFeatures``, a file of ``vidrec data join-features``).

    Raises:
        FeatureHeadError: a backbone cannot be reproduced (see ``load_encoder``), a flow record does not say how its
            flow was computed, ``override`` names one file for joined features, or the live D differs from the head's.
    """
    import dataclasses

    parts = source.extractor.get("parts")
    if isinstance(parts, list):
        if override is not None:
            raise FeatureHeadError(
                f"{source.feature_file}: joined features of {len(parts)} extractors; --extractor names one backbone "
                "file, so put the parts' backbones where their records say"
            )
        live: Any = LiveJoinedFeatures([_live_part(dataclasses.replace(source, extractor=dict(p))) for p in parts])
        dim = sum(int(part.encoder.feature_dim) for part in live.parts)
    else:
        live = _live_part(source, override)
        dim = int(live.encoder.feature_dim)
    if dim != source.feature_dim:
        raise FeatureHeadError(
            f"{source.feature_file}: the live features have D={dim}, the head reads D={source.feature_dim}"
        )
    return live


def _live_part(source: FeatureSourceSpec, override: str | Path | None = None) -> Any:
    from datamodules.features.extract import ExtractorKind

    if source.extractor.get("kind") == ExtractorKind.FLOW_CHECKPOINT.value:
        return _live_flow(source, override)
    return LiveFrameFeatures(load_encoder(source, override, check_dim=False), source.settings(), source.frame_step)


def _live_flow(source: FeatureSourceSpec, override: str | Path | None) -> LiveFlowFeatures:
    """The temporal stream of a flow-feature record (checkpoint sha256 checked) over the recorded flow settings."""
    from datamodules.features.extract import file_sha256
    from datamodules.features.flow_features import flow_stream_encoder
    from datamodules.flow.methods import FlowSettings

    record = source.extractor
    path = Path(override if override is not None else str(record.get("checkpoint")))
    if not path.is_file():
        raise FeatureHeadError(
            f"the temporal stream {path} does not exist (flow extractor of {source.feature_file}); pass --extractor "
            "PATH where it is now"
        )
    digest = file_sha256(path)
    if record.get("checkpoint_sha256") and digest != record["checkpoint_sha256"]:
        raise FeatureHeadError(
            f"{path}: sha256 {digest[:12]}... differs from the {record['checkpoint_sha256'][:12]}... that "
            f"{source.feature_file} records: another temporal stream than the one the features came from"
        )
    params = record.get("flow")
    if not isinstance(params, dict):
        raise FeatureHeadError(
            f"{source.feature_file}: its flow-stream record does not say how the flow was computed (no 'flow' "
            "settings: written before they were recorded); extract it again with `vidrec extract-features --flow-root`"
        )
    settings = dict(record.get("settings") or {})
    return LiveFlowFeatures(
        flow_stream_encoder(path),
        FlowSettings.from_dict(params, f"{source.feature_file}: extractor.flow"),
        crop_size=int(settings.get("crop_size", 224)),
        flow_mean=str(settings.get("flow_mean", "none")),
        frame_step=source.frame_step,
    )


class LiveFrameFeatures:
    """Native frames in order -> the feature ``(D,)`` of every sampled frame; the backbone once per sampled frame.

    Frame preprocessing is the extraction's: ``resize_short_side`` (what the decoder's reader returns), then the
    evaluation transform (centre crop, normalisation) frame by frame. The clip of sampled frame ``t`` holds frames
    ``max(t - k * frame_stride, 0)``; only frames some clip needs are preprocessed and kept.

    Args:
        encoder: ``datamodules.features.extract.FrameEncoder``.
        settings: the extraction's ``ExtractionSettings`` (short side, crop, mean, std, stride, context).
        frame_step: native frames between sampled frames.
    """

    def __init__(self, encoder: Any, settings: Any, frame_step: int) -> None:
        from datamodules.video.transforms import EvalClipTransform, TransformSettings

        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        self.encoder, self.frame_step = encoder, int(frame_step)
        self.context = int(settings.context_frames or encoder.context_frames)
        self.stride, self.short_side = int(settings.frame_stride), int(settings.short_side)
        self._transform = EvalClipTransform(
            TransformSettings(
                crop_size=settings.crop_size,
                train_short_side=settings.short_side,
                test_short_side=settings.short_side,
                mean=settings.mean,
                std=settings.std,
            )
        )
        self._span = (self.context - 1) * self.stride + 1  # native frames from a clip's first frame to its last
        self.reset()

    def reset(self) -> None:
        """A new video: frame counter, kept frames and frame 0 dropped."""
        self.index = 0  # native index of the next frame
        self._frames: deque[tuple[int, Tensor]] = deque()
        self._first: Tensor | None = None
        self.backbone_seconds = 0.0
        self.clips = 0

    def _needed(self, index: int) -> bool:
        return index == 0 or any((index + k * self.stride) % self.frame_step == 0 for k in range(self.context))

    def _prepare(self, rgb: np.ndarray) -> Tensor:
        from datamodules.video.decoding import resize_short_side

        scaled = resize_short_side(np.ascontiguousarray(rgb[None]), self.short_side)  # (1, h, w, 3) uint8
        return self._transform(scaled)[:, 0]  # (3, 1, crop, crop) -> (3, crop, crop)

    def push(self, rgb: np.ndarray) -> Tensor | None:
        """Take the next native frame (uint8 ``(H, W, 3)``); returns its feature ``(D,)`` float32 if it is sampled."""
        index = self.index
        self.index += 1
        if not self._needed(index):
            return None
        frame = self._prepare(rgb)
        if index == 0:
            self._first = frame
        self._frames.append((index, frame))
        while self._frames[0][0] <= index - self._span:
            self._frames.popleft()
        if index % self.frame_step:
            return None
        kept = dict(self._frames)
        assert self._first is not None  # frame 0 is always kept
        kept[0] = self._first  # the edge fill: clip frames before the video's start are frame 0
        clip = [kept[max(index - k * self.stride, 0)] for k in reversed(range(self.context))]
        x = torch.stack(clip, dim=1)[None]  # context x (3, crop, crop) -> (1, 3, context, crop, crop)
        t0 = time.perf_counter()
        with torch.inference_mode():
            feature = self.encoder.encode(x).float()[0]  # (D,)
        self.backbone_seconds += time.perf_counter() - t0
        self.clips += 1
        return feature


class LiveFlowFeatures:
    """Native frames in order -> the flow-stream feature of every sampled frame, as ``extract-features --flow-root``.

    Each new frame gives one flow field from the cached previous frame only
    (``datamodules.flow.extraction.IncrementalFlow``: the field ``vidrec data flow`` stores for the same two frames).
    The feature of sampled frame ``t`` is the temporal stream on the ``L`` fields centred on it
    (``stack_field_range``: fields ``[t - L // 2, t - L // 2 + L)``, shifted to start at 0 near the video's start)
    after the extraction's centre crop and flow units (``transform_flow``); the stream runs once per sampled frame.

    A stack reads fields after ``t``, so the feature of ``t`` is ready ``L - L // 2`` frames later (``push`` returns
    the ``(t, feature)`` pairs that became ready). Near a video's end the feature file shifts the last stacks inside
    the video, which a live stream that has not ended cannot know: the last ``L - L // 2`` sampled frames of a video
    are the file's only where the stack fits before its end.

    Args:
        encoder: The temporal stream as a ``FrameEncoder`` (``context_frames`` = L).
        flow: The ``FlowSettings`` the feature file's flow files were computed with.
        crop_size: The extraction's centre crop (``FlowFeatureSettings.crop_size``).
        flow_mean: ``"none"`` or ``"field"`` (``FlowFeatureSettings.flow_mean``).
        frame_step: Native frames between sampled frames.
    """

    def __init__(self, encoder: Any, flow: Any, crop_size: int, flow_mean: str = "none", frame_step: int = 1) -> None:
        from datamodules.flow.extraction import IncrementalFlow

        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        self.encoder, self.length, self.frame_step = encoder, int(encoder.context_frames), int(frame_step)
        self.crop_size, self.flow_mean = int(crop_size), str(flow_mean)
        self._flow = IncrementalFlow(flow)
        self.reset()

    def reset(self) -> None:
        """A new video: cached frame, kept fields and the sampling position dropped."""
        self._flow.reset()
        self._fields: list[np.ndarray] = []  # uint8 (2, h, w) fields from index self._first on
        self._first = 0
        self._next = 0  # the next sampled frame whose feature is due
        self._transform: tuple[Any, Any] | None = None
        self.backbone_seconds = 0.0
        self.clips = 0

    def _stack_start(self, t: int) -> int:
        return max(0, t - self.length // 2)

    def _encode(self, stack: np.ndarray) -> Tensor:
        from datamodules.flow.transforms import FlowMean, FrameTransformSettings, crop_boxes, transform_flow

        if self._transform is None:  # the extraction's settings at the stored field size
            height, width = stack.shape[-2:]
            settings = FrameTransformSettings(
                crop_size=self.crop_size, short_side=min(height, width), flow_mean=FlowMean(self.flow_mean)
            )
            self._transform = (crop_boxes(settings, height, width, 1)[0], settings)
        box, settings = self._transform
        t0 = time.perf_counter()
        with torch.inference_mode():
            feature = self.encoder.encode(transform_flow(stack[None], box, settings)).float()[0]  # (D,)
        self.backbone_seconds += time.perf_counter() - t0
        self.clips += 1
        return feature

    def push(self, rgb: np.ndarray) -> list[tuple[int, Tensor]]:
        """Take the next native frame (uint8 ``(H, W, 3)``); returns ``(sampled frame, feature (D,))`` now ready."""
        field = self._flow.push(rgb)
        if field is None:
            return []
        self._fields.append(field)
        ready = []
        while self._stack_start(self._next) + self.length <= self._first + len(self._fields):
            start = self._stack_start(self._next) - self._first
            ready.append((self._next, self._encode(np.stack(self._fields[start : start + self.length]))))
            self._next += self.frame_step
        drop = self._stack_start(self._next) - self._first  # fields no later stack reads
        if drop > 0:
            del self._fields[:drop]
            self._first += drop
        return ready


class LiveJoinedFeatures:
    """The joined ``(D_1 + D_2)`` feature of every sampled frame (``vidrec data join-features``), from two live
    sources over the same native frames: a ``LiveFrameFeatures`` (RGB, ready at its frame) and a ``LiveFlowFeatures``
    (ready ``L - L // 2`` frames later), in the join's column order. ``push`` returns the ``(t, feature)`` pairs
    whose two parts are both ready, in frame order.

    Args:
        parts: The two sources in the joined file's column order (its extractor record's ``parts``).
    """

    def __init__(self, parts: list[Any]) -> None:
        if len(parts) != 2:
            raise ValueError(f"a joined feature joins two sources, got {len(parts)}")
        self.parts = parts
        self.reset()

    def reset(self) -> None:
        """A new video in both sources."""
        for part in self.parts:
            part.reset()
        self.index = 0
        self._waiting: list[dict[int, Tensor]] = [{}, {}]

    @property
    def clips(self) -> int:
        """Backbone runs of both sources."""
        return sum(int(part.clips) for part in self.parts)

    @property
    def backbone_seconds(self) -> float:
        """Seconds in both backbones."""
        return sum(float(part.backbone_seconds) for part in self.parts)

    def push(self, rgb: np.ndarray) -> list[tuple[int, Tensor]]:
        """Take the next native frame; returns the joined features that became complete."""
        for part, waiting in zip(self.parts, self._waiting, strict=True):
            waiting.update(ready_features(part, rgb, self.index))
        self.index += 1
        done = sorted(set(self._waiting[0]) & set(self._waiting[1]))
        return [(t, torch.cat([self._waiting[0].pop(t), self._waiting[1].pop(t)])) for t in done]


def ready_features(source: Any, rgb: np.ndarray, index: int) -> list[tuple[int, Tensor]]:
    """``source.push(rgb)`` as ``(sampled frame, feature)`` pairs: a ``LiveFrameFeatures`` returns the feature of
    frame ``index`` or None, the delayed sources (flow, joined) a list of pairs."""
    out = source.push(rgb)
    if out is None:
        return []
    if isinstance(out, Tensor):
        return [(index, out)]
    return list(out)


def default_hop(model: nn.Module, window: int, eval_hop: int) -> int:
    """The spec's evaluation hop, raised to a multiple of the head's smallest hop (TS-LSTM: one segment)."""
    smallest = getattr(model, "min_stream_hop", None)
    unit = int(smallest(window)) if callable(smallest) else int(getattr(model, "stride", 1) or 1)
    return math.lcm(max(eval_hop, 1), max(unit, 1))


def head_runtime(
    model: nn.Module, window: int, hop: int, feature_dim: int, backend: str = "compiled", where: str = ""
) -> Any:
    """The head's ``StreamingClassifier`` over ``(1, D, hop)`` feature chunks; a head that cannot stream the spec's
    window at ``hop`` raises ``FeatureHeadError`` naming the checkpoint, the window and what the head needs."""
    from vidrec.streaming.runtime import StepBackend, StreamingClassifier

    try:
        return StreamingClassifier(model, window, hop, in_channels=feature_dim, backend=StepBackend.parse(backend))
    except (TypeError, ValueError) as error:
        raise FeatureHeadError(
            f"{where or type(model).__name__}: {type(model).__name__} cannot stream the deployment spec's window of "
            f"{window} feature frames at hop {hop}: {error}"
        ) from error


class FeatureHeadStream:
    """One live video: a live feature source feeding the head's runtime ``hop`` features at a time.

    The source is a ``LiveFrameFeatures`` (RGB backbone), ``LiveFlowFeatures`` (temporal stream) or
    ``LiveJoinedFeatures`` (both, joined per frame). ``push(rgb)`` returns ``(feature, logits)``: the newest feature
    that became ready with this frame (or None), and the logits of the window of the last ``window`` features when a
    hop completed and the head has seen a full window; ``push_all`` returns every feature that became ready (the
    delayed sources release several at once at a video's start).
    """

    def __init__(self, features: Any, runtime: Any) -> None:
        self.features, self.runtime = features, runtime
        self.window, self.hop = int(runtime.window), int(runtime.hop)
        self._pending: list[Tensor] = []
        self._frame = self._fed = 0  # frames pushed, features fed to the head
        self.head_seconds = 0.0

    def reset(self) -> None:
        """A new video."""
        self.features.reset()
        self.runtime.reset()
        self._pending = []
        self._frame = self._fed = 0

    def push(self, rgb: np.ndarray) -> tuple[Tensor | None, Tensor | None]:
        features, reports = self.push_all(rgb)
        return (features[-1] if features else None), (reports[-1][1] if reports else None)

    def push_all(self, rgb: np.ndarray) -> tuple[list[Tensor], list[tuple[int, Tensor]]]:
        """The features that became ready with this frame, in order, and ``(end, logits)`` of every reported window
        they completed (``end``: features of the video fed to the head so far, the window's last one included)."""
        ready = [f for _, f in ready_features(self.features, rgb, self._frame)]
        self._frame += 1
        reports = []
        for feature in ready:
            self._pending.append(feature)
            self._fed += 1
            if len(self._pending) < self.hop:
                continue
            chunk = torch.stack(self._pending, dim=1)[None]  # hop x (D,) -> (1, D, hop)
            self._pending = []
            t0 = time.perf_counter()
            res = self.runtime.step(chunk)
            self.head_seconds += time.perf_counter() - t0
            if bool(res.ready[0]):
                reports.append((self._fed, res.logits[0].float()))
        return ready, reports


def build_stream(
    loaded: Any, *, hop: int | None = None, backend: str = "compiled", extractor: str | Path | None = None
) -> tuple[FeatureHeadStream, FeatureSourceSpec]:
    """The live stream of a loaded feature-head checkpoint (``vidrec.tasks.LoadedClassifier``)."""
    spec: DeploymentSpec = loaded.require_spec()
    where = str(getattr(loaded, "path", "") or "checkpoint")
    source = FeatureSourceSpec.of(spec, where)
    model = loaded.model.eval()
    hop = hop or default_hop(model, spec.input_length, spec.eval_hop)
    runtime = head_runtime(model, spec.input_length, hop, source.feature_dim, backend, where)
    return FeatureHeadStream(live_features(source, extractor), runtime), source


# the backbone encoders of datamodules.features.extract are built on the CPU and take no device
_CPU_ONLY = "feature-head checkpoints stream on the CPU only (the feature file's backbone runs on the CPU)"


def run_stream(args: argparse.Namespace, loaded: Any, out: TextIO) -> dict[str, Any]:
    """``vidrec stream --input VIDEO`` of a feature-head checkpoint: one JSON line (or table row) per hop."""
    from vidrec.streaming.video import read_frames

    if args.input in (None, "-"):
        raise ValueError("a feature-head checkpoint streams from --input VIDEO_FILE, /dev/videoN or a URL")
    cpu_only(args, _CPU_ONLY)
    stream, source = build_stream(
        loaded, hop=args.hop, backend=getattr(args, "backend", "compiled"), extractor=getattr(args, "extractor", None)
    )
    names = list(loaded.class_names)
    print(
        f"vidrec stream: {args.input}, a feature every {source.frame_step} native frames "
        f"({'as' if source.exact_sampling else 'approximating'} the feature file's sampling), window="
        f"{stream.window} features, hop={stream.hop}",
        file=sys.stderr,
    )
    if args.format == "table":
        print(f"{'frame':>8} {'t':>10} {'class':<24} {'prob':>6} {'latency_ms':>10}", file=out, flush=True)
    frames, emitted, started = 0, 0, time.perf_counter()
    for frame in read_frames(args.input, max_frames=args.max_samples):
        if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
            break
        frames += 1
        arrived = time.perf_counter()
        _, logits = stream.push(frame.rgb)
        if logits is None:
            continue
        probs = logits.softmax(0)
        k = int(probs.argmax())
        latency = (time.perf_counter() - arrived) * 1000.0
        emitted += 1
        if args.format == "json":
            row = {"stream": str(args.input), "frame": frame.index, "t": frame.time, "class": names[k]}
            row.update(probability=float(probs[k]), latency_ms=latency)
            print(json.dumps(row), file=out, flush=True)
        else:
            print(
                f"{frame.index:>8} {frame.time:>10.3f} {names[k]:<24} {float(probs[k]):>6.3f} {latency:>10.3f}",
                file=out,
                flush=True,
            )
    summary = {
        "frames": frames,
        "predictions": emitted,
        "seconds": time.perf_counter() - started,
        "backbone_clips": stream.features.clips,
        "backbone_seconds": stream.features.backbone_seconds,
        "head_seconds": stream.head_seconds,
    }
    print("summary: " + json.dumps(summary), file=sys.stderr, flush=True)
    return summary


def evaluate_feature_head(
    loaded: Any,
    *,
    root: str | None = None,
    max_videos: int | None = None,
    hop: int | None = None,
    backend: str = "compiled",
    extractor: str | Path | None = None,
) -> dict[str, Any]:
    """Stream the test videos of the head's feature file and compare with the head offline on the same features.

    Per video: every native frame goes through the live pipeline; each reported window is compared with the head
    offline on the window of the same live features (``max |streamed - offline|``, argmax agreement); where the
    sampling is exact the live features are compared with the file's rows of the same frames (float16 files round).
    Both sides are scored against the video label: window accuracy, and video accuracy as the mean of the windows'
    softmax. ``vidrec test`` scores one sample of F uniformly spaced rows per video, not these sliding windows.
    """
    from datamodules.features.schema import FeatureReader
    from vidrec.streaming.video import read_frames

    stream, source = build_stream(loaded, hop=hop, backend=backend, extractor=extractor)
    model = loaded.model.eval()
    window = stream.window
    reader = FeatureReader(source.feature_file, source.feature_dim)
    videos = [v for v in reader.read() if v.split == "test"][:max_videos]
    base = Path(root or source.video_root)
    totals = {"windows": 0, "offline": 0, "streaming": 0, "agree": 0, "video_off": 0, "video_str": 0, "scored": 0}
    deltas, feature_deltas, native_frames, skipped = [], [], 0, []
    started = time.perf_counter()
    for video in videos:
        stream.reset()
        feats, streamed = [], []
        for frame in read_frames(base / video.path):
            native_frames += 1
            ready, reports = stream.push_all(frame.rgb)
            feats.extend(ready)
            streamed.extend(reports)
        if not streamed:
            skipped.append(video.path)
            continue
        live = torch.stack(feats, dim=1)  # (D, T_live)
        if source.exact_sampling:
            rows = min(live.shape[1], len(video.features))
            stored = torch.from_numpy(video.features[:rows].astype(np.float32)).T  # (D, rows)
            feature_deltas.append(float((live[:, :rows] - stored).abs().max()))
        with torch.inference_mode():
            offline = model(torch.stack([live[:, end - window : end] for end, _ in streamed]))  # (n, K)
        got = torch.stack([logits for _, logits in streamed])  # (n, K)
        deltas.append(float((got - offline).abs().max()))
        p_off, p_str = offline.argmax(1), got.argmax(1)
        totals["windows"] += len(got)
        totals["offline"] += int((p_off == video.label).sum())
        totals["streaming"] += int((p_str == video.label).sum())
        totals["agree"] += int((p_off == p_str).sum())
        totals["video_off"] += int(int(offline.softmax(1).mean(0).argmax()) == video.label)
        totals["video_str"] += int(int(got.softmax(1).mean(0).argmax()) == video.label)
        totals["scored"] += 1
    seconds = time.perf_counter() - started
    if not totals["scored"]:
        raise FeatureHeadError(
            f"{source.feature_file}: no test video gives a window of {window} features every {source.frame_step} "
            f"frames ({len(videos)} test videos)"
        )
    n, v = totals["windows"], totals["scored"]
    return {
        "modality": "features",
        "feature_file": source.feature_file,
        "extractor": source.extractor.get("name"),
        "frame_step": source.frame_step,
        "exact_sampling": source.exact_sampling,
        "window": window,
        "hop": stream.hop,
        "videos": v,
        "videos_shorter_than_a_window": skipped,
        "windows": n,
        "label_policy": "every window carries its video's label",
        "offline": {"window_accuracy": totals["offline"] / n, "video_accuracy": totals["video_off"] / v},
        "streaming": {"window_accuracy": totals["streaming"] / n, "video_accuracy": totals["video_str"] / v},
        "max_abs_logit_delta": max(deltas),
        "argmax_agreement": totals["agree"] / n,
        "max_abs_live_vs_file_feature_delta": max(feature_deltas) if feature_deltas else None,
        "feature_file_dtype": reader.info.dtype,
        "ms_per_native_frame": seconds * 1000.0 / max(native_frames, 1),
        "class_names": list(loaded.class_names),
    }


def run_evaluate_streaming(args: argparse.Namespace, loaded: Any) -> dict[str, Any]:
    """``vidrec evaluate-streaming`` of a feature-head checkpoint: writes ``streaming_eval.json``."""
    device = cpu_only(args, _CPU_ONLY)
    report = evaluate_feature_head(
        loaded,
        root=args.data,
        max_videos=getattr(args, "max_videos", None),
        hop=args.hop,
        extractor=getattr(args, "extractor", None),
    )
    report["checkpoint"] = str(getattr(loaded, "path", ""))
    report["device"] = str(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'streaming_eval.json'}", file=sys.stderr)
    return report
