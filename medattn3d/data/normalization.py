"""Per-channel intensity normalisation from a plan: one scheme per input channel, as nnU-Net plans it.

A plan gives one dict per channel (``normalization`` in bundle configs, written by ``medattn3d.planning``):

- ``{"scheme": "ct", "lower": L, "upper": U, "mean": M, "std": S}``: clip to ``[L, U]`` (the dataset's foreground
  0.5 / 99.5 percentiles), then ``(x - M) / S`` with the foreground mean and std. CT intensities are physical (HU),
  so one dataset-wide mapping keeps tissue contrast comparable across scans.
- ``{"scheme": "zscore"}``: per volume, this channel: ``(x - mean) / std`` over its non-zero voxels; zero voxels
  stay 0 (the outside of a skull-stripped MRI stays background). MR intensities have no fixed scale, so each volume
  is normalised on its own.

Each channel goes through MONAI's ``NormalizeIntensity`` (``nonzero=True`` for z-score, fixed subtrahend and divisor
for CT); this transform only picks the scheme per channel, which MONAI's transforms cannot.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity

SCHEMES = ("ct", "zscore")
CT_KEYS = ("lower", "upper", "mean", "std")


def check_normalization(normalization: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate a per-channel normalisation list (ValueError saying which channel and what is wrong); returns a copy."""
    if isinstance(normalization, Mapping) or not isinstance(normalization, Sequence) or not normalization:
        raise ValueError(f"normalization must be a non-empty list with one dict per channel, got {normalization!r}")
    checked = []
    for index, spec in enumerate(normalization):
        if not isinstance(spec, Mapping) or spec.get("scheme") not in SCHEMES:
            raise ValueError(f"normalization[{index}] must be a dict with 'scheme' one of {SCHEMES}, got {spec!r}")
        if spec["scheme"] == "ct":
            missing = [key for key in CT_KEYS if key not in spec]
            if missing:
                raise ValueError(f"normalization[{index}] (ct) lacks {', '.join(missing)}")
            values = {key: float(spec[key]) for key in CT_KEYS}
            if not all(math.isfinite(v) for v in values.values()):
                raise ValueError(f"normalization[{index}] (ct) has a non-finite value: {values}")
            if values["lower"] > values["upper"]:
                raise ValueError(f"normalization[{index}] (ct): lower {values['lower']} > upper {values['upper']}")
            if values["std"] <= 0:
                raise ValueError(f"normalization[{index}] (ct): std must be positive, got {values['std']}")
            checked.append({"scheme": "ct", **values})
        else:
            checked.append({"scheme": "zscore"})
    return checked


class NormalizeChannelsd(MapTransform):
    """Normalise each channel of a channel-first image with its own scheme (see the module docstring).

    Args:
        keys: image key(s).
        normalization: one dict per channel; the image must have exactly that many channels.
    """

    def __init__(
        self, keys: KeysCollection, normalization: Sequence[Mapping[str, Any]], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalization = check_normalization(normalization)
        self.zscore = NormalizeIntensity(nonzero=True, dtype=torch.float32)
        self.fixed = [
            NormalizeIntensity(subtrahend=spec["mean"], divisor=spec["std"], dtype=torch.float32)
            if spec["scheme"] == "ct"
            else None
            for spec in self.normalization
        ]

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """The normalised channel-first ``image`` (float32, same type and meta as the input)."""
        if image.shape[0] != len(self.normalization):
            raise ValueError(
                f"normalization has {len(self.normalization)} channel(s), the image {image.shape[0]} "
                f"(shape {tuple(image.shape)})"
            )
        channels = []
        for index, spec in enumerate(self.normalization):
            channel = image[index : index + 1]
            if spec["scheme"] == "ct":
                channel = self.fixed[index](torch.clamp(channel.float(), spec["lower"], spec["upper"]))
            else:
                channel = self.zscore(channel.float())
            channels.append(channel)
        return torch.cat(channels, dim=0) if len(channels) > 1 else channels[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d
