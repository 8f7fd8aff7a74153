"""Where streaming runs: the ``--device`` option of ``vidrec stream`` and ``vidrec evaluate-streaming``.

``--device`` takes ``cpu`` (the default), ``cuda`` (the current CUDA device), ``cuda:N`` or ``auto`` (CUDA when this
machine has a device and the run can use it, else the CPU). The model, its streaming state and ring buffers and
every chunk live on that device; logits come back to the CPU for printing and scoring (``StreamingClassifier``).

Everything that cannot hold is refused before a checkpoint is read, with one line naming the flag and its value:

* a device this machine does not have (no CUDA, or ``cuda:N`` beyond its device count);
* an engine that runs on the CPU only (``numpy``, ``onnxruntime``) with a CUDA device; ``auto`` picks the CPU for them;
* a precision the device does not run: ``fp16`` is a CUDA precision (the CPU steps of vidrec run ``fp32`` or
  ``bf16``), and ``bf16`` on CUDA needs a device with bfloat16 support.

A path that streams on the CPU only (feature heads, whose backbone encoders run on the CPU) calls ``cpu_only``:
``auto`` then means the CPU, and an explicit CUDA device is refused with the reason.
"""

from __future__ import annotations

import argparse
import re

import torch

from vidrec.streaming.engines import StepBackend

__all__ = ["CUDA_BACKENDS", "DEVICE_HELP", "add_device_argument", "cpu_only", "resolve_device", "run_device"]

CUDA_BACKENDS = (StepBackend.COMPILED, StepBackend.EAGER)  # the engines that run on CUDA

DEVICE_HELP = (
    "where the model, its streaming state and each chunk live: cpu, cuda (the current CUDA device), cuda:N, or auto "
    "(cuda when available and the backend runs there, else cpu); results come back to the CPU"
)

_CUDA = re.compile(r"cuda(?::(\d+))?")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--device`` (default ``cpu``) to a streaming subcommand's parser."""
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch build has no CUDA support (torch {torch.__version__})"
    return "no CUDA device was found (check the driver and CUDA_VISIBLE_DEVICES)"


def resolve_device(
    value: str | torch.device, backend: StepBackend | str = StepBackend.COMPILED, precision: str = "fp32"
) -> torch.device:
    """The ``torch.device`` of a ``--device`` value for a run with ``backend`` and ``precision``.

    Args:
        value: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (or a ``torch.device``).
        backend: The streaming engine (``--backend``); ``numpy`` and ``onnxruntime`` run on the CPU only.
        precision: ``--precision`` (``fp32``, ``bf16``, ``fp16``).

    Returns:
        ``cpu`` or ``cuda:N`` (``cuda`` resolves to the current CUDA device's index, as reports record it).

    Raises:
        ValueError: an unknown value, a device this machine lacks, a CPU-only backend on CUDA, or a precision the
            device does not run; the message names the flag and its value.
    """
    text = str(value).strip().lower()
    kind = StepBackend.parse(backend)
    cuda_backend = kind in CUDA_BACKENDS
    if text == "auto":
        device = torch.device("cuda" if cuda_backend and torch.cuda.is_available() else "cpu")
    elif text == "cpu":
        device = torch.device("cpu")
    else:
        match = _CUDA.fullmatch(text)
        if match is None:
            raise ValueError(f"--device {value}: expected cpu, cuda, cuda:N or auto")
        if not cuda_backend:
            names = " and ".join(b.value for b in CUDA_BACKENDS)
            raise ValueError(
                f"--device {value}: the {kind.value} backend runs on the CPU only; the backends that run on CUDA "
                f"are {names} (--backend)"
            )
        if not torch.cuda.is_available():
            raise ValueError(f"--device {value}: CUDA is not available: {_no_cuda_reason()}; use --device cpu")
        count = torch.cuda.device_count()
        index = int(match.group(1)) if match.group(1) is not None else None
        if index is not None and index >= count:
            listed = ", ".join(f"cuda:{i}" for i in range(count))
            raise ValueError(
                f"--device {value}: this machine has {count} CUDA device{'s' if count != 1 else ''} ({listed})"
            )
        device = torch.device("cuda" if index is None else f"cuda:{index}")
    if device.type == "cuda" and device.index is None:  # reports name the device: cuda:N
        device = torch.device("cuda", torch.cuda.current_device())
    _check_precision(precision, device, value)
    return device


def _check_precision(precision: str, device: torch.device, value: str | torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"--precision fp16 runs on CUDA only (--device {value} is the CPU); on the CPU use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"--precision bf16: {device} ({name}) has no bfloat16 support; use fp16 or fp32")


def run_device(args: argparse.Namespace) -> torch.device:
    """The device of a parsed ``vidrec stream`` / ``evaluate-streaming`` command (``--device``, ``--backend``,
    ``--precision``; namespaces without them get the defaults: cpu, compiled, fp32). See ``resolve_device``."""
    return resolve_device(
        getattr(args, "device", "cpu"), getattr(args, "backend", "compiled"), getattr(args, "precision", "fp32")
    )


def cpu_only(args: argparse.Namespace, what: str) -> torch.device:
    """The CPU for a path that streams on the CPU only (``what`` says which and why, as the refusal's reason):
    ``auto`` means the CPU there, and an explicit CUDA ``--device`` is refused.

    Raises:
        ValueError: ``--device`` names a CUDA device.
    """
    value = str(getattr(args, "device", "cpu")).strip().lower()
    if value not in ("cpu", "auto"):
        run_device(args)  # a device this machine lacks is reported as such first
        raise ValueError(f"--device {value}: {what}; use --device cpu (or auto)")
    return torch.device("cpu")
