"""`vidrec fit` checkpoints and resume: last.ckpt is the last epoch; a run killed with SIGKILL resumes exactly."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.timeseries.schema import Recording, write_recordings
from vidrec.cli import main
from vidrec.tasks import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/har/basicmotions_resnet1d.yaml")
EPOCHS = 4

KILLER = '''
import os, signal
from lightning.pytorch import Callback


class KillAtStep(Callback):
    """SIGKILLs its own process before training step `step`, after flushing the logs written so far."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            for logger in trainer.loggers:
                logger.save()  # the interrupted epoch's rows reach metrics.csv: the resume must remove them
            os.kill(os.getpid(), signal.SIGKILL)
'''


def _write_separable(path: Path) -> None:
    """12 subjects, 2 classes told apart by the sign of channel 0: validation accuracy saturates at epoch 0."""
    rng = np.random.default_rng(0)
    recordings = []
    for subject in range(12):
        for label in (0, 1):
            x = rng.standard_normal((120, 6)).astype(np.float32)
            x[:, 0] += 3.0 if label else -3.0
            split = "test" if subject >= 10 else "train"
            recordings.append(Recording(f"s{subject}c{label}", x, np.full(120, label), subject, split))
    write_recordings(
        path, recordings, sampling_rate=10.0, channel_names=[f"c{i}" for i in range(6)], class_names=["neg", "pos"]
    )


def _args(data: Path, *extra: str) -> list[str]:
    return [
        "fit", "-c", CONFIG,
        "--data.init_args.path", str(data),
        "--data.init_args.windows", '{"window": 32, "hop": 8, "eval_hop": 8}',
        "--data.init_args.loader.batch_size", "16",
        "--model.model.init_args.num_classes", "2",
        "--trainer.max_epochs", str(EPOCHS), "--trainer.log_every_n_steps", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *extra,
    ]  # fmt: skip


def _run_folders(cwd: Path) -> list[Path]:
    return sorted((cwd / "runs" / "basicmotions_resnet1d").iterdir())


@pytest.mark.slow
def test_last_ckpt_is_the_last_epoch_when_validation_saturates_at_epoch_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_separable(tmp_path / "sep.h5")
    monkeypatch.chdir(tmp_path)
    assert main(_args(tmp_path / "sep.h5", "--trainer.max_epochs", "3")) == 0
    (run,) = _run_folders(tmp_path)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch000-acc1.0000.ckpt", "last.ckpt"]  # the best is epoch 0: later epochs only tie
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(run / "checkpoints" / names[0], weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]
    loaded = load_checkpoint(run / "checkpoints" / "last.ckpt")  # a genuine checkpoint loads with weights_only
    assert loaded.class_names == ["neg", "pos"]


@pytest.mark.slow
def test_a_run_killed_at_a_random_step_resumes_exactly(tmp_path: Path) -> None:
    data = tmp_path / "sep.h5"
    _write_separable(data)
    (tmp_path / "killer.py").write_text(KILLER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir()
    broken.mkdir()
    cmd = [sys.executable, "-m", "vidrec.cli"]
    # 10 training subjects, 2 of them for validation: 8 x 2 recordings x 12 windows = 192 windows, 12 steps/epoch
    steps_per_epoch = 12
    step = random.Random().randrange(steps_per_epoch + 1, 3 * steps_per_epoch)  # after the first checkpoint
    print(f"killing at global step {step}")
    kill = json.dumps({"class_path": "killer.KillAtStep", "init_args": {"step": step}})
    uninterrupted = subprocess.Popen([*cmd, *_args(data)], cwd=whole, env=env, stderr=subprocess.PIPE, text=True)
    killed = subprocess.run(
        [*cmd, *_args(data, f"--trainer.callbacks+={kill}")], cwd=broken, env=env, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run,) = _run_folders(broken)
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == (step // steps_per_epoch) * steps_per_epoch
    resumed = subprocess.run(
        [*cmd, *_args(data, "--ckpt_path", str(last))], cwd=broken, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err[-3000:]

    assert _run_folders(broken) == [run]  # the resumed run wrote into the same folder
    (reference,) = _run_folders(whole)
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS - 1 and a["global_step"] == b["global_step"] == EPOCHS * steps_per_epoch
    max_dw = max(
        float((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max()) for k in a["state_dict"]
    )
    assert max_dw == 0.0
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)

    def rows(folder: Path) -> list[dict[str, str]]:
        with (folder / "metrics.csv").open(newline="") as f:
            return list(csv.DictReader(f))

    assert rows(run) == rows(reference)  # same metrics, no duplicated rows
