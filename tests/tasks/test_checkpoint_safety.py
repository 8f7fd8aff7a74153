"""Checkpoints and weight files cannot run code: every entry point that loads one refuses a crafted pickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.timeseries.converters.uea import convert_basicmotions
from vidrec.cli import main
from vidrec.models import build_model
from vidrec.tasks import Classification, load_checkpoint
from vidrec.tasks.checkpoint import UnsafeCheckpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/har/basicmotions_resnet1d.yaml")


class _WritesAFile:
    """Unpickling this object calls ``Path.write_text``: what a crafted checkpoint can do with any function."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.target, "payload ran"))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint shaped like vidrec's whose unpickling writes ``marker``; returns (checkpoint, marker)."""
    marker = tmp_path / "marker.txt"
    model = build_model("resnet1d_tiny", in_channels=6, num_classes=4)
    blob = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"_instantiator": "lightning.pytorch.cli.instantiate_module", "x": _WritesAFile(marker)},
        "vidrec": {"data": {"window": 64, "hop": 4}},
    }
    path = tmp_path / "crafted.ckpt"
    torch.save(blob, path)
    # the payload really runs under a plain pickle load (so the refusals below are meaningful)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "payload ran"
    marker.unlink()
    return path, marker


def test_load_checkpoint_refuses_a_crafted_checkpoint(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    with pytest.raises(UnsafeCheckpoint, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pretrained_weights_refuse_a_crafted_file(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    with pytest.raises(UnsafeCheckpoint, match="refusing to load this pretrained weights file"):
        Classification(build_model("resnet1d_tiny", in_channels=6, num_classes=4), pretrained=str(path))
    assert not marker.exists()


def test_pretrained_plain_state_dict_still_loads(tmp_path: Path) -> None:
    source = build_model("resnet1d_tiny", in_channels=6, num_classes=4)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    task = Classification(
        build_model("resnet1d_tiny", in_channels=6, num_classes=4), pretrained=str(tmp_path / "w.pth")
    )
    for name, value in source.state_dict().items():
        assert torch.equal(task.model.state_dict()[name], value)


@pytest.mark.parametrize(
    "command",
    [
        ["stream", "--input", "{input}"],
        ["evaluate-streaming", "--data", "{data}", "--out", "{out}"],
        ["export-stream", "--out", "{out}/step.onnx"],
    ],
    ids=["stream", "evaluate-streaming", "export-stream"],
)
def test_streaming_commands_refuse_a_crafted_checkpoint(
    command: list[str], crafted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = crafted
    (tmp_path / "in.csv").write_text("0,1,2,3,4,5,6\n")
    fill = {"input": str(tmp_path / "in.csv"), "data": str(tmp_path / "none.h5"), "out": str(tmp_path / "out")}
    argv = [command[0], "--checkpoint", str(path), *(a.format(**fill) for a in command[1:])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to load" in err[0] and "Traceback" not in err[0]
    assert not marker.exists()


def test_fit_with_a_crafted_pretrained_file_refuses_it_in_one_line(
    crafted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker = crafted
    convert_basicmotions(tmp_path / "bm.h5")
    argv = ["fit", "-c", CONFIG, "--data.init_args.path", str(tmp_path / "bm.h5"), "--model.pretrained", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "refusing to load" in err[-1] and not any("Traceback" in line for line in err)
    assert not marker.exists()
