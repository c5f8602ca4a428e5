"""Loading with checks: MONAI's LoadImage behind path checks, and content checks before any processing."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform

from medattn3d.data.blocks import block_stream, copy_blocked, tile_slices
from medattn3d.data.classes import is_identity
from medattn3d.data.dicom import inspect_series
from medattn3d.errors import InputError

# MONAI logs (and, building a LoadImage, warns) that an optional GPU DICOM decoder is missing each time a loader is
# built: noise for our users on every CPU, in the CLI and in bundle runs alike (their configs import this module).
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r"NvImgCodecPydicomReader: nvImageCodec decoder plugin", category=UserWarning)


# what a refusal of a plain 2D file adds (the header pass and the voxel checks say the same)
TWO_D_IMAGE_HINT = " (a 2D image: a 2D bundle takes it saved as a one-slice volume, shape (X, Y, 1))"


def minimum_shape(spatial_dims: int = 3, min_size: int = 4) -> tuple[int, int, int]:
    """Smallest volume a bundle takes, per axis: ``min_size`` voxels on every axis for a 3D network; for a 2D network
    (run slice by slice over the third axis) ``min_size`` in plane and a single slice, so one 2D image stored as an
    ``(X, Y, 1)`` volume is a valid input."""
    return (min_size, min_size, 1) if spatial_dims == 2 else (min_size, min_size, min_size)


def too_small(shape: Sequence[int], min_size: int | Sequence[int]) -> str | None:
    """Why ``shape`` (its first three axes) is under ``min_size`` (one size, or one per axis), or ``None``."""
    minimum = [min_size] * 3 if isinstance(min_size, int) else list(min_size)
    small = [i for i, (s, m) in enumerate(zip(shape[:3], minimum, strict=False)) if s < m]
    if not small:
        return None
    return f"is too small: shape {tuple(shape[:3])} has axis {small[0]} below the minimum of {minimum[small[0]]} voxels"


# The package's one list of the file suffixes it reads as volumes (a folder is read as a DICOM series).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm")
# Those read with nibabel (the rest go to MONAI's suffix-based choice, ITK for NRRD/MHA/DICOM).
_NIBABEL_SUFFIXES = (".nii", ".nii.gz")
CHANNEL_AFFINE_TOLERANCE = 1e-3  # mm: channel files must lie on the same grid as the first one


def volume_stem(name: str) -> str:
    """A volume file's name without its volume suffix (``case_01.nii.gz`` -> ``case_01``)."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class RowMajorNibabelReader(NibabelReader):
    """MONAI's ``NibabelReader`` that reorders NIfTI's column-major voxels to row-major itself, in cache-sized tiles
    on a thread pool (:func:`medattn3d.data.blocks.copy_blocked`).

    MONAI makes every loaded array C-contiguous with numpy, a single-threaded transposing copy (0.5 s for a
    512 x 512 x 128 float CT on a quiet machine; a whole-volume torch copy: 0.2 s; tiled: 2-3x less again).
    Dtypes torch cannot hold are left to MONAI.

    ``scaled_dtype=np.float32`` (what :func:`load_volume` asks for images): integer voxels with a NIfTI scale and
    intercept (CT stored as int16 with ``scl_inter = -1024``) are scaled tile by tile in float64, as nibabel scales
    them, and stored straight into float32 -- the values MONAI gets by casting nibabel's float64 array to float32,
    without the whole-volume float64 array (4x the int16 data) and its conversion pass.
    """

    def __init__(self, *args: Any, scaled_dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scaled_dtype = None if scaled_dtype is None else np.dtype(scaled_dtype)

    def _get_array_data(self, img: Any, filename: Any) -> np.ndarray:
        if self.scaled_dtype == np.float32 and not self.to_gpu:
            scaled = scaled_to_float32(img.dataobj)
            if scaled is not None:
                return scaled
        if not self.to_gpu:
            streamed = stream_gzip_voxels(img.dataobj)
            if streamed is not None:
                return streamed
        data = super()._get_array_data(img, filename)
        if isinstance(data, np.ndarray) and data.ndim > 1 and not data.flags.c_contiguous:
            try:
                source = torch.from_numpy(data)
            except (TypeError, ValueError):  # e.g. big-endian or unsigned types torch does not support
                return data
            return copy_blocked(torch.empty(source.shape, dtype=source.dtype), source).numpy()
        return data


STREAM_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.int16, np.uint8, np.int8, np.int32, np.int64))
STREAM_CHUNK_BYTES = 4 << 20


