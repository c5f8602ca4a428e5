"""Render benchmarks/results/*.json as the Markdown tables of docs/benchmarks.md.

.venv/bin/python benchmarks/report.py > /tmp/tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def network_step(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        f"Input 1 x 1 x {' x '.join([str(data['size'])] * data['dims'])}, batch 1.",
        "",
        "| mode | network | precision | layout | median s | speed-up vs MONAI AttentionUnet fp32 "
        "| peak MiB | GFLOP | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['mode']} | {r['net']} | {r['precision']} | {r['layout']} | {_fmt(r['median_s'])} | "
            f"{_fmt(r.get('speedup_vs_monai_attunet_fp32'), 2)}x | {_fmt(r['peak_mem_mib'], 0)} | "
            f"{_fmt(r['gflop'], 1)} | {_fmt(r['gflop_per_s'], 0)} |"
        )
    return "\n".join(lines)


def position_attention(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        "| positions | implementation | median s (fwd+bwd) | peak MiB | memory vs naive | max abs diff vs naive |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        if "skipped" in r and "median_s" not in r:
            lines.append(f"| {r['positions']} | {r['impl']} | skipped: {r['skipped']} | | | |")
            continue
        ratio = r.get("memory_ratio_vs_naive")
        lines.append(
            f"| {r['positions']} | {r['impl']} | {_fmt(r['median_s'])} | {_fmt(r['peak_mem_mib'], 0)} | "
            f"{_fmt(ratio, 3) if ratio is not None else ''} | {_fmt(r.get('max_abs_diff_vs_naive'), 7)} |"
        )
    return "\n".join(lines)


def whole_volume(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        f"Volume {' x '.join(map(str, data['shape']))}.",
        "",
        "| pipeline | total s | load + preprocess s | inference s | invert + save s | voxels/s | peak RSS MiB "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['pipeline']} | {_fmt(r['total_s'], 1)} | {_fmt(r['load_preprocess_s'], 1)} | "
            f"{_fmt(r['infer_s'], 1)} | {_fmt(r['invert_save_s'], 1)} | {r['voxels_per_s'] / 1e6:.2f} M | "
            f"{_fmt(r['peak_rss_mib'], 0)} | {_fmt(r.get('speedup'), 2)} |"
        )
    return "\n".join(lines)


def conv3d_bf16_gradients(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        "| input D x H x W | kernel | weight-gradient error, plain bf16 | with the guard |",
        "|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(f"| {r['input_dhw']} | {r['kernel']} | {r['error_plain']:.3g} | {r['error_guarded']:.3g} |")
    return "\n".join(lines)


def forward_allocator(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        "| step | network | allocator | median s per step | minor page faults per step | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['mode']} | {r['net']} | {r['allocator']} | {_fmt(r['median_s'])} | "
            f"{r['faults_per_forward']:.0f} | {_fmt(r.get('speedup_vs_default'), 2)} |"
        )
    return "\n".join(lines)


def forward_compile(path: Path) -> str:
    r = json.loads(path.read_text())["rows"][0]
    return (
        "| network | eager s | torch.compile: compile s | compiled s | speed-up |\n|---|---|---|---|---|\n"
        f"| {r['net']} | {_fmt(r['eager_s'])} | {_fmt(r['compile_s'], 1)} | {_fmt(r['compiled_s'])} | "
        f"{_fmt(r['speedup'], 2)} |"
    )


def pipeline_steps(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = ["| step | MONAI default s | medattn3d s | speed-up |", "|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(
            f"| {r['step']} | {_fmt(r['monai_s'], 2)} | {_fmt(r['medattn3d_s'], 2)} | {_fmt(r['speedup'], 1)} |"
        )
    return "\n".join(lines)


def main() -> None:
    for name, render in (
        ("network_step_3d", network_step),
        ("network_step_2d", network_step),
        ("position_attention", position_attention),
        ("whole_volume", whole_volume),
        ("precision_accuracy", None),
        ("conv3d_bf16_gradients", conv3d_bf16_gradients),
        ("pipeline_steps", pipeline_steps),
        ("allocator", forward_allocator),
        ("compile", forward_compile),
    ):
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            continue
        print(f"### {name}\n")
        if render is not None:
            print(render(path))
        else:
            rows = json.loads(path.read_text())["rows"]
            print("| class | Dice fp32 | Dice bf16 | difference |\n|---|---|---|---|")
            for r in rows:
                print(f"| {r['class']} | {r['dice_fp32']:.4f} | {r['dice_bf16']:.4f} | {r['difference']:+.4f} |")
        print()


if __name__ == "__main__":
    main()
