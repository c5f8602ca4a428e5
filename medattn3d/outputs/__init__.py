"""Outputs: predictions written back in the input's geometry, in the formats viewers and PACS read."""

from medattn3d.outputs.atomic import atomic_path, atomic_write_text
from medattn3d.outputs.naming import FORMATS, case_output_names, expected_outputs, output_name, output_names
from medattn3d.outputs.prediction import (
    ChannelArgmaxd,
    WriteCased,
    check_request,
    prediction_writer,
    write_case,
    write_restored,
)

__all__ = [
    "FORMATS",
    "ChannelArgmaxd",
    "WriteCased",
    "atomic_path",
    "atomic_write_text",
    "case_output_names",
    "check_request",
    "expected_outputs",
    "output_name",
    "output_names",
    "prediction_writer",
    "write_case",
    "write_restored",
]
