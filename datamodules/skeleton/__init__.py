"""Skeleton action data: NTU RGB+D ``.skeleton`` files, pose pickles and generic folders -> ``vidrec.skeleton/1``.

* ``ntu_format``: the ``.skeleton`` reader and writer, sample names ``SsssCcccPpppRrrrAaaa``.
* ``ntu_convert``: folder conversion with pyskl's body selection, denoising and trimming.
* ``importers``: pyskl / mmaction2 pickles (restricted unpickling) and a generic NPZ/CSV folder.
* ``protocols``: NTU-60 cross-subject / cross-view, NTU-120 cross-subject / cross-setup, the missing-skeleton list.
* ``schema``: the HDF5 layout; ``transforms``: preprocessing and augmentation; ``datamodule``: ``SkeletonDataModule``.
* ``synthetic``: synthetic actions of an articulated 25-joint body written as real ``.skeleton`` files.
"""

from datamodules.skeleton.datamodule import SkeletonDataModule, SkeletonDataset
from datamodules.skeleton.importers import import_pose_pickle, import_skeleton_folder, load_pose_pickle
from datamodules.skeleton.ntu_convert import BodySelection, ConversionReport, convert_ntu_folder, select_bodies
from datamodules.skeleton.ntu_format import SkeletonFormatError, parse_sample_name, read_skeleton_file
from datamodules.skeleton.protocols import Protocol, ntu_missing_skeletons
from datamodules.skeleton.schema import SampleInfo, SkeletonSample, read_skeleton_info, write_skeleton_samples
from datamodules.skeleton.synthetic import SyntheticSkeletonSettings, generate_synthetic_skeletons
from datamodules.skeleton.transforms import LengthMode

__all__ = [
    "BodySelection",
    "ConversionReport",
    "LengthMode",
    "Protocol",
    "SampleInfo",
    "SkeletonDataModule",
    "SkeletonDataset",
    "SkeletonFormatError",
    "SkeletonSample",
    "SyntheticSkeletonSettings",
    "convert_ntu_folder",
    "generate_synthetic_skeletons",
    "import_pose_pickle",
    "import_skeleton_folder",
    "load_pose_pickle",
    "ntu_missing_skeletons",
    "parse_sample_name",
    "read_skeleton_file",
    "read_skeleton_info",
    "select_bodies",
    "write_skeleton_samples",
]
