"""The grid attention gate against a hand-written computation of Oktay et al.'s equations."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from medattn3d.networks.blocks import GridAttentionGate, IdentityGate, MultiHeadGridAttention


def _pointwise(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution written as a channel contraction."""
    out = torch.einsum("oc,bc...->bo...", weight.flatten(1), x)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return out


def _strided_patch_projection(weight: torch.Tensor, x: torch.Tensor, factor: tuple[int, ...]) -> torch.Tensor:
    """theta: kernel = stride = factor, written as a sum over the offsets inside each patch."""
    out = 0
    for offset in itertools.product(*(range(f) for f in factor)):
        index = (slice(None), slice(None)) + tuple(slice(o, None, f) for o, f in zip(offset, factor, strict=True))
        out = out + torch.einsum("oc,bc...->bo...", weight[(slice(None), slice(None), *offset)], x[index])
    return out


def _reference_gate(gate: GridAttentionGate, x: torch.Tensor, g: torch.Tensor, factor: tuple[int, ...]):
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    theta = _strided_patch_projection(gate.theta.weight, x, factor)
    phi = _pointwise(gate.phi.weight, gate.phi.bias, g)
    phi = F.interpolate(phi, size=theta.shape[2:], mode=mode, align_corners=False)
    q = torch.clamp(theta + phi, min=0)
    alpha = 1 / (1 + torch.exp(-_pointwise(gate.psi.weight, gate.psi.bias, q)))
    alpha = F.interpolate(alpha, size=x.shape[2:], mode=mode, align_corners=False)
    conv = gate.output_transform.conv
    norm = gate.output_transform.adn.N
    y = _pointwise(conv.weight, conv.bias, alpha * x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (y - norm.running_mean.view(shape)) / torch.sqrt(norm.running_var.view(shape) + norm.eps)
    return y * norm.weight.view(shape) + norm.bias.view(shape), alpha


@pytest.mark.parametrize(
    ("spatial_dims", "factor", "x_size", "g_size"),
    [
        (2, (2, 2), (12, 10), (6, 5)),
        (3, (2, 2, 2), (8, 6, 4), (4, 3, 2)),
        (3, (2, 2, 1), (8, 6, 4), (4, 3, 4)),
        (3, (2, 2, 2), (8, 8, 8), (2, 2, 2)),  # coarser gating grid: phi(g) is resampled to theta's grid
    ],
)
def test_gate_matches_hand_written_equations(spatial_dims, factor, x_size, g_size):
    gate = GridAttentionGate(spatial_dims, in_channels=6, gating_channels=5, inter_channels=4, sub_sample_factor=factor)
    norm = gate.output_transform.adn.N
    with torch.no_grad():  # non-trivial norm statistics so the output transform is really checked
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    gate.eval()
    x = torch.randn(2, 6, *x_size)
    g = torch.randn(2, 5, *g_size)
    y, alpha = gate(x, g)
    y_ref, alpha_ref = _reference_gate(gate, x, g, factor)
    assert alpha.shape == (2, 1, *x_size)
    assert torch.allclose(alpha, alpha_ref, atol=1e-6)
    assert torch.allclose(y, y_ref, atol=1e-5)
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0


def test_multi_head_gate_returns_one_coefficient_map_per_head():
    block = MultiHeadGridAttention(3, in_channels=4, gating_channels=8, heads=2).eval()
    y, alphas = block(torch.randn(1, 4, 8, 8, 8), torch.randn(1, 8, 4, 4, 4))
    assert y.shape == (1, 4, 8, 8, 8)
    assert alphas.shape == (1, 2, 8, 8, 8)
    assert not torch.allclose(alphas[:, 0], alphas[:, 1])  # independent heads


def test_single_head_keeps_the_authors_conv_norm_act_after_the_gate():
    block = MultiHeadGridAttention(2, in_channels=4, gating_channels=8, heads=1).eval()
    x, g = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)
    y, alphas = block(x, g)
    y_gate, alpha_gate = block.gates[0](x, g)
    conv, norm = block.combine.conv, block.combine.adn.N
    assert conv.in_channels == conv.out_channels == 4 and tuple(conv.kernel_size) == (1, 1)
    # 1x1 conv, eval BatchNorm and ReLU on the gate's output, written out
    z = _pointwise(conv.weight, conv.bias, y_gate)
    shape = (1, -1, 1, 1)
    z = (z - norm.running_mean.view(shape)) / torch.sqrt(norm.running_var.view(shape) + norm.eps)
    z = torch.relu(z * norm.weight.view(shape) + norm.bias.view(shape))
    assert torch.allclose(y, z, atol=1e-6) and torch.equal(alphas, alpha_gate)


def test_identity_gate_passes_the_skip_through():
    x, g = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)
    y, alphas = IdentityGate()(x, g)
    assert y is x and alphas.shape == (2, 0, 8, 8)


def test_gate_rejects_zero_heads():
    with pytest.raises(ValueError, match="heads must be >= 1"):
        MultiHeadGridAttention(2, 4, 8, heads=0)
