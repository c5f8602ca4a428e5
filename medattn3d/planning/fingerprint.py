"""Dataset fingerprint: what planning needs to know about the training cases, read once and cached.

Per case: shape and spacing after reorientation to RAS (what the network sees after ``Orientationd``), the stored
orientation, the channel count and the voxel count of every label value. Per channel, pooled over all cases:
intensity statistics inside the label's foreground (label > 0) -- mean, std, min and max exact from running sums
(Chan et al.'s pairwise merge of count / mean / squared deviations, in float64), median and the 0.5 / 99.5
percentiles from a fixed number of foreground voxels drawn per case with a seeded RNG (nnU-Net's way to pool
percentiles without holding every voxel; a case with fewer foreground voxels gives all of them, so small datasets
get exact percentiles).

Why not MONAI's ``monai.apps.auto3dseg.DataAnalyzer``: it needs ``pyyaml`` (not a dependency here), computes much
more than planning uses (histograms, per-label shapes, connected components), averages per-case percentiles instead
of pooling voxels, computes its CPU statistics in one process (DataLoader workers only load), casts whole images to
float32, silently resizes labels that differ by up to 5 voxels from their image, logs and skips a case that fails
instead of naming it, and keeps no cache. What we reuse is the readers (nibabel for NIfTI, with the affine MONAI's
``NibabelReader`` uses but without its reordering copy; ``medattn3d.data.loading.load_volume`` for NRRD, MHA and
DICOM) and nibabel's orientation code that ``Orientationd`` itself uses, so shape and spacing here are exactly what
the transforms produce; the arrays are never reoriented, as counts and intensity statistics do not depend on axis
order.

Parallel: ``workers`` processes (:mod:`medattn3d.data.workers`: forkserver, or spawn), each holding one case at a
time (the image in its stored dtype, and the label); ``workers=1`` runs in this process. The cache is a JSON file
keyed by each file's path, size and modification time: a re-plan with unchanged files reads no image.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from medattn3d.errors import InputError

FINGERPRINT_VERSION = 1
SAMPLES_PER_CASE = 10_000
SAMPLE_SEED = 1234
_CACHE_FORMAT = 2


def _paths(entry: str | Sequence[str]) -> list[str]:
    return [str(entry)] if isinstance(entry, (str, os.PathLike)) else [str(p) for p in entry]


def file_key(case: dict[str, Any]) -> str:
    """The cache key of a case: path, size and modification time (ns) of every image and label file."""
    parts = []
    for path in [*_paths(case["image"]), *_paths(case["label"])]:
        try:
            stat = os.stat(path)
        except OSError:
            raise InputError(path, "file not found") from None
        if os.path.isdir(path):  # a DICOM series: its files' sizes and times
            files = sorted(p for p in Path(path).iterdir() if p.is_file())
            size = sum(p.stat().st_size for p in files)
            mtime = max((p.stat().st_mtime_ns for p in files), default=stat.st_mtime_ns)
            parts.append([path, size, mtime])
        else:
            parts.append([path, stat.st_size, stat.st_mtime_ns])
    return json.dumps(parts)


def ras_geometry(affine: np.ndarray, shape: Sequence[int]) -> tuple[list[int], list[float], str]:
    """Shape and spacing after reorienting to RAS, and the stored orientation code, from a voxel-to-RAS affine.

    Uses nibabel's ``io_orientation`` (what MONAI's ``Orientation`` uses): stored axis ``i`` becomes RAS axis
    ``ornt[i, 0]``.
    """
    import nibabel.orientations as nio

    affine = np.asarray(affine, dtype=np.float64)[:4, :4]
    ornt = nio.io_orientation(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ras_shape, ras_spacing = [0] * 3, [0.0] * 3
    for axis in range(3):
        target = int(ornt[axis, 0])
        ras_shape[target] = int(shape[axis])
        ras_spacing[target] = round(float(zooms[axis]), 6)  # headers hold float32: 0.8 reads 0.800000011920929
    return ras_shape, ras_spacing, "".join(nio.ornt2axcodes(ornt))


def _encode(values: np.ndarray) -> str:
    """Samples as compressed little-endian float32 in base64 (CT's integer HU compress to about half)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(values, dtype="<f4").tobytes(), 6)).decode("ascii")


def _decode(text: str) -> np.ndarray:
    if not text:
        return np.empty(0)
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f4").astype(np.float64)


def _class_voxels(label: np.ndarray, path: str) -> dict[str, int]:
    """Voxel count of every value in ``label`` (integers >= 0, else an ``InputError`` naming ``path``)."""
    import torch

    flat = np.ravel(label, order="K")  # no copy whatever the memory order (NIfTI arrays are column-major)
    floating = np.issubdtype(flat.dtype, np.floating)
    if floating and (not np.isfinite(flat).all() or not np.array_equal(flat, np.round(flat))):
        raise InputError(path, "label holds non-integer or non-finite values")
    low, high = (flat.min(), flat.max()) if flat.size else (0, 0)
    if low < 0:
        raise InputError(path, f"label holds negative values, e.g. {low}")
    if high > 65535:
        raise InputError(path, f"label value {high} is too large for a class index")
    if not (flat.dtype == np.uint8 or flat.dtype == np.int16 or flat.dtype == np.int32):
        flat = flat.astype(np.uint8 if high < 256 else np.int32)
    counts = torch.bincount(torch.from_numpy(flat)).numpy()
    return {str(value): int(n) for value, n in enumerate(counts) if n}


def read_volume(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One file's voxels in their stored dtype and axis order, and its voxel-to-RAS affine.

    NIfTI is read with nibabel directly, without the row-major reordering copy the transforms make (axis order
    does not matter to counts and statistics; that copy took longer than decompressing); the affine is nibabel's,
    the one MONAI's ``NibabelReader`` uses. Other formats go through :func:`medattn3d.data.loading.load_volume`.
    """
    from medattn3d.data.loading import load_volume

    if path.lower().endswith((".nii", ".nii.gz")) and os.path.isfile(path):
        import nibabel as nib

        try:
            image = nib.load(path)
            return np.asanyarray(image.dataobj), np.asarray(image.affine)
        except Exception as err:  # corrupt or not NIfTI: let the package's reader name the problem
            raise InputError(path, f"cannot be read as an image ({type(err).__name__}: {err})") from err
    volume = load_volume(path, dtype=None)
    return volume.numpy(), np.asarray(volume.affine)


def read_image(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """An image from one file, or from one file per channel stacked on a last axis (checked like
    :func:`medattn3d.data.loading.load_channels`)."""
    from medattn3d.data.loading import check_channel_grid

    if len(paths) == 1:
        return read_volume(paths[0])
    arrays, first_affine = [], None
    for path in paths:
        array, affine = read_volume(path)
        if first_affine is None:
            first_affine = affine
        check_channel_grid(
            path, array.shape, affine, paths[0], arrays[0].shape if arrays else array.shape, first_affine
        )
        arrays.append(array)
    return np.stack(arrays, axis=-1), first_affine


def fingerprint_case(case: dict[str, Any], samples: int | None = None, seed: int = SAMPLE_SEED) -> dict[str, Any]:
    """Read one case and return its geometry, class counts and per-channel foreground statistics (with up to
    ``samples`` foreground voxels per channel, default :data:`SAMPLES_PER_CASE`).

    Holds the image in its stored dtype plus the label; errors are ``InputError`` naming the file.
    """
    samples = SAMPLES_PER_CASE if samples is None else samples
    image_paths, label_path = _paths(case["image"]), str(case["label"])
    shown = image_paths[0]
    array, affine = read_image(image_paths)
    if array.ndim not in (3, 4):
        raise InputError(shown, f"is {array.ndim}D (shape {array.shape}) where a 3D volume (channels last) is expected")
    channels = 1 if array.ndim == 3 else int(array.shape[3])
    if array.ndim == 3:
        array = array[..., None]
    label, _ = read_volume(label_path)
    if label.ndim == 4 and label.shape[3] == 1:
        label = label[..., 0]
    if label.shape != array.shape[:3]:
        raise InputError(label_path, f"label shape {label.shape} differs from its image's {array.shape[:3]} ({shown})")
    class_voxels = _class_voxels(label, label_path)
    mask = label > 0
    del label
    shape, spacing, axcodes = ras_geometry(affine, array.shape[:3])
    count = int(mask.sum())
    rng = np.random.default_rng(seed)
    pick = None if count <= samples else np.sort(rng.choice(count, size=samples, replace=False))
    stats = []
    for channel in range(channels):
        values = array[..., channel][mask].astype(np.float64)
        if values.size and not np.isfinite(values).all():
            raise InputError(shown, f"channel {channel} holds non-finite intensities inside the foreground")
        if values.size:
            mean = float(values.mean())
            stats.append(
                {
                    "count": count,
                    "mean": mean,
                    "m2": float(((values - mean) ** 2).sum()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                    "samples": _encode(values if pick is None else values[pick]),
                }
            )
        else:
            stats.append({"count": 0, "mean": 0.0, "m2": 0.0, "min": None, "max": None, "samples": ""})
        del values
    return {
        "image": case["image"],
        "label": case["label"],
        "shape": shape,
        "spacing": spacing,
        "axcodes": axcodes,
        "channels": channels,
        "class_voxels": class_voxels,
        "foreground": stats,
    }


def _worker(
    index: int, case: dict[str, Any], samples: int
) -> tuple[int, dict[str, Any] | None, tuple[str, str] | None]:
    """Run :func:`fingerprint_case` in a worker; errors travel back as (path, problem), which pickles safely."""
    try:
        return index, fingerprint_case(case, samples), None
    except InputError as err:
        return index, None, (err.path, err.problem)
    except Exception as err:  # a reader or numpy failure: name the case's image
        return index, None, (str(_paths(case["image"])[0]), f"cannot be fingerprinted ({type(err).__name__}: {err})")


def pool_intensities(per_case: Iterable[list[dict[str, Any]]]) -> list[dict[str, float | None]]:
    """Per-channel foreground statistics pooled over cases: exact count/mean/std/min/max, sampled percentiles."""
    per_case = list(per_case)
    if not per_case:
        return []
    pooled = []
    for channel in range(len(per_case[0])):
        count, mean, m2, low, high, samples = 0, 0.0, 0.0, math.inf, -math.inf, []
        for stats in per_case:
            s = stats[channel]
            if not s["count"]:
                continue
            n = count + s["count"]
            delta = s["mean"] - mean
            mean += delta * s["count"] / n
            m2 += s["m2"] + delta * delta * count * s["count"] / n
            count = n
            low, high = min(low, s["min"]), max(high, s["max"])
            samples.append(_decode(s["samples"]))
        if not count:
            pooled.append(dict.fromkeys(("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")))
            continue
        drawn = np.concatenate(samples)
        p05, median, p995 = np.percentile(drawn, [0.5, 50.0, 99.5])
        pooled.append(
            {
                "mean": mean,
                "std": math.sqrt(m2 / count),
                "median": float(median),
                "min": low,
                "max": high,
                "percentile_00_5": float(p05),
                "percentile_99_5": float(p995),
            }
        )
    return pooled


def _read_cache(cache_file: Path | None) -> dict[str, Any]:
    if cache_file is None or not Path(cache_file).is_file():
        return {}
    try:
        data = json.loads(Path(cache_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged cache is only lost time: recompute
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT or data.get("samples") != SAMPLES_PER_CASE:
        return {}
    entries = data.get("cases")
    return entries if isinstance(entries, dict) else {}


def _write_cache(cache_file: Path, entries: dict[str, Any]) -> None:
    from medattn3d.outputs.atomic import atomic_write_text

    payload = {"format": _CACHE_FORMAT, "samples": SAMPLES_PER_CASE, "seed": SAMPLE_SEED, "cases": entries}
    atomic_write_text(cache_file, json.dumps(payload) + "\n")


def fingerprint_dataset(
    cases: list[dict[str, Any]], cache_file: Path | None, workers: int = 2, progress: bool = True
) -> dict[str, Any]:
    """Fingerprint the datalist ``cases`` (``{"image": str | list[str], "label": str}``, absolute paths).

    Returns ``{"version", "num_cases", "cases": [{image, label, shape, spacing, axcodes, channels, class_voxels}],
    "intensities": [one dict per channel: mean, std, median, min, max, percentile_00_5, percentile_99_5]}`` (shape
    and spacing after reorientation to RAS; ``class_voxels`` lists the label values present). Cases whose files are
    unchanged since ``cache_file`` was written are not read; the cache is rewritten with exactly these cases.
    ``workers`` processes read the others (1, or too little data to pay for starting them: in this process, see
    :mod:`medattn3d.data.workers`); ``progress`` shows a bar on stderr.
    Raises ``InputError`` naming the file on the first unreadable or inconsistent case.
    """
    from tqdm import tqdm

    from medattn3d.data import workers as pools

    if not cases:
        raise ValueError("no cases to fingerprint")
    for case in cases:
        if "image" not in case or "label" not in case:
            raise ValueError(f"every case needs 'image' and 'label', got {case}")
    keys = [file_key(case) for case in cases]
    cached = _read_cache(cache_file)
    results: list[dict[str, Any] | None] = [cached.get(key) for key in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    parallel = pools.use_workers(workers, len(todo), sum(size for i in todo for _, size, _ in json.loads(keys[i])))
    with tqdm(total=len(cases), desc="fingerprint", unit="case", file=sys.stderr, disable=not progress) as bar:
        bar.update(len(cases) - len(todo))
        if not parallel:
            for i in todo:
                results[i] = fingerprint_case(cases[i], SAMPLES_PER_CASE)
                bar.update(1)
        else:
            context = pools.worker_context(["medattn3d.planning.fingerprint"])
            with ProcessPoolExecutor(
                min(workers, len(todo)), mp_context=context, initializer=pools.init_worker
            ) as pool:
                futures = [pool.submit(_worker, i, cases[i], SAMPLES_PER_CASE) for i in todo]
                for future in as_completed(futures):
                    index, result, error = future.result()
                    if error is not None:
                        for other in futures:
                            other.cancel()
                        raise InputError(*error)
                    results[index] = result
                    bar.update(1)
    done: list[dict[str, Any]] = [r for r in results if r is not None]
    channels = {r["channels"] for r in done}
    if len(channels) > 1:
        first = done[0]["channels"]
        odd = next(r for r in done if r["channels"] != first)
        raise InputError(
            _paths(odd["image"])[0], f"has {odd['channels']} channel(s) where {_paths(done[0]['image'])[0]} has {first}"
        )
    if cache_file is not None:
        _write_cache(Path(cache_file), dict(zip(keys, done, strict=True)))
    return {
        "version": FINGERPRINT_VERSION,
        "num_cases": len(done),
        "cases": [{k: v for k, v in r.items() if k != "foreground"} for r in done],
        "intensities": pool_intensities(r["foreground"] for r in done),
    }
