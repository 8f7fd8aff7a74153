"""`vidrec test` from a run's own config logs into that run's folder and keeps its training `config.yaml`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.streaming.test_evaluate_checkpoint import SPLITS, _last_run, _run, _tiny_file
from vidrec.cli import main, saved_config_name


def test_each_subcommand_saves_its_own_config_name() -> None:
    assert saved_config_name(["fit", "-c", "x.yaml"]) == "config.yaml"
    assert saved_config_name(["test", "-c", "x.yaml"]) == "test_config.yaml"
    assert saved_config_name(["predict"]) == "predict_config.yaml"
    assert saved_config_name(["validate"]) == "validate_config.yaml"


def test_testing_in_a_run_folder_keeps_the_training_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = _tiny_file(tmp_path / "tiny.h5")
    _run("fit", data, "--trainer.max_epochs", "1", *SPLITS["official"])
    run = _last_run(tmp_path)
    training = (run / "config.yaml").read_text()
    main(
        [
            "test",
            "-c",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert _last_run(tmp_path) == run and (run / "test_metrics.json").is_file()  # the test logged into the run
    assert (run / "config.yaml").read_text() == training
    tested = yaml.safe_load((run / "test_config.yaml").read_text())
    assert tested["ckpt_path"] == str(run / "checkpoints" / "last.ckpt")
    assert yaml.safe_load(training).get("ckpt_path") is None
