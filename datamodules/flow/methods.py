"""Dense optical-flow estimators behind one interface: TV-L1, DIS, Farneback (OpenCV) and RAFT (torchvision).

* TV-L1: Zach, Pock & Bischof, "A Duality Based Approach for Realtime TV-L1 Optical Flow" (2007), the estimator of
  Simonyan & Zisserman's two-stream ConvNets (2014) and of TSN / TS-LSTM; ``cv2.optflow.DualTVL1OpticalFlow``
  (opencv-contrib). OpenCV's defaults (5 scales, 5 warps, 10 x 30 iterations) cost seconds a 320x240 pair on one
  core, so :meth:`TVL1Params.fast` trims the pyramid, warps and iterations as the fast extractors do; the accuracy
  cost of each setting is measured by ``tools/bench_flow.py`` (endpoint error on pairs with known motion).
* DIS: Kroeger et al., "Fast Optical Flow using Dense Inverse Search" (2016), ``cv2.DISOpticalFlow``; the CPU default.
* Farneback: Farneback, "Two-Frame Motion Estimation Based on Polynomial Expansion" (2003).
* RAFT: Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow" (2020), torchvision's
  ``raft_small`` / ``raft_large`` with weights read from a local file (never downloaded); for machines with a GPU.

Every estimator maps two uint8 grayscale frames ``(H, W)`` to float32 displacements ``(H, W, 2)`` (x, y) in pixels.
``compute_scale < 1`` computes at a reduced size and scales the field back up (values multiplied by 1 / scale).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DISPreset",
    "FlowEstimator",
    "FlowMethod",
    "FlowSettings",
    "TVL1Params",
    "RAFT_MIN_SIZE",
    "build_estimator",
    "load_raft",
    "raft_device",
    "require_cv2_optflow",
]


class FlowMethod(enum.Enum):
    """Which estimator computes the flow."""

    TVL1 = "tvl1"
    DIS = "dis"
    FARNEBACK = "farneback"
    RAFT = "raft"


class DISPreset(enum.Enum):
    """OpenCV's DIS presets (``cv2.DISOPTICAL_FLOW_PRESET_*``)."""

    ULTRAFAST = "ultrafast"
    FAST = "fast"
    MEDIUM = "medium"


