"""`vidrec demo har` on its default config (closed-form MiniRocket), shrunk to a tiny file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.models.test_minirocket import _quantised_file
from vidrec.demo import DEFAULT_HAR_CONFIG

ROOT = Path(__file__).resolve().parents[1]


def test_demo_har_default_config_fits_tests_and_names_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default recipe has no validation split, so the demo must test (and print) its last checkpoint."""
    from vidrec.cli import main

    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((ROOT / DEFAULT_HAR_CONFIG).read_text())
    model = config["model"]["model"]["init_args"]
    assert model["level_weight"] < 1 and config["data"]["init_args"]["split"]["val_fraction"] == 0
    model.update(in_channels=3, num_classes=3, window=32, num_features=336, level_combinations=6)
    config["data"]["init_args"]["windows"].update(window=32, hop=8, eval_hop=8)
    config["trainer"].update(enable_progress_bar=False, enable_model_summary=False)
    small = tmp_path / "demo.yaml"
    small.write_text(yaml.safe_dump(config))
    data = _quantised_file(tmp_path / "tiny.h5")
    assert main(["demo", "har", "--config", str(small), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "macro-F1" in out
    line = next(row for row in out.splitlines() if row.startswith("checkpoint"))
    ckpt = Path(line.split(maxsplit=1)[1])
    assert ckpt.name == "last.ckpt" and ckpt.is_file()
