"""Position/channel attention against plain softmax reference computations, and 3D memory behaviour."""

import subprocess
import sys
import textwrap

import pytest
import torch

from medattn3d.networks.blocks import ChannelAttention, PositionAttention, dual_attention
from medattn3d.networks.blocks.dual_attention import PositionAttentionProduct


def naive_position_attention(module: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """gamma * V softmax(Q^T K)^T + x with the full N x N affinity, as written in DANet."""
    b, c = x.shape[:2]
    q = module.query(x).reshape(b, -1, x[0, 0].numel())  # (B, C', N)
    k = module.key(x).reshape(b, -1, x[0, 0].numel())
    v = module.value(x).reshape(b, c, -1)  # (B, C, N)
    affinity = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, N, N), rows: queries
    out = torch.bmm(v, affinity.transpose(1, 2)).reshape(x.shape)
    return module.gamma * out + x


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, (12, 9)), (3, (8, 8, 8)), (3, (6, 5, 4))])
def test_fused_position_attention_equals_naive_reference(spatial_dims, size):
    module = PositionAttention(spatial_dims, in_channels=32)
    with torch.no_grad():
        module.gamma.fill_(0.7)
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    module = module.double()
    fused = module(x)
    reference = naive_position_attention(module, x)
    assert torch.allclose(fused, reference, atol=1e-5)
    assert not torch.allclose(fused, x)  # the attention term really contributes