@dataclass
class TVL1Params:
    """Parameters of ``cv2.optflow.DualTVL1OpticalFlow_create`` (defaults: OpenCV's own).

    Attributes:
        tau: time step of the numerical scheme.
        lambda_: weight of the data term (smaller: smoother fields).
        theta: coupling of the two sub-problems.
        scales: pyramid levels.
        warps: warpings per level.
        epsilon: stopping threshold of the inner loop.
        inner_iterations: inner iterations per warp.
        outer_iterations: outer iterations per warp.
        scale_step: pyramid down-scaling factor.
        median_filtering: median filter size applied to the field.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    scales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5

    @classmethod
    def fast(cls) -> TVL1Params:
        """A tuned setting: 3 scales at step 0.5, 3 warps, 1 x 15 iterations, epsilon 0.05 (see tools/bench_flow.py)."""
        return cls(scales=3, scale_step=0.5, warps=3, inner_iterations=15, outer_iterations=1, epsilon=0.05)


@dataclass
class FlowSettings:
    """How flow is extracted from a video.

    Attributes:
        method: estimator; DIS by default on CPU (tens of ms a pair; TV-L1 with OpenCV's defaults takes seconds).
        short_side: frames are converted to grayscale and resized so the short side is this (None: native size).
        compute_scale: compute the flow at this fraction of the stored size and scale it back (1: full size).
        bound: quantisation bound in pixels a frame (the schema's B; 128 = no motion).
        tvl1: TV-L1 parameters (``TVL1Params.fast()`` is the tuned setting).
        dis_preset: DIS preset.
        raft_weights: RAFT only: local file of torchvision RAFT weights (a state_dict of the chosen model, e.g.
            torchvision's ``raft_small_C_T_V2-01064c6d.pth``); never downloaded.
        raft_small: RAFT only: ``raft_small`` (True) or ``raft_large``.
        raft_updates: RAFT only: recurrent flow updates (torchvision's default 12; fewer is faster and coarser).
        device: RAFT only: torch device; None picks "cuda" where a GPU is present, else "cpu". It does not enter
            :meth:`as_dict` (the field does not depend on it beyond float rounding).
        chunk_frames: frames decoded at a time (bounds memory on long videos; consecutive chunks share a frame).
        compression: HDF5 compression of the flow dataset: "gzip", "lzf" or None.
    """

    method: FlowMethod = FlowMethod.DIS
    short_side: int | None = 256
    compute_scale: float = 1.0
    bound: float = 20.0
    tvl1: TVL1Params = field(default_factory=TVL1Params)
    dis_preset: DISPreset = DISPreset.MEDIUM
    raft_weights: str | None = None
    raft_small: bool = True
    raft_updates: int = 12
    device: str | None = None
    chunk_frames: int = 128
    compression: str | None = "gzip"

    def __post_init__(self) -> None:
        if isinstance(self.method, str):
            self.method = FlowMethod(self.method)
        if isinstance(self.dis_preset, str):
            self.dis_preset = DISPreset(self.dis_preset)
        if not 0 < self.compute_scale <= 1:
            raise ValueError(f"FlowSettings.compute_scale must be in (0, 1], got {self.compute_scale}")
        if self.bound <= 0:
            raise ValueError(f"FlowSettings.bound must be > 0, got {self.bound}")
        if self.short_side is not None and self.short_side < 8:
            raise ValueError(f"FlowSettings.short_side must be >= 8 or None, got {self.short_side}")
        if self.chunk_frames < 2:
            raise ValueError(f"FlowSettings.chunk_frames must be >= 2, got {self.chunk_frames}")
        if self.compression not in (None, "gzip", "lzf"):
            raise ValueError(f"FlowSettings.compression must be 'gzip', 'lzf' or None, got {self.compression!r}")
        if self.method is FlowMethod.RAFT and self.raft_weights is None:
            raise ValueError("FlowSettings: method 'raft' needs raft_weights, a local file of torchvision RAFT weights")
        if self.raft_updates < 1:
            raise ValueError(f"FlowSettings.raft_updates must be >= 1, got {self.raft_updates}")

    def as_dict(self) -> dict[str, Any]:
        """The parameters that determine the flow (stored in every flow file; a change means re-extraction)."""
        out: dict[str, Any] = {
            "method": self.method.value,
            "short_side": self.short_side,
            "compute_scale": self.compute_scale,
            "bound": self.bound,
        }
        if self.method is FlowMethod.TVL1:
            out["tvl1"] = asdict(self.tvl1)
        elif self.method is FlowMethod.DIS:
            out["dis_preset"] = self.dis_preset.value
        elif self.method is FlowMethod.RAFT:
            out["raft"] = {"weights": str(self.raft_weights), "small": self.raft_small, "updates": self.raft_updates}
        return out

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], where: str = "flow params") -> FlowSettings:
        """The settings :meth:`as_dict` describes (a flow file's ``params``, a deployment spec's flow settings).

        Raises:
            ValueError: a key is missing or invalid; the message names ``where`` and the key.
        """
        missing = [k for k in ("method", "bound") if k not in params]
        if missing:
            raise ValueError(f"{where} lacks {missing} (expected FlowSettings.as_dict())")
        try:
            method = FlowMethod(params["method"])
        except ValueError:
            raise ValueError(
                f"{where}: method {params['method']!r} is not one of {[m.value for m in FlowMethod]}"
            ) from None
        side = params.get("short_side")
        settings = cls(
            method=method,
            short_side=None if side is None else int(side),
            compute_scale=float(params.get("compute_scale", 1.0)),
            bound=float(params["bound"]),
            tvl1=TVL1Params(**params["tvl1"]) if "tvl1" in params else TVL1Params(),
            dis_preset=DISPreset(params.get("dis_preset", DISPreset.MEDIUM.value)),
            raft_weights=params["raft"]["weights"] if "raft" in params else None,
            raft_small=bool(params["raft"]["small"]) if "raft" in params else True,
            raft_updates=int(params["raft"].get("updates", 12)) if "raft" in params else 12,
        )
        if settings.as_dict() != dict(params):
            raise ValueError(f"{where}: {dict(params)} does not describe one FlowSettings (read back {settings})")
        return settings


class FlowEstimator(Protocol):
    """Two uint8 grayscale frames ``(H, W)`` -> float32 displacements ``(H, W, 2)`` in pixels."""

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray: ...


def require_cv2_optflow() -> Any:
    """``cv2`` with the contrib ``optflow`` module, or an ImportError saying what to install."""
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "optical flow needs OpenCV with contrib modules: pip install 'vidrec[flow]' "
            "(opencv-contrib-python-headless)"
        ) from None
    if not hasattr(cv2, "optflow"):
        raise ImportError(
            "cv2 has no 'optflow' module (TV-L1): install opencv-contrib-python-headless instead of opencv-python"
        )
    return cv2


class _OpenCVEstimator:
    def __init__(self, settings: FlowSettings) -> None:
        cv2 = require_cv2_optflow()
        self.cv2 = cv2
        self.settings = settings
        if settings.method is FlowMethod.TVL1:
            p = settings.tvl1
            self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
                tau=p.tau,
                lambda_=p.lambda_,
                theta=p.theta,
                nscales=p.scales,
                warps=p.warps,
                epsilon=p.epsilon,
                innnerIterations=p.inner_iterations,  # sic: OpenCV's keyword
                outerIterations=p.outer_iterations,
                scaleStep=p.scale_step,
                medianFiltering=p.median_filtering,
            )
        elif settings.method is FlowMethod.DIS:
            preset = {
                DISPreset.ULTRAFAST: cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                DISPreset.FAST: cv2.DISOPTICAL_FLOW_PRESET_FAST,
                DISPreset.MEDIUM: cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
            }[settings.dis_preset]
            self._dis = cv2.DISOpticalFlow_create(preset)

    def _compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        method = self.settings.method
        if method is FlowMethod.TVL1:
            return self._tvl1.calc(a, b, None)
        if method is FlowMethod.DIS:
            return self._dis.calc(a, b, None)
        return self.cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        previous, current = np.ascontiguousarray(previous), np.ascontiguousarray(current)  # OpenCV asserts it
        scale = self.settings.compute_scale
        if scale >= 1:
            return np.asarray(self._compute(previous, current), dtype=np.float32)  # (H, W, 2)
        h, w = previous.shape
        small = (max(int(round(w * scale)), 8), max(int(round(h * scale)), 8))  # cv2 sizes are (width, height)
        a = self.cv2.resize(previous, small, interpolation=self.cv2.INTER_AREA)
        b = self.cv2.resize(current, small, interpolation=self.cv2.INTER_AREA)
        flow = self.cv2.resize(self._compute(a, b), (w, h), interpolation=self.cv2.INTER_LINEAR)  # (H, W, 2)
        flow[..., 0] *= w / small[0]
        flow[..., 1] *= h / small[1]
        return np.asarray(flow, dtype=np.float32)


RAFT_MIN_SIZE = 128  # torchvision's RAFT: feature maps at 1/8 must survive 3 halvings of the correlation pyramid


def raft_device(requested: str | None) -> str:
    """The torch device RAFT runs on: ``requested``, or "cuda" where a GPU is present, else "cpu"."""
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_raft(weights: str | Path, small: bool = True) -> Any:
    """torchvision's ``raft_small`` / ``raft_large`` with the weights of a local file (never downloaded).

    The file is read with ``torch.load(weights_only=True)`` (no code runs): a state_dict, or a dict holding one
    under ``"state_dict"`` or ``"model"``.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the file is not a tensor state_dict, or its keys or shapes are not those of the chosen model
            (the message names the file, the model and the first mismatches).
    """
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    name = "raft_small" if small else "raft_large"
    file = Path(weights)
    if not file.is_file():
        raise FileNotFoundError(
            f"FlowSettings.raft_weights: {file} does not exist (expected a local state_dict of torchvision's "
            f"{name}, e.g. the file torchvision's Raft_{'Small' if small else 'Large'}_Weights points to; "
            "weights are never downloaded)"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one that needs code to load (refused by weights_only)
        raise ValueError(f"FlowSettings.raft_weights: {file} is not a loadable tensor state_dict ({error})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"FlowSettings.raft_weights: {file} is not a state_dict of tensors (got {type(state).__name__})"
        )
    model = (raft_small if small else raft_large)(weights=None)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        other = "raft_large" if small else "raft_small"
        raise ValueError(
            f"FlowSettings.raft_weights: {file} does not fit torchvision's {name}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of other shape {wrong[:3]} "
            f"(weights of {other}? then {'--raft-large' if small else 'drop --raft-large'})"
        )
    model.load_state_dict(state)
    return model.eval()


class _RAFTEstimator:
    """torchvision RAFT on a pair of grayscale frames (replicated to 3 channels, scaled to [-1, 1] as torchvision's
    ``OpticalFlow`` preset does), padded by edge replication to a multiple of 8 and at least ``RAFT_MIN_SIZE``."""

    def __init__(self, settings: FlowSettings) -> None:
        import torch

        self.torch = torch
        self.device = raft_device(settings.device)
        self.updates = settings.raft_updates
        self.model = load_raft(str(settings.raft_weights), settings.raft_small).to(self.device)

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        torch = self.torch
        h, w = previous.shape
        ph = max(-h % 8, RAFT_MIN_SIZE - h)  # pad by replication, crop the result
        pw = max(-w % 8, RAFT_MIN_SIZE - w)

        def prepare(frame: np.ndarray) -> Any:
            x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, torch.float32)[None, None]  # (1,1,H,W)
            x = x / 127.5 - 1
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
            return x.expand(1, 3, h + ph, w + pw)  # gray -> 3 channels

        with torch.inference_mode():
            flows = self.model(prepare(previous), prepare(current), num_flow_updates=self.updates)
        flow = flows[-1][0, :, :h, :w]  # (2, H, W), the last refinement
        return np.ascontiguousarray(flow.permute(1, 2, 0).float().cpu().numpy())  # (H, W, 2)


def build_estimator(settings: FlowSettings) -> FlowEstimator:
    """The estimator of ``settings`` (OpenCV ones use one thread: parallelism comes from worker processes)."""
    if settings.method is FlowMethod.RAFT:
        return _RAFTEstimator(settings)
    return _OpenCVEstimator(settings)