def stream_gzip_voxels(proxy: Any) -> np.ndarray | None:
    """The voxels of an unscaled gzipped NIfTI, row-major, reordered while the file decompresses: each ~4 MB of
    slices (contiguous in the file's column-major order) goes to the block pool as soon as it is read
    (:func:`medattn3d.data.blocks.block_stream`), so decompression (one core) and reordering overlap instead of
    following each other. ``None`` where this does not apply (not ``.gz``, scaled, or a type torch cannot hold
    natively): nibabel then reads as usual."""
    from nibabel.arrayproxy import ArrayProxy
    from nibabel.openers import ImageOpener

    if not isinstance(proxy, ArrayProxy) or len(proxy.shape) < 2 or getattr(proxy, "order", "F") != "F":
        return None
    if not str(proxy.file_like).lower().endswith(".gz") or (float(proxy.slope), float(proxy.inter)) != (1.0, 0.0):
        return None
    dtype = np.dtype(proxy.dtype)
    if not dtype.isnative or dtype not in STREAM_DTYPES:
        return None
    shape = tuple(int(s) for s in proxy.shape)
    slab = int(np.prod(shape[:-1]))  # voxels of one index along the last axis: contiguous in the file
    per_chunk = max(1, STREAM_CHUNK_BYTES // (slab * dtype.itemsize))
    target = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype)
    with ImageOpener(proxy.file_like) as stream, block_stream() as submit:
        stream.seek(proxy.offset)
        for start in range(0, shape[-1], per_chunk):
            count = min(per_chunk, shape[-1] - start)
            chunk = np.empty(slab * count, dtype)
            _read_exactly(stream, chunk, proxy.file_like)
            source = torch.from_numpy(chunk.reshape((*shape[:-1], count), order="F"))
            part = target[..., start : start + count]
            for tile in tile_slices(source.shape, dtype.itemsize):
                submit(partial(torch.Tensor.copy_, part[tile], source[tile]))
    return target.numpy()


def _read_exactly(stream: Any, array: np.ndarray, name: Any) -> None:
    """Fill ``array`` from ``stream``; a short read is a truncated file."""
    view = memoryview(array).cast("B")
    done = 0
    while done < len(view):
        got = stream.readinto(view[done:])
        if not got:
            raise OSError(f"{name}: the voxel data ends early (truncated file?)")
        done += got


SCALED_RAW_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))  # exact in float32, torch-native


def scaled_to_float32(proxy: Any) -> np.ndarray | None:
    """A nibabel ``ArrayProxy`` of 8/16-bit integers with a scale or intercept, read as row-major float32:
    ``float32(raw * slope + inter)`` with the arithmetic in float64, as nibabel's scaling then a float32 cast gives.
    ``None`` where this does not apply (no scaling, other raw types, not a plain array proxy)."""
    from nibabel.arrayproxy import ArrayProxy

    if not isinstance(proxy, ArrayProxy) or len(proxy.shape) < 2:
        return None
    slope, inter = float(proxy.slope), float(proxy.inter)
    if (slope == 1.0 and inter == 0.0) or not (np.isfinite(slope) and np.isfinite(inter)):
        return None
    if np.dtype(proxy.dtype).newbyteorder("=") not in SCALED_RAW_DTYPES or not np.dtype(proxy.dtype).isnative:
        return None
    source = torch.from_numpy(np.asarray(proxy.get_unscaled()))
    target = torch.empty(source.shape, dtype=torch.float32)
    return copy_blocked(target, source, partial(_scale_float64, slope, inter)).numpy()


def _scale_float64(slope: float, inter: float, raw: torch.Tensor) -> torch.Tensor:
    """``raw * slope + inter`` in float64, each step only when nibabel's ``apply_read_scaling`` takes it."""
    values = raw.double()
    if slope != 1.0:
        values = values * slope
    if inter != 0.0:
        values = values + inter
    return values


