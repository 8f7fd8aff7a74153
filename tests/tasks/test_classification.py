"""The classification task: metrics, group (per-video) aggregation, optimizer wiring, pretrained loading."""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidrec.tasks import Classification
from vidrec.tasks.classification import load_pretrained_weights


class _Clips(Dataset):
    """Each item is one clip; clips of a group (video) share its label; inputs encode the label as a one-hot."""

    def __init__(self, groups: list[int], labels: list[int], noisy: set[int]) -> None:
        self.groups, self.labels, self.noisy = groups, labels, noisy

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.zeros(3)
        # noisy clips point at the wrong class; their video still wins on the averaged scores
        x[(self.labels[i] + 1) % 3 if i in self.noisy else self.labels[i]] = 5.0
        return {"inputs": x, "target": torch.tensor(self.labels[i]), "group": torch.tensor(self.groups[i])}


def _trainer(tmp_path: Path, **kwargs: object) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        enable_model_summary=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_group_level_metrics_average_clip_scores(tmp_path: Path) -> None:
    # 3 videos x 3 clips; video 0 has one wrong clip (clip accuracy 8/9, video accuracy 3/3)
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    task = Classification(nn.Identity(), num_classes=3)
    _trainer(tmp_path).test(task, DataLoader(_Clips(groups, labels, {1}), batch_size=4), verbose=False)
    r = task.test_results
    assert r["test/acc"] == pytest.approx(8 / 9)
    assert r["test/group_acc"] == pytest.approx(1.0)
    assert r["test/group_acc_vote"] == pytest.approx(1.0)  # 2 of 3 clips vote right
    assert r["test/groups"] == 3
    assert r["confusion_matrix"][0] == [2, 1, 0]
    assert (tmp_path / "test_metrics.json").is_file() and (tmp_path / "confusion_matrix.png").is_file()


def test_groups_with_several_labels_are_scored_by_bouts(tmp_path: Path) -> None:
    # a continuous recording (group 0) holds two activities: no per-recording label exists, but its runs of one
    # label (bouts) have one; bouts [0, 0, 0] (one wrong window), [1, 1], then group 1's [1] and [2, 2]
    groups = [0, 0, 0, 0, 0, 1, 1, 1]
    labels = [0, 0, 0, 1, 1, 1, 2, 2]
    task = Classification(nn.Identity(), num_classes=3)
    _trainer(tmp_path).test(task, DataLoader(_Clips(groups, labels, {2, 7}), batch_size=3), verbose=False)
    r = task.test_results
    assert "test/group_acc" not in r
    assert r["test/bouts"] == 4 and r["test/acc"] == pytest.approx(6 / 8)
    assert r["test/bout_acc_vote"] == pytest.approx(3 / 4)  # the last bout: one vote each, the tie goes to class 0
    assert r["test/bout_acc"] == pytest.approx(3 / 4)


def test_wrong_logit_shape_is_reported(tmp_path: Path) -> None:
    task = Classification(nn.Linear(3, 5), num_classes=3)
    with pytest.raises(ValueError, match=r"expected \(B, 3\)"):
        _trainer(tmp_path).test(task, DataLoader(_Clips([0], [0], set()), batch_size=1), verbose=False)


def test_pretrained_loads_matching_weights_and_skips_new_head(tmp_path: Path) -> None:
    src = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 10))
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "a.ckpt")
    dst = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))  # new classifier: 3 classes
    load_pretrained_weights(dst, str(tmp_path / "a.ckpt"))
    torch.testing.assert_close(dst[0].weight, src[0].weight)
    assert not torch.equal(dst[1].bias, src[1].bias[:3])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_pretrained_weights(dst, str(tmp_path / "missing.pth"))


class _Scores(Dataset):
    """Fixed random 8-class scores and labels: top-1, macro-F1 and top-5 accuracy all differ."""

    def __init__(self, n: int = 96) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=gen)
        self.y = torch.randint(0, 8, (n,), generator=gen)
        # the first batch is one class, all right (loaders in file order start like this): top-1 and top-5 statistics
        # coincide on it, which made torchmetrics' compute groups merge macro-F1 with top-5 accuracy for good
        self.y[:32] = 0
        self.x[:32] = 5.0 * torch.eye(8)[0]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.x[i], "target": self.y[i]}


def test_logged_validation_and_test_metrics_equal_their_definitions(tmp_path: Path) -> None:
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    data = _Scores()
    loader = DataLoader(data, batch_size=32)
    expected = {
        "acc": float(multiclass_accuracy(data.x, data.y, 8, average="micro")),
        "f1_macro": float(multiclass_f1_score(data.x, data.y, 8, average="macro")),
        "acc_top5": float(multiclass_accuracy(data.x, data.y, 8, top_k=5, average="micro")),
    }
    assert len({round(v, 6) for v in expected.values()}) == 3  # the three figures differ on this data
    identity = nn.Linear(8, 8)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(8))
        identity.bias.zero_()
    task = Classification(identity, optimizer=lambda params: torch.optim.SGD(params, lr=0.0), num_classes=8)
    trainer = _trainer(tmp_path, max_epochs=3)
    trainer.fit(task, loader, loader)  # validation after each epoch (and the sanity check) must not mix metrics
    for name, value in expected.items():
        assert float(trainer.callback_metrics[f"val/{name}"]) == pytest.approx(value, abs=1e-6), name
    trainer.validate(task, loader, verbose=False)
    for name, value in expected.items():
        assert float(trainer.callback_metrics[f"val/{name}"]) == pytest.approx(value, abs=1e-6), name
    trainer.test(task, loader, verbose=False)
    for name, value in expected.items():
        assert task.test_results[f"test/{name}"] == pytest.approx(value, abs=1e-6), name


def test_subjects_are_reported_in_numeric_order() -> None:
    from vidrec.tasks.classification import subject_order

    assert subject_order(["10", "2", "13", "1", "x", "-1"]) == ["-1", "1", "2", "10", "13", "x"]
