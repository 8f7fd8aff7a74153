"""Parameters and FLOPs of every registered video model, beside the papers' figures.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2) on the meta device, so
nothing is computed. vidrec models are listed in both temporal layouts; VALID (streamable) ones also show their
receptive field (the minimum clip) and the cost of one streaming step of one frame.

Usage: ``python tools/model_stats.py``
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vidrec.models.p3d
import vidrec.models.r2plus1d
import vidrec.models.reference  # noqa: F401  (registers the reference models)
from vidrec.layers.conv2plus1d import TemporalPadding
from vidrec.models._registry import get_model_builder

PAPER = {
    ("r2plus1d_18", "same", 112): "31.5M params, ~81 GFLOP (Tran et al. 2018 / torchvision: 40.5 GMAC)",
    ("r2plus1d_34", "same", 112): "R(2+1)D-34 (paper reports 8 and 32 frame clips)",
    ("p3d199", "same", 160): "~66M params (261 MB, Qiu et al. 2017)",
}


def _gflop(model: nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _stream_gflop(model: nn.Module, size: int) -> float:
    features = model.features  # type: ignore[attr-defined]
    x = torch.zeros(1, 3, 1, size, size, device="meta")
    state = features.stream_state(x)
    with FlopCounterMode(display=False) as counter:
        features.stream_step(x, state)
    return counter.get_total_flops() / 1e9


def _row(name: str, build: Callable[[], nn.Module], frames: int, size: int, layout: str, streamable: bool) -> str:
    with torch.device("meta"):
        model = build().eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gflop = _gflop(model, torch.zeros(1, 3, frames, size, size, device="meta"))
    rf = str(model.features.receptive_field) if hasattr(model, "features") else "-"  # type: ignore[attr-defined]
    stream = f"{_stream_gflop(model, size):8.2f}" if streamable else "       -"
    paper = PAPER.get((name, layout, size), "")
    return f"{name:14s} {layout:6s} {frames:3d}x{size:<4d} {rf:>4s} {params:8.2f} {gflop:9.1f} {stream}  {paper}"


def main() -> None:
    print(
        f"{'model':14s} {'layout':6s} {'input':8s} {'rf':>4s} {'params M':>8s} {'GFLOP':>9s} "
        f"{'GF/frame':>8s}  paper\n"
        "(rf: input frames behind one output position = minimum clip; GF/frame: one streaming step of one frame)"
    )
    rows = []
    for name in ("r2plus1d_18", "r2plus1d_34", "p3d63", "p3d131", "p3d199"):
        builder = get_model_builder(name)
        sizes = (112, 160) if name.startswith("p3d") else (112,)
        for size in sizes:
            for pad in (TemporalPadding.SAME, TemporalPadding.VALID):
                rows.append(
                    _row(
                        name,
                        lambda b=builder, p=pad: b(temporal_padding=p),  # type: ignore[misc]
                        16,
                        size,
                        pad.value,
                        pad is TemporalPadding.VALID,
                    )
                )
    rows.append(_row("tv_r2plus1d18", lambda: torchvision.models.video.r2plus1d_18(), 16, 112, "same", False))
    rows.append(_row("tv_r3d_18", lambda: torchvision.models.video.r3d_18(), 16, 112, "same", False))
    for name, frames, size in (("x3d_xs", 4, 160), ("x3d_s", 13, 160), ("slow_r50", 8, 224), ("r2plus1d_r50", 16, 224)):
        builder = get_model_builder(name)
        rows.append(
            _row(name, lambda b=builder, f=frames, s=size: b(clip_length=f, crop_size=s), frames, size, "ref", False)  # type: ignore[misc]
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
