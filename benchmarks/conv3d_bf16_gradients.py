"""Which bf16 conv3d weight gradients this machine's PyTorch gets wrong, with and without medattn3d's guard.

    .venv/bin/python benchmarks/conv3d_bf16_gradients.py --json benchmarks/results/conv3d_bf16_gradients.json

For each input shape and kernel, one forward + backward of a 64-channel Conv3d under CPU bf16 autocast, the weight
gradient compared with fp32 on the same (bf16-rounded) values: relative max error plain and inside
``medattn3d.conv_guard.ShallowConv3dInFp32``. bf16 rounding alone gives about 0.003; a wrong kernel gives ~1 or far
more. Rerun it after a PyTorch upgrade to see whether the guard is still needed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json

# (depth, height, width), kernel
CASES = (
    ((1, 8, 8), 3),
    ((2, 8, 8), 3),
    ((2, 2, 1), 3),
    ((3, 8, 8), 3),
    ((8, 8, 2), 3),
    ((4, 4, 1), 3),
    ((4, 8, 8), 5),
    ((8, 8, 8), 3),
)


def relative_weight_gradient_error(shape: tuple[int, int, int], kernel: int, guarded: bool) -> float:
    from medattn3d.conv_guard import ShallowConv3dInFp32

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(64, 64, kernel, padding=kernel // 2, bias=False)
    x = torch.randn(4, 64, *shape).to(torch.bfloat16).float()
    grad = (0.05 * torch.randn(4, 64, *shape)).to(torch.bfloat16)
    reference = conv.weight.detach().to(torch.bfloat16).float().requires_grad_()
    torch.nn.functional.conv3d(x, reference, padding=kernel // 2).backward(grad.float())
    with ShallowConv3dInFp32() if guarded else contextlib.nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = conv(x)
    output.backward(grad.to(output.dtype))
    return float((conv.weight.grad - reference.grad).abs().max() / reference.grad.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [
        {
            "input_dhw": "x".join(map(str, shape)),
            "kernel": kernel,
            "error_plain": relative_weight_gradient_error(shape, kernel, guarded=False),
            "error_guarded": relative_weight_gradient_error(shape, kernel, guarded=True),
        }
        for shape, kernel in CASES
    ]
    print_table(rows, ["input_dhw", "kernel", "error_plain", "error_guarded"])
    write_json(args.json, {"benchmark": "conv3d_bf16_gradients", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
