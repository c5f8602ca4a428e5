"""Render benchmarks/results/*.json as the Markdown tables of docs/benchmarks.md.

    .venv/bin/python benchmarks/report.py > /tmp/tables.md
    .venv/bin/python benchmarks/report.py runtimes whole_volume     # only these results

Every table whose JSON carries ``matmul_peaks`` (``common.matmul_peaks``, measured in the same run) opens with a line
giving this machine's fp32 and bf16 matmul peaks, and every table whose rows carry ``gflop`` (``common.add_throughput``)
ends with four columns: GFLOP, GFLOP/s, % of the fp32 peak, % of the bf16 peak. A row without arithmetic to speak of
shows "-" there, and the table's footnote gives the reason its JSON records (``gflop_reason``). A column that is
empty in every row (a field older results do not have) is left out.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("RESULTS_DIR", Path(__file__).resolve().parent / "results"))
Column = tuple[str, str | Callable[[dict], Any], int | None]  # header, row key (or function of the row), digits
THROUGHPUT_HEADER = ["GFLOP", "GFLOP/s", "% fp32 peak", "% bf16 peak"]


def _fmt(value: Any, digits: int | None = 3) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{3 if digits is None else digits}f}"
    return str(value)


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    """A Markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def peaks_line(data: dict) -> str:
    """'Matmul peaks in this run: ...' from the JSON's ``matmul_peaks``; empty when it has none."""
    peaks = data.get("matmul_peaks")
    if not peaks:
        return ""
    return (
        f"Matmul peaks measured in this run: fp32 {peaks['fp32_gflop_per_s']:.0f} GFLOP/s, bf16 "
        f"{peaks['bf16_gflop_per_s']:.{1 if peaks['bf16_gflop_per_s'] < 10 else 0}f} GFLOP/s ({peaks['n']} x "
        f"{peaks['n']} square matmul"
        + (f", bf16 {peaks['bf16_n']} x {peaks['bf16_n']}" if peaks.get("bf16_n", peaks["n"]) != peaks["n"] else "")
        + f", {peaks['threads']} thread(s), median of {peaks['repeats']})"
        + (
            f"; at the end of the run: fp32 {end['fp32_gflop_per_s']:.0f}, bf16 "
            f"{end['bf16_gflop_per_s']:.{1 if end['bf16_gflop_per_s'] < 10 else 0}f} GFLOP/s."
            if (end := data.get("matmul_peaks_end"))
            else "."
        )
    )


def bf16_is_practical(data: dict) -> bool:
    """False where the run measured bf16 on a small product because it has no bf16 vector kernels
    (``common.bf16_skip_reason``): its bf16 rows are skipped and its % of the bf16 peak is left out."""
    peaks = data.get("matmul_peaks") or {}
    return peaks.get("bf16_n", peaks.get("n")) == peaks.get("n")


def throughput_cells(row: dict) -> list[str]:
    """GFLOP, GFLOP/s, % of the fp32 and bf16 peaks of one row; "-" for a row that records no GFLOP."""
    if row.get("gflop") is None:
        return ["-"] * 4 if "gflop_reason" in row or "gflop" in row else [""] * 4
    return [
        _fmt(row["gflop"], 1),
        _fmt(row.get("gflop_per_s"), 0),
        _fmt(row.get("pct_fp32_peak"), 0),
        _fmt(row.get("pct_bf16_peak"), 0),
    ]


def render(data: dict, columns: list[Column], rows: list[dict] | None = None, intro: str = "") -> str:
    """The peaks line, ``intro``, a table of ``columns`` (+ the throughput columns when rows have them) and a
    footnote with the reasons of rows without GFLOP."""
    rows = data.get("rows", []) if rows is None else rows
    with_flops = any("gflop" in r for r in rows)

    def cells(row: dict) -> list[str]:
        values = [key(row) if callable(key) else row.get(key) for _, key, _ in columns]
        out = [_fmt(v, digits) for v, (_, _, digits) in zip(values, columns, strict=True)]
        return out + (throughput_cells(row) if with_flops else [])

    header = [c[0] for c in columns] + (THROUGHPUT_HEADER if with_flops else [])
    table = [cells(r) for r in rows]
    keep = [i for i in range(len(header)) if not table or any(t[i] for t in table)]  # a column empty in every row: out
    if not bf16_is_practical(data):  # a "% of the bf16 peak" of thousands says nothing
        keep = [i for i in keep if header[i] != "% bf16 peak"]
    header, table = [header[i] for i in keep], [[t[i] for i in keep] for t in table]
    reasons = dict.fromkeys(r["gflop_reason"] for r in rows if r.get("gflop_reason"))
    parts = [p for p in (peaks_line(data), intro, _table(header, table)) if p]
    if reasons:
        parts.append('No GFLOP/s ("-"): ' + "; ".join(reasons) + ".")
    skipped = dict.fromkeys(r["skipped"] for r in rows if r.get("skipped"))
    if skipped:
        parts.append("Rows without a time were skipped: " + "; ".join(skipped) + ".")
    return "\n\n".join(parts)


