"""``docs/README.md`` of a planned bundle: what it is, the dataset fingerprint and the plan as tables (with the rule
behind every value and the overrides), the validation split, and the commands."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medattn3d.planning.templates import Template


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def _fingerprint_table(fingerprint: Mapping[str, Any], channel_names: list[str], facts: Mapping[str, Any]) -> str:
    cases = fingerprint["cases"]
    spacings = [c["spacing"] for c in cases]
    shapes = [c["shape"] for c in cases]
    orientations = sorted({c.get("axcodes", "?") for c in cases})
    counts: dict[str, int] = {}
    for case in cases:
        for label, n in case.get("class_voxels", {}).items():
            counts[label] = counts.get(label, 0) + int(n)
    rows = [
        ("cases fingerprinted", fingerprint["num_cases"]),
        ("spacing, min (mm, RAS)", [round(min(s[a] for s in spacings), 4) for a in range(3)]),
        ("spacing, median (mm)", facts.get("median_spacing")),
        ("spacing, max (mm)", [round(max(s[a] for s in spacings), 4) for a in range(3)]),
        ("shape, min (voxels)", [min(s[a] for s in shapes) for a in range(3)]),
        ("shape, median (voxels)", facts.get("median_shape")),
        ("shape, max (voxels)", [max(s[a] for s in shapes) for a in range(3)]),
        ("median shape after resampling", facts.get("median_resampled_shape")),
        ("stored orientations", ", ".join(orientations)),
        ("voxels per label (all cases)", {k: counts[k] for k in sorted(counts, key=int)}),
    ]
    lines = ["| fact | value |", "|---|---|"] + [f"| {name} | {_cell(value)} |" for name, value in rows]
    lines += ["", "Foreground intensities (label > 0), per channel:", ""]
    lines += ["| channel | mean | std | median | 0.5 % | 99.5 % | min | max |", "|---|---|---|---|---|---|---|---|"]
    for name, stats in zip(channel_names, fingerprint["intensities"], strict=False):
        keys = ("mean", "std", "median", "percentile_00_5", "percentile_99_5", "min", "max")
        cells = " | ".join("-" if stats.get(k) is None else f"{float(stats[k]):.4g}" for k in keys)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def _plan_table(plan: Mapping[str, Any]) -> str:
    lines = ["| value | planned | rule |", "|---|---|---|"]
    overrides = plan["overrides"]
    for key, value in plan["values"].items():
        shown = _cell(value)
        if key in overrides:
            shown += f" (overridden; planned {_cell(overrides[key]['planned'])})"
        lines.append(f"| `{key}` | {shown} | {_cell(plan['rules'].get(key, ''))} |")
    facts = plan.get("facts", {})
    if "estimated_training_memory_gib" in facts:
        lines += [
            "",
            f"Estimated training activation memory for 2 patches: {facts['estimated_training_memory_gib']} GiB "
            f"(patch sizes must be multiples of {facts.get('patch_multiples')}).",
        ]
    return "\n".join(lines)


def _split_text(split: Mapping[str, Any]) -> str:
    if split.get("source") == "validation list":
        return (
            f"Validation: the datalist's own `validation` list ({len(split['validation'])} cases; "
            f"{len(split['training'])} training cases)."
        )
    folds = split.get("folds") or []
    lines = [
        f"Validation: fold {split.get('fold')} of a {split.get('source')} ({len(split['validation'])} validation, "
        f"{len(split['training'])} training cases). Folds:",
        "",
    ]
    for index, members in enumerate(folds):
        names = ", ".join(f"`{m}`" if isinstance(m, str) else f"`{m[0]}`" for m in members)
        lines.append(f"- fold {index}: {names}")
    return "\n".join(lines)


def bundle_readme(
    name: str,
    template: Template,
    plan: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    split: Mapping[str, Any],
    dataset: Mapping[str, Any],
    extra: str = "",
) -> str:
    """The README text."""
    values = plan["values"]
    dims = template.spatial_dims
    inference = "slice by slice (SliceInferer)" if dims == 2 else "by sliding windows with Gaussian blending"
    spec = name if dataset.get("shipped") else "."
    metrics = (
        "its value in `models/model_metric.json`"
        if dataset.get("shipped")
        else "the best mean and per-class Dice in `eval_metrics` of `configs/metadata.json`"
    )
    parts = [
        f"# {name}",
        "",
        f"{template.architecture.describe(dims)}, as a MONAI bundle planned by `medattn3d plan` from the template "
        f"`{template.name}` for **{dataset['name']}** ({dataset['source']}).",
        "",
        f"Input: {values['in_channels']} channel(s) ({', '.join(values['channel_names'])}), resampled to "
        f"{values['pixdim']} mm. Output: {values['num_classes']} classes "
        f"({', '.join(values['class_names'].values())}). Training on random {values['roi_size']} patches, "
        f"inference {inference}, predictions in the input's geometry.",
        "",
        "## Commands",
        "",
        "```bash",
        f"medattn3d train --bundle {spec}",
        f"medattn3d infer --bundle {spec} -i scans/ -o seg/",
        "python -m monai.bundle run --config_file configs/train.json --bundle_root .",
        "python -m monai.bundle run --config_file \"['configs/train.json','configs/evaluate.json']\" --bundle_root .",
        "python -m monai.bundle run --config_file configs/inference.json --bundle_root .",
        "python -m monai.bundle run --bundle_root . \\",
        "    --config_file \"['configs/inference.json','configs/explain.json']\"",
        "python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\",
        "    --meta_file configs/metadata.json --config_file configs/inference.json --bundle_root .",
        "```",
        "",
        f"Training keeps the weights with the best validation Dice as `models/model.pt` ({metrics}); a run always "
        "leaves one, validating at the last epoch when the schedule did not.",
        "",
        "## Dataset fingerprint",
        "",
        _fingerprint_table(fingerprint, list(values["channel_names"]), plan.get("facts", {})),
        "",
        "## Plan",
        "",
        "Every value below is one id in the configs; change one with `medattn3d plan ... --set KEY=VALUE` "
        "(recorded as an override in `plan.json`), or at run time with `--KEY VALUE` on `monai.bundle run`.",
        "",
        _plan_table(plan),
        "",
        "## Validation split",
        "",
        _split_text(split),
        "",
    ]
    if extra:
        parts += [extra.strip(), ""]
    parts += ["Research use only; not a medical device.", ""]
    return "\n".join(parts)
