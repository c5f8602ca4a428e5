"""Shallow conv3d guard: right weight gradients under bf16 autocast on CPU, and only where the input is shallow."""

import pytest
import torch
from monai.inferers import SimpleInferer

from medattn3d.engine.conv_guard import ShallowConv3dInFp32, is_shallow_conv3d
from medattn3d.engine.precision import PrecisionInferer


def test_shallow_means_strictly_between_one_and_the_kernel():
    weight = torch.zeros(4, 4, 3, 3, 3)
    assert is_shallow_conv3d(torch.zeros(1, 4, 2, 8, 8), weight)
    assert is_shallow_conv3d(torch.zeros(1, 4, 8, 8, 2), weight)
    assert not is_shallow_conv3d(torch.zeros(1, 4, 1, 8, 8), weight)
    assert not is_shallow_conv3d(torch.zeros(1, 4, 3, 8, 8), weight)
    assert not is_shallow_conv3d(torch.zeros(1, 4, 2, 8, 8), torch.zeros(4, 4, 1, 1, 1))
    assert not is_shallow_conv3d(torch.zeros(1, 4, 2, 8), torch.zeros(4, 4, 3, 3))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("depth", [2, 4])
def test_weight_gradient_of_a_bf16_training_step_matches_fp32(depth, transposed):
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose3d if transposed else torch.nn.Conv3d
    function = torch.nn.functional.conv_transpose3d if transposed else torch.nn.functional.conv3d
    conv = layer(64, 64, 3, padding=1, bias=False)
    x = torch.randn(4, 64, depth, 8, 8)
    target = torch.randn(4, 64, depth, 8, 8)
    reference = conv.weight.detach().clone().requires_grad_()
    ((function(x, reference, padding=1) - target) ** 2).mean().backward()
    output = PrecisionInferer(SimpleInferer(), precision="bf16", channels_last=True)(x, conv)
    ((output - target) ** 2).mean().backward()
    relative_error = (conv.weight.grad - reference.grad).abs().max() / reference.grad.abs().max()
    assert relative_error < 0.02  # bf16 rounding; the unguarded oneDNN kernel is off by up to 1e37 at depth 2


def test_only_shallow_convolutions_leave_bf16():
    shallow, deep = torch.randn(1, 8, 2, 8, 8), torch.randn(1, 8, 8, 8, 8)
    weight = torch.randn(8, 8, 3, 3, 3)
    with ShallowConv3dInFp32(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.functional.conv3d(shallow, weight, padding=1).dtype == torch.float32
        assert torch.nn.functional.conv3d(deep, weight, padding=1).dtype == torch.bfloat16
        assert torch.nn.functional.conv2d(shallow[:, :, 0], weight[:, :, 0], padding=1).dtype == torch.bfloat16
