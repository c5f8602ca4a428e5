"""Predictions back in the input's geometry: invert the preprocessing, then write one label map per input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, SaveImaged


def prediction_writer(
    preprocessing: Compose,
    output_dir: str | Path,
    output_postfix: str = "seg",
    image_key: str = "image",
    pred_key: str = "pred",
    softmax: bool = True,
    output_ext: str = ".nii.gz",
) -> Compose:
    """Post-processing chain: softmax, invert ``preprocessing`` (reorientation, resampling) on the probabilities with
    linear interpolation, argmax, write the label map as ``<input name>_<postfix><ext>`` (uint8) with the input's
    shape, spacing, direction and origin. DICOM-series inputs are written as NIfTI named after their folder.
    """
    steps = [Activationsd(pred_key, softmax=softmax)] if softmax else []
    steps += [
        Invertd(pred_key, transform=preprocessing, orig_keys=image_key, nearest_interp=False, to_tensor=True),
        AsDiscreted(pred_key, argmax=True),
        SaveImaged(
            pred_key,
            output_dir=str(output_dir),
            output_postfix=output_postfix,
            output_ext=output_ext,
            resample=False,
            separate_folder=False,
            output_dtype=np.uint8,
            print_log=False,
        ),
    ]
    return Compose(steps)
