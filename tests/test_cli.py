"""`vidrec fit / test` end to end on the embedded BasicMotions data: logs, checkpoints, resume, reports, errors."""

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from datamodules.timeseries.converters.uea import convert_basicmotions
from vidrec.cli import main
from vidrec.tasks import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/har/basicmotions_resnet1d.yaml")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    convert_basicmotions(d / "bm.h5")
    return d


def _fit(workdir: Path, *extra: str) -> None:
    main(
        [
            "fit",
            "-c",
            CONFIG,
            "--data.init_args.path",
            str(workdir / "bm.h5"),
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ]
    )


def _runs(workdir: Path) -> list[Path]:
    return sorted((workdir / "runs" / "basicmotions_resnet1d").iterdir())


@pytest.mark.slow
def test_fit_resume_test_and_load(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    _fit(workdir, "--trainer.max_epochs", "2")
    (first,) = _runs(workdir)
    assert (first / "metrics.csv").is_file()
    assert list(first.glob("events.out.tfevents.*")), "TensorBoard events missing"
    last = first / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1
    steps_per_epoch = ckpt["global_step"] // 2
    assert steps_per_epoch > 0

    # resume: continues at epoch 2 with the optimizer state, does not start over
    _fit(workdir, "--trainer.max_epochs", "3", "--ckpt_path", str(last))
    second = _runs(workdir)[-1]
    resumed = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 2
    assert resumed["global_step"] == 3 * steps_per_epoch

    main(
        [
            "test",
            "-c",
            CONFIG,
            "--data.init_args.path",
            str(workdir / "bm.h5"),
            "--trainer.enable_progress_bar",
            "false",
            "--ckpt_path",
            str(second / "checkpoints" / "last.ckpt"),
        ]
    )
    report_dir = _runs(workdir)[-1]
    metrics = json.loads((report_dir / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert set(metrics["per_class"]) == {"Badminton", "Running", "Standing", "Walking"}
    assert (report_dir / "confusion_matrix.png").stat().st_size > 1000
    assert sum(map(sum, metrics["confusion_matrix"])) > 0
    # window accuracy per test subject: it covers every test window and averages back to the overall accuracy
    per_subject = metrics["per_subject"].values()
    windows = sum(m["windows"] for m in per_subject)
    assert windows == sum(map(sum, metrics["confusion_matrix"]))
    assert sum(m["acc"] * m["windows"] for m in per_subject) / windows == pytest.approx(metrics["test/acc"], abs=1e-6)

    loaded = load_checkpoint(second / "checkpoints" / "last.ckpt")
    assert sorted(loaded.class_names) == ["Badminton", "Running", "Standing", "Walking"]
    spec = loaded.require_spec()
    assert spec.window == 64 and spec.normalization.num_channels == 6 and spec.split is not None
    x = torch.randn(2, 6, 64)
    with torch.no_grad():
        assert loaded.model(x).shape == (2, 4)


def test_unknown_key_fails_at_start_naming_the_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _fit(workdir, "--model.model.init_args.widht", "3")
    assert "widht" in capsys.readouterr().err


def test_unknown_class_fails_at_start(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _fit(workdir, "--model.model", "vidrec.models.resnet1d.NoSuchNet")
    assert "NoSuchNet" in capsys.readouterr().err


def test_missing_data_file_names_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.h5"
    assert main(["fit", "-c", CONFIG, "--data.init_args.path", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{missing} not found, create it with `vidrec data hapt|basicmotions|uci-har|uea|generic ... --out {missing}`"
    ]


def test_a_fresh_clone_is_told_how_to_create_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", str(ROOT / "configs/har/hapt_resnet1d.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["data/hapt.h5 not found, create it with `vidrec data hapt`"]


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")))
def test_every_shipped_config_parses(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every YAML under configs/ names only known keys and classes (checked without building or reading data)."""
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(ROOT / config), "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "trainer:" in printed


def _documented_overrides() -> list[tuple[str, str, str]]:
    """(config, --key.path, value) of every override a shipped config's comments tell the reader to use."""
    found = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        for line in path.read_text().splitlines():
            comment = line.partition("#")[2]
            for key, value in re.findall(r"(--[a-z_]+(?:\.[a-z_]+)+)\s+([^\s(),]+)", comment):
                found.append((path.relative_to(ROOT).as_posix(), key, value.split("|")[0]))
    return found


@pytest.mark.parametrize("config, key, value", _documented_overrides())
def test_documented_override_keys_parse(config: str, key: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(ROOT / config), key, value, "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err


def test_a_run_without_validation_keeps_the_last_epoch(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a final model on every training subject: no val/acc to monitor, so the last epoch is the checkpoint
    (workdir / "final").mkdir()
    monkeypatch.chdir(workdir / "final")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(workdir, "--trainer.max_epochs", "2", "--data.init_args.split.val_fraction", "0")
    assert not [w for w in caught if "val/acc" in str(w.message)]  # no missing-monitor warning
    # a normal run greets with no warning about how vidrec calls LightningCLI or Lightning's own deprecations
    assert not [w for w in caught if "args parameter" in str(w.message) or "LeafSpec" in str(w.message)]
    (run,) = sorted((workdir / "final" / "runs" / "basicmotions_resnet1d").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch001.ckpt", "last.ckpt"]


OLD_DATA_SECTION = """\
data:
  class_path: datamodules.timeseries.HDF5WindowDataModule
  init_args:
    path: {path}
    window: 64
    hop: 4
    context: 8
    context_padding: EDGE
    context_truncation: 0.0
    eval_hop: 12
    split_mode: KFOLD
    train_subjects: null
    val_subjects: null
    test_subjects: null
    val_fraction: 0.2
    num_folds: 2
    fold: 1
    seed: 0
    label_policy: PURE
    max_unlabelled_fraction: 0.5
    normalize: true
    batch_size: 32
    num_workers: 0
    balanced: false
    drop_last: false
    pin_memory: false
"""


def test_a_config_saved_with_the_flat_data_keys_of_earlier_versions_still_parses(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data section a run folder's config.yaml held before the settings groups (written by vidrec fit then)."""
    import yaml

    from datamodules.timeseries.settings import LegacyKeyWarning

    config = yaml.safe_load(Path(CONFIG).read_text())
    config["data"] = yaml.safe_load(OLD_DATA_SECTION.format(path=workdir / "bm.h5"))["data"]
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump(config))
    with pytest.warns(LegacyKeyWarning) as caught, pytest.raises(SystemExit) as done:
        main(
            [
                "fit",
                "-c",
                str(old),
                "--data.init_args.hop",
                "8",
                "--data.init_args.loader.batch_size",
                "7",
                "--print_config",
            ]
        )
    assert done.value.code in (0, None)
    messages = " ".join(str(w.message) for w in caught)
    assert f"{old}: data.init_args: HDF5WindowDataModule's flat keys are deprecated" in messages
    assert "window -> windows.window" in messages and "split_mode -> split.mode" in messages
    assert "use --data.init_args.windows.hop" in messages
    data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert data["windows"] == {
        "window": 64, "hop": 8, "eval_hop": 12, "context": 8, "context_padding": "EDGE", "context_truncation": 0.0
    }  # fmt: skip
    assert data["split"]["mode"] == "KFOLD" and data["split"]["num_folds"] == 2 and data["split"]["fold"] == 1
    assert data["labels"] == {"policy": "PURE", "max_unlabelled_fraction": 0.5} and data["loader"]["batch_size"] == 7
    assert not {"window", "split_mode", "batch_size"} & set(data)
    # a key given both ways is refused by name
    twice = ["--data.init_args.windows.hop", "8", "--data.init_args.hop", "4", "--print_config"]
    assert main(["fit", "-c", CONFIG, *twice]) == 2
    assert "hop is given twice" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_with_checkpointing_disabled_trains_and_writes_no_checkpoint(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the CLI's RunCheckpoint is always built; Lightning refused it with enable_checkpointing=False
    (workdir / "nockpt").mkdir()
    monkeypatch.chdir(workdir / "nockpt")
    _fit(workdir, "--trainer.enable_checkpointing", "false", "--trainer.max_epochs", "1")
    (run,) = sorted((workdir / "nockpt" / "runs" / "basicmotions_resnet1d").iterdir())
    assert (run / "metrics.csv").is_file() and not (run / "checkpoints").exists()
