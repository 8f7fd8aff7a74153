"""``vidrec demo skeleton``: synthetic NTU-format skeletons -> HDF5 -> the 1D-CNN ensemble -> test report.

Writes the synthetic set as real ``.skeleton`` files (``datamodules.skeleton.synthetic``) unless they exist,
converts them with the NTU converter, trains ``configs/skeleton/synthetic_ensemble.yaml`` under NTU-60 cross-subject
and cross-view, tests the best checkpoint of each, and prints every subnet's accuracy beside the ensemble's, the
training throughput and, for each streaming subnet, the streaming cost per frame and its largest deviation from
the offline logits of the same windows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_skeleton_demo", "stream_check"]

DEFAULT_CONFIG = "configs/skeleton/synthetic_ensemble.yaml"
DEFAULT_DATA = "data/synthetic_skeleton.h5"
PROTOCOLS = {"xsub": "NTU60_XSUB", "xview": "NTU60_XVIEW"}


def stream_check(model: torch.nn.Module, window: int, hop: int, in_channels: int, frames: int = 256) -> dict[str, Any]:
    """Stream a trained ensemble as one fused model, and each of its subnets, over random joint frames.

    Each is compared with its offline logits of the same windows. Returns ``{"ensemble" | subnet: {"max_abs_diff",
    "ms_per_frame" (CPU time per frame of this process), "compiled", "eager_parts" (modules the compiled engine
    leaves eager)}}``.
    """
    from vidrec.streaming import to_streaming

    out: dict[str, Any] = {}
    x = torch.randn(1, in_channels, frames)
    subnets = dict(getattr(model, "subnets", {}))
    for name, net in {"ensemble": model, **subnets}.items():
        net = net.eval()
        rt = to_streaming(net, window, hop, in_channels=in_channels)
        start = time.process_time()
        logits, ready = rt.run(x)
        seconds = time.process_time() - start
        ends = [(k + 1) * hop for k in range(frames // hop) if ready[0, k]]
        with torch.no_grad():
            ref = torch.stack([net(x[:, :, e - window : e])[0] for e in ends])
        out[name] = {
            "max_abs_diff": float((logits[0, ready[0]] - ref).abs().max()),
            "ms_per_frame": 1e3 * seconds / frames,
            "compiled": bool(rt.compiled),
            "eager_parts": [d.part for d in rt.describe().decisions if d.reason.startswith("not lowered")],
        }
    return out


def run_skeleton_demo(args: argparse.Namespace) -> int:
    """Generate and convert the synthetic set if needed, fit and test per protocol, print the report."""
    from datamodules.skeleton.ntu_convert import convert_ntu_folder
    from datamodules.skeleton.synthetic import (
        SYNTHETIC_CLASSES,
        SyntheticSkeletonSettings,
        generate_synthetic_skeletons,
    )
    from vidrec.cli import _lightning_main

    start = time.perf_counter()
    config = args.config or DEFAULT_CONFIG
    data = Path(args.data or DEFAULT_DATA)
    folder = data.with_suffix("")
    if not data.is_file():
        t0 = time.perf_counter()
        paths = generate_synthetic_skeletons(folder, SyntheticSkeletonSettings())
        print(f"[vidrec demo] wrote {len(paths)} .skeleton files to {folder} in {time.perf_counter() - t0:.0f} s")
        report = convert_ntu_folder(  # synthetic names are not NTU's: the official missing list does not apply
            folder, data, num_classes=8, class_names=list(SYNTHETIC_CLASSES), skip_official_missing=False
        )
        print(
            f"[vidrec demo] converted {report.written} into {data} ({report.files_per_second:.0f} files/s), "
            f"skipped {len(report.skipped)}",
            flush=True,
        )
    protocols = list(PROTOCOLS) if getattr(args, "protocol", "both") == "both" else [args.protocol]
    rows = []
    for key in protocols:
        overrides = ["--data.init_args.path", str(data), "--data.init_args.protocol", PROTOCOLS[key]]
        if args.max_epochs is not None:
            overrides += ["--trainer.max_epochs", str(args.max_epochs)]
        argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI parses the list below, not `vidrec demo skeleton`
        try:
            t0 = time.perf_counter()
            cli = _lightning_main(["fit", "--config", config, *overrides])
            fit_seconds = time.perf_counter() - t0
        finally:
            sys.argv = argv
        dm = cli.datamodule
        epochs = cli.trainer.current_epoch
        best = str(getattr(cli.trainer.checkpoint_callback, "best_model_path", "") or "")
        cli.trainer.test(cli.model, datamodule=dm, ckpt_path=best or None, verbose=False)
        results = cli.model.test_results
        rows.append((key, results, len(dm.datasets["train"]) * epochs / fit_seconds, fit_seconds, best))
    print()
    names = list(rows[0][1].get("subnets", {}))
    print(f"{'protocol':10s}" + "".join(f"{n:>18s}" for n in names) + f"{'ensemble':>12s}{'fusion gain':>13s}")
    for key, res, _, _, _ in rows:
        subnet_acc = "".join(f"{res['subnets'][n]['acc']:>18.2%}" for n in names)
        print(f"{key:10s}{subnet_acc}{res['test/acc']:>12.2%}{100 * res.get('fusion_gain', float('nan')):>+12.2f}pp")
    print()
    for key, res, rate, seconds, best in rows:
        print(f"{key}: training {rate:.0f} samples/s (fit {seconds:.0f} s incl. validation), checkpoint {best}")
        print(f"{key}: metrics {Path(res.get('log_dir', '.')) / 'test_metrics.json'}")
    window = int(rows[0][1].get("window", 0) or cli.datamodule.length)
    checks = stream_check(cli.model.model, window, 4, cli.datamodule.in_channels)
    print()
    print(f"streaming at hop 4 over 256 frames (window {window}; CPU ms per frame, fused ensemble first):")
    for name, c in checks.items():
        path = "compiled" if c["compiled"] else "eager"
        if c["eager_parts"]:
            path += ", recomputed eagerly: " + ", ".join(c["eager_parts"])
        print(
            f"  {name:18s} max |streamed - offline| {c['max_abs_diff']:.2e}   {c['ms_per_frame']:.3f} ms/frame ({path})"
        )
    print(f"total time         {time.perf_counter() - start:.0f} s")
    return 0
