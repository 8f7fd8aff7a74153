"""Real motion-tracking check of the skeleton 1D-CNN path on UEA GunPoint (hand x-position tracked from video).

GunPoint (Ratanamahatana & Keogh; UEA/UCR archive, shipped in ``aeon``): 50 training and 150 test series of 150
frames, the x position of an actor's hand, two classes (drawing a gun vs pointing a finger). The script trains the
paper's base network (``skeleton_resnet1d``, valid convolutions, kernel 8, receptive field 134 frames) and the
frame-difference subnet on the single coordinate channel and prints their test accuracy and the streaming
deviation. Each series is z-normalised on its own (the archive's convention).

    OMP_NUM_THREADS=2 python tools/gunpoint_skeleton_check.py --epochs 60
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidrec.models import build_model
from vidrec.streaming import to_streaming


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A univariate equal-length ``.ts`` file -> ``(N, T)`` float32 values and ``(N,)`` int64 labels (0-based)."""
    rows, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            values, label = line.rsplit(":", 1)
            rows.append([float(v) for v in values.split(",")])
            labels.append(label)
    classes = sorted(set(labels))
    return np.asarray(rows, dtype=np.float32), np.asarray([classes.index(v) for v in labels], dtype=np.int64)


def gunpoint_files() -> tuple[Path, Path]:
    """GunPoint's TRAIN/TEST files inside the installed ``aeon`` (found without importing it)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("aeon is not installed: pip install --no-deps aeon==1.6.0")
    root = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "GunPoint"
    return root / "GunPoint_TRAIN.ts", root / "GunPoint_TEST.ts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train_file, test_file = gunpoint_files()
    (xtr, ytr), (xte, yte) = read_ts(train_file), read_ts(test_file)

    def znorm(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-8))[:, None]

    xtr_t, xte_t = znorm(xtr), znorm(xte)  # (N, 1, 150)
    for name in ("skeleton_resnet1d", "skeleton_frame_difference"):
        torch.manual_seed(args.seed)
        model = build_model(name, in_channels=1, num_classes=2, width=args.width, kernel_size=8, dropout=0.1)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
        start = time.perf_counter()
        for _ in range(args.epochs):
            model.train()
            for idx in torch.randperm(len(xtr_t)).split(16):
                loss = F.cross_entropy(model(xtr_t[idx]), torch.from_numpy(ytr)[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xte_t).argmax(1).numpy() == yte).mean())
        rt = to_streaming(model, 150, 4, in_channels=1)  # hops of 4 frames (the network's stride)
        streamed, ready = rt.run(torch.cat([xte_t[1:2], xte_t[:1]], dim=2))  # 300 frames: the last window is series 0
        with torch.no_grad():
            offline = model(xte_t[:1])
        deviation = float((streamed[0, -1] - offline[0]).abs().max())
        print(
            f"{name:26s} GunPoint test accuracy {acc:.2%} ({len(yte)} series), "
            f"train {time.perf_counter() - start:.0f} s, streamed-vs-offline max |diff| {deviation:.1e}"
        )


if __name__ == "__main__":
    main()
