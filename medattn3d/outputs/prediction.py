"""Predictions back in the input's geometry: invert the preprocessing, then write one label map per input."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, Compose, Invertd, MapTransform, SaveImaged


class ChannelArgmaxd(MapTransform):
    """Per-voxel argmax over the channel axis as a one-channel integer label map, meta data kept.

    Like ``AsDiscreted(argmax=True)``, but ``torch.argmax`` over a short leading axis of a large volume runs
    strided on one core (2.4 s for 4 x 512 x 512 x 128 here); a running maximum over the channels takes a fifth of
    that (``benchmarks/pipeline_steps.py``). Ties go to the lower class index, as with ``argmax``.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scores = d[key]
            values = scores.as_tensor() if isinstance(scores, MetaTensor) else torch.as_tensor(scores)
            dtype = torch.uint8 if values.shape[0] <= 256 else torch.int16
            best = values[0].clone()
            labels = torch.zeros(values.shape[1:], dtype=dtype, device=values.device)
            for index in range(1, values.shape[0]):
                better = values[index] > best
                best = torch.where(better, values[index], best)
                labels[better] = index
            labels = labels[None]
            d[key] = MetaTensor(labels, meta=scores.meta) if isinstance(scores, MetaTensor) else labels
        return d


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
        ChannelArgmaxd(pred_key),
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
