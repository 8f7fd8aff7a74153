"""Inference-only rewrites of streamable models that keep every output equal to float rounding.

``fold_batchnorm`` returns a converted copy in which each eval-mode BatchNorm that directly follows a convolution
(a bare ``nn.Conv1d``/``nn.Conv3d`` or one wrapped in ``vidrec.layers.TemporalWindowOp``) is folded into that
convolution's weight and bias and replaced by ``nn.Identity``; dropout becomes ``nn.Identity`` too. BatchNorm is
per-channel affine in eval mode, so ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and
``b' = (b - m) * g / sqrt(v + eps) + beta``; the streaming geometry (receptive field, stride, state) is unchanged.

``fold_linear_head`` moves a time series classifier's final linear layer in front of its temporal average pool:
``W mean_t(f_t) + b = mean_t(W f_t + b)``, so the streaming pool buffers ``K`` logits per position instead of ``C``
features. The pool buffer is the largest state of a 1D model (``positions x C``: 88 x 128 floats per stream for
``resnet1d_har``); with the head folded it holds 88 x 6, which cuts the memory each streaming step moves about in half.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from vidrec.layers.conv2plus1d import NamedTemporalSequential
from vidrec.layers.lowering import batchnorm_fold_for
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalSequential

__all__ = ["fold_batchnorm", "count_batchnorm", "fold_linear_head"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _sequence_of(module: nn.Module) -> nn.Module | None:
    """The container of ``module``'s children that run in order, or None.

    A layer's own rule (``vidrec.layers.lowering.register_batchnorm_fold``, e.g. ``TemporalSequential``) wins;
    ``nn.Sequential`` and ``NamedTemporalSequential`` (``Conv2Plus1d`` and the video blocks) are sequences of their
    own children.
    """
    rule = batchnorm_fold_for(module)
    if rule is not None:
        return rule.sequence(module) if rule.sequence is not None else None
    if isinstance(module, (NamedTemporalSequential, nn.Sequential)):
        return module
    return None


def _conv_of(module: nn.Module) -> tuple[nn.Module, str] | None:
    """``(owner, attribute)`` holding the convolution that ``module``'s output comes from, or None.

    Asks the layer's registered rule (``TemporalWindowOp``: its ``op``), else looks through wrappers with an
    ``op`` (``SameTemporalConv``), else into the last child of a sequence (``_sequence_of``).
    """
    rule = batchnorm_fold_for(module)
    if rule is not None and rule.output is not None:
        return rule.output(module)
    op = getattr(module, "op", None)
    if rule is None and isinstance(op, _CONV):
        return module, "op"
    sequence = _sequence_of(module)
    if sequence is None:
        return None
    children = list(sequence.named_children())
    if not children:
        return None
    name, last = children[-1]
    if isinstance(last, _CONV):
        return sequence, name
    return _conv_of(last)


def _fuse(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """``fuse_conv_bn_eval`` keeping the convolution's class and the memory format of its weight."""
    weight = cast(Tensor, conv.weight)
    channels_last = weight.dim() == 5 and weight.is_contiguous(memory_format=torch.channels_last_3d)
    fused = fuse_conv_bn_eval(conv, bn)  # type: ignore[arg-type,type-var]
    fused_weight = cast(Tensor, fused.weight)
    if channels_last and not fused_weight.is_contiguous(memory_format=torch.channels_last_3d):
        fused_weight.data = fused_weight.data.contiguous(memory_format=torch.channels_last_3d)
    return fused


def _fold_in_sequence(container: nn.Module) -> int:
    """Fold ``conv, bn`` pairs among consecutive children of ``container`` in place; returns the number folded."""
    folded = 0
    children = list(container.named_children())
    for (prev_name, prev), (bn_name, bn) in zip(children, children[1:]):
        if not isinstance(bn, _BN) or not bn.track_running_stats or bn.running_var is None:
            continue
        holder = (container, prev_name) if isinstance(prev, _CONV) else _conv_of(prev)
        if holder is None:
            continue
        owner, attr = holder
        setattr(owner, attr, _fuse(getattr(owner, attr), bn))
        setattr(container, bn_name, nn.Identity())
        folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with BatchNorm folded into the preceding convolutions.

    Args:
        model: Any module; ``conv -> BatchNorm`` pairs that are consecutive children of a sequence (a layer with a
            registered ``sequence`` rule such as ``TemporalSequential``, an ``nn.Sequential`` or a
            ``NamedTemporalSequential``) are folded, also when the convolution is the output of the preceding child
            (its registered ``output`` rule, e.g. ``TemporalWindowOp``'s ``op``, a wrapper with an ``op``, or the last
            layer of a sequence such as the temporal conv of a ``Conv2Plus1d``); others are left as they are, still
            correct.

    Returns:
        The converted copy in eval mode; ``model`` itself is not modified.
    """
    folded_model = copy.deepcopy(model).eval()
    for module in list(folded_model.modules()):
        sequence = _sequence_of(module)  # sequential containers only
        if sequence is not None:
            _fold_in_sequence(sequence)
    for module in list(folded_model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, _DROPOUT):
                setattr(module, child_name, nn.Identity())
    return folded_model


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm modules left in ``model`` (0 after a complete fold)."""
    return sum(isinstance(m, _BN) for m in model.modules())


def _single_linear(classifier: nn.Module) -> nn.Linear | None:
    """The one ``nn.Linear`` of a head made of it and identity/dropout modules only, else None."""
    if isinstance(classifier, nn.Linear):
        return classifier
    if not isinstance(classifier, nn.Sequential):
        return None
    rest = [m for m in classifier if not isinstance(m, (nn.Identity, *_DROPOUT))]
    return rest[0] if len(rest) == 1 and isinstance(rest[0], nn.Linear) else None


def fold_linear_head(model: nn.Module) -> bool:
    """Move the linear classifier of a 1D streamable classifier before its average pool, in place.

    ``model.features`` becomes ``TemporalSequential(features, Conv1d(C, K, 1))`` with the linear layer's weights and
    ``model.classifier`` becomes ``nn.Identity``; logits are unchanged to float rounding (eval mode: dropout is the
    identity). Applies only to time series models (``(B, C, T)`` features, no 2D/3D convolutions) whose ``pool`` is a
    ``TemporalAvgPoolHead`` and whose classifier is one ``nn.Linear`` (with dropout/identity around it) with fewer
    outputs than inputs; otherwise the model is left as it is.

    Args:
        model: An eval-mode model (for example the copy returned by ``fold_batchnorm``); it is modified.

    Returns:
        True when the head was folded.
    """
    if model.training or not isinstance(getattr(model, "pool", None), TemporalAvgPoolHead):
        return False
    if any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in model.modules()):
        return False
    linear = _single_linear(getattr(model, "classifier", nn.Identity()))
    features = getattr(model, "features", None)
    if linear is None or not isinstance(features, nn.Module) or linear.out_features >= linear.in_features:
        return False
    conv = nn.Conv1d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    conv = conv.to(dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None])  # (K, C) -> (K, C, 1)
        if linear.bias is not None and conv.bias is not None:
            conv.bias.copy_(linear.bias)
    model.features = TemporalSequential(features, conv.eval())
    model.classifier = nn.Identity()
    return True
