"""Benchmark: windows/s of HDF5WindowDataModule's train dataloader, in-process (num_workers=0).

Builds a HAPT-sized ``vidrec.timeseries/1`` file (30 subjects, 61 recordings, ~1.12 M samples x 6 channels, 50 Hz,
labels in runs) unless ``--path`` names an existing one, then iterates the training dataloader several times and
prints the median windows/s, plus the setup time and the raw batch-gather rate without the DataLoader.

    python tools/bench_hdf5_windows.py                       # synthetic HAPT-sized file
    python tools/bench_hdf5_windows.py --path data/hapt.h5   # a real converted file
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from datamodules.timeseries.datamodule import HDF5WindowDataModule
from datamodules.timeseries.schema import Recording, write_recordings
from datamodules.timeseries.settings import LoaderSettings, WindowSettings


def build_hapt_sized(path: Path, *, seed: int = 0) -> Path:
    """Write 61 recordings of 30 subjects (~1.12 M samples, 6 channels, 6 classes in runs, 25% unlabelled)."""
    rng = np.random.default_rng(seed)
    subjects = [s for s in range(1, 31) for _ in range(2)] + [30]  # 61 recordings
    lengths = rng.integers(14_000, 22_800, size=len(subjects))
    recordings = []
    for k, (subject, length) in enumerate(zip(subjects, lengths)):
        runs = rng.integers(300, 1500, size=length // 300 + 1)
        labels = np.repeat(rng.integers(-1, 6, size=len(runs)), runs)[:length]
        samples = rng.normal(size=(length, 6)).astype(np.float32)
        split = "test" if subject in {2, 4, 9, 10, 12, 13, 18, 20, 24} else "train"
        recordings.append(Recording(f"r{k:02d}", samples, labels, subject=subject, split=split))
    channels = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    return write_recordings(
        path, recordings, sampling_rate=50.0, channel_names=channels, class_names=[f"c{i}" for i in range(6)]
    )


def main() -> None:
    """Parse arguments, run the benchmark, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=None, help="existing vidrec.timeseries/1 file")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--hop", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path if args.path is not None else build_hapt_sized(Path(tmp) / "hapt_sized.h5")
        start = time.perf_counter()
        dm = HDF5WindowDataModule(
            str(path),
            windows=WindowSettings(window=args.window, hop=args.hop),
            loader=LoaderSettings(batch_size=args.batch_size),
        )
        dm.setup("fit")
        setup_s = time.perf_counter() - start
        loader = dm.train_dataloader()
        rates = []
        for _ in range(args.runs):
            start = time.perf_counter()
            windows = sum(len(batch["target"]) for batch in loader)
            rates.append(windows / (time.perf_counter() - start))
        dataset = dm.datasets["train"]
        order = np.random.default_rng(0).permutation(len(dataset))
        start = time.perf_counter()
        for i in range(0, len(order), args.batch_size):
            dataset.__getitems__(order[i : i + args.batch_size].tolist())
        gather_rate = len(order) / (time.perf_counter() - start)
    print(
        f"{path if args.path else 'synthetic HAPT-sized file'}: {len(dataset)} train windows of {dm.input_length} x"
        f" {dm.in_channels}, batch {args.batch_size}, num_workers=0, setup {setup_s:.2f} s"
    )
    print(
        f"train dataloader: median {statistics.median(rates):,.0f} windows/s over {args.runs} epochs"
        f" (min {min(rates):,.0f}, max {max(rates):,.0f}); batch gather without DataLoader {gather_rate:,.0f} windows/s"
    )


if __name__ == "__main__":
    main()