def _speedup(key: str) -> Callable[[dict], str]:
    return lambda r: f"{r[key]:.2f}x" if isinstance(r.get(key), float) else ""


def network_step(data: dict) -> str:
    columns: list[Column] = [("mode", "mode", None), ("network", "net", None)]
    if "precision" in data["rows"][0]:
        columns += [("precision", "precision", None), ("layout", "layout", None)]
    columns += [
        ("median s", "median_s", 3),
        ("speed-up vs MONAI AttentionUnet fp32", _speedup("speedup_vs_monai_attunet_fp32"), None),
    ]
    if "peak_mem_mib" in data["rows"][0]:
        columns.append(("peak MiB", "peak_mem_mib", 0))
    size = " x ".join([str(data["size"])] * data.get("dims", 3))
    return render(data, columns, intro=f"Input 1 x 1 x {size}, batch 1.")


def network_step_paired(data: dict) -> str:
    """``network_step.py --paired``: each mode's reference and candidates in alternating rounds of one process."""

    def ratio(r: dict) -> str:
        value = r.get("speedup_vs_reference", r.get("speedup_vs_monai_attunet_fp32"))
        return f"{value:.2f}x" if isinstance(value, float) else ""

    columns: list[Column] = [
        ("mode", "mode", None),
        ("shape", "shape", None),
        ("network", "net", None),
        ("reference", "reference", None),
        ("median s", "median_s", 3),
        ("vs the reference", ratio, None),
        ("per-round ratios", lambda r: ", ".join(f"{v:.2f}" for v in r.get("round_ratios", [])), None),
    ]
    intro = f"Input 1 x 1 x {data['size']}^3, batch 1." if "size" in data else ""
    return render(data, columns, intro=intro)


def position_attention(data: dict) -> str:
    def timing(r: dict) -> str:
        return f"skipped: {r['skipped']}" if "skipped" in r and "median_s" not in r else _fmt(r.get("median_s"))

    columns: list[Column] = [("positions", "positions", None), ("implementation", "impl", None)]
    if "dtype" in data["rows"][0]:
        columns.insert(0, ("dtype", "dtype", None))
        columns += [("median s", timing, None), ("speed vs ours", "speed_vs_ours", 2)]
        return render(data, columns)
    columns += [("median s (fwd+bwd)", timing, None), ("peak MiB", "peak_mem_mib", 0)]
    columns += [("memory vs naive", "memory_ratio_vs_naive", 3), ("max abs diff vs naive", "max_abs_diff_vs_naive", 7)]
    return render(data, columns)


def position_attention_backward(data: dict) -> str:
    """``position_attention.py --backward``: the training attention product, fused vs ours, alternating rounds."""
    columns: list[Column] = [
        ("implementation", "impl", None),
        ("positions", "positions", None),
        ("C", "channels", None),
        ("median s (fwd+bwd)", "median_s", 3),
        ("vs fused", _speedup("speed_vs_fused"), None),
        ("per-round ratios", lambda r: ", ".join(f"{v:.2f}" for v in r.get("round_ratios", [])), None),
        (
            "max abs gradient difference",
            lambda r: f"{r['max_abs_grad_diff']:.2g}" if "max_abs_grad_diff" in r else "",
            None,
        ),
    ]
    return render(data, columns)


def whole_volume(data: dict) -> str:
    columns: list[Column] = [
        ("pipeline", "pipeline", None),
        ("total s", "total_s", 1),
        ("as a script s", "script_s", 1),
        ("load + preprocess s", "load_preprocess_s", 2),
        ("inference s", "infer_s", 2),
        ("invert + save s", "invert_save_s", 2),
        ("I/O share", lambda r: f"{100 * r['io_share']:.0f} %" if r.get("io_share") is not None else "", None),
        ("voxels/s", lambda r: f"{r['voxels_per_s'] / 1e6:.2f} M" if r.get("voxels_per_s") else "", None),
        ("peak RSS MiB", "peak_rss_mib", 0),
        ("vs MONAI fp32", _speedup("speedup"), None),
        ("vs MONAI bf16 + channels-last", _speedup("speedup_vs_bf16_peer"), None),
        ("vs MONAI fp32, scripts", _speedup("speedup_vs_script"), None),
        ("vs MONAI bf16 + channels-last, scripts", _speedup("speedup_vs_bf16_script"), None),
    ]
    intro = f"Volume {' x '.join(map(str, data['shape']))}"
    if data.get("windows"):
        intro += f"; {data['windows']} window{'s' if data['windows'] != 1 else ''} of 96^3"
    intro += ". GFLOP/s: of the inference step for in-process rows, of the whole command for end-to-end rows."
    return render(data, columns, intro=intro if data.get("windows") else intro.split(". GFLOP")[0] + ".")


