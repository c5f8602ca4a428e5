"""MONAI ResNet as a 4-stage feature encoder, with optional weights from a local file (never a download)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes, resnet_params
from torch import nn

RESNET_DEPTHS = tuple(resnet_params)  # resnet10 ... resnet200


class ResNetEncoder(nn.Module):
    """Feature maps of a MONAI ``ResNet``'s four stages (strides 4, 8, 16, 32 of the input).

    Built like ``monai.networks.nets.ResNetFeatures`` (same block/layer/shortcut settings per depth, stride-2
    stem), so MedicalNet-style state dicts load; unlike it, widths and norm are configurable and pretrained
    weights come only from a local file.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depth: one of ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``,
            ``resnet200``.
        widths: the four stages' block widths (default 64, 128, 256, 512; bottleneck blocks output 4x these).
        norm: MONAI norm spec.
        shortcut_type: ``"B"`` (1x1 conv shortcuts, TorchScript-scriptable) or ``"A"`` (parameter-free padded
            shortcuts of MedicalNet's resnet18/34; MONAI builds those with ``functools.partial``, which only
            tracing can export). ``None`` takes MONAI's per-depth choice.
        pretrained_path: optional local checkpoint (a state dict, or a dict holding one under ``state_dict``;
            ``module.`` prefixes from DataParallel are stripped).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        depth: str = "resnet50",
        widths: Sequence[int] | None = None,
        norm: str | tuple = "batch",
        shortcut_type: str | None = "B",
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if depth not in resnet_params:
            raise ValueError(f"unknown backbone depth {depth!r}; choose one of {', '.join(RESNET_DEPTHS)}")
        block, layers, default_shortcut, bias_downsample, _ = resnet_params[depth]
        block_widths = list(widths) if widths is not None else get_inplanes()
        if len(block_widths) != 4:
            raise ValueError(f"widths must list 4 stage widths, got {block_widths}")
        self.resnet = ResNet(
            block=block,
            layers=layers,
            block_inplanes=block_widths,
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=2,
            shortcut_type=shortcut_type or default_shortcut,
            feed_forward=False,
            bias_downsample=bias_downsample,
            norm=norm,
        )
        expansion = (ResNetBottleneck if block == "bottleneck" else ResNetBlock).expansion
        self.out_channels = [w * expansion for w in block_widths]
        if pretrained_path is not None:
            load_backbone_weights(self.resnet, pretrained_path)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.resnet
        x = r.maxpool(r.act(r.bn1(r.conv1(x))))
        f1 = r.layer1(x)
        f2 = r.layer2(f1)
        f3 = r.layer3(f2)
        return [f1, f2, f3, r.layer4(f3)]


def load_backbone_weights(resnet: nn.Module, path: str | Path) -> None:
    """Load a local ResNet checkpoint into ``resnet``; raise with the file name and the mismatching keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained backbone weights not found (give a local .pt/.pth file)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or non-checkpoint files
        raise ValueError(f"{path}: cannot read as a PyTorch checkpoint ({err})") from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (or a dict with 'state_dict'), got {type(checkpoint)}")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = resnet.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: does not match the backbone: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong_shape)} of another shape {wrong_shape[:3]}"
        )
    resnet.load_state_dict(state)
