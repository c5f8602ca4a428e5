"""Position (spatial self-) attention and channel attention (Fu et al. DANet, as used by Sinha & Dolz 2021)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from torch import nn

BACKWARD_QUERY_CHUNK = 128
BACKWARD_BLOCK_ELEMENTS = 1 << 22


def backward_query_chunk(positions: int) -> int:
    """Queries per block of :class:`PositionAttentionProduct`'s backward: at least :data:`BACKWARD_QUERY_CHUNK`,
    more while a block stays within :data:`BACKWARD_BLOCK_ELEMENTS` scores per sample (16 MiB in fp32): the whole
    product at the bundle's 2048 positions, 303 queries at 24^3, the minimum 128 (memory ``O(128 N)``) from 2^15
    positions on. Fewer blocks mean fewer kernel launches, each a parallel region whose barrier stalls when other
    jobs load the machine (128-query blocks made ~5000 per step at 24^3); much larger blocks leave the cache (2^24
    scores per block ran 1.7x slower than 2^20 at 24^3 on a quiet moment, two threads; 2^22 was the fastest of
    2^20-2^22 under load, at 24^3 and at 2048 positions)."""
    return max(BACKWARD_QUERY_CHUNK, BACKWARD_BLOCK_ELEMENTS // max(positions, 1))


class PositionAttentionProduct(torch.autograd.Function):
    """Exact ``softmax(q k^T) v`` (unscaled) for CPU training: PyTorch's fused flash forward, a blockwise backward.

    ``q`` and ``k`` are ``(B, N, d)``, ``v`` is ``(B, N, C)`` with ``d <= C``; the result is ``(B, N, C)``.
    Forward: ``q``/``k`` zero-padded to ``C`` (zero channels leave ``q k^T`` unchanged) through the fused CPU
    kernel, which also returns each query's log-sum-exp. Backward: over chunks of :func:`backward_query_chunk`
    queries (at most 2^22 scores per sample), recompute the probabilities from the saved log-sum-exp and form
    ``dv``, ``dq``, ``dk`` with plain matmuls at ``q``/``k``'s own width; memory is ``O(chunk x N)``, never
    ``N x N``. PyTorch 2.13's fused CPU backward took 12 s per call at 24^3 positions with two threads (about 1.5 s
    with one), this one ~0.5 s (``benchmarks/position_attention.py``). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        pad = v.shape[-1] - q.shape[-1]
        qp = F.pad(q, [0, pad]) if pad > 0 else q
        kp = F.pad(k, [0, pad]) if pad > 0 else k
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            qp.unsqueeze(1), kp.unsqueeze(1), v.unsqueeze(1), scale=1.0
        )
        out = out.squeeze(1)
        ctx.save_for_backward(q, k, v, out, logsumexp.squeeze(1))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v, out, logsumexp = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_q = torch.empty_like(q)
        grad_k = torch.zeros_like(k)
        grad_v = torch.zeros_like(v)
        delta = (grad_out * out).sum(-1)  # rowsum(dO * O) = rowsum(P * dP): the softmax backward's shift
        k_t, v_t = k.transpose(1, 2), v.transpose(1, 2)
        chunk = backward_query_chunk(k.shape[1])
        for start in range(0, q.shape[1], chunk):
            rows = slice(start, start + chunk)
            probs = torch.bmm(q[:, rows], k_t).sub_(logsumexp[:, rows, None]).exp_()  # (B, chunk, N)
            grad_v.baddbmm_(probs.transpose(1, 2), grad_out[:, rows])
            grad_scores = torch.bmm(grad_out[:, rows], v_t).sub_(delta[:, rows, None]).mul_(probs)
            torch.bmm(grad_scores, k, out=grad_q[:, rows])
            grad_k.baddbmm_(grad_scores.transpose(1, 2), q[:, rows])
        return grad_q, grad_k, grad_v