def test_fused_position_attention_gradients_equal_naive_reference():
    module = PositionAttention(3, in_channels=16)
    with torch.no_grad():
        module.gamma.fill_(0.5)
    x = torch.randn(1, 16, 6, 6, 6, requires_grad=True)
    module(x).square().sum().backward()
    fused_grads = [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    x.grad = None
    module.zero_grad()
    naive_position_attention(module, x).square().sum().backward()
    naive_grads = [x.grad] + [p.grad for p in module.parameters()]
    for a, b in zip(fused_grads, naive_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_channel_attention_equals_reference():
    module = ChannelAttention()
    with torch.no_grad():
        module.gamma.fill_(0.3)
    x = torch.randn(2, 5, 4, 3, 2)
    flat = x.reshape(2, 5, -1)
    energy = flat @ flat.transpose(1, 2)
    weights = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
    expected = 0.3 * (weights @ flat).reshape(x.shape) + x
    assert torch.allclose(module(x), expected, atol=1e-5)


def test_gamma_zero_starts_as_identity():
    x = torch.randn(1, 16, 4, 4, 4)
    assert torch.equal(PositionAttention(3, 16)(x), x)
    assert torch.equal(ChannelAttention()(x), x)


def test_3d_position_attention_at_32_cubed_trains_in_linear_memory():
    """Forward + backward over 32^3 positions in a fresh process; the N x N matrix alone would be 4.3 GB."""
    script = textwrap.dedent(
        """
        import resource, torch
        from medattn3d.networks.blocks import PositionAttention
        torch.manual_seed(0)
        module = PositionAttention(3, in_channels=16)
        x = torch.randn(1, 16, 32, 32, 32, requires_grad=True)
        module(torch.randn(1, 16, 4, 4, 4)).sum().backward()  # warm up kernels and allocator at a tiny size
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        module(x).sum().backward()
        assert x.grad is not None and module.query.weight.grad is not None
        print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = (int(v) for v in result.stdout.strip().splitlines()[-1].split())
    growth_gib = (after - before) / 2**20  # ru_maxrss is in KiB on Linux; growth of the peak over the imports' own
    # the naive form holds the affinity, its softmax and a gradient: 3 x 32768^2 fp32 = 12 GiB; ours stays under a
    # tenth of that (the imports alone, torch and MONAI, weigh differently from one environment to the next)
    naive_gib = 3 * 32768**2 * 4 / 2**30
    assert growth_gib < naive_gib / 10, f"peak grew by {growth_gib:.2f} GiB: the N x N affinity was materialised"


def test_bf16_training_runs_the_product_in_fp32_with_the_same_gradients():
    """Under CPU bf16 autocast with gradients, the product runs in fp32 (PyTorch's bf16 backward is ~5x slower);
    the result is the fp32 reference's, up to the bf16 rounding of the projections around it."""
    torch.manual_seed(0)
    module = PositionAttention(3, in_channels=16)
    with torch.no_grad():
        module.gamma.fill_(0.5)
    x = torch.randn(1, 16, 6, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    out.float().square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    x.grad = None
    module.zero_grad()
    naive_position_attention(module, x).square().sum().backward()
    reference = [x.grad] + [p.grad for p in module.parameters()]
    scale = max(float(g.abs().max()) for g in reference)  # the key bias's true gradient is 0 (softmax shift)
    for a, b in zip(grads, reference, strict=True):
        assert torch.allclose(a, b, rtol=0.05, atol=0.02 * scale)
    scripted = torch.jit.script(module)  # scripted modules keep the plain path
    with torch.no_grad():
        assert torch.allclose(scripted(x), module(x), atol=1e-5)


@pytest.mark.parametrize(("batch", "positions", "qk", "v"), [(2, 20, 2, 4), (1, 140, 1, 2)])
def test_training_product_gradients_pass_gradcheck(batch, positions, qk, v, monkeypatch):
    """The blockwise backward of the training product against finite differences (float64), with sequences shorter
    than, and spanning two of, its query chunks (the minimum 128), and q/k narrower than v (the forward pads them)."""
    monkeypatch.setattr(dual_attention, "BACKWARD_BLOCK_ELEMENTS", 0)
    torch.manual_seed(0)
    tensors = [torch.randn(batch, positions, width, dtype=torch.float64, requires_grad=True) for width in (qk, qk, v)]
    assert torch.autograd.gradcheck(PositionAttentionProduct.apply, tuple(tensors))


@pytest.mark.parametrize("block_elements", [0, dual_attention.BACKWARD_BLOCK_ELEMENTS])
def test_training_product_equals_softmax_reference_in_fp32(block_elements, monkeypatch):
    """softmax(q k^T) v and its gradients, fp32, N = 1000 positions (8 query chunks of the minimum 128, or one block
    of the default budget), within 1e-4 of the plain form."""
    monkeypatch.setattr(dual_attention, "BACKWARD_BLOCK_ELEMENTS", block_elements)
    assert dual_attention.backward_query_chunk(1000) == (128 if block_elements == 0 else 4194)
    if block_elements:  # the default budget: one block at the bundle's 2048 positions, the minimum 128 at 32^3
        assert dual_attention.backward_query_chunk(2048) >= 2048 and dual_attention.backward_query_chunk(32**3) == 128
    torch.manual_seed(0)
    q, k = (torch.randn(2, 1000, 8, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 1000, 64, requires_grad=True)
    weight = torch.randn(2, 1000, 64)
    out = PositionAttentionProduct.apply(q, k, v)
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    reference = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
    expected = torch.autograd.grad((reference * weight).sum(), (q, k, v))
    assert (out - reference).abs().max() < 1e-4
    for a, b in zip(grads, expected, strict=True):
        assert (a - b).abs().max() < 1e-4 * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("threads", [1, 2])
def test_training_gradients_equal_naive_reference_on_one_and_several_threads(threads):
    """One thread takes PyTorch's fused backward, several the blockwise one: both give the naive form's gradients."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        module = PositionAttention(3, in_channels=16)
        with torch.no_grad():
            module.gamma.fill_(0.5)
        x = torch.randn(2, 16, 6, 6, 5, requires_grad=True)
        grads = torch.autograd.grad(module(x).square().sum(), [x, *module.parameters()])
        expected = torch.autograd.grad(naive_position_attention(module, x).square().sum(), [x, *module.parameters()])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(grads, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
