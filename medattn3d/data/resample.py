"""Separable linear resampling for axis-aligned grids, and a ``Spacingd`` that resamples with it both ways.

``Spacing`` keeps the axis directions, so the map between its input and output grids is a per-axis scale and shift
(in voxel indices) whenever the input's axes are not rotated against the target's -- always, unless
``diagonal=True`` straightens an oblique scan. MONAI resamples through a generic 3D ``grid_sample``, which runs
scalar code on CPU; for such maps trilinear interpolation factorises into one 1D linear interpolation per axis, each
two gathers and one ``lerp`` over the whole volume (multi-threaded, vectorised). Inverting ``Spacingd`` on a
4-class prediction of a 512 x 512 x 128 CT, and the forward resampling of that CT, are the costliest steps of a
whole-volume run after the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from monai.config import USE_COMPILED
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.data.utils import AFFINE_TOL, to_affine_nd
from monai.transforms import Spacingd as MonaiSpacingd
from monai.transforms import SpatialResample
from monai.utils import (
    TraceKeys,
    convert_to_numpy,
    convert_to_tensor,
    get_equivalent_dtype,
    get_torch_dtype_from_string,
)

from medattn3d.data.blocks import block_rows, run_blocks

AXIS_ALIGNED_TOL = 1e-6


def linear_resample(
    image: torch.Tensor, scale: Sequence[float], offset: Sequence[float], spatial_size: Sequence[int]
) -> torch.Tensor:
    """Resample a channel-first ``image`` with (bi/tri)linear interpolation where output voxel ``i`` along spatial
    axis ``k`` reads input position ``scale[k] * i + offset[k]`` (voxel-index units), clamped to the input's border.

    Equals ``grid_sample(mode="bilinear", padding_mode="border")`` for that axis-aligned map, computed as one 1D
    pass per axis. Shrinking axes go first so later passes touch fewer voxels; among the rest the outermost axis
    goes last (gathering whole contiguous slabs is the cheapest pass, so it gets the largest output).
    """
    spatial_dims = image.dim() - 1
    if not (len(scale) == len(offset) == len(spatial_size) == spatial_dims):
        raise ValueError(f"scale, offset and spatial_size need {spatial_dims} entries for image {tuple(image.shape)}")
    order = sorted(range(spatial_dims), key=lambda axis: (spatial_size[axis] / image.shape[axis + 1], -axis))
    result = image
    for axis in order:
        result = _resample_axis(result, axis + 1, float(scale[axis]), float(offset[axis]), int(spatial_size[axis]))
    return result


def _resample_axis(image: torch.Tensor, dim: int, scale: float, offset: float, size: int) -> torch.Tensor:
    """1D linear interpolation along ``dim``: output slab ``i`` blends the two input slabs around ``scale*i+offset``
    (``lerp`` with that position's fraction as weight), in blocks of rows (:mod:`medattn3d.data.blocks`): rows of
    output along ``dim`` when it is the outermost spatial axis, else rows of the outermost axis, per channel."""
    length = image.shape[dim]
    if size == length and scale == 1.0 and offset == 0.0:
        return image
    positions = (torch.arange(size, dtype=torch.float64) * scale + offset).clamp_(0, length - 1)
    lower = positions.floor()
    weights = (positions - lower).to(image.dtype).view(-1, *[1] * (image.dim() - 1 - dim))
    lower = lower.long()
    upper = (lower + 1).clamp_(max=length - 1)
    shape = list(image.shape)
    shape[dim] = size
    result = image.new_empty(shape)
    rows = block_rows(result[0, 0].numel() * result.element_size())
    inner = (slice(None),) * (dim - 1)  # index within a block of rows: keep the rows and the axes before dim
    plan = list(zip(range(size), lower.tolist(), upper.tolist(), weights.flatten().tolist(), strict=True))
    jobs = []
    for channel in range(image.shape[0]):
        source, target = image[channel], result[channel]
        if dim == 1:  # whole slabs: lerp them straight into the output, no gathered copies
            for start in range(0, size, rows):
                jobs.append(partial(_lerp_slabs, source, target, plan[start : start + rows]))
        else:
            for start in range(0, source.shape[0], rows):
                part = slice(start, start + rows)
                block, low, high = source[part], (*inner, lower), (*inner, upper)
                jobs.append(partial(_lerp_block, block, low, high, weights, target[part]))
    run_blocks(jobs)
    return result


def _lerp_slabs(source: torch.Tensor, target: torch.Tensor, plan: list[tuple[int, int, int, float]]) -> None:
    """Output slabs ``target[i] = lerp(source[low], source[high], weight)`` for each ``(i, low, high, weight)``."""
    for index, low, high, weight in plan:
        torch.lerp(source[low], source[high], weight, out=target[index])


def _lerp_block(source: torch.Tensor, low: tuple, high: tuple, weight: torch.Tensor, out: torch.Tensor) -> None:
    """``out = lerp(source[low], source[high], weight)``: one block of a 1D interpolation pass."""
    torch.lerp(source[low], source[high], weight, out=out)


def axis_aligned_map(xform: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis (scale, offset) of a homogeneous voxel-to-voxel map, or ``None`` when it rotates or permutes axes."""
    linear = xform[:-1, :-1]
    if np.abs(linear - np.diag(np.diag(linear))).max(initial=0.0) > AXIS_ALIGNED_TOL:
        return None
    return np.diag(linear).copy(), xform[:-1, -1].copy()


def _option(value: Any) -> Any:
    """An option's plain value (MONAI passes enums or strings)."""
    return getattr(value, "value", value)


class SeparableSpatialResample(SpatialResample):
    """MONAI's ``SpatialResample`` that runs :func:`linear_resample` -- forward and inverse -- when it can (bilinear,
    border padding, an axis-aligned voxel map, a MetaTensor without pending lazy operations, eager execution) and
    MONAI's own resampling otherwise. Output values, affine, applied-operation record and dtype are MONAI's."""

    def __call__(  # type: ignore[override]
        self,
        img: torch.Tensor,
        dst_affine: torch.Tensor | None = None,
        spatial_size: Sequence[int] | torch.Tensor | int | None = None,
        mode: Any = None,
        padding_mode: Any = None,
        align_corners: bool | None = None,
        dtype: Any = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        mode = self.mode if mode is None else mode
        padding_mode = self.padding_mode if padding_mode is None else padding_mode
        align_corners = self.align_corners if align_corners is None else align_corners
        dtype_pt = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
        lazy_ = self.lazy if lazy is None else lazy
        fast = None
        forward = getattr(self, "separable_forward", True)
        if forward and not lazy_ and _option(mode) == "bilinear" and _option(padding_mode) == "border":
            fast = self._separable(img, dst_affine, spatial_size, align_corners, dtype_pt)
        if fast is not None:
            return fast
        return super().__call__(img, dst_affine, spatial_size, mode, padding_mode, align_corners, dtype, lazy)

    def _separable(
        self, img: Any, dst_affine: Any, spatial_size: Any, align_corners: bool, dtype: torch.dtype
    ) -> MetaTensor | None:
        """The forward resampling as :func:`linear_resample`, or ``None`` where MONAI's path must run."""
        if USE_COMPILED or not isinstance(img, MetaTensor) or img.pending_operations or dst_affine is None:
            return None
        if spatial_size is None or isinstance(spatial_size, int) or not dtype.is_floating_point:
            return None
        spatial_dims = img.dim() - 1
        size = [int(s) for s in spatial_size]
        if spatial_dims not in (2, 3) or len(size) != spatial_dims or min(size) < 1:
            return None
        source = to_affine_nd(spatial_dims, convert_to_numpy(img.affine, dtype=np.float64))
        target = to_affine_nd(spatial_dims, convert_to_numpy(dst_affine, dtype=np.float64))
        try:
            xform = np.linalg.solve(source, target)  # output voxel index -> input voxel index
        except np.linalg.LinAlgError:
            return None
        if list(img.shape[1:]) == size and np.allclose(xform, np.eye(spatial_dims + 1), atol=AFFINE_TOL):
            return None  # MONAI's no-op path (keeps the values, records the step)
        mapping = axis_aligned_map(xform)
        if mapping is None:
            return None
        values = linear_resample(img.as_tensor().to(dtype), *mapping, size)
        extra_info = {
            "dtype": str(dtype)[6:],
            "mode": "bilinear",
            "padding_mode": "border",
            "align_corners": align_corners if align_corners is not None else TraceKeys.NONE,
            "src_affine": torch.as_tensor(source, dtype=torch.float64),
        }
        meta = self.track_transform_meta(
            img,
            sp_size=torch.tensor(size),
            affine=torch.as_tensor(xform, dtype=torch.float64),
            extra_info=extra_info,
            orig_size=img.shape[1:],
            transform_info=self.get_transform_info(),
            lazy=False,
        )
        out = convert_to_tensor(values, dtype=torch.float32, track_meta=get_track_meta())
        return out.copy_meta_from(meta) if isinstance(out, MetaTensor) else out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        if not isinstance(data, MetaTensor) or data.pending_operations or not data.applied_operations:
            return super().inverse(data)
        transform = self.get_most_recent_transform(data, check=True, pop=False)
        info = transform[TraceKeys.EXTRA_INFO]
        if str(info.get("mode")) != "bilinear" or str(info.get("padding_mode")) != "border":
            return super().inverse(data)
        spatial_dims = data.dim() - 1
        # voxel indices of the original grid -> voxel indices of the current one, as MONAI's inverse computes it
        current, original = (
            to_affine_nd(spatial_dims, convert_to_numpy(a, dtype=np.float64)) for a in (data.affine, info["src_affine"])
        )
        xform = np.linalg.solve(current, original)
        mapping = axis_aligned_map(xform)
        if mapping is None:
            return super().inverse(data)
        self.pop_transform(data)
        spatial_size = [int(size) for size in transform[TraceKeys.ORIG_SIZE]]
        dtype = get_torch_dtype_from_string(info["dtype"]) if isinstance(info.get("dtype"), str) else torch.float32
        values = linear_resample(data.as_tensor().to(dtype), *mapping, spatial_size)
        with self.trace_transform(False):
            meta = self.track_transform_meta(
                data,
                sp_size=spatial_size,
                affine=torch.as_tensor(xform, dtype=torch.float64),
                orig_size=data.shape[1:],
                transform_info=self.get_transform_info(),
                lazy=False,
            )
        return MetaTensor(values.to(torch.float32)).copy_meta_from(meta)


class FastInverseSpacingd(MonaiSpacingd):
    """``monai.transforms.Spacingd`` (same arguments, same output geometry and record) that resamples separably
    where the map allows, forward and in the inverse ``Invertd`` calls when a prediction goes back to the input's
    grid. (The name predates the separable forward pass.)

    ``separable_forward=False`` keeps MONAI's forward resampling (its float32 ``grid_sample`` values, ~1e-5 from the
    separable ones), e.g. to reproduce outputs written before the forward pass became separable."""

    def __init__(self, *args, separable_forward: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        resample = self.spacing_transform.sp_resample
        self.spacing_transform.sp_resample = SeparableSpatialResample(
            mode=resample.mode,
            padding_mode=resample.padding_mode,
            align_corners=resample.align_corners,
            dtype=resample.dtype,
            lazy=resample.lazy,
        )
        self.spacing_transform.sp_resample.separable_forward = separable_forward
