"""Outputs: predictions written back in the input's geometry."""

from medattn3d.outputs.prediction import ChannelArgmaxd, prediction_writer

__all__ = ["ChannelArgmaxd", "prediction_writer"]
