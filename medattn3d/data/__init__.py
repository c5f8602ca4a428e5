"""Data: checked loading, transform presets, manifests, the demo dataset and inverse-geometry output."""

from medattn3d.data.demo import generate_demo_dataset
from medattn3d.data.loading import CheckVolumed, LoadVolumed, load_volume
from medattn3d.data.manifest import build_manifest, load_datalist, read_manifest
from medattn3d.data.resample import FastInverseSpacingd, linear_resample
from medattn3d.data.transforms import ct_transforms, mri_transforms, segmentation_transforms

__all__ = [
    "CheckVolumed",
    "FastInverseSpacingd",
    "LoadVolumed",
    "build_manifest",
    "ct_transforms",
    "generate_demo_dataset",
    "load_datalist",
    "linear_resample",
    "load_volume",
    "mri_transforms",
    "read_manifest",
    "segmentation_transforms",
]
