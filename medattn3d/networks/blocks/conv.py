"""Double convolution block shared by both networks."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks import Convolution
from torch import nn


class DoubleConv(nn.Sequential):
    """Two conv-norm-dropout-act layers with 'same' padding.

    Like ``monai.networks.nets.basic_unet.TwoConv`` but with a configurable ``kernel_size``
    (MONAI's is fixed at 3; a non-propagated kernel size is a known AttentionUnet pain point).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, cin in (("conv_0", in_channels), ("conv_1", out_channels)):
            self.add_module(
                name,
                Convolution(
                    spatial_dims,
                    cin,
                    out_channels,
                    kernel_size=kernel_size,
                    norm=norm,
                    act=act,
                    dropout=dropout,
                    bias=bias,
                ),
            )