def precision_accuracy(data: dict) -> str:
    def signed(r: dict) -> str:
        return f"{r['difference']:+.4f}"

    columns: list[Column] = [("class", "class", None), ("Dice fp32", "dice_fp32", 4), ("Dice bf16", "dice_bf16", 4)]
    dice = [
        {k: v for k, v in r.items() if k in ("class", "dice_fp32", "dice_bf16", "difference")} for r in data["rows"]
    ]
    text = render(data, [*columns, ("difference", signed, None)], rows=dice)  # accuracy rows: no throughput columns
    if data.get("runs"):
        runs: list[Column] = [("evaluation", "precision", None), ("wall s (whole run)", "seconds", 1)]
        text += "\n\n" + render({}, [*runs, ("volumes", "volumes", None)], rows=data["runs"])
    return text


def conv3d_bf16_gradients(data: dict) -> str:
    columns: list[Column] = [
        ("layer", "layer", None),
        ("input D x H x W", "input_dhw", None),
        ("kernel", "kernel", None),
        ("weight-gradient error, plain bf16", lambda r: f"{r['error_plain']:.3g}", None),
        ("with the guard", lambda r: f"{r['error_guarded']:.3g}", None),
    ]
    return render(data, columns)


def pipeline_steps(data: dict) -> str:
    columns: list[Column] = [
        ("step", "step", None),
        ("MONAI default s", "monai_s", 2),
        ("medattn3d s", "medattn3d_s", 2),
        ("speed-up", "speedup", 1),
    ]
    return render(data, columns)


def forward_allocator(data: dict) -> str:
    columns: list[Column] = [
        ("step", "mode", None),
        ("network", "net", None),
        ("allocator", "allocator", None),
        ("median s per step", "median_s", 3),
        ("minor page faults per step", lambda r: f"{r['faults_per_forward']:.0f}", None),
        ("speed-up", "speedup_vs_default", 2),
    ]
    return render(data, columns)


def forward_compile(data: dict) -> str:
    columns: list[Column] = [
        ("network", "net", None),
        ("eager s", "eager_s", 3),
        ("torch.compile: compile s", "compile_s", 1),
        ("compiled s", "compiled_s", 3),
        ("speed-up", "speedup", 2),
    ]
    return render(data, columns)


def runtimes(data: dict) -> str:
    columns: list[Column] = [
        ("case", "case", None),
        ("median s", "median_s", 3),
        ("vs the PyTorch path", _speedup("speed_vs_pytorch_path"), None),
        ("vs the PyTorch path", _speedup("speed_vs_bundle_path"), None),  # older results' name for the same ratio
    ]
    return render(data, columns, intro=f"Input {' x '.join(map(str, data['shape']))}, seconds per window.")


def int8(data: dict) -> str:
    """``int8.py``: cases in alternating rounds, each against the PyTorch path and OpenVINO as the bundles run it
    (precision auto; results before round 5 compared with the bf16 hint, which auto was on their machine)."""
    key = "openvino_auto" if any("speed_vs_openvino_auto" in r for r in data["rows"]) else "openvino_bf16"
    name = "OpenVINO as the bundles run it" if key == "openvino_auto" else "OpenVINO bf16"
    columns: list[Column] = [
        ("case", "case", None),
        ("median s", "median_s", 3),
        ("vs the PyTorch path", _speedup("speed_vs_bundle_path"), None),
        (f"vs {name}", _speedup(f"speed_vs_{key}"), None),
        (
            f"per-round ratios vs {name}",
            lambda r: ", ".join(f"{v:.2f}" for v in r.get(f"round_ratios_vs_{key}", [])),
            None,
        ),
    ]
    return render(data, columns, intro=f"Input {' x '.join(map(str, data['shape']))}, seconds per window.")


