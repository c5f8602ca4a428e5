"""The planning rules: a dataset fingerprint + datalist header + template -> every value a bundle needs.

Each rule is a small function with the rule's wording next to it; :func:`make_plan` runs them in dependency order
(classes, channels, spacing, patch and network topology, samples, schedule), applying ``--set`` overrides as it goes
so that later rules build on the overridden values (an overridden ``roi_size`` gets its own network topology). The
result records, per value, the rule that produced it and whether it was overridden (with the planned value).

Learnt from nnU-Net v2's experiment planning (fingerprint -> plan; median spacing with the anisotropy exception;
pooling only along axes whose spacing is within 2x of the finest and whose feature map stays >= 4 voxels; a patch
that covers the median shape, shrunk along its relatively largest axis until an estimated memory fits a budget),
written for MONAI bundles and our two networks.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medattn3d.planning.templates import TEMPLATES, Template

ANISOTROPY_RATIO = 3.0  # nnU-Net: an axis whose spacing is >= 3x the others' (and with 3x fewer voxels) is "coarse"
COARSE_PERCENTILE = 10  # ... and then gets the 10th percentile of its spacings instead of the median
MIN_FEATURE_MAP = 4  # voxels an axis keeps at the deepest level before it stops being pooled
POOL_SPACING_RATIO = 2.0  # an axis is pooled only while its spacing is within 2x of the finest pooled axis
BUDGETS_GIB = {"cpu": 2.0, "gpu": 10.0}  # training activation memory allowed per step (see MEMORY in templates.py)
MAX_SAMPLES = {"cpu": 8, "gpu": 32}  # 2D patches per volume per step: a CPU gains little from larger batches
DATASET_FRACTION = 0.05  # nnU-Net: one training batch covers at most 5 % of the dataset's voxels
TARGET_ITERATIONS = 640  # steps a schedule aims at (the demo's 16 cases x 40 epochs, where it converges)
MIN_EPOCHS = 40
VALIDATIONS = 8  # validations per training run


class PlanError(ValueError):
    """A value cannot be planned (or an override is invalid); the message says which and why."""


@dataclass
class Plan:
    """Planned values in rule order, the rule behind each, and the overridden ones with their planned values."""

    template: str
    values: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    overridden: dict[str, Any] = field(default_factory=dict)  # key -> the value the rules had planned
    facts: dict[str, Any] = field(default_factory=dict)  # derived facts shown in the README (not config values)

    def set(self, key: str, value: Any, rule: str, overrides: Mapping[str, Any]) -> Any:
        """Record ``value`` planned by ``rule``, or the override for ``key`` when there is one; returns the value."""
        self.rules[key] = rule
        if key in overrides:
            override = overrides[key]
            if _canonical(override) != _canonical(value):
                self.overridden[key] = value
            value = override
        self.values[key] = value
        return value

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: template, values, rules, overrides (``{key: {"planned": ..., "value": ...}}``), facts."""
        return {
            "template": self.template,
            "values": self.values,
            "rules": self.rules,
            "overrides": {k: {"planned": v, "value": self.values[k]} for k, v in self.overridden.items()},
            "facts": self.facts,
        }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def plannable_keys(template: Template) -> list[str]:
    """The values ``--set`` may override for ``template`` (every value the plan writes)."""
    keys = [
        "num_classes",
        "class_names",
        "in_channels",
        "channel_names",
        "normalization",
        "target",
        "memory_budget_gib",
        "pixdim",
        "roi_size",
    ]
    keys += list(template.architecture.topology_keys)
    keys += [
        "num_samples",
        "crop_ratios",
        "sw_batch_size",
        "max_epochs",
        "val_interval",
        "learning_rate",
        "overlap",
        "precision",
        "runtime",
    ]
    return keys


def parse_overrides(overrides: Mapping[str, Any] | None, template: Template) -> dict[str, Any]:
    """Overrides with string values parsed as JSON where they are JSON (``"[64,64,32]"`` -> list); unknown keys are
    refused with the list of known ones."""
    known = plannable_keys(template)
    parsed: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise PlanError(f"--set {key}: not a planned value (known: {', '.join(known)})")
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        parsed[key] = value
    return parsed


# --- classes and channels ---------------------------------------------------------------------------------------


