"""Temporal max pooling that streams: valid and right-aligned like every vidrec temporal layer.

The maximum over windows of ``kernel`` steps every ``stride`` steps of ``(B, C, T)`` (or ``(B, C, T, H, W)``, the
maximum over time only). Offline it is ``nn.MaxPool1d`` (no padding) on the right-aligned input; streaming keeps the
last ``kernel - stride`` inputs (``TemporalWindowOp``). Its lowering for the code generators of the streaming engines
is the ``window_max`` primitive of ``vidrec.layers.lowering``, registered here.

::

    x (B, C, T) ─► right-align ─► max over [t - k + 1, t] every s steps ─► (B, C, (T - k) // s + 1)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vidrec.layers.lowering import LoweringBuilder, register_lowering
from vidrec.layers.temporal import TemporalWindowOp

__all__ = ["TemporalMaxPool1d"]


class _MaxOverTime(nn.Module):
    """``amax`` over windows of axis 2: ``(B, C, L, ...) -> (B, C, (L - k) // s + 1, ...)``."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, L, ...) -> (B, C, n_out, ..., k) windows -> max over the window
        return x.unfold(2, self.kernel_size, self.stride).amax(dim=-1)


class TemporalMaxPool1d(TemporalWindowOp):
    """Streamable temporal max pool of ``kernel_size`` steps with ``stride`` (default: ``kernel_size``).

    Args:
        kernel_size: Steps per window (>= 1).
        stride: Steps between windows (>= 1); the streaming hop must be a multiple of it.
    """

    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        stride = kernel_size if stride is None else stride
        super().__init__(_MaxOverTime(kernel_size, stride), receptive_field=kernel_size, stride=stride)
        self.kernel_size = kernel_size

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


@register_lowering(TemporalMaxPool1d)
def _lower_max_pool(b: LoweringBuilder[Any], m: TemporalMaxPool1d, x: Any) -> Any:
    return b.window_max(m, x, m.kernel_size, m.stride)
