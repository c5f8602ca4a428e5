"""MONAI ResNet (or a ResNeXt built on it) as a 4-stage feature encoder, with optional weights from a local file
(never a download)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes, resnet_params
from torch import nn

from medattn3d.networks.utils import EagerPathConv

RESNET_DEPTHS = tuple(resnet_params)  # resnet10 ... resnet200


class ResNeXtBottleneck(nn.Module):
    """ResNeXt bottleneck (Xie et al. 2017, torchvision's layout): 1x1 conv to ``width``, grouped 3x3 conv (stride
    here), 1x1 conv to ``planes * 4``, each with a norm, ReLU after the residual sum.

    ``width = planes * width_per_group / 64 * groups``; subclasses fix ``groups`` and ``width_per_group`` so MONAI's
    ``ResNet`` can build stages from the class (it calls ``block(in_planes, planes, spatial_dims, stride,
    downsample, norm)``).
    """

    expansion = 4
    groups = 32
    width_per_group = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        spatial_dims: int = 3,
        stride: int = 1,
        downsample: nn.Module | partial | None = None,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        width = planes * self.width_per_group // 64 * self.groups
        self.conv1 = conv(in_planes, width, kernel_size=1, bias=False)
        self.bn1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=width)
        self.conv2 = conv(width, width, kernel_size=3, stride=stride, padding=1, groups=self.groups, bias=False)
        self.bn2 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=width)
        self.conv3 = conv(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=planes * self.expansion)
        self.act = get_act_layer(name=act)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + residual)


class ResNeXt32x4dBottleneck(ResNeXtBottleneck):
    """ResNeXt bottleneck with 32 groups of width 4 (ResNeXt-50 32x4d)."""

    groups = 32
    width_per_group = 4


class ResNeXt32x8dBottleneck(ResNeXtBottleneck):
    """ResNeXt bottleneck with 32 groups of width 8 (ResNeXt-101 32x8d, Sinha & Dolz's backbone)."""

    groups = 32
    width_per_group = 8


# name: (block class, blocks per stage); shortcuts are type B (1x1 conv + norm, no bias) as in torchvision
RESNEXT_PARAMS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnext50_32x4d": (ResNeXt32x4dBottleneck, [3, 4, 6, 3]),
    "resnext101_32x8d": (ResNeXt32x8dBottleneck, [3, 4, 23, 3]),
}
BACKBONES = RESNET_DEPTHS + tuple(RESNEXT_PARAMS)


