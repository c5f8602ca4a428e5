"""Transform presets (MONAI Compose) for CT and MRI, for training, validation and inference, 2D and 3D."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapLabelValued,
    NormalizeIntensityd,
    Orientationd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
    SqueezeDimd,
    Transform,
)

from medattn3d.data.classes import is_identity
from medattn3d.data.loading import CheckVolumed, LoadVolumed, minimum_shape
from medattn3d.data.normalization import NormalizeChannelsd, check_normalization
from medattn3d.data.resample import FastInverseSpacingd

STAGES = ("train", "val", "infer")
MODALITIES = ("ct", "mri")


def intensity_transforms(
    modality: str,
    image_key: str = "image",
    hu_window: Sequence[float] = (-175.0, 250.0),
    mri_normalization: str = "zscore",
    percentiles: Sequence[float] = (0.5, 99.5),
) -> list[Transform]:
    """CT: clip to the HU window and scale it to [0, 1]; MRI: per-volume, per-channel z-score over the non-zero
    voxels (``"zscore"``) or percentile range to [0, 1] (``"percentile"``)."""
    if modality == "ct":
        low, high = hu_window
        return [ScaleIntensityRanged(image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)]
    if modality != "mri":
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if mri_normalization == "zscore":
        return [NormalizeIntensityd(image_key, nonzero=True, channel_wise=True)]
    if mri_normalization == "percentile":
        low, high = percentiles
        return [
            ScaleIntensityRangePercentilesd(
                image_key, lower=low, upper=high, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
            )
        ]
    raise ValueError(f"mri_normalization must be 'zscore' or 'percentile', got {mri_normalization!r}")


def segmentation_transforms(
    stage: str = "train",
    modality: str = "ct",
    spatial_dims: int = 3,
    roi_size: Sequence[int] = (96, 96, 96),
    pixdim: Sequence[float] | None = (1.5, 1.5, 2.0),
    axcodes: str | None = "RAS",
    hu_window: Sequence[float] = (-175.0, 250.0),
    mri_normalization: str = "zscore",
    percentiles: Sequence[float] = (0.5, 99.5),
    channels: int = 1,
    num_classes: int | None = None,
    num_samples: int = 2,
    pos_neg: Sequence[float] = (1.0, 1.0),
    crop_ratios: Sequence[float] | None = None,
    flip_axes: Sequence[int] = (),
    rotate90: bool = False,
    min_size: int = 4,
    series_uid: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    normalization: Sequence[Mapping[str, Any]] | None = None,
    separable_forward: bool = True,
    class_values: Sequence[int] | None = None,
) -> Compose:
    """The preprocessing pipeline for one stage, as a MONAI ``Compose`` (usable as a bundle config ``_target_``).

    All stages: load with checks (:class:`LoadVolumed`, :class:`CheckVolumed`), channel first, reorient to
    ``axcodes`` (``None`` keeps the file's), resample to ``pixdim`` mm (``None`` keeps the native grid), normalise
    intensities: per channel from a plan when ``normalization`` is given (one dict per channel, see
    :mod:`medattn3d.data.normalization`), else from ``modality`` (:func:`intensity_transforms`). An image may be
    one file (a 4D NIfTI holds its channels on the last axis) or a list of files, one per channel.

    ``train`` adds padding to the patch size, foreground-aware random patches (``RandCropByPosNegLabeld``; or, with
    ``crop_ratios`` (one weight per class, background first), patches centred on a class drawn with those weights:
    MONAI's ``RandCropByLabelClassesd``, so rare small classes are seen as often as large ones), optional flips/rot90
    and random intensity scale/shift. ``val`` keeps the whole labelled volume (for sliding-window
    evaluation); ``infer`` the same for the image alone (and is the pipeline
    :func:`medattn3d.outputs.prediction.prediction_writer` inverts).

    With ``spatial_dims=2`` the volumes stay 3D and training takes axial slices: patches of ``(*roi_size, 1)``
    squeezed to 2D; validation and inference run the 2D network slice by slice (``monai.inferers.SliceInferer``).

    Resampling runs separably (:class:`medattn3d.data.resample.FastInverseSpacingd`); ``separable_forward=False``
    keeps MONAI's forward ``grid_sample`` (values ~1e-5 apart), to reproduce outputs of earlier versions exactly.

    ``class_values`` (the dataset's label values, :func:`medattn3d.data.classes.class_values`) checks the label files
    against them and, when they are not ``0 .. n - 1``, maps value ``class_values[k]`` to class ``k``.

    Flips across left-right and in-plane rotations are off by default: they swap left and right organs
    (kidneys, liver/spleen), which a multi-organ model must tell apart.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(roi_size) != spatial_dims:
        raise ValueError(f"roi_size {tuple(roi_size)} must have {spatial_dims} entries for spatial_dims={spatial_dims}")
    if normalization is not None:
        normalization = check_normalization(normalization)
        if len(normalization) != channels:
            raise ValueError(f"normalization has {len(normalization)} entries for {channels} channel(s)")
    labelled = stage != "infer"
    keys = [image_key, label_key] if labelled else [image_key]
    interpolation = ["bilinear", "nearest"] if labelled else ["bilinear"]
    steps: list[Transform] = [
        LoadVolumed(keys, series_uid=series_uid),
        CheckVolumed(
            image_key,
            label_key if labelled else None,
            channels=channels,
            num_classes=num_classes,
            min_size=minimum_shape(spatial_dims, min_size),
            class_values=class_values,
        ),
        EnsureChannelFirstd(keys),
    ]
    if labelled and class_values is not None and not is_identity(class_values):
        # label value class_values[k] trains as class k (BraTS: 4 -> 3); the writers map the prediction back
        steps.append(
            MapLabelValued(label_key, orig_labels=list(class_values), target_labels=list(range(len(class_values))))
        )
    if axcodes:
        steps.append(Orientationd(keys, axcodes=axcodes, labels=None))
    if pixdim is not None:
        # fp32 resampling (MONAI's default is float64: twice the memory traffic for no visible gain), inverted separably
        steps.append(
            FastInverseSpacingd(
                keys, pixdim=pixdim, mode=interpolation, dtype=torch.float32, separable_forward=separable_forward
            )
        )
    if normalization is not None:
        steps.append(NormalizeChannelsd(image_key, normalization))
    else:
        steps += intensity_transforms(modality, image_key, hu_window, mri_normalization, percentiles)
    if stage == "train":
        patch = list(roi_size) if spatial_dims == 3 else [*roi_size, 1]
        steps += [
            SpatialPadd(keys, spatial_size=patch),
            _patch_sampler(keys, label_key, image_key, patch, num_samples, pos_neg, crop_ratios, normalization),
        ]
        if spatial_dims == 2:
            steps.append(SqueezeDimd(keys, dim=-1))
        steps += [RandFlipd(keys, prob=0.1, spatial_axis=axis) for axis in flip_axes]
        if rotate90:
            steps.append(RandRotate90d(keys, prob=0.1, max_k=3))
        steps += [
            RandScaleIntensityd(image_key, factors=0.1, prob=0.5),
            RandShiftIntensityd(image_key, offsets=0.1, prob=0.5),
        ]
    steps.append(EnsureTyped(keys, track_meta=True))
    return Compose(steps)


def _patch_sampler(
    keys: list[str],
    label_key: str,
    image_key: str,
    patch: list[int],
    num_samples: int,
    pos_neg: Sequence[float],
    crop_ratios: Sequence[float] | None,
    normalization: Sequence[dict] | None,
) -> Transform:
    """The training patch sampler: class-balanced when ``crop_ratios`` are given, else foreground/background."""
    if crop_ratios is not None:
        return RandCropByLabelClassesd(
            keys,
            label_key=label_key,
            spatial_size=patch,
            ratios=list(crop_ratios),
            num_classes=len(crop_ratios),
            num_samples=num_samples,
            warn=False,  # a class absent from a case is simply not drawn there
        )
    return RandCropByPosNegLabeld(
        keys,
        label_key=label_key,
        spatial_size=patch,
        pos=pos_neg[0],
        neg=pos_neg[1],
        num_samples=num_samples,
        # negatives where the [0, 1]-scaled image is above 0 (not air); planned z-scores are negative
        # in half the body, so with a plan negatives come from anywhere the label is background
        image_key=image_key if normalization is None else None,
        image_threshold=0.0,
    )


def ct_transforms(stage: str = "train", **kwargs) -> Compose:
    """CT preset: :func:`segmentation_transforms` with HU windowing (default -175..250 HU, soft-tissue abdomen)."""
    return segmentation_transforms(stage, "ct", **kwargs)


def mri_transforms(stage: str = "train", **kwargs) -> Compose:
    """MRI preset: :func:`segmentation_transforms` with per-volume z-score (or percentile) normalisation."""
    return segmentation_transforms(stage, "mri", **kwargs)