def runtime_agreement(data: dict) -> str:
    columns: list[Column] = [
        ("runtime", "runtime", None),
        ("median s per volume", "median_s_per_volume", 3),
        ("vs the PyTorch path", _speedup("speedup_vs_pytorch_path"), None),
        ("argmax agreement with the PyTorch path", "agreement_vs_pytorch_path", 5),
        ("largest probability difference vs fp32", "max_prob_diff_vs_fp32", 3),
        ("mean Dice", "mean_dice", 4),
        ("largest Dice change vs fp32", "max_dice_delta_vs_fp32", 4),
    ]
    volumes = len(data.get("validation_volumes", []))
    intro = f"{volumes} validation volumes, {data.get('voxels', 0) / 1e6:.2f} M voxels"
    if data.get("windows"):
        intro += f", {sum(data['windows'])} windows ({data['gflop_per_volume']:.0f} GFLOP per volume)"
    return render(data, columns, intro=intro + ".")


def batch_infer(data: dict) -> str:
    columns: list[Column] = [("way", "way", None), ("total s", "total_s", 1), ("per case s", "per_case_s", 2)]
    intro = (
        f"{data['cases']} volumes of {' x '.join(map(str, data['shape']))}; fixed cost per run "
        f"{data['fixed_cost_per_run_s']:.1f} s."
    )
    rows = data.get("rows") or [  # results written before the rows (and their GFLOP) were recorded
        {"way": f"one run over {data['cases']} volumes", "total_s": data["batch_total_s"]},
        {"way": f"{data['cases']} single runs", "total_s": data["single_total_s"]},
    ]
    for row in rows:
        row.setdefault("per_case_s", row["total_s"] / data["cases"])
    return render(data, columns, rows=rows, intro=intro)


def attention_on_off(data: dict) -> str:
    names = data.get("class_names", {})
    rows = []
    for model, entry in data.get("summary", {}).items():
        row = {"model": model, "steps": round(entry["steps"]["mean"])}
        row |= {name: f"{d['mean']:.3f} +- {d['std']:.3f}" for name, d in entry["dice"].items()}
        row["mean"] = f"{entry['mean_dice']['mean']:.3f} +- {entry['mean_dice']['std']:.3f}"
        if "gflop_per_s" in entry:
            rate = entry["gflop_per_s"]["mean"]
            row |= {"gflop": entry["step_gflop"], "gflop_per_s": rate}
            row |= {f"pct_{p}_peak": entry[f"pct_{p}_peak"]["mean"] for p in ("fp32", "bf16")}
        rows.append(row)
    columns: list[Column] = [("network", "model", None), ("steps", "steps", None)]
    columns += [(name, name, None) for name in names.values()] + [("mean", "mean", None)]
    text = render(data, columns, rows=rows)
    if any("gflop" in r for r in rows):
        text += "\n\nGFLOP is one training step's (forward + backward); GFLOP/s is per CPU second of one thread."
    return text


def generic(data: dict) -> str:
    """Any other result with rows (dicom_seg, fingerprint, ...): every scalar field as a column."""
    skip = {"gflop", "gflop_per_s", "pct_fp32_peak", "pct_bf16_peak", "gflop_reason"}
    keys = list(
        dict.fromkeys(k for r in data["rows"] for k, v in r.items() if k not in skip and not isinstance(v, list))
    )
    return render(data, [(k, k, 3) for k in keys])


RENDERERS: dict[str, Callable[[dict], str]] = {
    "runtimes": runtimes,
    "int8": int8,
    "runtime_agreement": runtime_agreement,
    "network_step_3d": network_step,
    "network_step_2d": network_step,
    "network_step_paired": network_step_paired,
    "network_step_paired_1thread": network_step_paired,
    "network_step_paired_infer": network_step_paired,
    "network_step_paired_loss": network_step_paired,
    "unet_step": network_step_paired,
    "unet_step_1thread": network_step_paired,
    "position_attention": position_attention,
    "position_attention_kernels": position_attention,
    "position_attention_backward": position_attention_backward,
    "whole_volume": whole_volume,
    "batch_infer": batch_infer,
    "dicom_seg": generic,
    "fingerprint": generic,
    "attention_on_off": attention_on_off,
    "precision_accuracy": precision_accuracy,
    "conv3d_bf16_gradients": conv3d_bf16_gradients,
    "pipeline_steps": pipeline_steps,
    "allocator": forward_allocator,
    "compile": forward_compile,
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(RENDERERS)
    for name in names:
        path = RESULTS / f"{name}.json"
        if name not in RENDERERS:
            print(f"error: {name}: no renderer (known: {', '.join(RENDERERS)})", file=sys.stderr)
            return 2
        if path.is_file():
            print(f"### {name}\n\n{RENDERERS[name](json.loads(path.read_text(encoding='utf-8')))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
