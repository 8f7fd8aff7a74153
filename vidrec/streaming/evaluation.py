"""Streaming versus offline evaluation on the same continuous recordings (``vidrec evaluate-streaming``).

Both sides classify every window of ``window`` samples that the streaming runtime emits after its warm-up: one
every ``hop`` samples (``e >= window``). A stream emits at multiples of ``hop`` from its start, so where the scored
windows end off that grid (a data module with left context scores windows ending at ``first_output + k eval_hop``)
the stream of that recording starts ``shift < hop`` samples earlier, on copies of the first sample: they are edge
fill inside edge-filled windows and inside no scored window otherwise (``stream_offsets`` in the report). Any hop
that divides the spacing of the scored windows works; another one is refused with the hops that fit. Offline runs
``model(samples[:, e - window:e])`` window by window (batched); streaming feeds each recording hop by hop through
``StreamingClassifier`` (all recordings as parallel streams) and takes the logits emitted at ``e``. With
``first_output < window`` (models trained with edge-filled left context) the windows start at ``e >= first_output``,
and both sides fill the history before the recording with copies of its first sample (``spec.edge_fill``).

Scored windows: accuracy and macro-F1 are computed on the windows a recording lists in ``window_ends`` with their
``window_targets``; ``vidrec evaluate-streaming`` takes both from the data module rebuilt from the checkpoint's
deployment spec (the test subjects of its split, windows labelled by its label policy), so the offline accuracy is
the accuracy ``vidrec test`` reports for that checkpoint. A recording without ``window_ends`` scores every emitted
window by the class of its **last sample** (``labels[e - 1]``, what a live system must decide at that instant;
unlabelled windows left out). Agreement, logit deltas and decision latency use every emitted window.

Decision latency: at each change point ``c`` (``labels[c] != labels[c - 1]``, ``labels[c] >= 0``) the latency is the
time from ``c`` to the first emitted window end ``e > c`` whose prediction is the new class, before the next change
point; in seconds ``(e - c) / sampling_rate`` and in hops (emissions after ``c`` up to and including it). Change
points never decided correctly are counted as missed.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vidrec.layers.stream_state import map_state
from vidrec.spec import edge_fill
from vidrec.streaming.runtime import StreamingClassifier

__all__ = ["EvalRecording", "StreamingEvalResult", "as_eval_recordings", "evaluate_streaming", "write_report"]

_CPU = torch.device("cpu")


@dataclass
class EvalRecording:
    """A normalised continuous recording and the windows scored in it.

    Attributes:
        id: Recording id.
        samples: (C, T) float32, normalised.
        labels: (T,) int per-sample labels (-1 unlabelled).
        window_ends: (N,) exclusive ends of the scored windows (multiples of the hop), or None: every emitted
            window, labelled by its last sample.
        window_targets: (N,) class of each scored window (with ``window_ends``).
    """

    id: str
    samples: np.ndarray
    labels: np.ndarray
    window_ends: np.ndarray | None = None
    window_targets: np.ndarray | None = None


def as_eval_recordings(recordings: Sequence[Any]) -> list[EvalRecording]:
    """Accept ``EvalRecording``s, objects with ``samples``/``labels``/``id`` attributes, or tuples
    ``(samples, labels, subject, id)`` as returned by ``HDF5WindowDataModule.test_recordings()``."""
    out = []
    for i, r in enumerate(recordings):
        if hasattr(r, "samples") and hasattr(r, "labels"):
            ends, targets = getattr(r, "window_ends", None), getattr(r, "window_targets", None)
            out.append(
                EvalRecording(
                    str(getattr(r, "id", i)),
                    np.asarray(r.samples),
                    np.asarray(r.labels),
                    None if ends is None else np.asarray(ends, dtype=np.int64),
                    None if targets is None else np.asarray(targets, dtype=np.int64),
                )
            )
        else:
            samples, labels = r[0], r[1]
            rid = r[3] if len(r) > 3 else i
            out.append(EvalRecording(str(rid), np.asarray(samples), np.asarray(labels)))
        if out[-1].samples.ndim != 2 or out[-1].labels.shape != (out[-1].samples.shape[1],):
            raise ValueError(
                f"recording {out[-1].id}: expected samples (C, T) and labels (T,), "
                f"got {out[-1].samples.shape} and {out[-1].labels.shape}"
            )
        ends, targets = out[-1].window_ends, out[-1].window_targets
        if (ends is None) != (targets is None) or (
            ends is not None and targets is not None and ends.shape != targets.shape
        ):
            raise ValueError(f"recording {out[-1].id}: give window_ends and window_targets of one length, or neither")
    return out


@dataclass
class StreamingEvalResult:
    """Side-by-side figures (``report``) plus the per-window predictions of every recording (for plots)."""

    report: dict[str, Any]
    ends: dict[str, np.ndarray] = field(default_factory=dict)  # recording id -> emitted window ends (exclusive)
    offline_pred: dict[str, np.ndarray] = field(default_factory=dict)  # at every emitted end
    stream_pred: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample labels
    scored: dict[str, np.ndarray] = field(default_factory=dict)  # indices into `ends` of the scored windows


def _macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    classes = np.union1d(y, p)
    f1s = []
    for c in classes:
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s)) if f1s else float("nan")


def _decision_latency(
    labels: np.ndarray, ends: np.ndarray, pred: np.ndarray, rate: float
) -> tuple[list[float], list[int], int]:
    """Seconds and hops to the first correct decision after each change point, and the number missed."""
    change = [c for c in range(1, len(labels)) if labels[c] != labels[c - 1] and labels[c] >= 0]
    secs, hops, missed = [], [], 0
    for j, c in enumerate(change):
        nxt = change[j + 1] if j + 1 < len(change) else len(labels)
        after = np.flatnonzero((ends > c) & (ends - 1 < nxt))
        hit = [k for k in after if pred[k] == labels[c]]
        if not hit:
            missed += 1
            continue
        secs.append(float(ends[hit[0]] - c) / rate)
        hops.append(int(np.searchsorted(after, hit[0]) + 1))
    return secs, hops, missed


def _median_ms(fn: Any, repeats: int, device: torch.device = _CPU) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":  # CUDA kernels run asynchronously: time them to their end
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000.0)


def _flops(fn: Any) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        fn()
    return int(counter.get_total_flops())


def _stream_offset(rec: EvalRecording, hop: int, first: int, stride: int) -> int:
    """Samples the stream of ``rec`` starts before the recording so that its windows (one every ``hop`` samples) end
    on the scored window ends; 0 when the recording lists none (then every ``hop``-th sample ends one).

    Raises:
        ValueError: the scored windows are not a multiple of ``hop`` apart; the message lists the hops that fit.
    """
    ends = rec.window_ends
    if ends is None or not len(ends):
        return 0
    residues = np.unique(ends % hop)
    if len(residues) == 1:
        return int(-residues[0] % hop)
    spacing = int(np.gcd.reduce(np.abs(ends - ends[0])))  # every scored end is on this grid (> 0: residues differ)
    valid = [h for h in range(stride, spacing + 1, stride) if spacing % h == 0]
    raise ValueError(
        f"recording {rec.id}: hop {hop} cannot reproduce the scored windows: they end every {spacing} samples (at "
        f"{ends[:3].tolist()}, ...; the first window end is {first} or later), and a stream of hop {hop} emits one "
        f"window every {hop} samples, so it would miss some of them. Use a hop that divides {spacing} and is a "
        f"multiple of the model's temporal stride {stride}: {', '.join(map(str, valid)) or 'none'} (--hop)"
    )


def evaluate_streaming(
    model: nn.Module,
    recordings: Sequence[Any],
    window: int,
    hop: int,
    class_names: list[str],
    *,
    sampling_rate: float = 50.0,
    fold_bn: bool = True,
    batch_size: int = 256,
    timing_repeats: int = 50,
    dtype: torch.dtype | None = None,
    first_output: int | None = None,
    label_policy: str = "",
    extra: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> StreamingEvalResult:
    """Evaluate ``model`` offline and streaming on the same windows of normalised recordings.

    Args:
        model: A streamable classifier (eval mode is set on a copy's behalf; ``model`` is put in eval mode).
        recordings: Normalised recordings (see ``as_eval_recordings``).
        window: Window length in samples (the model's input length).
        hop: Samples between consecutive windows (and per streaming step).
        class_names: K class names.
        sampling_rate: Hz, for latencies in seconds.
        fold_bn: Fold BatchNorm in the streaming runtime.
        batch_size: Offline windows per forward.
        timing_repeats: Repetitions of the batch-1 timings.
        dtype: Run the streaming step in this dtype (e.g. ``torch.bfloat16``); offline stays in the model's dtype, so
            the report measures the deviation of the reduced precision.
        first_output: First window end when less than ``window``: earlier history is edge-filled on both sides
            (``StreamingClassifier(first_output=...)``). Default: ``window``.
        label_policy: How the scored windows were labelled, for the report (default: by their last sample).
        extra: Entries added to the report (the checkpoint, its split).
        device: Where both sides run (the streaming runtime and the offline windows); logits are compared on the
            CPU and the report records it.

    Raises:
        ValueError: the scored windows are not ``hop`` apart (the message lists the hops that fit), or one does not
            end within its recording at ``first_output`` or later.

    Returns:
        The report (accuracy, macro-F1, agreement, logit deltas, timings, FLOPs, decision latency) and predictions.
    """
    first = window if first_output is None else int(first_output)
    lead_in = window - first  # samples of edge-filled history before each recording (offline side)
    recs = [r for r in as_eval_recordings(recordings) if r.samples.shape[1] >= first]
    if not recs:
        raise ValueError(f"no recording has at least {first} samples (the first window end)")
    device = torch.device(device)
    model = model.eval()
    weights = next(model.parameters(), None)
    if weights is not None and weights.device != device:  # the offline side on the device; the caller's model stays
        model = copy.deepcopy(model).to(device)
    # each stream starts shifts[i] samples before its recording (copies of the first sample, never inside a scored
    # window without edge fill) so that it emits the scored windows: the data module's windows end at
    # first + k eval_hop, a stream's every hop samples from its start
    shifts = [_stream_offset(r, hop, first, int(getattr(model, "stride", 1))) for r in recs]
    channels = recs[0].samples.shape[0]
    runtime = StreamingClassifier(
        model,
        window,
        hop,
        capacity=len(recs),
        in_channels=channels,
        fold_bn=fold_bn,
        dtype=dtype,
        first_output=first_output,
        device=device,
    )
    longest = max(r.samples.shape[1] + shift for r, shift in zip(recs, shifts))
    n_hops = longest // hop
    padded = np.zeros((len(recs), channels, n_hops * hop), dtype=np.float32)  # (N, C, T_max)
    for i, (r, shift) in enumerate(zip(recs, shifts)):
        shifted = edge_fill(np.asarray(r.samples, dtype=np.float32), shift, axis=1)  # (C, shift + T)
        t = min(shifted.shape[1], n_hops * hop)
        padded[i, :, :t] = shifted[:, :t]
    t0 = time.perf_counter()
    stream_logits, _ = runtime.run(padded)  # (N, n_hops, K)
    stream_seconds = time.perf_counter() - t0

    result = StreamingEvalResult(report={})
    all_y, all_off, all_str, deltas, agree = [], [], [], [], []
    offline_seconds, n_windows = 0.0, 0
    lat: dict[str, tuple[list[float], list[int], int]] = {"offline": ([], [], 0), "streaming": ([], [], 0)}
    with torch.inference_mode():
        for i, (r, shift) in enumerate(zip(recs, shifts)):
            ends = np.arange(hop - shift, r.samples.shape[1] + 1, hop)  # the stream's grid, in recording samples
            ends = ends[ends >= first]  # (n,) exclusive window ends
            x = torch.from_numpy(np.ascontiguousarray(r.samples, dtype=np.float32)).to(device)
            x = edge_fill(x, lead_in, axis=1)  # (C, lead_in + T): sample t at t + lead_in
            off_chunks = []
            t0 = time.perf_counter()
            for b in range(0, len(ends), batch_size):
                # (n_b, C, window) windows ending at ends[b:b + batch_size]
                batch = torch.stack([x[:, e + lead_in - window : e + lead_in] for e in ends[b : b + batch_size]])
                off_chunks.append(model(batch).float().cpu())  # (n_b, K) on the CPU, as the stream's logits
            offline_seconds += time.perf_counter() - t0
            n_windows += len(ends)
            off = torch.cat(off_chunks)  # (n, K)
            st = stream_logits[i, torch.from_numpy((ends + shift) // hop - 1)].float()  # (n, K)
            deltas.append(float((off - st).abs().max()))
            p_off, p_str = off.argmax(1).numpy(), st.argmax(1).numpy()
            agree.append(p_off == p_str)
            if r.window_ends is None or r.window_targets is None:
                scored = np.arange(len(ends))
                y = r.labels[ends - 1]
            else:
                scored = np.searchsorted(ends, r.window_ends)
                bad = (scored >= len(ends)) | (ends[np.minimum(scored, len(ends) - 1)] != r.window_ends)
                if bad.any():
                    raise ValueError(
                        f"recording {r.id}: scored windows ending at {r.window_ends[bad][:5].tolist()} are not "
                        f"emitted by a stream of hop {hop} (ends {ends[:3].tolist()}, ...; the first at sample "
                        f"{first} or later)"
                    )
                y = r.window_targets
            keep = y >= 0
            all_y.append(y[keep])
            all_off.append(p_off[scored][keep])
            all_str.append(p_str[scored][keep])
            result.scored[r.id] = scored[keep]
            result.ends[r.id], result.labels[r.id] = ends, r.labels
            result.offline_pred[r.id], result.stream_pred[r.id] = p_off, p_str
            for name, pred in (("offline", p_off), ("streaming", p_str)):
                s, h, m = _decision_latency(r.labels, ends, pred, sampling_rate)
                lat[name] = (lat[name][0] + s, lat[name][1] + h, lat[name][2] + m)

    y, p_off, p_str = np.concatenate(all_y), np.concatenate(all_off), np.concatenate(all_str)
    acc_off = float(np.mean(p_off == y)) if y.size else float("nan")
    acc_str = float(np.mean(p_str == y)) if y.size else float("nan")

    # batch-1 timings and FLOPs of one window (offline) and one hop (streaming)
    one = StreamingClassifier(
        model, window, hop, capacity=1, in_channels=channels, fold_bn=fold_bn, dtype=dtype, device=device
    )
    chunk = torch.from_numpy(padded[:1, :, :hop].copy()).to(device)
    win = torch.zeros(1, channels, window, device=device)
    win[..., : min(window, padded.shape[2])] = torch.from_numpy(padded[:1, :, :window]).to(device)
    for _ in range(5):
        one.step(chunk)
    ms_hop = _median_ms(lambda: one.step(chunk), timing_repeats)  # synchronous: the logits come back to the CPU
    with torch.inference_mode():
        ms_window = _median_ms(lambda: model(win), max(5, timing_repeats // 5), device)
    flops_window = _flops(lambda: model(win))
    slot0 = map_state(lambda t: t[:1], one.state())
    flops_hop = _flops(lambda: one.model.stream_step(chunk.to(one.dtype), slot0))  # type: ignore[operator]

    def _lat(name: str) -> dict[str, Any]:
        s, h, m = lat[name]
        return {
            "median_seconds": float(np.median(s)) if s else None,
            "median_hops": float(np.median(h)) if h else None,
            "decided": len(s),
            "missed": m,
        }

    result.report = {
        "window": window,
        "first_output": first,
        "hop": hop,
        "stream_offsets": {r.id: shift for r, shift in zip(recs, shifts) if shift},
        "streaming_dtype": str(runtime.dtype).replace("torch.", ""),
        "device": str(device),
        "sampling_rate": sampling_rate,
        "recordings": len(recs),
        "windows": int(y.size),
        "emitted_windows": int(n_windows),
        "label_policy": label_policy or "class of the window's last sample; unlabelled (-1) windows excluded",
        "class_names": list(class_names),
        "offline": {"accuracy": acc_off, "macro_f1": _macro_f1(y, p_off), "decision_latency": _lat("offline")},
        "streaming": {"accuracy": acc_str, "macro_f1": _macro_f1(y, p_str), "decision_latency": _lat("streaming")},
        "accuracy_gap": acc_str - acc_off,
        "argmax_agreement": float(np.mean(np.concatenate(agree))),
        "max_abs_logit_delta": float(max(deltas)),
        "ms_per_hop_streaming_batch1": ms_hop,
        "ms_per_window_offline_batch1": ms_window,
        "streaming_ms_per_hop_batched": stream_seconds * 1000.0 / max(n_hops, 1),
        "offline_ms_per_window_batched": offline_seconds * 1000.0 / max(n_windows, 1),
        "flops_per_hop_streaming": flops_hop,
        "flops_per_window_offline": flops_window,
        "flops_ratio": flops_window / max(flops_hop, 1),
        "flop_convention": "torch.utils.flop_counter (a multiply-add counts 2)",
        **(extra or {}),
    }
    return result


def _plot_timeline(result: StreamingEvalResult, class_names: list[str], rate: float, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rid = max(result.ends, key=lambda k: len(result.ends[k]))
    ends, labels = result.ends[rid], result.labels[rid]
    fig, ax = plt.subplots(figsize=(12, 3.5))
    t = np.arange(len(labels)) / rate
    ax.step(t, np.where(labels >= 0, labels, np.nan), where="post", label="true (per sample)", lw=2.5, alpha=0.5)
    ax.step((ends - 1) / rate, result.offline_pred[rid], where="post", label="offline", lw=1.5)
    ax.step((ends - 1) / rate, result.stream_pred[rid] + 0.1, where="post", label="streaming (+0.1)", lw=1, ls="--")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("time (s)")
    ax.set_title(f"recording {rid}: true vs offline vs streaming labels")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return rid


def write_report(result: StreamingEvalResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``streaming_eval.json`` and ``streaming_timeline.png`` (one recording) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = result.report
    png = out / "streaming_timeline.png"
    rid = _plot_timeline(result, rep["class_names"], rep["sampling_rate"], png)
    report = dict(rep, timeline_recording=rid, timeline_png=png.name)
    js = out / "streaming_eval.json"
    js.write_text(json.dumps(report, indent=2, default=_json_default))
    return js, png


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)  # type: ignore[call-overload]
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
