"""Shared helpers for the streaming tests: tiny models with non-trivial BatchNorm statistics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from vidrec.models import build_model


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (so folding is really tested)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny per-hop steps run fastest (and most predictably on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model() -> nn.Module:
    """resnet1d_tiny with 3 channels and 3 classes (receptive field 31), eval mode."""
    torch.manual_seed(0)
    return randomize_batchnorm(build_model("resnet1d_tiny", in_channels=3, num_classes=3))


@pytest.fixture
def exact_cuda() -> Iterator[None]:
    """cuDNN convolutions in full float32 (CUDA's default rounds them to TF32), so CUDA steps compare at 1e-4."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield
