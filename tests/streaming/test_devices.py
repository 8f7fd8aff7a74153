"""``--device`` of ``vidrec stream`` / ``vidrec evaluate-streaming``: cpu and auto (no CUDA) give today's results
exactly, unusable devices and CPU-only engines are one line with exit status 2, and on CUDA (skipped without one)
the model, state, rings and chunks live on the GPU and the results match the CPU's to float rounding."""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.timeseries.datamodule import HDF5WindowDataModule
from datamodules.timeseries.schema import Recording, write_recordings
from datamodules.timeseries.settings import WindowSettings
from vidrec.cli import main
from vidrec.spec import DeploymentSpec
from vidrec.streaming import command as stream_command
from vidrec.streaming.devices import cpu_only, resolve_device

CLASSES = ["a", "b", "c"]
RATE = 50.0
TIMING_KEYS = {"ms_per_hop_streaming_batch1", "ms_per_window_offline_batch1", "streaming_ms_per_hop_batched"}
TIMING_KEYS |= {"offline_ms_per_window_batched"}


@dataclass
class _Loaded:
    """What ``load_classifier`` returns, for a model and spec the test makes itself."""

    model: nn.Module
    spec: DeploymentSpec
    class_names: tuple[str, ...] = tuple(CLASSES)
    path: str = "tiny.ckpt"

    def require_spec(self) -> DeploymentSpec:
        return self.spec


def _spec(tmp_path: Path) -> DeploymentSpec:
    """A time-series spec (window 32, eval hop 8, subjects 3 and 4 'test') over a tiny HDF5 file written here."""
    rng = np.random.default_rng(0)
    recordings = []
    for subject in range(1, 5):
        labels = np.repeat(rng.permutation([0, 1, 2, 0]), 40)  # (160,)
        samples = (rng.normal(size=(160, 3)) + labels[:, None]).astype(np.float32)
        split = "test" if subject >= 3 else "train"
        recordings.append(Recording(f"s{subject}", samples, labels, subject=subject, split=split))
    path = tmp_path / "tiny.h5"
    write_recordings(path, recordings, sampling_rate=RATE, channel_names=["x", "y", "z"], class_names=CLASSES)
    dm = HDF5WindowDataModule(str(path), windows=WindowSettings(window=32, hop=8, eval_hop=8))
    dm.setup("fit")
    return dm.deployment_spec()


