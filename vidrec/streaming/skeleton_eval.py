"""``vidrec evaluate-streaming`` of a skeleton checkpoint: offline vs streamed on its test clips.

The data module is rebuilt from the checkpoint's deployment spec (``SkeletonDataModule.from_spec``: the protocol,
window, length mode, bodies and anchoring it was trained with), and two comparisons are made with
``vidrec.streaming.evaluation.evaluate_streaming``:

* **clips** (``streaming_eval.json``): each test clip becomes the one window ``vidrec test`` scores (anchored,
  cropped or resampled to ``window`` frames), streamed hop by hop as its own stream; the logits emitted at the last
  frame are compared with the offline logits of that window. The offline accuracy is the test accuracy, and the
  streamed one must equal it (the streamed logits equal the offline ones to float rounding).
* **live frames** (``live_frames/streaming_eval.json``): each test clip's anchored frames at their native rate, as
  ``vidrec stream`` receives them, every window of ``window`` frames ending on the hop grid classified offline and
  streamed, each scored by the clip's label. Clips shorter than the window give no window. With ``length_mode``
  ``resample`` the training windows were time-normalised clips, so this accuracy measures how well a model trained
  so transfers to a live stream; it is not the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidrec.streaming.evaluation import EvalRecording, StreamingEvalResult, evaluate_streaming, write_report

__all__ = ["evaluate_skeleton_checkpoint", "run_evaluate_streaming"]


def evaluate_skeleton_checkpoint(
    loaded: Any,
    *,
    data: str | None = None,
    hop: int | None = None,
    precision: str = "fp32",
    timing_repeats: int = 20,
    device: str | torch.device = "cpu",
) -> dict[str, StreamingEvalResult]:
    """Offline vs streamed on the test clips of a skeleton checkpoint: ``{"clips": ..., "live_frames": ...}``.

    Args:
        loaded: ``vidrec.tasks.LoadedClassifier`` of a skeleton checkpoint.
        data: The ``vidrec.skeleton/1`` file (default: the one the spec names).
        hop: Frames per streaming step (default: the spec's evaluation hop); it must divide the window.
        precision: ``fp32``, ``bf16`` or ``fp16`` (the streaming step's dtype).
        timing_repeats: Repetitions of the batch-1 timings.
        device: Where both sides run (``vidrec.streaming.devices``).

    Raises:
        ValueError: the spec is not a skeleton one, its split cannot be rebuilt, or ``hop`` does not divide the
            window (the clip's window would not end on the streaming grid).
    """
    from datamodules.skeleton.datamodule import SkeletonDataModule
    from datamodules.skeleton.transforms import joints_to_channels
    from vidrec.streaming.command import PRECISIONS

    spec = loaded.require_spec()
    dm = SkeletonDataModule.from_spec(spec, data)
    step = hop or spec.eval_hop
    window = spec.window
    if window % step:
        raise ValueError(
            f"{getattr(loaded, 'path', '')}: a hop of {step} frames does not divide the window of {window} frames: "
            "the test clip's window would not end on the streaming grid; choose a divisor of the window"
        )
    test = dm.datasets["test"]
    names = dm.split_names["test"]
    clips, live = [], []
    for i, name in enumerate(names):
        item = test[i]
        label = int(item["target"])
        x = item["inputs"].numpy()  # (C, window): the window `vidrec test` scores
        clips.append(
            EvalRecording(name, x, np.full(window, label), np.array([window]), np.array([label], dtype=np.int64))
        )
        frames = joints_to_channels(test.joints[i], dm.max_bodies)  # (C, T): anchored, native rate
        live.append(EvalRecording(name, frames, np.full(frames.shape[1], label)))
    common: dict[str, Any] = {
        "sampling_rate": spec.rate,
        "dtype": PRECISIONS[precision],
        "timing_repeats": timing_repeats,
        "device": device,
        "extra": {
            "checkpoint": str(getattr(loaded, "path", "")),
            "data": dm.path,
            "split": spec.split.to_dict() if spec.split else None,
        },
    }
    model, classes = loaded.model, list(loaded.class_names)
    out = {
        "clips": evaluate_streaming(
            model,
            clips,
            window,
            step,
            classes,
            label_policy="one window per test clip, as `vidrec test` scores it (the clip's label)",
            **common,
        )
    }
    long_enough = [r for r in live if r.samples.shape[1] >= window]
    if long_enough:
        out["live_frames"] = evaluate_streaming(
            model,
            long_enough,
            window,
            step,
            classes,
            label_policy=f"every window of {window} native-rate frames of a test clip on the hop grid (the clip's "
            f"label); {len(live) - len(long_enough)} of {len(live)} clips are shorter than the window",
            **common,
        )
    return out


def run_evaluate_streaming(args: argparse.Namespace, loaded: Any) -> dict[str, Any]:
    """``vidrec evaluate-streaming`` of a skeleton checkpoint: writes the clip report in ``--out`` and the live-frame
    report in ``--out/live_frames``; prints both side by side."""
    from vidrec.streaming.devices import run_device

    results = evaluate_skeleton_checkpoint(
        loaded, data=args.data, hop=args.hop, precision=args.precision, device=run_device(args)
    )
    summary: dict[str, Any] = {}
    for kind, result in results.items():
        folder = Path(args.out) if kind == "clips" else Path(args.out) / kind
        js, png = write_report(result, folder)
        rep = result.report
        summary[kind] = {
            "windows": rep["windows"],
            "offline_accuracy": rep["offline"]["accuracy"],
            "streaming_accuracy": rep["streaming"]["accuracy"],
            "argmax_agreement": rep["argmax_agreement"],
            "max_abs_logit_delta": rep["max_abs_logit_delta"],
            "ms_per_hop_streaming_batch1": rep["ms_per_hop_streaming_batch1"],
            "ms_per_window_offline_batch1": rep["ms_per_window_offline_batch1"],
            "device": rep["device"],
            "report": str(js),
        }
        print(f"wrote {js} and {png}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return summary
