"""Precise BatchNorm: statistics recomputed exactly, everything else restored, invisible to the run's RNG.

vidrec.cli and the task are imported inside the tests that need them: the DDP test's workers import this module.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidrec.tasks.precise_bn import PreciseBatchNorm, batchnorm_layers, recompute_batchnorm_statistics

ROOT = Path(__file__).resolve().parents[2]


class _Branch(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, channels, 3)
        self.bn = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T) -> (B, 2)
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))).mean(-1))


class _Pair(nn.Module):
    """Two branches side by side, as an ensemble of subnets; ``unused`` is on no forward path."""

    def __init__(self) -> None:
        super().__init__()
        self.subnets = nn.ModuleDict({"a": _Branch(4), "b": _Branch(5)})
        self.unused = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.subnets["a"](x) + self.subnets["b"](x)


def _batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"inputs": 3.0 + 2.0 * torch.randn(6, 3, 10, generator=g), "target": torch.randint(0, 2, (6,), generator=g)}
        for _ in range(n)
    ]


def test_statistics_are_the_plain_average_of_the_batch_statistics() -> None:
    torch.manual_seed(0)
    model = _Pair()
    batches = _batches(5)
    assert recompute_batchnorm_statistics(model, batches, num_batches=3) == 3  # only the first 3 batches
    for name in ("a", "b"):
        branch = model.subnets[name]
        with torch.no_grad():
            x = [branch.conv(b["inputs"]) for b in batches[:3]]  # (B, C, T') per batch
        mean = torch.stack([t.mean((0, 2)) for t in x]).mean(0)
        var = torch.stack([t.var((0, 2), unbiased=True) for t in x]).mean(0)  # BatchNorm's running var is unbiased
        torch.testing.assert_close(branch.bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(branch.bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.unused.running_mean, torch.zeros(2))  # reached by no batch: kept
    assert torch.equal(model.unused.running_var, torch.ones(2))


def test_momentum_counts_and_training_flags_are_restored_and_dropout_is_off() -> None:
    torch.manual_seed(0)
    model = _Pair().train()
    model.subnets["b"].eval()  # a frozen part stays frozen
    model.subnets["a"].bn.momentum = 0.3
    model.subnets["a"].bn.num_batches_tracked.fill_(17)
    flags = {name: m.training for name, m in model.named_modules()}
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}
    seen_training: list[bool] = []
    model.subnets["a"].drop.register_forward_hook(lambda m, i, o: seen_training.append(m.training))
    rng = torch.get_rng_state()
    recompute_batchnorm_statistics(model, _batches(2), num_batches=50)
    assert seen_training == [False, False]  # dropout off during the pass
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert model.subnets["a"].bn.momentum == 0.3 and model.subnets["b"].bn.momentum == 0.1
    assert int(model.subnets["a"].bn.num_batches_tracked) == 17
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())  # only running statistics change
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_model_without_batchnorm_is_not_run() -> None:
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU())
    before = copy.deepcopy(model.state_dict())
    calls: list[int] = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    assert batchnorm_layers(model) == []
    assert recompute_batchnorm_statistics(model, _batches(3), num_batches=3) == 0
    assert calls == [] and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Listed(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.items = [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["target"]))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def _fit(tmp_path: Path, callbacks: list[L.Callback]) -> tuple[Any, tuple[object, ...]]:
    from vidrec.tasks import Classification

    L.seed_everything(0)
    task = Classification(_Pair(), num_classes=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    train = DataLoader(_Listed(_batches(4)), batch_size=6, shuffle=True)
    val = DataLoader(_Listed(_batches(1, seed=1)), batch_size=6)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(task, train, val)
    return task, (bytes(torch.get_rng_state().numpy()), np.random.get_state()[1].tobytes(), random.getstate())


def test_in_a_fit_the_statistics_are_those_of_the_final_weights_and_the_rng_is_untouched(tmp_path: Path) -> None:
    plain, plain_rng = _fit(tmp_path, [])
    precise, precise_rng = _fit(tmp_path, [PreciseBatchNorm(num_batches=50)])  # the whole epoch: 4 batches
    assert plain_rng == precise_rng  # the pass draws nothing from the fit's generators
    # the last validation came after the last step: the statistics are an average with the final weights
    reference = copy.deepcopy(precise.model)
    recompute_batchnorm_statistics(reference, DataLoader(_Listed(_batches(4)), batch_size=6), num_batches=4)
    for name in ("a", "b"):
        bn, ref = precise.model.subnets[name].bn, reference.subnets[name].bn
        torch.testing.assert_close(bn.running_mean, ref.running_mean)  # same samples in other batches: same mean
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0.1, atol=0.0)  # other batch variances
    plain_reference = copy.deepcopy(plain.model)  # without the callback the momentum average lags the weights
    recompute_batchnorm_statistics(plain_reference, DataLoader(_Listed(_batches(4)), batch_size=6), num_batches=4)
    lagging, fresh = plain.model.subnets["a"].bn.running_mean, plain_reference.subnets["a"].bn.running_mean
    assert not torch.allclose(lagging, fresh, rtol=0.05)


def test_the_skeleton_config_with_the_callback_parses(capsys: pytest.CaptureFixture[str]) -> None:
    from vidrec.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(ROOT / "configs/skeleton/synthetic_ensemble.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    assert "class_path: vidrec.tasks.precise_bn.PreciseBatchNorm" in capsys.readouterr().out


def test_num_batches_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        PreciseBatchNorm(num_batches=0)


def _rank_pass(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = _Pair()
    recompute_batchnorm_statistics(model, _batches(4)[rank::world], num_batches=50)  # rank r: batches r, r + 2
    if rank == 0:
        torch.save({k: v for k, v in model.state_dict().items() if "running" in k}, out)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes on the gloo backend (~5 s)
def test_under_ddp_the_ranks_statistics_are_those_of_all_their_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import torch.multiprocessing as mp

    # spawned ranks unpickle _rank_pass from this module: they inherit sys.path, which must reach the repository root
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_pass, args=(2, port, str(tmp_path / "rank0.pt")), nprocs=2, join=True)
    torch.manual_seed(0)
    single = _Pair()
    recompute_batchnorm_statistics(single, _batches(4), num_batches=50)
    combined = torch.load(tmp_path / "rank0.pt", weights_only=True)
    for k, v in combined.items():
        torch.testing.assert_close(v, single.state_dict()[k], rtol=1e-5, atol=1e-6)
