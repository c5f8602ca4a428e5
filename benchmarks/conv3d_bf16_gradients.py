"""Which bf16 (transposed) conv3d weight gradients this machine's PyTorch gets wrong, with and without our guard.

    .venv/bin/python benchmarks/conv3d_bf16_gradients.py --json benchmarks/results/conv3d_bf16_gradients.json

For each layer, input shape and kernel (stride 1, "same" padding), one forward + backward of a 64-channel layer
under CPU bf16 autocast, the weight
gradient compared with fp32 on the same (bf16-rounded) values: relative max error plain and inside
``medattn3d.engine.conv_guard.ShallowConv3dInFp32``. bf16 rounding alone gives about 0.003; a wrong kernel
gives ~1 or far
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

# layer, (depth, height, width), kernel
CASES = (
    ("Conv3d", (1, 8, 8), 3),
    ("Conv3d", (2, 8, 8), 3),
    ("Conv3d", (2, 2, 1), 3),
    ("Conv3d", (3, 8, 8), 3),
    ("Conv3d", (8, 8, 2), 3),
    ("Conv3d", (4, 4, 1), 3),
    ("Conv3d", (4, 8, 8), 5),
    ("Conv3d", (8, 8, 8), 3),
    ("ConvTranspose3d", (2, 8, 8), 3),
    ("ConvTranspose3d", (8, 8, 8), 3),
)


def relative_weight_gradient_error(layer: str, shape: tuple[int, int, int], kernel: int, guarded: bool) -> float:
    from medattn3d.engine.conv_guard import ShallowConv3dInFp32

    torch.manual_seed(0)
    conv = getattr(torch.nn, layer)(64, 64, kernel, padding=kernel // 2, bias=False)
    function = torch.nn.functional.conv3d if layer == "Conv3d" else torch.nn.functional.conv_transpose3d
    x = torch.randn(4, 64, *shape).to(torch.bfloat16).float()
    grad = (0.05 * torch.randn(4, 64, *shape)).to(torch.bfloat16)
    reference = conv.weight.detach().to(torch.bfloat16).float().requires_grad_()
    function(x, reference, padding=kernel // 2).backward(grad.float())
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
            "layer": layer,
            "input_dhw": "x".join(map(str, shape)),
            "kernel": kernel,
            "error_plain": relative_weight_gradient_error(layer, shape, kernel, guarded=False),
            "error_guarded": relative_weight_gradient_error(layer, shape, kernel, guarded=True),
        }
        for layer, shape, kernel in CASES
    ]
    print_table(rows, ["layer", "input_dhw", "kernel", "error_plain", "error_guarded"])
    write_json(args.json, {"benchmark": "conv3d_bf16_gradients", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
