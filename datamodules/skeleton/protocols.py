"""The standard NTU RGB+D evaluation protocols, decided from the sample names' fields.

* NTU-60 (Shahroudy et al., CVPR 2016): cross-subject (20 training performers, the other 20 test) and cross-view
  (cameras 2 and 3 train, camera 1 test).
* NTU-120 (Liu et al., TPAMI 2019): cross-subject (53 training performers) and cross-setup (even setup ids train,
  odd test).

``CUSTOM`` takes explicit test performers and ``FILE`` the samples' own ``split`` attribute, for data sets of other
origins (a pose-pickle import, users' own videos).
The official list of samples with missing skeletons ships beside this module (``ntu_missing_skeletons.txt``).
"""

from __future__ import annotations

import enum
from functools import lru_cache
from pathlib import Path

from datamodules.skeleton.schema import SampleInfo

__all__ = [
    "Protocol",
    "NTU60_XSUB_TRAIN_PERFORMERS",
    "NTU120_XSUB_TRAIN_PERFORMERS",
    "NTU60_XVIEW_TRAIN_CAMERAS",
    "is_training_sample",
    "ntu_missing_skeletons",
]

NTU60_XSUB_TRAIN_PERFORMERS = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU120_XSUB_TRAIN_PERFORMERS = NTU60_XSUB_TRAIN_PERFORMERS | frozenset(
    {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94}
    | {95, 97, 98, 100, 103}
)
NTU60_XVIEW_TRAIN_CAMERAS = frozenset({2, 3})
NTU60_MAX_SETUP = 17  # NTU RGB+D 60 holds setups S001-S017; NTU-120 adds S018-S032


class Protocol(enum.Enum):
    """Train/test membership of a sample."""

    NTU60_XSUB = "ntu60_xsub"  # by performer, NTU-60 training list
    NTU60_XVIEW = "ntu60_xview"  # by camera: 2, 3 train; 1 test
    NTU120_XSUB = "ntu120_xsub"  # by performer, NTU-120 training list
    NTU120_XSET = "ntu120_xset"  # by setup: even train, odd test
    CUSTOM = "custom"  # by performer: the data module's test_performers
    FILE = "file"  # the samples' own `split` attribute (pose-pickle imports, generic folders)


def is_training_sample(protocol: Protocol, sample: SampleInfo) -> bool:
    """True when ``sample`` belongs to the training side of an NTU protocol (not for ``CUSTOM``)."""
    if protocol is Protocol.NTU60_XSUB:
        return sample.performer in NTU60_XSUB_TRAIN_PERFORMERS
    if protocol is Protocol.NTU60_XVIEW:
        return sample.camera in NTU60_XVIEW_TRAIN_CAMERAS
    if protocol is Protocol.NTU120_XSUB:
        return sample.performer in NTU120_XSUB_TRAIN_PERFORMERS
    if protocol is Protocol.NTU120_XSET:
        return sample.setup % 2 == 0
    raise ValueError(f"{protocol} decides membership from explicit performer lists, not from the name")


@lru_cache(maxsize=2)
def ntu_missing_skeletons(ntu60_only: bool = False) -> frozenset[str]:
    """The official samples with missing or incomplete skeletons: 535 of NTU-120, of which 302 are NTU-60's."""
    lines = (Path(__file__).with_name("ntu_missing_skeletons.txt")).read_text().splitlines()
    names = [s.strip() for s in lines if s.startswith("S")]
    if ntu60_only:
        names = [n for n in names if int(n[1:4]) <= NTU60_MAX_SETUP]
    return frozenset(names)
