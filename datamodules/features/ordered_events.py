"""Ordered events: per-frame feature sequences whose class is the order of events, so mean pooling is at chance.

A set of ``E`` events, each a fixed random prototype vector in ``R^D``. A sequence of class ``c`` shows every event
once, in the order of the ``c``-th permutation of the events (``E = 2``: A then B against B then A; ``E = 3``: six
orders), each event held for a random number of frames, plus per-frame Gaussian noise and a per-video offset.

By construction the temporal mean cannot tell the classes apart: durations are drawn i.i.d. per *position* and the
noise independently of the class, so the mean ``sum_i d_i p_{order(i)} / T + offset + noise`` has the same
distribution for every order (permuting the events permutes exchangeable durations). ``render`` makes it exact
pointwise too: the same durations of each *event* and the same noise give the same mean under any order (tested).
A model must use the order of the frames to beat chance (``1 / E!``).

Written as a feature file of the documented schema (``datamodules.features.schema``), so the same data module, models
and CLI read it as they read extracted features.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.features.schema import FeatureFileInfo, FeatureWriter, VideoFeatures

__all__ = ["OrderedEventsSettings", "event_orders", "render", "generate_ordered_events"]


@dataclass(frozen=True)
class OrderedEventsSettings:
    """What the generator makes."""

    events: int = 3  # E; the classes are the E! orders
    feature_dim: int = 64  # D
    frames: int = 25  # T per sequence (the paper's 25 sampled frames)
    min_event_frames: int = 4  # each event lasts at least this many frames; the rest is split at random
    noise: float = 0.5  # std of the per-frame noise (prototypes have unit norm per dimension on average)
    offset: float = 0.5  # std of the per-video offset added to every frame
    train_per_class: int = 100
    test_per_class: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.events < 2:
            raise ValueError(f"ordered events need at least 2 events, got {self.events}")
        if self.frames < self.events * self.min_event_frames:
            raise ValueError(
                f"frames={self.frames} cannot hold {self.events} events of at least {self.min_event_frames} frames"
            )


def event_orders(events: int) -> list[tuple[int, ...]]:
    """The classes: every order of ``events`` events, in lexicographic order."""
    return list(itertools.permutations(range(events)))


def render(
    order: tuple[int, ...], event_frames: np.ndarray, prototypes: np.ndarray, noise: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """The ``(T, D)`` sequence showing event ``order[i]`` for ``event_frames[order[i]]`` frames, in order.

    Args:
        order: the events in time order.
        event_frames: ``(E,)`` frames each *event* lasts (sum T).
        prototypes: ``(E, D)``.
        noise: ``(T, D)`` per-frame noise.
        offset: ``(D,)`` per-video offset.
    """
    frames = np.concatenate([np.full(int(event_frames[e]), e) for e in order])  # (T,) event of each frame
    return prototypes[frames] + noise + offset[None]


def _durations(rng: np.random.Generator, s: OrderedEventsSettings) -> np.ndarray:
    """``(E,)`` frames per position in time: the minimum plus a uniformly random split of the rest."""
    spare = s.frames - s.events * s.min_event_frames
    cuts = np.sort(rng.integers(0, spare + 1, size=s.events - 1))
    return np.diff(np.concatenate([[0], cuts, [spare]])) + s.min_event_frames


def generate_ordered_events(out: str | Path, settings: OrderedEventsSettings | None = None) -> Path:
    """Write the ordered-events set as a feature file (splits ``train`` and ``test``); returns its path."""
    s = settings or OrderedEventsSettings()
    rng = np.random.default_rng(s.seed)
    prototypes = rng.standard_normal((s.events, s.feature_dim)).astype(np.float32)
    orders = event_orders(s.events)
    names = ["then".join("ABCDEFGHIJ"[e] for e in o) for o in orders]
    info = FeatureFileInfo(
        feature_dim=s.feature_dim,
        dtype="float32",
        class_names=names,
        sampling={"mode": "uniform", "frames": s.frames},
        extractor={"kind": "generator", "name": "ordered-events", "settings": s.__dict__},
        source="datamodules.features.ordered_events",
    )
    path = Path(out)
    if path.exists():
        path.unlink()
    with FeatureWriter(path, info) as writer:
        for split, per_class in (("train", s.train_per_class), ("test", s.test_per_class)):
            for label, order in enumerate(orders):
                for i in range(per_class):
                    by_position = _durations(rng, s)  # (E,) frames of the 1st, 2nd, ... event in time
                    event_frames = np.empty(s.events, dtype=np.int64)
                    event_frames[list(order)] = by_position
                    noise = (s.noise * rng.standard_normal((s.frames, s.feature_dim))).astype(np.float32)
                    offset = (s.offset * rng.standard_normal(s.feature_dim)).astype(np.float32)
                    feats = render(order, event_frames, prototypes, noise, offset)
                    rel = f"{split}/{names[label]}/{i:04d}"
                    writer.write(
                        VideoFeatures(
                            key=rel.replace("/", "__"),
                            path=rel,
                            features=feats,
                            frame_indices=np.arange(s.frames),
                            label=label,
                            split=split,
                            fps=25.0,
                            num_frames=s.frames,
                        )
                    )
    return path


def chance(events: int) -> float:
    """Chance accuracy ``1 / E!``."""
    return 1.0 / math.factorial(events)
