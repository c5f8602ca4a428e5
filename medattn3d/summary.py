"""Build each network, run it on a random volume and report shapes, parameter counts and forward time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from medattn3d.networks import get_network


@dataclass(frozen=True)
class NetworkCase:
    """One network configuration to exercise: registry name, constructor arguments, input edge length."""

    name: str
    spatial_dims: int
    kwargs: dict[str, Any]
    size: int


CASES = (
    NetworkCase("attention_unet", 2, {}, 128),
    NetworkCase("attention_unet", 3, {}, 64),
    NetworkCase("ms_guided_attention", 2, {}, 128),
    NetworkCase("ms_guided_attention", 3, {"backbone": "resnet18", "feature_channels": 32}, 64),
)


def _describe(output: Any) -> str:
    """Short shape description of a tensor, a list of tensors or a dict of lists of tensors."""
    if isinstance(output, torch.Tensor):
        return "x".join(map(str, output.shape))
    if isinstance(output, list):
        return f"list[{len(output)}] of {_describe(output[0])}" + (", ..." if len(output) > 1 else "")
    return "{" + ", ".join(f"{k}: {len(v)}" for k, v in output.items()) + "}"


def summarize(case: NetworkCase, in_channels: int = 1, out_channels: int = 3) -> dict[str, Any]:
    """Run ``case`` once in eval and once in train mode on a random batch of 2; return what was seen."""
    net = get_network(
        case.name, spatial_dims=case.spatial_dims, in_channels=in_channels, out_channels=out_channels, **case.kwargs
    )
    x = torch.randn(2, in_channels, *([case.size] * case.spatial_dims))
    net.eval()
    with torch.no_grad():
        start = time.perf_counter()
        logits = net(x)
        seconds = time.perf_counter() - start
        train_output = net.train()(x)
    return {
        "network": f"{type(net).__name__} {case.spatial_dims}D",
        "input": _describe(x),
        "eval output": _describe(logits),
        "train output": _describe(train_output),
        "params (M)": f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}",
        "forward (s)": f"{seconds:.2f}",
    }


def main() -> None:
    """Print a table over all cases."""
    torch.manual_seed(0)
    rows = [summarize(case) for case in CASES]
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))