class ZeroPadShortcut(nn.Module):
    """Type "A" shortcut (MedicalNet's resnet18/34): subsample by ``stride`` and append zero channels up to
    ``planes``. Parameter-free, so state-dict keys are those of MONAI's ``functools.partial`` version; unlike that one
    it is TorchScript-scriptable and lets gradients through (MedicalNet's ``out.data`` cut them off).
    """

    def __init__(self, spatial_dims: int, planes: int, stride: int) -> None:
        super().__init__()
        self.planes = planes
        self.subsample = Pool[Pool.AVG, spatial_dims](kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.subsample(x)
        shape = list(out.shape)
        shape[1] = self.planes - shape[1]
        return torch.cat([out, out.new_zeros(shape)], dim=1)


class ResNetEncoder(nn.Module):
    """Feature maps of a MONAI ``ResNet``'s four stages (strides 4, 8, 16, 32 of the input).

    Built like ``monai.networks.nets.ResNetFeatures`` (same block/layer/shortcut settings per depth, stride-2
    stem), so MedicalNet-style state dicts load; unlike it, widths and norm are configurable, ResNeXt depths are
    offered, type "A" shortcuts are scriptable and pretrained weights come only from a local file.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depth: one of ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``,
            ``resnet200`` (MONAI's ResNets), ``resnext50_32x4d``, ``resnext101_32x8d``.
        widths: the four stages' block widths (default 64, 128, 256, 512; bottleneck blocks output 4x these).
        norm: MONAI norm spec.
        shortcut_type: ``"B"`` (1x1 conv + norm shortcuts) or ``"A"`` (parameter-free zero-padded shortcuts of
            MedicalNet's resnet18/34, as :class:`ZeroPadShortcut`). ``None`` takes MONAI's per-depth choice.
            Both script with TorchScript.
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
        if depth not in BACKBONES:
            raise ValueError(f"unknown backbone depth {depth!r}; choose one of {', '.join(BACKBONES)}")
        if shortcut_type not in (None, "A", "B"):
            raise ValueError(f"shortcut_type must be 'A', 'B' or None, got {shortcut_type!r}")
        block: str | type[nn.Module]
        if depth in RESNEXT_PARAMS:
            block, layers = RESNEXT_PARAMS[depth]
            default_shortcut, bias_downsample = "B", False
        else:
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
        _script_friendly_shortcuts(self.resnet, spatial_dims)
        _trim_kernels_on_single_voxel_axes(self.resnet)
        if isinstance(block, str):
            block = ResNetBottleneck if block == "bottleneck" else ResNetBlock
        self.out_channels = [w * block.expansion for w in block_widths]
        if pretrained_path is not None:
            load_backbone_weights(self.resnet, pretrained_path)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.resnet
        x = r.maxpool(r.act(r.bn1(self._stem(x))))
        f1 = r.layer1(x)
        f2 = r.layer2(f1)
        f3 = r.layer3(f2)
        return [f1, f2, f3, r.layer4(f3)]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.resnet.conv1(x)
        return self._stem_eager(x)

    @torch.jit.unused
    def _stem_eager(self, x: torch.Tensor) -> torch.Tensor:
        """The stem convolution; under CPU autocast with at most 3 input channels it runs in fp32 and its output is
        cast to the autocast dtype: oneDNN's bf16 kernels are about 2x slower than fp32 on so few input channels
        (measured 78 vs 40 ms forward + backward for ResNet's 7^3 stem on 2 x 1 x 64 x 64 x 32, one thread), and
        the result is the bf16 rounding of a more exact value."""
        device = x.device.type
        if device != "cpu" or x.shape[1] > 3 or not torch.is_autocast_enabled(device):
            return self.resnet.conv1(x)
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):
            out = self.resnet.conv1(x.float())
        return out.to(dtype)


class _TrimmingConvMixin(EagerPathConv):
    """Convolution that skips the kernel taps which can only meet zero padding.

    On a spatial axis where the input has a single voxel, a convolution with an odd kernel ``k``, dilation 1 and
    "same" zero padding ``(k - 1) / 2`` has one output along that axis, and only the kernel's centre tap on that
    axis meets data: every other tap multiplies padding. Dropping those taps (and the padding) computes the same
    values with ``1/k`` of the weights: ResNet-18's last stage on the bundle's 64 x 64 x 32 patch is 2 x 2 x 1, where
    the 512 x 512 x 3^3 convolutions are bound by moving their weights, not by arithmetic (measured 4-5x faster per
    convolution forward + backward, one or two threads). The trimmed call runs in channels-first layout: oneDNN
    reorders a channels-last weight of that size on every call (most of the untrimmed cost). Parameters and
    state-dict keys are the plain convolution's; TorchScript, tracing and ONNX export take the plain path.
    """

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = [] if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() else self._trimmable_axes(x)
        if not axes:
            return self._conv_forward(x, self.weight, self.bias)
        padding = list(self.padding)
        weight = _CentreTaps.apply(self.weight, [a + 2 for a in axes], [padding[a] for a in axes])
        for axis in axes:
            padding[axis] = 0
        conv = F.conv3d if x.dim() == 5 else F.conv2d
        return conv(x.contiguous(), weight, self.bias, self.stride, padding, self.dilation, self.groups)

    @torch.jit.unused
    def _trimmable_axes(self, x: torch.Tensor) -> list[int]:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or x.dim() != len(self.kernel_size) + 2:
            return []
        return [
            axis
            for axis, k in enumerate(self.kernel_size)
            if x.shape[axis + 2] == 1
            and k > 1
            and k % 2 == 1
            and self.dilation[axis] == 1
            and self.padding[axis] == (k - 1) // 2
        ]


class _CentreTaps(torch.autograd.Function):
    """``weight`` narrowed to one tap on each of ``dims`` (at ``taps``), as a contiguous copy; the backward writes
    the gradient into zeros laid out like ``weight`` (channels-last stays channels-last), so the parameter's
    gradient needs no further layout copy."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, dims: list[int], taps: list[int]) -> torch.Tensor:
        ctx.dims, ctx.taps = dims, taps
        ctx.save_for_backward(weight)
        for dim, tap in zip(dims, taps, strict=True):
            weight = weight.narrow(dim, tap, 1)
        return weight.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        full = torch.zeros_like(weight)
        part = full
        for dim, tap in zip(ctx.dims, ctx.taps, strict=True):
            part = part.narrow(dim, tap, 1)
        part.copy_(grad)
        return full, None, None


class _TrimmingConv2d(_TrimmingConvMixin, nn.Conv2d):
    """:class:`nn.Conv2d` skipping taps that meet only padding (:class:`_TrimmingConvMixin`)."""


class _TrimmingConv3d(_TrimmingConvMixin, nn.Conv3d):
    """:class:`nn.Conv3d` skipping taps that meet only padding (:class:`_TrimmingConvMixin`)."""


def _trim_kernels_on_single_voxel_axes(resnet: nn.Module) -> None:
    """Make every plain 2D/3D convolution of ``resnet`` a trimming one (same parameters, same function)."""
    trimming = {nn.Conv2d: _TrimmingConv2d, nn.Conv3d: _TrimmingConv3d}
    for module in resnet.modules():
        if type(module) in trimming:
            module.__class__ = trimming[type(module)]


def _script_friendly_shortcuts(resnet: ResNet, spatial_dims: int) -> None:
    """Replace MONAI's ``functools.partial`` type "A" shortcuts by equivalent :class:`ZeroPadShortcut` modules."""
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in layer:
            shortcut = getattr(block, "downsample", None)
            if isinstance(shortcut, partial):
                block.downsample = ZeroPadShortcut(
                    spatial_dims, shortcut.keywords["planes"], shortcut.keywords["stride"]
                )


def load_backbone_weights(resnet: nn.Module, path: str | Path) -> None:
    """Load a local ResNet checkpoint into ``resnet``; raise with the file name and the mismatching keys.

    Takes MedicalNet's layout as is: the weights under ``state_dict``, keys prefixed ``module.``, no
    ``num_batches_tracked`` buffers (those keep their fresh value), no classifier (``fc.*`` keys are ignored).
    """
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
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path}: does not match the backbone: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong_shape)} of another shape {wrong_shape[:3]}"
        )
    resnet.load_state_dict(state, strict=False)  # exactly the keys checked above, less num_batches_tracked