class PositionAttention(nn.Module):
    """Position attention: every position attends to every other, ``out = gamma * (V softmax(Q^T K)^T) + x``.

    Queries and keys are 1x1 projections to ``in_channels // 8`` channels, values keep ``in_channels``; the energy is
    unscaled (as in the authors' code) and ``gamma`` is a learned scalar starting at 0, so the block starts as the
    identity. The N x N affinity is never materialised: the product goes through
    ``torch.nn.functional.scaled_dot_product_attention`` (memory linear in N with its fused kernels). Queries and keys
    are zero-padded to the value width so the fused CPU kernel applies; zero channels leave ``Q^T K`` unchanged.
    Training on CPU with several threads runs the product through :class:`PositionAttentionProduct` (the same fused
    forward, a blockwise backward that uses every thread; fp32 under bf16 autocast).

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: feature channels ``C``.
        reduction: query/key width is ``max(C // reduction, 1)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        qk_channels = max(in_channels // reduction, 1)
        self.query = conv(in_channels, qk_channels, kernel_size=1)
        self.key = conv(in_channels, qk_channels, kernel_size=1)
        self.value = conv(in_channels, in_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.pad_qk = in_channels - qk_channels

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention term ``V softmax(Q^T K)^T`` alone, shaped like ``x`` (before the gamma residual)."""
        batch, channels = x.shape[0], x.shape[1]
        # (B, N, C) layouts with a unit last-dim stride: the fused kernels need it, else SDPA falls back to the
        # N x N math path. Padding q/k copies them anyway; v is copied once here. Training on CPU goes through
        # PositionAttentionProduct (fused forward, blockwise backward); inference and other devices through SDPA.
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2).contiguous()
        if not torch.jit.is_scripting() and torch.is_grad_enabled() and x.device.type == "cpu":
            out = self._product_for_training(q, k, v)
        else:
            if self.pad_qk > 0:
                q = F.pad(q, [0, self.pad_qk])
                k = F.pad(k, [0, self.pad_qk])
            else:
                q = q.contiguous()
                k = k.contiguous()
            out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=1.0).squeeze(1)
        return out.transpose(1, 2).reshape([batch, channels] + list(x.shape[2:]))

    @torch.jit.unused
    def _product_for_training(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention product for CPU training, in fp32 outside autocast when the inputs are bf16/fp16
        (PyTorch's fused CPU kernel computes its bf16 backward about 5x slower than fp32, and fp32 is more
        accurate); result in the inputs' dtype. With several threads: :class:`PositionAttentionProduct` (fused
        forward, blockwise backward whose matmuls use every thread); on one thread PyTorch's fused forward and
        backward, which were as fast or faster there (0.53 s vs 0.75 s backward at 24^3 positions, C = 32)."""
        dtype = q.dtype
        compute = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
        with torch.autocast("cpu", enabled=False):
            q, k, v = q.to(compute), k.to(compute), v.to(compute)
            if torch.get_num_threads() > 1:
                out = PositionAttentionProduct.apply(q, k, v)
            else:
                q = F.pad(q, [0, self.pad_qk]) if self.pad_qk > 0 else q.contiguous()
                k = F.pad(k, [0, self.pad_qk]) if self.pad_qk > 0 else k.contiguous()
                out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=1.0)[:, 0]
        return out.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.attend(x) + x


def has_padded_position_attention(network: nn.Module) -> bool:
    """Whether ``network`` holds position attention whose queries/keys are zero-padded for PyTorch's fused kernel."""
    return any(isinstance(m, PositionAttention) and m.pad_qk > 0 for m in network.modules())


@contextlib.contextmanager
def unpadded_position_attention(network: nn.Module) -> Iterator[None]:
    """Within this block, ``network``'s position attention passes queries and keys at their own width (no zero
    padding) to ``scaled_dot_product_attention``: the same function, for a graph traced for a runtime whose fused
    attention takes any width. The padding only serves PyTorch's fused CPU kernel; OpenVINO f32 ran the 3D guided
    network's 96^3 window 1.25-1.38x faster without it (docs/benchmarks.md, round 8), while the trace itself runs
    PyTorch's unfused path once (slower: a one-time cost of the cached conversion)."""
    modules = [m for m in network.modules() if isinstance(m, PositionAttention)]
    saved = [m.pad_qk for m in modules]
    try:
        for module in modules:
            module.pad_qk = 0
        yield
    finally:
        for module, pad in zip(modules, saved, strict=True):
            module.pad_qk = pad


class ChannelAttention(nn.Module):
    """Channel attention: ``out = gamma * softmax(rowmax(E) - E) X + x`` with ``E = X X^T`` (C x C).

    The ``rowmax - E`` form is the authors' (DANet) choice, kept for fidelity; ``gamma`` starts at 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        energy = torch.bmm(flat, flat.transpose(1, 2))
        energy = energy.amax(dim=-1, keepdim=True) - energy
        attention = torch.softmax(energy, dim=-1)
        out = torch.bmm(attention, flat).reshape(x.shape)
        return self.gamma * out + x


class AttentionBranch(nn.Sequential):
    """3x3 conv-norm-act (2C -> C), position or channel attention, 3x3 conv-norm-act (the authors' PAM_CAM_Layer)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        position: bool,
        norm: str | tuple = "batch",
        act: str | tuple = "prelu",
    ) -> None:
        attention: nn.Module = PositionAttention(spatial_dims, out_channels) if position else ChannelAttention()
        super().__init__(
            Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, norm=norm, act=act),
            attention,
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=3, norm=norm, act=act),
        )
