"""`vidrec evaluate-streaming` scores what `vidrec test` scored: same subjects, windows, label policy, normalisation.

A tiny HDF5 file (6 subjects, 3 classes) is written in tmp_path; a model is trained for one epoch with `vidrec fit`,
tested with `vidrec test`, and evaluated with `vidrec evaluate-streaming`: its offline accuracy must equal the test
accuracy, for the official split and for a k-fold split with edge-filled context and the MAJORITY label policy (at an
evaluation hop of 8, and of 12, where the scored windows end off the stream's multiples of the hop).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datamodules.timeseries.schema import Recording, write_recordings
from datamodules.timeseries.settings import LEGACY_KEYS
from vidrec.cli import main
from vidrec.streaming.command import evaluate_checkpoint, recordings_of_test_split
from vidrec.tasks import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/har/basicmotions_resnet1d.yaml")


def _tiny_file(path: Path) -> Path:
    """6 subjects x 1 recording of 300 samples, 3 channels, 3 classes in segments; subjects 5 and 6 are 'test'."""
    rng = np.random.default_rng(0)
    recordings = []
    for subject in range(1, 7):
        labels = np.repeat(rng.permutation([0, 1, 2, 0, 1, 2]), 50)  # (300,) segments of 50 samples
        labels[:7] = -1
        t = np.arange(300) / 50.0
        signal = np.stack([np.sin(2 * np.pi * (1 + labels.clip(0)) * t + c) for c in range(3)], axis=1)
        samples = (signal * (1 + 0.2 * subject) + rng.normal(scale=0.3, size=signal.shape)).astype(np.float32)
        split = "test" if subject >= 5 else "train"
        recordings.append(Recording(f"s{subject}", samples, labels, subject=subject, split=split))
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["x", "y", "z"], class_names=["a", "b", "c"])
    return path


def _run(command: str, data: Path, *extra: str) -> None:
    main(
        [
            command,
            "-c",
            CONFIG,
            "--data.init_args.path",
            str(data),
            "--model.model.init_args.in_channels",
            "3",
            "--model.model.init_args.num_classes",
            "3",
            "--data.init_args.windows.window",
            "32",
            "--data.init_args.windows.hop",
            "8",
            "--data.init_args.windows.eval_hop",
            "8",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            *extra,
        ]
    )


def _flat_config(saved: Path, out: Path) -> Path:
    """A run's saved ``config.yaml`` with the data settings written as the flat keys of earlier versions."""
    config = yaml.safe_load(saved.read_text())
    init = config["data"]["init_args"]
    for old, (group, name) in LEGACY_KEYS.items():
        init[old] = init[group].pop(name)
    for group in {group for group, _ in LEGACY_KEYS.values()}:
        assert not init.pop(group)  # every field moved
    assert "window" in init and "split_mode" in init
    out.write_text(yaml.safe_dump(config))
    return out


def _last_run(workdir: Path) -> Path:
    return sorted((workdir / "runs" / "basicmotions_resnet1d").iterdir())[-1]


SPLITS = {
    "official": ["--data.init_args.split.mode", "OFFICIAL", "--data.init_args.split.val_fraction", "0.25"],
    "kfold-edge-majority": [
        "--data.init_args.split.mode",
        "KFOLD",
        "--data.init_args.split.num_folds",
        "3",
        "--data.init_args.split.fold",
        "1",
        "--data.init_args.split.val_fraction",
        "0",
        "--data.init_args.windows.context",
        "8",
        "--data.init_args.windows.context_padding",
        "EDGE",
        "--data.init_args.labels.policy",
        "MAJORITY",
        "--model.model.init_args.dropout",
        "0.0",
    ],
}
# the same with an evaluation hop of 12: `vidrec test` scores windows ending at 32, 44, ... (off the multiples of 12)
SPLITS["kfold-edge-hop12"] = [*SPLITS["kfold-edge-majority"], "--data.init_args.windows.eval_hop", "12"]


@pytest.mark.slow
@pytest.mark.parametrize("split", list(SPLITS))
def test_offline_accuracy_of_evaluate_streaming_equals_vidrec_test(
    split: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _tiny_file(tmp_path / "tiny.h5")
    _run("fit", data, "--trainer.max_epochs", "1", *SPLITS[split])
    ckpt = _last_run(tmp_path) / "checkpoints" / "last.ckpt"
    if split == "official":
        _run("test", data, "--ckpt_path", str(ckpt), *SPLITS[split])
    else:  # the run's saved config in the flat form of earlier versions (window: 32, split_mode: KFOLD, ...)
        old = _flat_config(_last_run(tmp_path) / "config.yaml", tmp_path / "old_config.yaml")
        main(["test", "-c", str(old), "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false"])
    tested = json.loads((_last_run(tmp_path) / "test_metrics.json").read_text())

    # the spec is plain data: a weights_only load reads it
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    spec = raw["vidrec"]["spec"]
    assert spec["split"]["mode"] == split.split("-")[0] and spec["split"]["test_subjects"]
    if split == "official":
        assert spec["split"]["test_subjects"] == [5, 6]
    else:
        assert spec["split"]["num_folds"] == 3 and spec["context_padding"] == "edge"

    loaded = load_checkpoint(ckpt)
    result = evaluate_checkpoint(loaded, timing_repeats=2)
    rep = result.report
    windows = sum(map(sum, tested["confusion_matrix"]))
    assert rep["windows"] == windows  # the windows `vidrec test` scored, no more, no fewer
    assert rep["offline"]["accuracy"] == pytest.approx(tested["test/acc"], abs=1e-6)  # torchmetrics: float32
    assert rep["offline"]["macro_f1"] == pytest.approx(tested["test/f1_macro"], abs=1e-6)
    assert rep["streaming"]["accuracy"] == rep["offline"]["accuracy"]
    assert rep["max_abs_logit_delta"] < 1e-4 and rep["argmax_agreement"] == 1.0
    assert rep["split"]["test_subjects"] == spec["split"]["test_subjects"]
    assert rep["streaming"]["decision_latency"]["decided"] + rep["streaming"]["decision_latency"]["missed"] > 0

    # `vidrec stream --source replay` replays the same test recordings by default
    assert recordings_of_test_split(loaded.require_spec(), str(data)) == [
        f"s{s}" for s in spec["split"]["test_subjects"]
    ]

    # the command writes the same report and the timeline next to it
    main(["evaluate-streaming", "--checkpoint", str(ckpt), "--out", str(tmp_path / "eval")])
    saved = json.loads((tmp_path / "eval" / "streaming_eval.json").read_text())
    assert saved["offline"]["accuracy"] == rep["offline"]["accuracy"]
    assert (tmp_path / "eval" / "streaming_timeline.png").stat().st_size > 1000


def test_a_checkpoint_without_a_split_is_refused_by_name(tmp_path: Path) -> None:
    from datamodules.timeseries.datamodule import HDF5WindowDataModule
    from vidrec.spec import DeploymentSpec

    legacy = {"window": 32, "hop": 8, "sampling_rate": 50.0, "channel_names": ["x", "y", "z"], "mean": [0.0] * 3}
    legacy["std"] = [1.0] * 3
    spec = DeploymentSpec.from_legacy_metadata(legacy, ["a", "b", "c"], "old.ckpt")
    assert spec.split is None and spec.eval_hop == 8 and spec.first_output is None
    with pytest.raises(ValueError, match="names no split"):
        HDF5WindowDataModule.from_spec(spec, str(_tiny_file(tmp_path / "tiny.h5")))
