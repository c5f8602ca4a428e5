"""Render benchmarks/results/*.json as the Markdown tables of docs/benchmarks.md.

.venv/bin/python benchmarks/report.py > /tmp/tables.md
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    """A Markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["rows"]


def network_step(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    header = ["mode", "network", "precision", "layout", "median s", "speed-up vs MONAI AttentionUnet fp32"]
    header += ["peak MiB", "GFLOP", "GFLOP/s"]
    rows = (
        [r["mode"], r["net"], r["precision"], r["layout"], _fmt(r["median_s"])]
        + [f"{_fmt(r.get('speedup_vs_monai_attunet_fp32'), 2)}x", _fmt(r["peak_mem_mib"], 0)]
        + [_fmt(r["gflop"], 1), _fmt(r["gflop_per_s"], 0)]
        for r in data["rows"]
    )
    size = " x ".join([str(data["size"])] * data["dims"])
    return f"Input 1 x 1 x {size}, batch 1.\n\n" + _table(header, rows)


def _position_attention_cells(r: dict) -> list[str]:
    if "skipped" in r and "median_s" not in r:
        return [r["positions"], r["impl"], f"skipped: {r['skipped']}", "", "", ""]
    ratio = r.get("memory_ratio_vs_naive")
    return [r["positions"], r["impl"], _fmt(r["median_s"]), _fmt(r["peak_mem_mib"], 0)] + [
        _fmt(ratio, 3) if ratio is not None else "",
        _fmt(r.get("max_abs_diff_vs_naive"), 7),
    ]


def position_attention(path: Path) -> str:
    header = ["positions", "implementation", "median s (fwd+bwd)", "peak MiB", "memory vs naive"]
    return _table(header + ["max abs diff vs naive"], map(_position_attention_cells, _rows(path)))


def whole_volume(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    header = ["pipeline", "total s", "load + preprocess s", "inference s", "invert + save s", "voxels/s"]
    rows = (
        [r["pipeline"], _fmt(r["total_s"], 1), _fmt(r["load_preprocess_s"], 1), _fmt(r["infer_s"], 1)]
        + [_fmt(r["invert_save_s"], 1), f"{r['voxels_per_s'] / 1e6:.2f} M", _fmt(r["peak_rss_mib"], 0)]
        + [_fmt(r.get("speedup"), 2)]
        for r in data["rows"]
    )
    volume = " x ".join(map(str, data["shape"]))
    return f"Volume {volume}.\n\n" + _table(header + ["peak RSS MiB", "speed-up"], rows)


def precision_accuracy(path: Path) -> str:
    rows = (
        [r["class"], f"{r['dice_fp32']:.4f}", f"{r['dice_bf16']:.4f}", f"{r['difference']:+.4f}"] for r in _rows(path)
    )
    return _table(["class", "Dice fp32", "Dice bf16", "difference"], rows)


def conv3d_bf16_gradients(path: Path) -> str:
    header = ["layer", "input D x H x W", "kernel", "weight-gradient error, plain bf16", "with the guard"]
    rows = (
        [r["layer"], r["input_dhw"], str(r["kernel"]), f"{r['error_plain']:.3g}", f"{r['error_guarded']:.3g}"]
        for r in _rows(path)
    )
    return _table(header, rows)


def pipeline_steps(path: Path) -> str:
    rows = ([r["step"], _fmt(r["monai_s"], 2), _fmt(r["medattn3d_s"], 2), _fmt(r["speedup"], 1)] for r in _rows(path))
    return _table(["step", "MONAI default s", "medattn3d s", "speed-up"], rows)


def forward_allocator(path: Path) -> str:
    header = ["step", "network", "allocator", "median s per step", "minor page faults per step", "speed-up"]
    rows = (
        [r["mode"], r["net"], r["allocator"], _fmt(r["median_s"])]
        + [f"{r['faults_per_forward']:.0f}", _fmt(r.get("speedup_vs_default"), 2)]
        for r in _rows(path)
    )
    return _table(header, rows)


def forward_compile(path: Path) -> str:
    header = ["network", "eager s", "torch.compile: compile s", "compiled s", "speed-up"]
    rows = (
        [r["net"], _fmt(r["eager_s"]), _fmt(r["compile_s"], 1), _fmt(r["compiled_s"]), _fmt(r["speedup"], 2)]
        for r in _rows(path)
    )
    return _table(header, rows)


RENDERERS: dict[str, Callable[[Path], str]] = {
    "network_step_3d": network_step,
    "network_step_2d": network_step,
    "position_attention": position_attention,
    "whole_volume": whole_volume,
    "precision_accuracy": precision_accuracy,
    "conv3d_bf16_gradients": conv3d_bf16_gradients,
    "pipeline_steps": pipeline_steps,
    "allocator": forward_allocator,
    "compile": forward_compile,
}


def main() -> None:
    for name, render in RENDERERS.items():
        path = RESULTS / f"{name}.json"
        if path.is_file():
            print(f"### {name}\n\n{render(path)}\n")


if __name__ == "__main__":
    main()
