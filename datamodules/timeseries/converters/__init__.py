"""Converters from public wearable-sensor data sets to the ``vidrec.timeseries/1`` HDF5 schema.

``hapt`` (raw UCI HAPT signals from an installed package), ``uci_har`` (official UCI HAR windows), ``uea`` (UEA/UCR
``.ts`` files, embedded BasicMotions), ``generic`` (CSV / NPZ directories); ``command`` is the ``vidrec data`` CLI.
"""

from datamodules.timeseries.converters.generic import GenericFormat, convert_generic
from datamodules.timeseries.converters.hapt import convert_hapt, locate_hapt_pickle
from datamodules.timeseries.converters.uci_har import UCIHARChannels, convert_uci_har
from datamodules.timeseries.converters.uea import convert_basicmotions, convert_uea, read_ts

__all__ = [
    "GenericFormat",
    "UCIHARChannels",
    "convert_basicmotions",
    "convert_generic",
    "convert_hapt",
    "convert_uci_har",
    "convert_uea",
    "locate_hapt_pickle",
    "read_ts",
]
