"""Datamodules end to end on tiny data: batch dicts, multi-view counts, quarantine beside the logs, CLI subcommand."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from datamodules.video import (
    ClassFolderDataModule,
    ClipTiming,
    DecodeSettings,
    QuarantineLog,
    TransformSettings,
    UCF101DataModule,
)
from datamodules.video.command import add_parser
from datamodules.video.synthetic import SYNTHETIC_CLASSES, SyntheticSummary

SMALL = TransformSettings(crop_size=24, train_short_side=32, test_short_side=32, horizontal_flip=False)


def test_ucf101_datamodule_batches_and_views(tiny_synthetic: SyntheticSummary) -> None:
    dm = UCF101DataModule(
        tiny_synthetic.root,
        clip=ClipTiming(4, 2),
        transform=SMALL,
        batch_size=4,
        num_workers=0,
        test_clips=2,
        test_crops=3,
    )
    assert dm.num_classes == 3 and dm.class_names == list(SYNTHETIC_CLASSES[:3])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (4, 3, 4, 24, 24) and batch["inputs"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and batch["target"].shape == (4,)
    assert batch["group"].shape == (4,)
    assert len(dm.train_dataloader()) == 9 // 4  # 9 train videos, drop_last
    assert len(dm.datasets[next(s for s in dm.datasets if s.value == "val")]) == 3
    dm.setup("test")
    test = [b for b in dm.test_dataloader()]
    groups = torch.cat([b["group"] for b in test])
    assert len(groups) == 3 * 2 * 3  # videos x clips x crops
    assert torch.equal(torch.bincount(groups), torch.full((3,), 6))


def test_workers_and_quarantine_beside_trainer_logs(tiny_synthetic: SyntheticSummary, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic.root, root)
    victim = root / "CircleGrowing/v_CircleGrowing_g01_c01.mp4"
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    dm = UCF101DataModule(
        root, clip=ClipTiming(4), transform=SMALL, batch_size=3, num_workers=2, decode=DecodeSettings(timeout_s=10)
    )
    dm.trainer = Trainer(default_root_dir=tmp_path / "run", logger=False, enable_checkpointing=False)
    dm.setup("fit")
    targets = torch.cat([b["target"] for b in dm.train_dataloader()])
    assert len(targets) == 9  # batch size and epoch length unchanged
    assert torch.equal(torch.bincount(targets), torch.tensor([3, 3, 3]))  # substitute from the same class
    rows = QuarantineLog.read(tmp_path / "run" / "quarantine.tsv")
    assert {Path(p) for p, _ in rows} == {victim}


def test_class_folder_datamodule(tiny_synthetic: SyntheticSummary, tmp_path: Path) -> None:
    for split, lines in [("train", "trainlist01.txt"), ("test", "testlist01.txt"), ("val", "testlist01.txt")]:
        for line in (tiny_synthetic.annotation_dir / lines).read_text().split("\n"):
            if line:
                relative = line.split()[0]
                (tmp_path / split / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tiny_synthetic.root / relative, tmp_path / split / relative)
    dm = ClassFolderDataModule(
        tmp_path, clip=ClipTiming(4), transform=SMALL, batch_size=2, num_workers=0, test_clips=1, test_crops=1
    )
    assert dm.class_names == sorted(SYNTHETIC_CLASSES[:3])
    dm.setup("test")
    assert sum(len(b["target"]) for b in dm.test_dataloader()) == 3


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        UCF101DataModule(tmp_path / "nowhere")


def test_synthetic_command_is_deterministic(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    outputs = []
    for name in ("a", "b"):
        args = parser.parse_args(
            [
                "synthetic-actions",
                "--out",
                str(tmp_path / name),
                "--classes",
                "2",
                "--videos-per-class",
                "4",
                "--frames",
                "8",
                "--size",
                "32",
                "--seed",
                "3",
            ]
        )
        assert args.func(args) == 0
        outputs.append(sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file()))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2 * 4 + 3
    for relative in outputs[0]:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    test_list = (tmp_path / "a/ucfTrainTestlist/testlist01.txt").read_text().split()
    assert test_list == [f"{c}/v_{c}_g04_c01.mp4" for c in SYNTHETIC_CLASSES[:2]]


def test_check_videos_command_writes_the_quarantine(tiny_synthetic: SyntheticSummary, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic.root, root)
    victim = root / "SquareMovingRight/v_SquareMovingRight_g02_c01.mp4"
    victim.write_bytes(b"")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["check-videos", "ucf101", "--root", str(root), "--quarantine", str(tmp_path / "q.tsv")])
    assert args.func(args) == 1
    assert QuarantineLog.read(tmp_path / "q.tsv") == [(str(victim), "zero-byte file")]
