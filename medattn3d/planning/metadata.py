"""``configs/metadata.json`` for a planned bundle: MONAI's bundle metadata describing the real inputs and outputs.

Follows MONAI's published schema ``meta_schema_20240725.json`` (a copy ships as ``bundles/meta_schema.json`` so
``verify_metadata`` runs offline). Training fills in ``eval_metrics`` (:class:`medattn3d.training.BestModelSaver`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import Any

from medattn3d.planning.templates import Template

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
VERSION = "0.2.0"
CHANGELOG = {
    "0.2.0": "planned from the dataset's fingerprint by medattn3d plan (classes, channels, spacing, patch, "
    "normalisation)",
    "0.1.0": "first release: hand-written configs for the embedded demo data",
}


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _base_version(package: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the build tag says nothing about compatibility."""
    return _version(package).split("+")[0]


def spatial_shape(multiples: list[int]) -> list[str]:
    """The input sizes the network accepts, in MONAI's ``"16*n"`` notation, one per axis."""
    return [f"{m}*n" for m in multiples]


def bundle_metadata(
    template: Template,
    values: Mapping[str, Any],
    multiples: list[int],
    dataset: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata dict. ``dataset``: ``name``, ``description``, ``source`` (where the data comes from)."""
    channel_names = list(values["channel_names"])
    class_names = dict(values["class_names"])
    modalities = sorted({("CT" if n.strip().upper() == "CT" else "MR") for n in channel_names})
    ct_only = modalities == ["CT"]
    dims = template.spatial_dims
    organs = ", ".join(v for k, v in class_names.items() if k != "0")
    kind = "slice-wise 2D" if dims == 2 else "3D"
    return {
        "schema": SCHEMA_URL,
        "version": VERSION,
        "changelog": CHANGELOG,
        "monai_version": _base_version("monai"),
        "pytorch_version": _base_version("torch"),
        "numpy_version": _base_version("numpy"),
        "required_packages_version": {
            "medattn3d": _base_version("medattn3d"),
            "nibabel": _base_version("nibabel"),
            "pytorch-ignite": _base_version("pytorch-ignite"),
        },
        "task": f"{kind} segmentation of {organs} in {' / '.join(modalities)} ({dataset['name']})",
        "description": (
            f"{template.architecture.describe(dims)}; planned from the dataset's fingerprint: "
            f"{values['in_channels']} input channel(s) ({', '.join(channel_names)}), {values['num_classes']} classes, "
            f"resampled to {values['pixdim']} mm, patches of {values['roi_size']} voxels. "
            + (
                "Whole volumes predicted slice by slice (SliceInferer)"
                if dims == 2
                else "Whole volumes predicted by sliding windows with Gaussian blending"
            )
            + "; predictions written back in the input's geometry."
        ),
        "authors": "medattn3d developers",
        "copyright": "Copyright (c) medattn3d developers",
        "intended_use": "Research and education only; not for clinical use.",
        "data_source": dataset["source"],
        "data_type": "nifti",
        "image_classes": ", ".join(f"channel {i}: {n}" for i, n in enumerate(channel_names)),
        "label_classes": ", ".join(f"{k}: {v}" for k, v in class_names.items()),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in class_names.items()),
        "references": [template.architecture.reference],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if ct_only else "magnitude",
                    "modality": "CT" if ct_only else "MR" if modalities == ["MR"] else "multimodal",
                    "num_channels": int(values["in_channels"]),
                    "spatial_shape": spatial_shape(multiples),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in enumerate(channel_names)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": int(values["num_classes"]),
                    "spatial_shape": spatial_shape(multiples),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": class_names,
                }
            },
        },
    }
