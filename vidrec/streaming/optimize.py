"""Inference-only rewrites of streamable models that keep every output equal to float rounding.

``fold_batchnorm`` returns a converted copy in which each eval-mode BatchNorm that directly follows a convolution
(a bare ``nn.Conv1d``/``nn.Conv3d`` or one wrapped in ``vidrec.layers.TemporalWindowOp``) is folded into that
convolution's weight and bias and replaced by ``nn.Identity``; dropout becomes ``nn.Identity`` too. BatchNorm is
per-channel affine in eval mode, so ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta``; the streaming geometry (receptive field, stride, state) is unchanged.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from vidrec.layers.temporal import TemporalSequential, TemporalWindowOp

__all__ = ["fold_batchnorm", "count_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _conv_of(module: nn.Module) -> tuple[nn.Module, str] | None:
    """``(owner, attribute)`` holding the convolution that ``module`` ends with, or None."""
    if isinstance(module, TemporalWindowOp) and isinstance(module.op, _CONV):
        return module, "op"
    return None


def _fold_in_sequence(children: nn.ModuleList | nn.Sequential) -> int:
    """Fold ``conv, bn`` pairs among consecutive children in place; returns the number folded."""
    folded = 0
    for i in range(len(children) - 1):
        bn = children[i + 1]
        if not isinstance(bn, _BN) or not bn.track_running_stats:
            continue
        prev = children[i]
        if isinstance(prev, _CONV):
            children[i] = fuse_conv_bn_eval(prev, bn)
        else:
            holder = _conv_of(prev)
            if holder is None:
                continue
            owner, attr = holder
            setattr(owner, attr, fuse_conv_bn_eval(getattr(owner, attr), bn))
        children[i + 1] = nn.Identity()
        folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with BatchNorm folded into the preceding convolutions.

    Args:
        model: Any module; only ``conv -> BatchNorm`` pairs that are consecutive children of an ``nn.Sequential``
            or of a ``TemporalSequential`` are folded (others are left as they are, still correct).

    Returns:
        The converted copy in eval mode; ``model`` itself is not modified.
    """
    folded_model = copy.deepcopy(model).eval()
    for module in list(folded_model.modules()):
        if isinstance(module, TemporalSequential):
            _fold_in_sequence(module.layers)
        elif isinstance(module, nn.Sequential):
            _fold_in_sequence(module)
    for module in list(folded_model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, _DROPOUT):
                setattr(module, child_name, nn.Identity())
    return folded_model


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm modules left in ``model`` (0 after a complete fold)."""
    return sum(isinstance(m, _BN) for m in model.modules())
