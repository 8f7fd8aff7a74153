"""Distributed training smoke test: ``vidrec fit`` with DDP over gloo on 2 CPU processes, tiny synthetic data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datamodules.video.synthetic import SyntheticSummary

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "video" / "synthetic_r2plus1d.yaml"


@pytest.mark.slow
def test_fit_with_two_ddp_processes_writes_a_checkpoint(tiny_synthetic: SyntheticSummary, tmp_path: Path) -> None:
    if shutil.which("vidrec") is None and not (Path(sys.executable).parent / "vidrec").exists():
        pytest.skip("the vidrec command is not installed")
    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"].update(
        {
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "default_root_dir": str(tmp_path / "run"),
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}],
        }
    )
    init = config["model"]["model"]["init_args"]
    init["num_classes"] = 3
    for stage in init["stages"]:
        stage["channels"] = 8
    data = config["data"]["init_args"]
    data.update({"root": str(tiny_synthetic.root), "batch_size": 2, "num_workers": 0})
    data["clip"] = {"frames_per_clip": 8, "frame_stride": 1}
    data["transform"].update({"crop_size": 24, "train_short_side": 32, "test_short_side": 32})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    vidrec = str(Path(sys.executable).parent / "vidrec")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    result = subprocess.run(
        [vidrec, "fit", "-c", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert checkpoints, f"no checkpoint under {tmp_path}: {result.stderr[-2000:]}"
    assert "distributed_backend=gloo" in result.stdout + result.stderr