@pytest.fixture
def loaded(tiny_model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Loaded:
    """A tiny checkpoint that ``vidrec stream`` / ``evaluate-streaming`` load (any --checkpoint)."""
    checkpoint = _Loaded(tiny_model, _spec(tmp_path))
    monkeypatch.setattr(stream_command, "load_classifier", lambda path: checkpoint)
    return checkpoint


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stream_command.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def _stdin_file(tmp_path: Path) -> Path:
    raw = np.random.default_rng(5).standard_normal((3, 120)).astype(np.float32)  # two streams, interleaved
    lines = [json.dumps({"stream": f"s{t % 2}", "t": t // 2 / RATE, "x": raw[:, t].tolist()}) for t in range(120)]
    path = tmp_path / "stdin.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stream(tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    args = _parse(["stream", "--checkpoint", "x.ckpt", "--input", str(_stdin_file(tmp_path)), *extra])
    out = io.StringIO()
    args.func(args, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    for row in rows:
        del row["latency_ms"]
    return rows


def _evaluate(tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    args = _parse(["evaluate-streaming", "--checkpoint", "x.ckpt", "--out", str(tmp_path / name), *extra])
    args.func(args)
    saved = json.loads((tmp_path / name / "streaming_eval.json").read_text())
    return {k: v for k, v in saved.items() if k not in TIMING_KEYS}


@pytest.mark.usefixtures("loaded", "no_cuda")
def test_cpu_and_auto_without_cuda_stream_and_evaluate_exactly_as_the_default(tmp_path: Path) -> None:
    default = _stream(tmp_path)
    assert len(default) == 8  # 2 streams x 60 samples: windows of 32 ending at 32, 40, 48, 56 (the eval hop, 8)
    assert _stream(tmp_path, "--device", "cpu") == default
    assert _stream(tmp_path, "--device", "auto") == default

    report = _evaluate(tmp_path, "default")
    assert report["device"] == "cpu" and report["argmax_agreement"] == 1.0
    assert _evaluate(tmp_path, "auto", "--device", "auto") == report


def test_device_values_resolve_or_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device gpu: expected cpu, cuda, cuda:N or auto$"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"^--precision fp16 runs on CUDA only \(--device cpu is the CPU\)"):
        resolve_device("cpu", precision="fp16")
    for backend in ("numpy", "onnxruntime"):  # refused whatever the machine has
        with pytest.raises(
            ValueError,
            match=rf"^--device cuda: the {backend} backend runs on the CPU only; the "
            "backends that run on CUDA are compiled and eager \\(--backend\\)$",
        ):
            resolve_device("cuda", backend)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device cuda:0: CUDA is not available: "):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", "numpy") == torch.device("cpu")  # the CPU engines stay on the CPU
    with pytest.raises(ValueError, match=r"^--device cuda:1: this machine has 1 CUDA device \(cuda:0\)$"):
        resolve_device("cuda:1")


def test_a_cpu_only_path_takes_auto_as_the_cpu_and_refuses_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    what = "feature-head checkpoints stream on the CPU only"
    assert cpu_only(argparse.Namespace(device="auto"), what) == torch.device("cpu")
    assert cpu_only(argparse.Namespace(), what) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ValueError,
        match=r"^--device cuda:0: feature-head checkpoints stream on the CPU only; use --device cpu \(or auto\)$",
    ):
        cpu_only(argparse.Namespace(device="cuda:0"), what)


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stream", "--device", "cuda"], "--device cuda: CUDA is not available: "),
        (["evaluate-streaming", "--out", "eval", "--device", "cuda:0"], "--device cuda:0: CUDA is not available: "),
        (["stream", "--backend", "numpy", "--device", "cuda"], "--device cuda: the numpy backend runs on the CPU"),
        (["stream", "--precision", "fp16"], "--precision fp16 runs on CUDA only"),
    ],
)
def test_an_unusable_device_is_one_line_and_status_2_before_the_checkpoint_is_read(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.ckpt")  # never opened: the device is checked first
    assert main([argv[0], "--checkpoint", missing, *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.usefixtures("exact_cuda")
def test_cuda_streams_and_evaluates_on_the_gpu_and_matches_the_cpu(loaded: _Loaded, tmp_path: Path) -> None:
    runtime = stream_command.build_runtime(loaded, 8, capacity=2, device="cuda")
    engine: Any = runtime.engine
    assert runtime.describe().device.startswith("cuda") and engine.rings is not None
    tensors = [*runtime.model.parameters(), *runtime.flat_state(), *engine.rings.rings, *engine.rings._bufs]
    assert tensors and all(t.device.type == "cuda" for t in tensors)
    x = np.random.default_rng(1).standard_normal((2, 3, 48)).astype(np.float32)
    cuda_logits, cuda_ready = runtime.run(x)
    cpu_logits, cpu_ready = stream_command.build_runtime(loaded, 8, capacity=2).run(x)
    assert cuda_logits.device.type == "cpu" and (cuda_ready == cpu_ready).all()
    torch.testing.assert_close(cuda_logits, cpu_logits, atol=1e-4, rtol=1e-4)

    cpu_rows, cuda_rows = _stream(tmp_path), _stream(tmp_path, "--device", "cuda")
    assert [r["class"] for r in cuda_rows] == [r["class"] for r in cpu_rows]
    np.testing.assert_allclose([r["prob"] for r in cuda_rows], [r["prob"] for r in cpu_rows], atol=1e-4)

    cpu, gpu = _evaluate(tmp_path, "cpu"), _evaluate(tmp_path, "cuda", "--device", "cuda")
    assert gpu["device"].startswith("cuda:") and gpu["max_abs_logit_delta"] < 1e-4
    assert gpu["offline"]["accuracy"] == cpu["offline"]["accuracy"] == gpu["streaming"]["accuracy"]

    half = stream_command.build_runtime(loaded, 8, capacity=2, precision="fp16", device="cuda")
    half_logits, _ = half.run(x)
    assert half_logits.dtype == torch.float32
    assert float((half_logits - cpu_logits)[torch.from_numpy(cpu_ready)].abs().max()) < 0.25  # rounded, not broken
