"""``vidrec data synthetic-skeleton`` and ``vidrec data ntu-skeleton`` through the real argument parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.skeleton.schema import read_skeleton_info
from vidrec.cli import main


def test_synthetic_and_ntu_commands_write_schema_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, h5 = tmp_path / "skeletons", tmp_path / "s.h5"
    args = ["data", "synthetic-skeleton", "--out", str(out), "--h5", str(h5), "--classes", "2", "--performers", "1"]
    assert main([*args, "--replications", "1"]) == 0
    assert "wrote 6 .skeleton files" in capsys.readouterr().out
    info = read_skeleton_info(h5)
    assert info.class_names == ["hand waving", "kicking"] and len(info.samples) == 6
    (out / "S001C001P002R001A001.skeleton").write_text("3\n1\n")  # truncated
    assert main(["data", "ntu-skeleton", str(out), "--out", str(tmp_path / "n.h5"), "--num-classes", "2"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 samples" in printed and "skipped 1:" in printed and "S001C001P002R001A001" in printed