def source_path(data: Any) -> str:
    """The file a loaded array came from (its ``filename_or_obj`` meta entry), or ``"<array>"``."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<array>"))


def load_volume(
    path: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    image_only: bool = True,
    dtype: Any = np.float32,
) -> Any:
    """Read a NIfTI/NRRD/MHA file, a DICOM file or a DICOM series folder with MONAI's ``LoadImage``.

    The reader is picked by what the path is: a folder is checked as one DICOM series (no gaps, one orientation;
    ``series_uid`` picks one of several) and read with ITK; a file goes to MONAI's suffix-based reader choice.
    A list of paths is one image with a channel per path (see :func:`load_channels`). ``dtype=None`` keeps the
    file's data type (labels: a quarter of float32's memory). Every failure is an :class:`InputError` naming the path.
    """
    if isinstance(path, (list, tuple)):
        return load_channels(path, series_uid, dtype)
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        series = inspect_series(path, series_uid)
        # ITK would pick its own notion of "the" series (GDCM splits and names series its own way), so it reads a
        # folder holding links to exactly the checked files.
        with tempfile.TemporaryDirectory(prefix="medattn3d-series-") as tmp:
            for index, file in enumerate(series.files):
                os.symlink(file.resolve(), Path(tmp) / f"{index:05d}_{file.name}")
            loader = LoadImage(reader=ITKReader(), image_only=image_only, dtype=dtype)
            image = _read(loader, Path(tmp), path)
        meta = image[1] if isinstance(image, tuple) else image.meta
        meta["filename_or_obj"] = str(path)
        return image
    if path.stat().st_size == 0:
        raise InputError(path, "is an empty file")
    reader = None
    if path.name.lower().endswith(_NIBABEL_SUFFIXES):
        reader = RowMajorNibabelReader(scaled_dtype=dtype if _is_float32(dtype) else None)
    # a NIfTI goes to nibabel only: were MONAI to fall back to ITK after nibabel failed, a truncated .nii.gz would
    # load as partly garbage instead of being refused
    loader = LoadImage(image_only=image_only, dtype=dtype)
    return _read(loader if reader is None else partial(loader, reader=reader), path, path)


def _is_float32(dtype: Any) -> bool:
    try:
        return dtype is not None and np.dtype(dtype) == np.float32
    except TypeError:  # e.g. a torch dtype
        return dtype == torch.float32


def check_channel_grid(
    path: Any, shape: Sequence[int], affine: Any, first_path: Any, first_shape: Sequence[int], first_affine: Any
) -> None:
    """Refuse a channel file (``InputError`` naming it) that is not one 3D volume on the first channel's grid."""
    if len(shape) != 3:
        raise InputError(path, f"is {len(shape)}D (shape {tuple(shape)}): each channel file must hold one 3D volume")
    if tuple(shape) != tuple(first_shape):
        raise InputError(
            path, f"channel shape {tuple(shape)} differs from the first channel's {tuple(first_shape)} ({first_path})"
        )
    diff = float(np.abs(np.asarray(affine, dtype=np.float64) - np.asarray(first_affine, dtype=np.float64)).max())
    if diff > CHANNEL_AFFINE_TOLERANCE:
        raise InputError(
            path,
            f"channel affine differs from the first channel's ({first_path}) by up to {diff:.3g} mm: "
            "resample the channels onto one grid first",
        )


