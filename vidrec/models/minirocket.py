"""MiniRocket as a streamable vidrec window classifier.

"MiniRocket: A Very Fast (Almost) Deterministic Transform for Time Series Classification", Dempster, Schmidt and
Webb, KDD 2021. One layer of fixed dilated convolutions (84 kernels of length 9, weights -1 and 2), a bias
threshold per feature fitted as quantiles of the convolution outputs of training windows, "proportion of positive
values" (PPV) pooling, and a ridge classifier. The multivariate version sums each kernel over a random subset of
the channels (at most 9).

PPV is an average over time of a step function, and the ridge classifier is linear, so the classifier commutes with
the pooling: vidrec applies it to every position (a 1x1 convolution over the F step features) and averages K logits
over time. With valid convolutions this fits the streaming contract (``features -> TemporalAvgPoolHead ->
classifier``) exactly, and each new sample costs one output per kernel and dilation, F comparisons and K x F MACs.

::

    x (B, C, L)
      ├─► conv dilation d_1 (C -> 84, k 9, valid) ─► right-crop to P ─► repeat n_1 ─► (y > b_1) ─┐
      ├─► ...                                                                                     ├─► concat (B, F, P)
      └─► conv dilation d_J (C -> 84, k 9, valid) ─► right-crop to P ─► repeat n_J ─► (y > b_J) ─┘
      ─► 1x1 conv F -> K (ridge weights, standardisation folded in) ─► mean over P ─► logits (B, K)

``P = L - 8 d_J`` positions: the largest dilation's valid output. MiniRocket zero-pads half of its features (a
centred "same" convolution) and pools each dilation over its own valid length otherwise; neither is streamable
as it is. vidrec's way to keep ``P = window`` positions for every feature is real left context: with
``context = 8 d_J`` (the datamodule's ``context``, edge-filled at recording starts) each feature is the PPV of
the ``window`` outputs that end on the window's samples. :meth:`MiniRocketFeatures.ppv` also computes the offline
per-dilation variant (MiniRocket's unpadded features), for comparisons.

Two streamable additions (``minirocket_har(level_combinations=..., difference=True)``). The kernels sum to zero,
so no valid convolution output sees a channel's level, and on IMU data the level is the gravity direction that
tells sitting from standing (aeon's zero-padded half sees it at the window's edges, which a stream has not got).
*Level features* compare the sum of a random channel subset with thresholds at every sample: an average over time
of steps like PPV, pooled by the same heads (PER_DILATION: over the whole window). The *first-difference branch*
is MultiRocket's second representation: a MiniRocket of another seed on ``x[t] - x[t-1]`` (``L - 1`` samples per
window), streamed with one raw sample of state. One ridge classifier is fitted over all features.

Exactness: PPV counts outputs above thresholds, a step function, so a rounding difference in an output that lies
on a threshold flips a count and moves a logit by ``|w_f| / P``. Sensor data are quantised (HAPT's accelerometer
in steps of 1/720 g, its gyroscope in steps of ~3e-4 rad/s), so convolution outputs fall on a lattice and exact
ties with the quantile thresholds are common; float32 convolutions summed in different orders (offline conv1d vs
the streaming matmul) then disagree on real data although they agree on random walks. vidrec therefore computes the
convolutions in float64 on both paths: the weights are -1 and 2, so every product of a float32 input is exact, and
the sum of the 9 x C products is exact (independent of order) whenever the nonzero inputs of a window span less than
2^21 in magnitude (53-bit mantissa, 24-bit inputs, at most 8 bits of growth). Offline and streaming then count the
same thresholds, and they differ only by the float rounding of the (continuous) ridge sums.

Fitting is closed-form, not gradient descent: :meth:`MiniRocket.fit_closed_form` fits the thresholds and a ridge
classifier whose penalty is chosen by efficient leave-one-out error on the training windows (as scikit-learn's
``RidgeClassifierCV``); ``vidrec fit`` calls it (see :class:`vidrec.tasks.Classification`).
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass
from itertools import combinations
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalModule, TemporalSequential, TemporalWindowOp
from vidrec.models._base import StreamableClassifier
from vidrec.models._registry import register_model

__all__ = [
    "KERNEL_INDICES",
    "minirocket_dilations",
    "PPVCrop",
    "canonical_order",
    "RidgeFit",
    "fit_ridge",
    "MiniRocketFeatures",
    "LastPositionsAvgPoolHead",
    "MiniRocket",
    "minirocket_har",
]

log = logging.getLogger(__name__)

KERNEL_LENGTH = 9
# the positions of the three weights 2 in each of the 84 kernels (the other six are -1), MiniRocket's order
KERNEL_INDICES: list[tuple[int, int, int]] = list(combinations(range(KERNEL_LENGTH), 3))
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 3, 10))  # aeon's RidgeClassifierCV grid


def minirocket_dilations(length: int, num_features: int, max_dilations_per_kernel: int) -> tuple[list[int], list[int]]:
    """MiniRocket's dilations for series of ``length`` and the number of features (biases) per kernel at each.

    Exponentially spaced dilations up to ``(length - 1) / 8`` (the kernel spans the series), as the reference code.
    """
    per_kernel = num_features // len(KERNEL_INDICES)
    true_max = min(per_kernel, max_dilations_per_kernel)
    multiplier = per_kernel / true_max
    max_exponent = math.log2((length - 1) / (KERNEL_LENGTH - 1))
    dilations, counts = np.unique(np.logspace(0, max_exponent, true_max, base=2).astype(np.int32), return_counts=True)
    per_dilation = (counts * multiplier).astype(np.int32)
    remainder = per_kernel - int(per_dilation.sum())
    i = 0
    while remainder > 0:
        per_dilation[i] += 1
        remainder -= 1
        i = (i + 1) % len(per_dilation)
    return [int(d) for d in dilations], [int(n) for n in per_dilation]


def _quantiles(n: int) -> Tensor:
    """MiniRocket's low-discrepancy quantiles: the fractional parts of ``i * golden ratio``, i = 1..n."""
    golden = (math.sqrt(5) + 1) / 2
    return torch.tensor([(i * golden) % 1 for i in range(1, n + 1)], dtype=torch.float32)