def _ordered(mapping: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return sorted(((str(k), v) for k, v in mapping.items()), key=lambda kv: int(kv[0]))


def class_rules(plan: Plan, labels: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    """``class_names`` = the datalist's ``labels`` (string keys: the label values in the files, "0" the background; not
    necessarily consecutive, e.g. BraTS' 0, 1, 2, 4); ``num_classes`` = their count."""
    names = {k: str(v) for k, v in _ordered(labels)}
    names = plan.set("class_names", names, "the datalist's labels", overrides)
    plan.set("num_classes", len(names), "number of entries in labels (background included)", overrides)


def channel_rules(
    plan: Plan, modality: Mapping[str, str], intensities: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any]
) -> None:
    """``channel_names`` = the datalist's ``modality`` in key order; ``in_channels`` = their count;
    ``normalization``: CT channels clip to the foreground 0.5/99.5 percentiles and z-score with the foreground
    mean/std (one mapping for the dataset, HU being physical); any other modality is z-scored per volume over its
    non-zero voxels (MR intensities have no fixed scale)."""
    names = [str(v) for _, v in _ordered(modality)]
    names = plan.set("channel_names", names, "the datalist's modality, in key order", overrides)
    plan.set("in_channels", len(names), "number of entries in modality", overrides)
    schemes = []
    for index, name in enumerate(names):
        if name.strip().upper() == "CT":
            stats = intensities[index]
            std = float(stats["std"]) if stats["std"] else 1.0
            schemes.append(
                {
                    "scheme": "ct",
                    "lower": round(float(stats["percentile_00_5"]), 2),
                    "upper": round(float(stats["percentile_99_5"]), 2),
                    "mean": round(float(stats["mean"]), 2),
                    "std": round(max(std, 1e-3), 2),
                }
            )
        else:
            schemes.append({"scheme": "zscore"})
    plan.set(
        "normalization",
        schemes,
        "CT: clip to the foreground 0.5-99.5 percentiles, then z-score with the foreground mean/std; "
        "other modalities: z-score per volume over non-zero voxels",
        overrides,
    )


# --- spacing and shapes -----------------------------------------------------------------------------------------


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """Median spacing per axis; nnU-Net's anisotropy exception: when the coarsest median spacing is >= 3x the
    next-coarsest axis's and that axis has 3x fewer (median) voxels than the smallest other axis, the coarse axis
    takes the 10th percentile of its spacings (not below the other axes' spacing), so thin-slice cases are not
    thrown away by resampling everything to the thickest slices."""
    median = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    coarse = int(np.argmax(median))
    others = [a for a in range(len(median)) if a != coarse]
    rule = "median spacing per axis"
    target = median.copy()
    aniso_spacing = median[coarse] >= ANISOTROPY_RATIO * max(median[a] for a in others)
    aniso_voxels = median_shape[coarse] * ANISOTROPY_RATIO < min(median_shape[a] for a in others)
    if aniso_spacing and aniso_voxels:
        value = float(np.percentile(spacings[:, coarse], COARSE_PERCENTILE))
        target[coarse] = max(value, max(median[a] for a in others) + 1e-5)
        rule += f"; axis {coarse} is anisotropic: its {COARSE_PERCENTILE}th percentile spacing"
    return [round(float(s), 4) for s in target], rule


def resampled_shapes(shapes: np.ndarray, spacings: np.ndarray, pixdim: Sequence[float]) -> np.ndarray:
    """Each case's shape after resampling to ``pixdim`` (rounded as MONAI's ``Spacing`` does)."""
    return np.round(shapes * spacings / np.asarray(pixdim, dtype=float)).astype(int)


# --- network topology and patch ---------------------------------------------------------------------------------


def pooling_strides(patch: Sequence[int], spacing: Sequence[float], max_downsamplings: int) -> list[list[int]]:
    """Per-level, per-axis strides (nnU-Net's rule): at each level an axis is pooled (stride 2) when its feature map
    stays >= 4 voxels and its current spacing is within 2x of the finest current spacing among the axes that can
    still be pooled; otherwise stride 1. Stops when no axis can be pooled or at ``max_downsamplings``."""
    sizes, current = list(patch), [float(s) for s in spacing]
    strides: list[list[int]] = []
    while len(strides) < max_downsamplings:
        poolable = [a for a in range(len(sizes)) if sizes[a] >= 2 * MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(current[a] for a in poolable)
        stride = [2 if a in poolable and current[a] <= POOL_SPACING_RATIO * finest else 1 for a in range(len(sizes))]
        strides.append(stride)
        sizes = [s // k for s, k in zip(sizes, stride, strict=True)]
        current = [c * k for c, k in zip(current, stride, strict=True)]
    return strides


def stride_multiples(strides: Sequence[Sequence[int]], spatial_dims: int) -> list[int]:
    """Per-axis product of the strides: every patch size must be a multiple of it."""
    return [math.prod(int(s[a]) for s in strides) for a in range(spatial_dims)]


def round_to_multiples(shape: Sequence[float], multiples: Sequence[int]) -> list[int]:
    """Each size rounded to the nearest multiple (at least one multiple)."""
    return [max(int(m), int(m * round(float(s) / m))) for s, m in zip(shape, multiples, strict=True)]


@dataclass
class Topology:
    """A patch and the network settings it implies (strides/channels for Attention U-Net), with the per-axis
    multiple its sizes must have and the estimated training memory per sample in bytes."""

    roi_size: list[int]
    multiples: list[int]
    network: dict[str, Any]
    bytes_per_sample: float


def fit_topology(
    template: Template, shape: Sequence[float], spacing: Sequence[float], overrides: Mapping[str, Any]
) -> Topology:
    """The topology for a patch of about ``shape`` voxels at ``spacing``: sizes rounded to the multiples the network
    needs, rounding and topology iterated until they agree. Overridden topology values (``strides``...) are used
    as given."""
    arch = template.architecture
    dims = template.spatial_dims

    def settings_for(roi: list[int]) -> dict[str, Any]:
        planned = arch.topology(roi, spacing, dims)
        return {k: overrides.get(k, v) for k, v in planned.items()}

    roi = [max(1, round(float(s))) for s in shape]
    for _ in range(8):
        rounded = round_to_multiples(roi, arch.multiples(settings_for(roi), dims))
        if rounded == roi:
            break
        roi = rounded
    settings = settings_for(roi)
    return Topology(roi, arch.multiples(settings, dims), settings, arch.memory(roi, settings, dims))


def fit_budget(
    template: Template, median: Sequence[float], spacing: Sequence[float], budget: float, overrides: Mapping[str, Any]
) -> Topology:
    """Start from the median shape; while 2 patches exceed ``budget`` bytes, shrink the axis that is largest
    relative to the median shape (ties: the larger axis) by one multiple, and re-derive the topology."""
    topology = fit_topology(template, median, spacing, overrides)
    while 2 * topology.bytes_per_sample > budget:
        shrinkable = [a for a in range(len(median)) if topology.roi_size[a] > topology.multiples[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (topology.roi_size[a] / median[a], topology.roi_size[a]))
        smaller = list(topology.roi_size)
        smaller[axis] -= topology.multiples[axis]
        topology = fit_topology(template, smaller, spacing, overrides)
    return topology


def patch_rules(
    plan: Plan,
    template: Template,
    median_shape: Sequence[float],
    spacing: Sequence[float],
    overrides: Mapping[str, Any],
) -> Topology:
    """``roi_size``: the median resampled shape (in-plane for 2D), sizes multiples of what the network's
    downsampling needs, shrunk until the estimated training memory of 2 patches fits the budget (:func:`fit_budget`).
    An overridden ``roi_size`` must itself be such a multiple; the topology then follows it."""
    budget = float(plan.values["memory_budget_gib"]) * 2**30
    dims = template.spatial_dims
    median = [float(s) for s in median_shape[:dims]]
    in_plane = [float(s) for s in spacing[:dims]]
    planned = fit_budget(template, median, in_plane, budget, overrides)
    topology = planned
    if "roi_size" in overrides:
        roi = [int(s) for s in overrides["roi_size"]]
        if len(roi) != dims:
            raise PlanError(f"--set roi_size: needs {dims} sizes for a {dims}D template, got {roi}")
        topology = fit_topology(template, roi, in_plane, overrides)
        if topology.roi_size != roi:
            raise PlanError(
                f"--set roi_size={roi}: sizes must be multiples of {topology.multiples} for this network "
                f"(nearest: {topology.roi_size})"
            )
    what = "median resampled in-plane shape" if dims == 2 else "median resampled shape"
    gib = plan.values["memory_budget_gib"]
    plan.set("roi_size", planned.roi_size, f"{what} in multiples of {planned.multiples}, fit to {gib} GiB", overrides)
    derived = template.architecture.topology(topology.roi_size, in_plane, dims)
    for key, value in derived.items():
        plan.set(key, value, template.architecture.topology_rule(key), overrides)
    plan.facts["estimated_training_memory_gib"] = round(2 * topology.bytes_per_sample / 2**30, 3)
    plan.facts["patch_multiples"] = topology.multiples
    return topology


# --- samples and schedule ---------------------------------------------------------------------------------------


def sample_rules(
    plan: Plan, template: Template, topology: Topology, dataset_voxels: float, overrides: Mapping[str, Any]
) -> None:
    """``num_samples`` (patches per volume per step): 2 in 3D (nnU-Net's 3D batch: the patch takes the memory); in
    2D as many as the memory budget allows, at most 5 % of the dataset's voxels per step and 8 (CPU) / 32 (GPU),
    at least 2. ``sw_batch_size`` = ``num_samples`` (inference keeps no activations for backward, so a training
    batch's worth of windows always fits). ``crop_ratios``: one weight per class, all equal (class-balanced
    patch centres, as nnU-Net oversamples foreground classes)."""
    if template.spatial_dims == 3:
        samples, rule = 2, "2 patches per step in 3D"
    else:
        budget = float(plan.values["memory_budget_gib"]) * 2**30
        by_memory = int(budget // max(topology.bytes_per_sample, 1.0))
        by_data = int(DATASET_FRACTION * dataset_voxels // math.prod(topology.roi_size))
        cap = MAX_SAMPLES[plan.values["target"]]
        samples = max(2, min(by_memory, by_data, cap))
        rule = (
            f"min(memory budget: {by_memory}, 5% of the dataset's voxels: {by_data}, {cap} on {plan.values['target']})"
        )
    samples = plan.set("num_samples", samples, rule, overrides)
    plan.set("sw_batch_size", samples, "= num_samples", overrides)
    classes = int(plan.values["num_classes"])
    plan.set(
        "crop_ratios",
        [1] * classes,
        "class-balanced patches: each class (background too) is a patch centre equally often, so small rare classes"
        " are seen as often as large organs",
        overrides,
    )


DEFAULT_RUNTIME = "auto"
RUNTIME_RULE = "auto: OpenVINO on a CPU where installed (~2x PyTorch there, converted model cached), else PyTorch"


def schedule_rules(plan: Plan, template: Template, num_training: int, overrides: Mapping[str, Any]) -> None:
    """``max_epochs``: enough epochs for ~640 steps (one step per training case per epoch), at least 40;
    ``val_interval``: 8 validations per run; ``learning_rate``, ``overlap``, ``precision``: the template's;
    ``runtime``: the inference runtime (:data:`DEFAULT_RUNTIME`, see medattn3d.engine.backends)."""
    epochs = max(MIN_EPOCHS, math.ceil(TARGET_ITERATIONS / max(num_training, 1)))
    epochs = plan.set(
        "max_epochs", epochs, f"max({MIN_EPOCHS}, ceil({TARGET_ITERATIONS} steps / training cases))", overrides
    )
    plan.set("val_interval", max(1, int(epochs) // VALIDATIONS), f"max_epochs // {VALIDATIONS}", overrides)
    plan.set("learning_rate", template.architecture.learning_rate, "the template's (AdamW, cosine decay)", overrides)
    plan.set("overlap", 0.25, "the template's sliding-window overlap", overrides)
    plan.set("precision", "auto", "bf16 where the hardware has fast bf16, else fp32 (decided at run time)", overrides)
    plan.set("runtime", DEFAULT_RUNTIME, RUNTIME_RULE, overrides)


# --- the whole plan ---------------------------------------------------------------------------------------------


def make_plan(
    fingerprint: Mapping[str, Any],
    labels: Mapping[str, str],
    modality: Mapping[str, str],
    template_name: str,
    num_training: int,
    overrides: Mapping[str, Any] | None = None,
    cuda_available: bool = False,
) -> Plan:
    """Run every rule on a fingerprint (see :mod:`medattn3d.planning.fingerprint`) for ``template_name``."""
    if template_name not in TEMPLATES:
        raise PlanError(f"{template_name}: no such template (known: {', '.join(TEMPLATES)})")
    template = TEMPLATES[template_name]
    overrides = parse_overrides(overrides, template)
    plan = Plan(template_name)
    class_rules(plan, labels, overrides)
    channel_rules(plan, modality, fingerprint["intensities"], overrides)
    target = plan.set("target", "gpu" if cuda_available else "cpu", "gpu when CUDA is available, else cpu", overrides)
    if target not in BUDGETS_GIB:
        raise PlanError(f"--set target={target}: must be one of {', '.join(BUDGETS_GIB)}")
    plan.set("memory_budget_gib", BUDGETS_GIB[target], f"{BUDGETS_GIB} by target", overrides)

    spacings = np.array([c["spacing"] for c in fingerprint["cases"]], dtype=float)
    shapes = np.array([c["shape"] for c in fingerprint["cases"]], dtype=float)
    spacing, rule = target_spacing(spacings, shapes)
    pixdim = plan.set("pixdim", spacing, rule, overrides)
    new_shapes = resampled_shapes(shapes, spacings, pixdim)
    median_shape = [float(v) for v in np.median(new_shapes, axis=0)]
    plan.facts["median_spacing"] = [round(float(v), 4) for v in np.median(spacings, axis=0)]
    plan.facts["median_shape"] = [round(float(v), 1) for v in np.median(shapes, axis=0)]
    plan.facts["median_resampled_shape"] = median_shape
    topology = patch_rules(plan, template, median_shape, pixdim, overrides)
    sample_rules(plan, template, topology, float(new_shapes.prod(axis=1).sum()), overrides)
    schedule_rules(plan, template, num_training, overrides)
    return plan