def load_channels(paths: Sequence[str | Path], series_uid: str | None = None, dtype: Any = np.float32) -> MetaTensor:
    """One multi-channel image from one file (or DICOM series) per channel, stacked in order on a last axis.

    Every channel must be one volume on the first channel's grid (same shape and affine), else an ``InputError``
    names the file that differs. The result looks like a 4D NIfTI with channels last (``original_channel_dim`` -1,
    the first file's affine and name), so ``EnsureChannelFirstd``, ``Orientationd``, ``Spacingd`` and their
    inverses treat both forms alike. MONAI's ``LoadImage`` also stacks lists, but reports a mismatch without the file.
    """
    if len(paths) == 0:
        raise InputError("<image>", "an image entry is an empty list of channel files")
    first: MetaTensor | None = None
    channels: list[torch.Tensor] = []
    for path in paths:
        volume = load_volume(path, series_uid, dtype=dtype)
        if first is None:
            first = volume
        check_channel_grid(path, volume.shape, volume.affine, paths[0], first.shape, first.affine)
        channels.append(volume.as_tensor())
    assert first is not None
    meta = dict(first.meta)
    meta["original_channel_dim"] = -1
    meta["filename_or_obj"] = str(paths[0])
    stacked = torch.stack(channels, dim=-1) if len(channels) > 1 else channels[0].unsqueeze(-1)
    return MetaTensor(stacked, meta=meta)


def _read(loader: Callable[[str], Any], source: Path, shown: Path) -> Any:
    """Run ``loader`` (a ``LoadImage``, or one bound to a single reader) on ``source``; any reader failure becomes an
    ``InputError`` naming ``shown``."""
    try:
        return loader(str(source))
    except Exception as err:  # readers raise many types; the user needs the file and the reason
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InputError(shown, f"cannot be read as an image ({reason[:300]})") from err


