"""CHAOS MRI (Kavur et al. 2021) to the manifest layout: DICOM series stay as they are, PNG ground truth becomes NIfTI.

CHAOS ships each MR sequence as a DICOM folder (``<id>/T2SPIR/DICOM_anon``) and its ground truth as one PNG per
slice (``<id>/T2SPIR/Ground``) with grey levels 63 (liver), 126 (right kidney), 189 (left kidney) and 252 (spleen).
:func:`convert_ground_truth` stacks the PNGs in the DICOM series' slice order and writes a label volume with the
series' geometry, so images (read straight from the DICOM folder) and labels share one space.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medattn3d.data.dicom import inspect_series
from medattn3d.errors import InputError

# PNG grey level ranges -> class index (the CHAOS evaluation code's ranges)
GREY_LEVELS = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))
CHAOS_LABELS = {"0": "background", "1": "liver", "2": "right kidney", "3": "left kidney", "4": "spleen"}


def _png_label(path: Path) -> np.ndarray:
    grey = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if grey.ndim == 3:  # RGB(A) PNGs: take the first channel
        grey = grey[..., 0]
    label = np.zeros(grey.shape, dtype=np.uint8)
    for low, high, index in GREY_LEVELS:
        label[(grey >= low) & (grey <= high)] = index
    return label


def convert_ground_truth(dicom_folder: str | Path, ground_folder: str | Path, output: str | Path) -> Path:
    """Write the PNG masks of ``ground_folder`` as one NIfTI label volume aligned with the series in ``dicom_folder``.

    PNGs are matched to DICOM slices by file stem when the names agree, else by order (counts must match).
    """
    series = inspect_series(dicom_folder)
    ground_folder = Path(ground_folder)
    pngs = sorted(ground_folder.glob("*.png"))
    if not pngs:
        raise InputError(ground_folder, "holds no PNG ground-truth slices")
    by_stem = {p.stem: p for p in pngs}
    if all(f.stem in by_stem for f in series.files):
        ordered = [by_stem[f.stem] for f in series.files]
    elif len(pngs) == len(series.files):
        order = sorted(range(len(series.files)), key=lambda i: series.files[i].name)  # slice files in name order
        ordered = [None] * len(pngs)
        for png, index in zip(pngs, order, strict=True):
            ordered[index] = png
    else:
        raise InputError(ground_folder, f"has {len(pngs)} PNG slices but the DICOM series has {len(series.files)}")
    image = sitk.ReadImage([str(f) for f in series.files])
    label = np.stack([_png_label(p) for p in ordered])
    if label.shape != sitk.GetArrayFromImage(image).shape:
        raise InputError(ground_folder, f"PNG slices of shape {label.shape[1:]} do not match the DICOM slices")
    label_image = sitk.GetImageFromArray(label)
    label_image.CopyInformation(image)
    from medattn3d.outputs.atomic import atomic_path

    output = Path(output)
    with atomic_path(output) as tmp:
        sitk.WriteImage(label_image, str(tmp))
    return output


def main(argv: list[str] | None = None) -> int:
    """``python -m medattn3d.data.chaos CHAOS_MR_DIR OUT_DIR``: convert every patient's T2SPIR ground truth."""
    parser = argparse.ArgumentParser(prog="python -m medattn3d.data.chaos", description=__doc__)
    parser.add_argument("mr_dir", help="CHAOS Train_Sets/MR folder (one sub-folder per patient)")
    parser.add_argument("out_dir", help="where labels/<id>_T2SPIR.nii.gz are written")
    parser.add_argument("--sequence", default="T2SPIR")
    args = parser.parse_args(argv)
    failures = 0
    for patient in sorted(p for p in Path(args.mr_dir).iterdir() if p.is_dir()):
        sequence = patient / args.sequence
        try:
            out = convert_ground_truth(
                sequence / "DICOM_anon",
                sequence / "Ground",
                Path(args.out_dir) / "labels" / f"{patient.name}_{args.sequence}.nii.gz",
            )
            print(f"wrote {out}")
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
