"""Outputs: predictions written back in the input's geometry."""

from medattn3d.outputs.atomic import atomic_path, atomic_write_text
from medattn3d.outputs.naming import FORMATS, expected_outputs, output_name, output_names
from medattn3d.outputs.prediction import ChannelArgmaxd, prediction_writer

__all__ = [
    "FORMATS",
    "ChannelArgmaxd",
    "atomic_path",
    "atomic_write_text",
    "expected_outputs",
    "output_name",
    "output_names",
    "prediction_writer",
]