class LoadVolumed(MapTransform):
    """Dictionary version of :func:`load_volume` (drop-in for ``LoadImaged`` with clear errors)."""

    def __init__(self, keys: KeysCollection, series_uid: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series_uid = series_uid

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_volume(d[key], self.series_uid)
        return d


def _spatial_shape(array: Any, spatial_dims: int) -> tuple[int, ...]:
    return tuple(int(s) for s in array.shape[:spatial_dims])


def label_values(label: Any) -> torch.Tensor:
    """The distinct values of a label volume, sorted. Integer labels are counted with ``bincount`` (a tenth of the
    time ``unique``'s sort takes on a CT-sized volume); floats and negative values fall back to ``unique``."""
    values = torch.as_tensor(label)
    values = values.as_tensor() if isinstance(values, MetaTensor) else values
    flat = values.reshape(-1)
    if flat.numel() == 0 or values.is_floating_point() or values.dtype == torch.bool:
        return torch.unique(flat)
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high > 2**20:
        return torch.unique(flat)
    if flat.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
        flat = flat.to(torch.int32)
    return torch.nonzero(torch.bincount(flat)).reshape(-1).to(values.dtype)


def non_finite_count(image: Any) -> int:
    """How many NaN or infinite values ``image`` holds (0 for integer data). One min/max pass decides (NaN and
    infinities reach the extremes); only a volume that has some is counted element-wise (``isfinite`` over a
    512 x 512 x 128 CT: 0.45 s; the min/max: 0.03 s)."""
    values = torch.as_tensor(image)
    values = values.as_tensor() if isinstance(values, MetaTensor) else values
    if not values.is_floating_point() or values.numel() == 0:
        return 0
    low, high = torch.aminmax(values)
    if bool(torch.isfinite(low)) and bool(torch.isfinite(high)):
        return 0
    return int((~torch.isfinite(values)).sum())


class CheckVolumed(MapTransform):
    """Reject volumes a network cannot use, naming the file: wrong rank, non-finite values, too small, and
    labels whose shape, affine or values disagree with the image. Runs right after loading (arrays ``(X, Y, Z[, C])``).

    Args:
        image_key / label_key: keys of the image and (optional) label.
        channels: expected image channels (a 4D image must have exactly this many in its last axis).
        num_classes: labels must be integers in ``[0, num_classes)``; ``None`` skips the value check.
        spatial_dims: 3 for volumes; 2 for plain 2D images.
        min_size: smallest size per spatial axis, in voxels: one for all, or one per axis
            (:func:`minimum_shape`: a 2D network takes a single slice).
        affine_tolerance: largest allowed absolute difference between image and label affines (mm).
        class_values: the label values the dataset uses (:func:`medattn3d.data.classes.class_values`), checked
            instead of ``[0, num_classes)`` when given (BraTS: 0, 1, 2, 4).
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        channels: int = 1,
        num_classes: int | None = None,
        spatial_dims: int = 3,
        min_size: int | Sequence[int] = 4,
        affine_tolerance: float = 1e-3,
        class_values: Sequence[int] | None = None,
    ) -> None:
        keys = [image_key] + ([label_key] if label_key else [])
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self.channels, self.num_classes = channels, num_classes
        self.spatial_dims, self.min_size, self.affine_tolerance = spatial_dims, min_size, affine_tolerance
        self.class_values = [int(v) for v in class_values] if class_values is not None else None

    def image_problems(self, image: Any) -> list[InputError]:
        """Everything wrong with ``image`` (rank and channels, size, non-finite values), each naming its file."""
        path, shape, dims = source_path(image), tuple(image.shape), self.spatial_dims
        found = []
        if len(shape) < dims:
            hint = TWO_D_IMAGE_HINT if len(shape) == 2 else ""
            return [InputError(path, f"is {len(shape)}D (shape {shape}) where a {dims}D volume is expected{hint}")]
        if len(shape) > dims + 1 or (len(shape) == dims + 1 and shape[-1] != self.channels):
            found.append(
                InputError(
                    path,
                    f"is {len(shape)}D (shape {shape}) where a {dims}D volume with {self.channels} channel(s) is "
                    "expected (a time series or a multi-channel image?)",
                )
            )
        if len(shape) == dims and self.channels != 1:
            found.append(InputError(path, f"has 1 channel (shape {shape}) where {self.channels} are expected"))
        problem = too_small(shape[:dims], self.min_size)
        if problem:
            found.append(InputError(path, problem))
        bad = non_finite_count(image)
        if bad:
            found.append(InputError(path, f"contains {bad} non-finite (NaN or Inf) intensities"))
        return found

    def label_problems(self, label: Any, image: Any) -> list[InputError]:
        """Everything wrong with ``label`` against ``image``: shape, affine, non-integer or out-of-range values."""
        path = source_path(label)
        found = []
        image_shape = _spatial_shape(image, self.spatial_dims)
        label_shape = tuple(int(s) for s in label.shape)
        if label_shape != image_shape and label_shape != (*image_shape, 1):
            found.append(
                InputError(
                    path, f"label shape {label_shape} differs from its image's {image_shape} ({source_path(image)})"
                )
            )
        image_affine, label_affine = getattr(image, "affine", None), getattr(label, "affine", None)
        if image_affine is not None and label_affine is not None:
            diff = float(np.abs(np.asarray(image_affine) - np.asarray(label_affine)).max())
            if diff > self.affine_tolerance:
                found.append(
                    InputError(
                        path,
                        f"label affine differs from its image's ({source_path(image)}) by up to {diff:.3g} mm: "
                        "they do not lie in the same space",
                    )
                )
        values = label_values(label)
        if values.is_floating_point() and not torch.equal(values, torch.round(values)):
            example = float(values[values != torch.round(values)][0])
            found.append(InputError(path, f"label holds non-integer values, e.g. {example}"))
        elif self.class_values is not None and not is_identity(self.class_values):
            allowed = set(self.class_values)
            outside = [int(v) for v in values if int(v) not in allowed]
            if outside:
                found.append(
                    InputError(
                        path,
                        f"label values {outside[:10]} are not among the dataset's labels "
                        f"{', '.join(map(str, self.class_values))}",
                    )
                )
        elif self.num_classes is not None or self.class_values is not None:
            classes = self.num_classes if self.num_classes is not None else len(self.class_values or [])
            outside = [int(v) for v in values if v < 0 or v >= classes]
            if outside:
                found.append(
                    InputError(path, f"label values {outside[:10]} lie outside the {classes} classes 0..{classes - 1}")
                )
        return found

    def problems(self, data: Mapping[Hashable, Any]) -> list[InputError]:
        """Every problem with the image and (if present) its label, in that order; empty when both are usable."""
        image = data[self.image_key]
        found = self.image_problems(image)
        if self.label_key and self.label_key in data and len(tuple(image.shape)) >= self.spatial_dims:
            found += self.label_problems(data[self.label_key], image)
        return found

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        found = self.problems(data)
        if found:
            raise found[0]
        return dict(data)
