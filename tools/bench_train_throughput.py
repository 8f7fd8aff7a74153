"""Training throughput of the Lightning task versus a plain PyTorch loop, same model, data and batch, one run.

    python tools/bench_train_throughput.py [--model resnet1d_har] [--batch 64] [--steps 60] [--repeats 3]

Both loops read the same in-memory windows through the same DataLoader and run AdamW + cross-entropy; the Lightning
side is ``vidrec.tasks.Classification`` under ``lightning.Trainer`` (metrics and logging on, progress bar,
checkpointing and loggers off). Prints windows/s of each (median over repeats, alternating) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vidrec.models import build_model
from vidrec.tasks import Classification


class _Windows(Dataset):
    def __init__(self, n: int, channels: int, length: int, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, channels, length, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.x[i], "target": self.y[i]}


def plain_loop(model: torch.nn.Module, loader: DataLoader, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    seen, it = 0, iter(loader)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        loss = torch.nn.functional.cross_entropy(model(batch["inputs"]), batch["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(batch["target"])
    return seen / (time.perf_counter() - start)


def lightning_loop(model: torch.nn.Module, loader: DataLoader, steps: int, classes: int) -> float:
    task = Classification(model, num_classes=classes)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(task, train_dataloaders=loader)
    return steps * loader.batch_size / (time.perf_counter() - start)  # type: ignore[operator]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet1d_har")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    classes, channels, length = 6, 6, 128
    data = _Windows(a.batch * a.steps, channels, length, classes)
    plain, light = [], []
    for r in range(a.repeats):
        for fn, acc in ((plain_loop, plain), (lightning_loop, light)):
            torch.manual_seed(r)
            model = build_model(a.model, in_channels=channels, num_classes=classes)
            loader = DataLoader(data, batch_size=a.batch, shuffle=True, drop_last=True)
            args = (model, loader, a.steps) if fn is plain_loop else (model, loader, a.steps, classes)
            acc.append(fn(*args))  # type: ignore[operator]
    mp, ml = statistics.median(plain), statistics.median(light)
    print(f"model {a.model}, batch {a.batch}, {a.steps} steps x {a.repeats} repeats, {a.threads} threads")
    print(f"plain PyTorch loop      {mp:10.0f} windows/s   (runs: {', '.join(f'{v:.0f}' for v in plain)})")
    print(f"Lightning task          {ml:10.0f} windows/s   (runs: {', '.join(f'{v:.0f}' for v in light)})")
    print(f"ratio Lightning / plain {ml / mp:10.3f}")


if __name__ == "__main__":
    main()