def _sorted_last(x: Tensor) -> Tensor:
    """``x`` sorted along its last axis (NumPy's sort on CPU: ~10x torch.sort on many short rows here)."""
    if x.device.type == "cpu" and not x.requires_grad:
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return x.sort(dim=-1).values.contiguous()


class PPVCrop(enum.Enum):
    """Which convolution outputs a PPV feature averages."""

    COMMON = "common"  # the last P outputs of every dilation, P = the largest dilation's valid length (streamable)
    PER_DILATION = "per_dilation"  # each dilation's whole valid output (MiniRocket's unpadded features; offline)


class MiniRocketFeatures(TemporalModule):
    """MiniRocket's convolutions and thresholds: ``(B, C, L) -> (B, F, P)`` step features (0. or 1.).

    Buffers: ``kernels`` (84, 9), ``biases`` (F,) thresholds in feature order (dilation, kernel, quantile).

    Args:
        in_channels: Input channels C.
        window: Series length the dilations are chosen for (the labelled window, not counting context).
        num_features: Requested features; ``84 * (num_features // 84)`` are made.
        max_dilations_per_kernel: MiniRocket's cap on the number of dilations.
        seed: Seed of the channel subsets (the thresholds are fitted with :meth:`fit_biases`).
        level_combinations: Level features: random channel subsets (as the kernels' subsets) whose summed signal
            is compared with thresholds at every sample, so the features see a channel's level (0: none).
        level_thresholds: Thresholds per level subset.
    """

    kernels: Tensor
    biases: Tensor
    repeat_index: Tensor
    level_masks: Tensor | None  # (M, C) 0/1 channel subsets of the level features
    level_biases: Tensor | None  # (M * level_thresholds,) thresholds, subset-major

    def __init__(
        self,
        in_channels: int,
        window: int,
        *,
        num_features: int = 10_000,
        max_dilations_per_kernel: int = 32,
        seed: int = 0,
        level_combinations: int = 0,
        level_thresholds: int = 12,
    ) -> None:
        super().__init__()
        if level_combinations < 0 or (level_combinations and level_thresholds < 1):
            raise ValueError(
                f"MiniRocketFeatures: level_combinations must be >= 0 and level_thresholds >= 1, got "
                f"{level_combinations}, {level_thresholds}"
            )
        if in_channels < 1 or window < KERNEL_LENGTH or num_features < len(KERNEL_INDICES):
            raise ValueError(
                f"MiniRocketFeatures: need in_channels >= 1, window >= {KERNEL_LENGTH} and num_features >= 84, got "
                f"{in_channels}, {window}, {num_features}"
            )
        self.in_channels = in_channels
        self.dilations, self.features_per_dilation = minirocket_dilations(
            window, num_features, max_dilations_per_kernel
        )
        k = len(KERNEL_INDICES)
        self.num_conv_features = k * sum(self.features_per_dilation)
        self.level_combinations = int(level_combinations)
        self.level_thresholds = int(level_thresholds) if level_combinations else 0
        self.num_level_features = self.level_combinations * self.level_thresholds
        self.num_features = self.num_conv_features + self.num_level_features
        base = torch.full((k, KERNEL_LENGTH), -1.0)
        for i, idx in enumerate(KERNEL_INDICES):
            base[i, list(idx)] = 2.0
        self.register_buffer("kernels", base)  # (84, 9)
        masks = self._channel_masks(in_channels, len(self.dilations) * k, seed)  # (J * 84, C)
        self.convs = nn.ModuleList()
        for d in self.dilations:
            conv = nn.Conv1d(in_channels, k, KERNEL_LENGTH, dilation=d, bias=False)
            conv.weight.requires_grad_(False)
            self.convs.append(TemporalWindowOp(conv, receptive_field=d * (KERNEL_LENGTH - 1) + 1))
        self.set_channel_masks(masks)
        self.register_buffer("biases", torch.zeros(self.num_conv_features))  # (F_conv,), fitted by fit_biases
        if self.level_combinations:  # another seed: the level subsets are not the first kernels' subsets
            level_masks = self._channel_masks(in_channels, self.level_combinations, seed + 7919)
            self.register_buffer("level_masks", level_masks)
            self.register_buffer("level_biases", torch.zeros(self.num_level_features))
        else:  # no buffers at all: checkpoints of models without level features load unchanged
            self.register_buffer("level_masks", None)
            self.register_buffer("level_biases", None)
        # feature f thresholds kernel repeat_index[f] of its dilation's conv output
        self.register_buffer(
            "repeat_index",
            torch.cat([torch.arange(k).repeat_interleave(n) for n in self.features_per_dilation]),
            persistent=False,
        )
        self.receptive_field = max(self.dilations) * (KERNEL_LENGTH - 1) + 1
        self.stride = 1

    @staticmethod
    def _channel_masks(channels: int, combinations_: int, seed: int) -> Tensor:
        """MiniRocket's random channel subsets: ``floor(2 ** U(0, log2(min(C, 9) + 1)))`` channels per kernel."""
        rng = np.random.default_rng(seed)
        counts = (2 ** rng.uniform(0, math.log2(min(channels, 9) + 1), combinations_)).astype(np.int64)
        masks = torch.zeros(combinations_, channels)
        for i, n in enumerate(counts):
            masks[i, rng.choice(channels, int(n), replace=False)] = 1.0
        return masks

    def set_channel_masks(self, masks: Tensor) -> None:
        """Set the channel subset of every (dilation, kernel): ``masks`` (J * 84, C) of 0/1, dilation-major."""
        k = len(KERNEL_INDICES)
        if masks.shape != (len(self.dilations) * k, self.in_channels):
            raise ValueError(
                f"channel masks of shape {tuple(masks.shape)}, expected {(len(self.dilations) * k, self.in_channels)}"
            )
        for j, op in enumerate(self._ops()):
            # (84, C, 9): kernel i summed over the channels of its subset
            conv = op.op
            assert isinstance(conv, nn.Conv1d)
            conv.weight.data.copy_(masks[j * k : (j + 1) * k, :, None] * self.kernels[:, None, :])

    def _ops(self) -> list[TemporalWindowOp]:
        return [op for op in self.convs if isinstance(op, TemporalWindowOp)]

    def _convolve_exact(self, op: TemporalWindowOp, x: Tensor) -> Tensor:
        """One dilation's valid convolution in float64: exact sums of float32 inputs (see "Exactness" above)."""
        conv = op.op
        assert isinstance(conv, nn.Conv1d)
        return nn.functional.conv1d(x.double(), conv.weight.double(), dilation=conv.dilation)

    # ---------------------------------------------------------------------------------------------- offline
    def convolve(self, x: Tensor, crop: PPVCrop = PPVCrop.COMMON) -> list[Tensor]:
        """Per dilation the convolution outputs ``(B, 84, T_j)``; COMMON crops all to the last P positions."""
        outs = [self._convolve_exact(op, x) for op in self._ops()]
        if crop is PPVCrop.COMMON:
            p = min(o.shape[2] for o in outs)
            outs = [o[:, :, o.shape[2] - p :] for o in outs]
        return outs

    def level(self, x: Tensor, crop: PPVCrop = PPVCrop.COMMON) -> Tensor:
        """The level outputs ``(B, M, T)`` in float64: each subset's channels summed at every sample (exact sums).

        COMMON crops to the last ``L - receptive_field + 1`` samples (the positions every conv feature pools);
        PER_DILATION keeps the whole window.
        """
        if self.level_masks is None:
            raise RuntimeError("MiniRocketFeatures: built without level features (level_combinations=0)")
        out = torch.einsum("bct,mc->bmt", x.double(), self.level_masks.double())
        if crop is PPVCrop.COMMON:
            out = out[:, :, self.receptive_field - 1 :]
        return out.contiguous()

    def _split_biases(self) -> list[Tensor]:
        sizes = [len(KERNEL_INDICES) * n for n in self.features_per_dilation]
        return list(torch.split(self.biases, sizes))

    def _steps(self, outs: list[Tensor]) -> Tensor:
        """Thresholded outputs ``(B, F, P)`` of per-dilation outputs of one length."""
        steps = []
        for out, n, b in zip(outs, self.features_per_dilation, self._split_biases(), strict=True):
            rep = out.repeat_interleave(n, dim=1)  # (B, 84 n, P): kernel i's output for each of its n biases
            steps.append((rep > b[None, :, None]).to(out.dtype))
        return torch.cat(steps, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] < self.receptive_field:
            raise ValueError(f"MiniRocketFeatures needs at least {self.receptive_field} time steps, got {x.shape[2]}")
        steps = self._steps(self.convolve(x))
        if self.level_biases is not None:
            rep = self.level(x).repeat_interleave(self.level_thresholds, dim=1)  # (B, M n, P)
            steps = torch.cat([steps, (rep > self.level_biases.double()[None, :, None]).to(steps.dtype)], dim=1)
        return steps.to(x.dtype)

    @staticmethod
    def _ppv_of(out: Tensor, bias: Tensor) -> Tensor:
        """``(B, R, T)`` outputs, ``(R, n)`` thresholds -> ``(B, R n)`` shares of outputs above each threshold."""
        ordered = _sorted_last(out)
        expanded = bias.to(out.dtype).view(1, *bias.shape).expand(len(out), -1, -1).contiguous()
        above = out.shape[2] - torch.searchsorted(ordered, expanded, right=True)  # outputs > threshold
        return (above.double() / out.shape[2]).flatten(1)

    def ppv(self, x: Tensor, crop: PPVCrop = PPVCrop.COMMON) -> Tensor:
        """PPV features ``(B, F)``: the share of each kernel's outputs above each of its thresholds.

        Equal to ``self(x).mean(dim=2)`` (COMMON) without materialising the ``(B, F, P)`` steps: the outputs are
        sorted once per kernel and each threshold is located by binary search. PER_DILATION: each dilation's whole
        valid output (MiniRocket's unpadded features, streamed by per-dilation pooling). The level features follow
        the conv features (:meth:`level`).
        """
        feats = []
        for out, n, b in zip(self.convolve(x, crop), self.features_per_dilation, self._split_biases(), strict=True):
            feats.append(self._ppv_of(out, b.view(-1, n)).to(x.dtype))  # (B, 84 n), kernel-major
        if self.level_biases is not None:
            levels = self.level(x, crop)
            feats.append(self._ppv_of(levels, self.level_biases.view(-1, self.level_thresholds)).to(x.dtype))
        return torch.cat(feats, dim=1)

    def fit_biases(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        crop: PPVCrop = PPVCrop.COMMON,
        windows_per_kernel: int = 1,
    ) -> None:
        """Thresholds as MiniRocket fits them: per (dilation, kernel) the quantiles of one random window's outputs.

        ``x``: training windows ``(N, C, L)``; the quantiles are the golden-ratio sequence in feature order.
        ``windows_per_kernel`` > 1 takes the quantiles of the outputs of that many random windows together (a
        less noisy estimate of the outputs' distribution than MiniRocket's single window; 1 is MiniRocket's).
        """
        k, m = len(KERNEL_INDICES), int(windows_per_kernel)
        if m < 1:
            raise ValueError(f"fit_biases: windows_per_kernel must be >= 1, got {windows_per_kernel}")
        quantiles = _quantiles(self.num_features)
        biases, start = [], 0
        picks = torch.randint(len(x), (len(self.dilations) * k * m,), generator=generator)
        for j, op in enumerate(self._ops()):
            chosen = x[picks[j * k * m : (j + 1) * k * m]]  # (84 m, C, L): m windows per kernel
            out = self._convolve_exact(op, chosen)  # (84 m windows, 84 kernels, T_j), float64
            if crop is PPVCrop.COMMON:
                p = x.shape[2] - self.receptive_field + 1
                out = out[:, :, out.shape[2] - p :]
            kernel = torch.arange(k).repeat_interleave(m)  # window w was picked for kernel w // m
            own = out[torch.arange(k * m), kernel].reshape(k, -1)  # (84, m T): kernel i on its m windows
            n = self.features_per_dilation[j]
            for i in range(k):
                q = quantiles[start : start + n]
                biases.append(torch.quantile(own[i], q.double()).float())
                start += n
        self.biases.copy_(torch.cat(biases))
        if self.level_biases is not None:  # the same estimate for the level subsets, picks drawn after the kernels'
            combos, n = self.level_combinations, self.level_thresholds
            picks = torch.randint(len(x), (combos * m,), generator=generator)
            out = self.level(x[picks], crop)  # (M m windows, M subsets, T)
            own = out[torch.arange(combos * m), torch.arange(combos).repeat_interleave(m)].reshape(combos, -1)
            q = _quantiles(self.num_level_features).double().view(combos, n)
            self.level_biases.copy_(torch.stack([torch.quantile(own[i], q[i]) for i in range(combos)]).flatten())

    # -------------------------------------------------------------------------------------------- streaming
    # One buffer of the last ``receptive_field - 1`` inputs serves every dilation; each hop gathers the 9 taps of
    # every dilation at the new positions and runs all dilations as one batched matmul (15 small convolutions
    # called one by one cost ~15x the dispatch overhead at a hop of a few samples).
    def stream_state(self, x: Tensor) -> list[Tensor]:
        k = len(KERNEL_INDICES)
        weights = []
        for op in self._ops():
            conv = op.op
            assert isinstance(conv, nn.Conv1d)
            weights.append(conv.weight.detach().permute(1, 2, 0).reshape(self.in_channels * KERNEL_LENGTH, k))
        self._stream_weight = torch.stack(weights).double()  # (J, C * 9, 84), float64 as offline
        # feature f reads row (dilation j, kernel i) = j * 84 + i of the (J * 84) outputs
        offsets = torch.tensor([0, *np.cumsum([k] * (len(self.dilations) - 1))])
        rows = [offsets[j] + torch.arange(k).repeat_interleave(n) for j, n in enumerate(self.features_per_dilation)]
        self._stream_rows = torch.cat(rows).to(x.device)
        self._taps: dict[int, Tensor] = {}
        return [x.new_zeros(x.shape[0], x.shape[1], self.receptive_field - 1)]

    def _tap_index(self, n: int, device: torch.device) -> Tensor:
        """(n, J, 9) buffer indices of the taps of each dilation at the n new positions."""
        index = self._taps.get(n)
        if index is None:
            last = self.receptive_field - 1 + torch.arange(n)  # buffer index of each new position's last sample
            d = torch.tensor(self.dilations)
            back = (KERNEL_LENGTH - 1 - torch.arange(KERNEL_LENGTH))[None, :] * d[:, None]  # (J, 9)
            index = (last[:, None, None] - back[None]).to(device)
            self._taps[n] = index
        return index

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        out, new_state = self.stream_convolve(x, state)
        steps = (out.index_select(1, self._stream_rows) > self.biases.double()[None, :, None]).to(x.dtype)  # (B, F, n)
        if self.level_biases is not None:
            rep = self.stream_level_rows(x).reshape(x.shape[0], x.shape[2], -1).transpose(1, 2)  # (B, M, n)
            rep = rep.repeat_interleave(self.level_thresholds, dim=1)
            steps = torch.cat([steps, (rep > self.level_biases.double()[None, :, None]).to(x.dtype)], dim=1)
        return steps, new_state

    def stream_level_rows(self, x: Tensor) -> Tensor:
        """The level outputs of the ``n`` new samples as ``(B n, M)`` (float64, (stream, position)-major rows)."""
        if self.level_masks is None:
            raise RuntimeError("MiniRocketFeatures: built without level features (level_combinations=0)")
        rows = x.permute(0, 2, 1).reshape(-1, x.shape[1]).double()  # (B n, C)
        return rows @ self.level_masks.double().T

    def stream_convolve(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The convolution outputs ``(B, J 84, n)`` (dilation-major) at the ``n`` new positions, and the new state."""
        b, _, n = x.shape
        out, new_state = self.stream_convolve_rows(x, state)  # (J, B n, 84)
        return out.reshape(len(self.dilations), b, n, -1).permute(1, 0, 3, 2).reshape(b, -1, n), new_state

    def stream_convolve_rows(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The convolution outputs as ``(J, B n, 84)`` (float64): per dilation, (stream, position)-major rows."""
        buf = torch.cat([state[0], x], dim=2)  # (B, C, r - 1 + n)
        b, c, n = x.shape
        j = len(self.dilations)
        taps = buf[:, :, self._tap_index(n, x.device)]  # (B, C, n, J, 9)
        taps = taps.permute(3, 0, 2, 1, 4).reshape(j, b * n, c * KERNEL_LENGTH).double()  # (J, B n, C 9)
        return torch.bmm(taps, self._stream_weight), [buf[:, :, n:]]


def canonical_order(x: Tensor) -> Tensor:
    """An order of the windows ``x`` (N, ...) that depends on their values only, not on the order they came in.

    The thresholds are quantiles of randomly picked windows; picking from this order makes the fit a function of the
    set of training windows, so a different loader order (another sampler, another batch size) refits the same
    model. The key is a fixed random projection of each window in float64 (equal keys: equal windows, almost surely).
    """
    flat = x.reshape(len(x), -1).double()
    projection = torch.randn(flat.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.argsort(flat @ projection.to(flat.device), stable=True)


@dataclass(frozen=True)
class RidgeFit:
    """A ridge classifier on raw features: ``logits = features @ weight.T + bias``."""

    weight: Tensor  # (K, F), standardisation folded in
    bias: Tensor  # (K,)
    alpha: float  # the penalty with the lowest leave-one-out error
    loo_error: dict[float, float]  # mean squared leave-one-out residual per penalty


def fit_ridge(
    features: Tensor,
    target: Tensor,
    num_classes: int,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    feature_weights: Tensor | None = None,
) -> RidgeFit:
    """One-vs-all ridge regression on +-1 targets, features standardised, penalty by leave-one-out error.

    The efficient leave-one-out residuals of ridge regression (``(y - H y) / (1 - diag H)``, with ``H`` the hat
    matrix) from one eigendecomposition, as scikit-learn's ``RidgeClassifierCV`` (Rifkin and Lippert, "Notes on
    regularized least squares", 2007). Computed in float64.

    ``feature_weights`` (F,) multiply the standardised features: a feature of weight ``w`` is penalised by
    ``alpha / w**2`` instead of ``alpha`` (a group-wise ridge penalty; the returned weights are on raw features).
    """
    z = features.double()
    n, f = z.shape
    mean, std = z.mean(dim=0), z.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    if feature_weights is not None:
        if feature_weights.shape != (f,) or bool((feature_weights <= 0).any()):
            raise ValueError(
                f"fit_ridge: feature_weights must be {f} positive values, got shape {tuple(feature_weights.shape)}"
            )
        std = std / feature_weights.double()  # z / (std / w) = w * standardised z
    zs = (z - mean) / std
    y = -torch.ones(n, num_classes, dtype=torch.float64)
    y[torch.arange(n), target.long()] = 1.0
    y_mean = y.mean(dim=0)
    yc = y - y_mean
    if n <= f:
        s, u = torch.linalg.eigh(zs @ zs.T)  # (N,), (N, N)
        q, qty, scale = u, u.T @ yc, s  # hat = U diag(s / (s + a)) U^T
    else:
        s, v = torch.linalg.eigh(zs.T @ zs)  # (F,), (F, F)
        q = zs @ v  # (N, F): hat = Q diag(1 / (s + a)) Q^T
        qty, scale = q.T @ yc, torch.ones_like(s)
    s = s.clamp(min=0)
    errors: dict[float, float] = {}
    for a in alphas:
        g = scale / (s + a)  # (r,)
        fitted = q @ (g[:, None] * qty)
        hat_diag = (q * q) @ g + 1.0 / n  # + 1/n: the intercept (centred data)
        loo = (yc - fitted) / (1.0 - hat_diag)[:, None]
        errors[a] = float((loo * loo).mean())
    alpha = min(errors, key=lambda a: errors[a])
    if n <= f:
        coef = zs.T @ (u @ ((1.0 / (s + alpha))[:, None] * qty))  # (F, K): Z^T (Z Z^T + a)^-1 Y
    else:
        coef = v @ ((1.0 / (s + alpha))[:, None] * qty)  # (F, K): (Z^T Z + a)^-1 Z^T Y
    weight = (coef / std[:, None]).T  # (K, F) on raw features
    bias = y_mean - (mean / std) @ coef
    return RidgeFit(weight=weight.float(), bias=bias.float(), alpha=alpha, loo_error=errors)


class LastPositionsAvgPoolHead(TemporalModule):
    """Per-channel temporal mean over each channel's own last positions: ``(B, C, L) -> (B, C)``.

    Channel ``c`` averages its last ``lengths[c]`` positions (``TemporalAvgPoolHead`` with one length per channel).
    Streaming keeps a ring of the last ``max(lengths)`` positions and recomputes the weighted sum at every hop, so
    the streamed output equals the offline one to float rounding (no running sum drifts over a long recording).

    Args:
        lengths: Positions averaged by each channel (>= 1).
    """

    weights: Tensor

    def __init__(self, lengths: list[int]) -> None:
        super().__init__()
        if not lengths or min(lengths) < 1:
            raise ValueError(f"LastPositionsAvgPoolHead: lengths must be >= 1, got {lengths}")
        self.lengths = [int(n) for n in lengths]
        self.span = max(self.lengths)
        w = torch.zeros(len(lengths), self.span)
        for c, n in enumerate(self.lengths):
            w[c, self.span - n :] = 1.0 / n
        self.register_buffer("weights", w, persistent=False)  # (C, span)
        self.receptive_field, self.stride = 1, 1

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] < self.span:
            raise ValueError(f"LastPositionsAvgPoolHead needs at least {self.span} positions, got {x.shape[2]}")
        return (x[:, :, x.shape[2] - self.span :] * self.weights.to(x.dtype)).sum(dim=2)

    def stream_state(self, x: Tensor) -> list[Tensor]:
        return [x.new_zeros(x.shape[0], x.shape[1], self.span)]

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        ring = torch.cat([state[0], x], dim=2)[:, :, -self.span :]
        return (ring * self.weights.to(x.dtype)).sum(dim=2), [ring]


class MiniRocket(StreamableClassifier):
    """MiniRocket features -> per-position ridge logits (1x1 conv) -> temporal mean: ``(B, C, L) -> (B, K)``.

    ``pooling``: COMMON averages every feature over the last ``L - 8 d_max`` positions (with left context, the
    window's positions); PER_DILATION averages dilation ``d``'s features over its own ``L - 8 d`` valid positions,
    MiniRocket's unpadded features, streamed by a :class:`LastPositionsAvgPoolHead` of per-dilation lengths.

    ``level_combinations`` > 0 adds level features (:meth:`MiniRocketFeatures.level`): the kernels sum to zero,
    so no convolution output sees a channel's level, the gravity direction that tells sitting from standing.
    ``difference=True`` (PER_DILATION only) adds MultiRocket's second representation: a MiniRocket of another seed
    on the first difference ``x[t] - x[t-1]`` of the window (``L - 1`` samples); streaming keeps one sample of it.
    All features are averages over time of steps, so one ridge classifier over them streams exactly.
    ``level_weight`` scales the standardised level features in that ridge fit (a group-wise penalty, see
    :func:`fit_ridge`); it changes the fitted weights only, not the features or how they stream.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        window: int,
        num_features: int = 10_000,
        max_dilations_per_kernel: int = 32,
        seed: int = 0,
        alphas: tuple[float, ...] = DEFAULT_ALPHAS,
        pooling: PPVCrop | str = PPVCrop.COMMON,
        threshold_windows: int = 1,
        level_combinations: int = 0,
        level_thresholds: int = 12,
        level_weight: float = 1.0,
        difference: bool = False,
    ) -> None:
        super().__init__()
        self.pooling = PPVCrop(pooling)
        if not level_weight > 0:
            raise ValueError(f"MiniRocket: level_weight must be > 0, got {level_weight}")
        self.level_weight = float(level_weight)
        if difference and self.pooling is not PPVCrop.PER_DILATION:
            raise ValueError("MiniRocket: difference=True needs pooling='per_dilation' (each branch pools its own)")
        self.rocket = MiniRocketFeatures(
            in_channels,
            window,
            num_features=num_features,
            max_dilations_per_kernel=max_dilations_per_kernel,
            seed=seed,
            level_combinations=level_combinations,
            level_thresholds=level_thresholds,
        )
        self.diff_rocket: MiniRocketFeatures | None = None
        if difference:
            self.diff_rocket = MiniRocketFeatures(
                in_channels,
                window - 1,
                num_features=num_features,
                max_dilations_per_kernel=max_dilations_per_kernel,
                seed=seed + 1,
            )
        self.threshold_windows = int(threshold_windows)
        total = self.rocket.num_features + (self.diff_rocket.num_features if self.diff_rocket is not None else 0)
        self.linear = nn.Conv1d(total, num_classes, 1)  # time-pointwise: streams per position
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(cast(Tensor, self.linear.bias))
        self.features = TemporalSequential(self.rocket, self.linear)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Identity()
        self.num_classes, self.seed, self.alphas = num_classes, seed, tuple(alphas)
        self.num_features = num_classes  # what the pool averages: per-position logits
        self.last_fit: RidgeFit | None = None
        self._dilation_pool: LastPositionsAvgPoolHead | None = None
        self._init_geometry()
        if self.diff_rocket is not None:  # one more input sample: the difference's first term
            self.receptive_field = max(self.receptive_field, self.diff_rocket.receptive_field + 1)

    # The feature groups in the linear layer's order. A group is one (branch, dilation) or the level subsets: its
    # rows (kernels or subsets) each have n sorted thresholds, and PER_DILATION pools each group over its own length.
    def _group_sizes(self, window: int) -> list[tuple[int, int, int]]:
        """``(rows, thresholds per row, pooled positions)`` of each feature group for windows of ``window``."""
        k = len(KERNEL_INDICES)
        raw = zip(self.rocket.dilations, self.rocket.features_per_dilation, strict=True)
        groups = [(k, n, window - (KERNEL_LENGTH - 1) * d) for d, n in raw]
        if self.rocket.level_biases is not None:
            groups.append((self.rocket.level_combinations, self.rocket.level_thresholds, window))
        if self.diff_rocket is not None:
            diff = zip(self.diff_rocket.dilations, self.diff_rocket.features_per_dilation, strict=True)
            groups += [(k, n, window - 1 - (KERNEL_LENGTH - 1) * d) for d, n in diff]
        return groups

    def _group_thresholds(self) -> list[Tensor]:
        """Each group's thresholds ``(rows, n)`` in the linear layer's feature order."""
        out = [b.view(len(KERNEL_INDICES), -1) for b in self.rocket._split_biases()]
        if self.rocket.level_biases is not None:
            out.append(self.rocket.level_biases.view(self.rocket.level_combinations, -1))
        if self.diff_rocket is not None:
            out += [b.view(len(KERNEL_INDICES), -1) for b in self.diff_rocket._split_biases()]
        return out

    def configure_stream(self, window: int, hop: int) -> None:
        """As the base class; PER_DILATION also sizes one pool length per feature group (``window - 8 d``)."""
        super().configure_stream(window, hop)
        if self.pooling is PPVCrop.PER_DILATION:
            lengths = [p for _, _, p in self._group_sizes(window)]
            self._dilation_pool = LastPositionsAvgPoolHead([n for n in lengths for _ in range(self.num_classes)])

    # Streaming: the thresholds and the linear layer fused into a lookup. The features of one output row (a kernel
    # at a dilation, or a level subset) are steps at its sorted thresholds b_1 <= ... <= b_m, so their weighted sum
    # is a prefix sum of the weights: W . steps = cumW[count of b < y]. A position costs one count and one K-vector
    # per row -- 1,260 for 10,000 features -- instead of F comparisons and K x F multiply-adds. The outputs are
    # float64, like the offline path, so both count the same thresholds.
    def stream_state(self, x: Tensor) -> list[Tensor]:
        if self.pool.positions is None:
            raise RuntimeError("MiniRocket: call configure_stream(window, hop) before streaming")
        conv_state = self.rocket.stream_state(x)
        if self.diff_rocket is not None:  # the difference branch's buffer, then the last raw sample
            conv_state += self.diff_rocket.stream_state(x) + [x.new_zeros(x.shape[0], x.shape[1], 1)]
        weight = self.linear.weight.detach()[:, :, 0].double()  # (K, F)
        tables: list[Tensor] = []
        self._bounds, starts = [], []
        start, row = 0, 0
        for b in self._group_thresholds():
            rows, n = b.shape
            b = b.double()
            w = weight[:, start : start + rows * n].T.reshape(rows, n, -1)  # (rows, n, K)
            order = b.argsort(dim=1, stable=True)
            self._bounds.append(b.gather(1, order).to(x.device))  # (rows, n) ascending, float64
            w_sorted = w.gather(1, order[:, :, None].expand_as(w))
            # (rows, n + 1, K): entry c = the weights of the c lowest thresholds, summed
            tables.append(torch.cat([w.new_zeros(rows, 1, w.shape[2]), w_sorted.cumsum(dim=1)], dim=1).flatten(0, 1))
            starts.append(row + torch.arange(rows) * (n + 1))  # first table row of each row's prefix sums
            row += rows * (n + 1)
            start += rows * n
        # The prefix sums are taken in float64 and stored in float32: the counts (which threshold an output passes)
        # stay exact in float64, and summing K-vectors of float32 weights is what the offline linear layer does;
        # float32 embedding_bag also runs ~15x faster on CPU than float64.
        self._lookup_table = torch.cat(tables).float().to(x.device)  # (sum_g rows_g (n_g + 1), K)
        self._bases = torch.cat(starts).to(x.device)  # (R,) over all rows of all groups
        self._group_offsets = torch.tensor([0, *np.cumsum([len(s) for s in starts])[:-1]]).to(x.device)  # (G,)
        self._n_conv = len(conv_state)
        if self.pooling is PPVCrop.PER_DILATION:
            if self._dilation_pool is None:
                raise RuntimeError("MiniRocket: call configure_stream(window, hop) before streaming")
            pool_x = x.new_zeros(x.shape[0], len(tables) * self.num_classes, 1)
            return conv_state + self._dilation_pool.stream_state(pool_x)
        return conv_state + [x.new_zeros(x.shape[0], self.num_classes, self.pool.positions)]

    def _stream_outputs(self, x: Tensor, state: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Each group's outputs at the new positions ``[(B n, rows)]`` (float64) and the new features state."""
        out, conv_state = self.rocket.stream_convolve_rows(x, state[:1])  # (J, B n, 84)
        outputs = list(out.unbind(0))
        if self.rocket.level_biases is not None:
            outputs.append(self.rocket.stream_level_rows(x))
        if self.diff_rocket is not None:
            last = state[2]
            diff = torch.cat([last, x], dim=2).diff(dim=2)  # (B, C, n): x[t] - x[t-1], as offline
            dout, diff_state = self.diff_rocket.stream_convolve_rows(diff, state[1:2])
            outputs += list(dout.unbind(0))
            conv_state = conv_state + diff_state + [x[:, :, -1:]]
        return outputs, conv_state

    @staticmethod
    def _count_below(outputs: Tensor, bounds: Tensor) -> Tensor:
        """``(B n, rows)`` outputs, ``(rows, n)`` ascending thresholds -> how many thresholds lie strictly below."""
        if torch.onnx.is_in_onnx_export():  # ONNX has no searchsorted: compare with every threshold
            return (outputs[:, :, None] > bounds).sum(dim=2)
        # a binary search per row: no (B n, rows, n) comparison tensor (2x faster on CPU)
        return torch.searchsorted(bounds, outputs.T.contiguous(), side="left").T

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        outputs, conv_state = self._stream_outputs(x, state[: self._n_conv])
        b, _, n = x.shape
        index = torch.cat(
            [self._count_below(o, bounds) for o, bounds in zip(outputs, self._bounds, strict=True)], dim=1
        )  # (B n, R): thresholds strictly below each row's output
        index = index + self._bases  # rows of the prefix-sum table
        bias = cast(Tensor, self.linear.bias)
        if self.pooling is PPVCrop.PER_DILATION:
            assert self._dilation_pool is not None
            groups = len(self._group_offsets)
            offsets = (torch.arange(b * n, device=x.device)[:, None] * index.shape[1] + self._group_offsets).flatten()
            per_group = nn.functional.embedding_bag(index.flatten(), self._lookup_table, offsets, mode="sum")
            per_step = per_group.to(x.dtype).reshape(b, n, -1).permute(0, 2, 1)  # (B, G K, n)
            pooled, pool_state = self._dilation_pool.stream_step(per_step, state[self._n_conv :])
            logits = pooled.reshape(b, groups, -1).sum(dim=1) + bias
            return self.classifier(logits), conv_state + pool_state
        summed = nn.functional.embedding_bag(index, self._lookup_table, mode="sum")  # (B n, K)
        per_step = (summed.to(x.dtype) + bias).reshape(b, n, -1).permute(0, 2, 1)  # (B, K, n)
        pooled, pool_state = self.pool.stream_step(per_step, state[self._n_conv :])
        return self.classifier(pooled), conv_state + pool_state

    def forward(self, x: Tensor) -> Tensor:
        """Offline logits: the ridge classifier on the PPV features (equal to pooling the per-position logits)."""
        return nn.functional.linear(self._ppv(x, self.pooling), self.linear.weight[:, :, 0], self.linear.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Per-position logits ``(B, K, P)`` of the COMMON crop (their mean over P is ``forward`` under COMMON)."""
        if self.diff_rocket is not None:
            raise ValueError("MiniRocket: no per-position features with difference=True (its branches pool apart)")
        return self.features(x)

    def _ppv(self, x: Tensor, crop: PPVCrop) -> Tensor:
        feats = self.rocket.ppv(x, crop)
        if self.diff_rocket is None:
            return feats
        return torch.cat([feats, self.diff_rocket.ppv(x.diff(dim=2), crop)], dim=1)

    @torch.no_grad()
    def transform(self, x: Tensor, batch_size: int = 128, crop: PPVCrop | None = None) -> Tensor:
        """PPV features ``(N, F)`` of windows ``(N, C, L)``, in batches (``crop``: default the model's pooling)."""
        crop = self.pooling if crop is None else crop
        return torch.cat([self._ppv(x[i : i + batch_size], crop) for i in range(0, len(x), batch_size)])

    def ridge_feature_weights(self, level_weight: float | None = None) -> Tensor:
        """``(F,)`` float64, the ridge fit's ``feature_weights``: ``level_weight`` (default: the model's) on the level
        features, 1 elsewhere."""
        weights = torch.ones(self.linear.in_channels, dtype=torch.float64)
        start = self.rocket.num_conv_features
        weights[start : start + self.rocket.num_level_features] = (
            self.level_weight if level_weight is None else level_weight
        )
        return weights

    @torch.no_grad()
    def fit_closed_form(self, inputs: Tensor, target: Tensor) -> RidgeFit:
        """Fit thresholds on ``inputs`` (N, C, L) and the ridge classifier on their PPV features; returns the fit."""
        generator = torch.Generator().manual_seed(self.seed)
        ordered = inputs[canonical_order(inputs)]
        self.rocket.fit_biases(ordered, generator, crop=self.pooling, windows_per_kernel=self.threshold_windows)
        if self.diff_rocket is not None:
            self.diff_rocket.fit_biases(
                ordered.diff(dim=2), generator, crop=self.pooling, windows_per_kernel=self.threshold_windows
            )
        fit = fit_ridge(self.transform(inputs), target, self.num_classes, self.alphas, self.ridge_feature_weights())
        self.linear.weight.copy_(fit.weight[:, :, None])
        cast(Tensor, self.linear.bias).copy_(fit.bias)
        self.last_fit = fit
        log.info(
            "MiniRocket: %d features, ridge alpha %.3g (leave-one-out over %d windows)",
            fit.weight.shape[1],
            fit.alpha,
            len(inputs),
        )
        return fit


@register_model
def minirocket_har(
    *,
    in_channels: int = 6,
    num_classes: int = 6,
    window: int = 128,
    num_features: int = 10_000,
    seed: int = 0,
    pooling: str = "common",
    threshold_windows: int = 1,
    level_combinations: int = 0,
    level_thresholds: int = 12,
    level_weight: float = 1.0,
    difference: bool = False,
) -> MiniRocket:
    """MiniRocket (Dempster et al. 2021) for IMU windows of ``window`` samples; dilations up to ``(window - 1) / 8``.

    Receptive field ``8 d_max + 1`` (121 samples at ``window=128``). ``pooling="common"``: give the datamodule
    ``context: 120`` (``context_padding: EDGE``) so every feature pools ``window`` positions.
    ``pooling="per_dilation"``: no context; dilation ``d`` pools its ``window - 8 d`` valid positions (MiniRocket's
    unpadded features). ``threshold_windows``: training windows whose outputs each threshold's quantile is taken
    over (MiniRocket: 1). ``level_combinations`` x ``level_thresholds`` level features (channel-subset sums against
    thresholds); ``level_weight`` scales the standardised level features in the ridge fit (their penalty is
    ``alpha / level_weight**2``: level features tell sitting from standing but also how each subject wears the
    phone, so a weight below 1, chosen on subject folds, keeps the first without learning the second);
    ``difference``: a second MiniRocket on the first difference (MultiRocket's). Fitted in closed form by
    ``vidrec fit``.
    """
    return MiniRocket(
        in_channels=in_channels,
        num_classes=num_classes,
        window=window,
        num_features=num_features,
        seed=seed,
        pooling=PPVCrop(pooling),
        threshold_windows=threshold_windows,
        level_combinations=level_combinations,
        level_thresholds=level_thresholds,
        level_weight=level_weight,
        difference=difference,
    )
