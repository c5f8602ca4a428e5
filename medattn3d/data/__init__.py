"""Data: checked loading, transform presets, normalisation, datalists (MSD / manifests, folds) and the demo dataset."""

from medattn3d.data.check import check_dataset
from medattn3d.data.classes import class_values
from medattn3d.data.demo import generate_demo_dataset
from medattn3d.data.fast_gzip import enable_fast_gzip
from medattn3d.data.loading import VOLUME_SUFFIXES, CheckVolumed, LoadVolumed, load_volume
from medattn3d.data.manifest import FoldSplit, build_manifest, load_datalist, read_manifest, split_datalist
from medattn3d.data.normalization import NormalizeChannelsd
from medattn3d.data.resample import FastInverseSpacingd, linear_resample
from medattn3d.data.transforms import ct_transforms, mri_transforms, segmentation_transforms

enable_fast_gzip()  # every NIfTI read or written through nibabel uses ISA-L when isal is installed

__all__ = [
    "class_values",
    "VOLUME_SUFFIXES",
    "CheckVolumed",
    "FastInverseSpacingd",
    "FoldSplit",
    "LoadVolumed",
    "NormalizeChannelsd",
    "build_manifest",
    "check_dataset",
    "ct_transforms",
    "generate_demo_dataset",
    "load_datalist",
    "linear_resample",
    "load_volume",
    "mri_transforms",
    "read_manifest",
    "segmentation_transforms",
    "split_datalist",
]
