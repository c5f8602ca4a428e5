"""DICOM SEG writing time for a 512 x 512 x 300 CT label map, as a share of that case's inference time (goal: < 10 %).

    .venv/bin/python benchmarks/dicom_seg.py --json benchmarks/results/dicom_seg.json

A synthetic CT series (512 x 512 x 300, 0.8 x 0.8 x 2.5 mm, one DICOM file per slice, written with pydicom) and a
label map in its geometry with four abdominal "organs" (ellipsoids; most slices hold some foreground, as in an
abdominal CT). Timed: :func:`medattn3d.outputs.dicom_seg.write_dicom_seg` as write_case calls it (series headers
read, frames matched to slices, highdicom encoding, atomic save) as BINARY (the default, what PACS read; empty
frames omitted) and as LABELMAP (DICOM 2024, one frame per slice for all segments), next to the NIfTI and Slicer
seg.nrrd writers on the same map. (highdicom's ``workers`` only helps compressed transfer syntaxes; BINARY is
stored uncompressed, so it is not a variant here.)

Inference time of the case: the shipped attention_unet_3d bundle's network, inferer (sliding window, roi, overlap,
batch) and precision, built from its inference.json, run on a random volume of the shape the bundle's preprocessing
gives this series (resampled to the bundle's pixdim); random weights (this measures speed, not accuracy). With
``--pixdim`` the inference runs at another spacing (e.g. 1.5 1.5 2.0, a planned full-resolution model).
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, print_table, write_json

SPACING = (0.8, 0.8, 2.5)
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "attention_unet_3d"
CLASS_NAMES = {"0": "background", "1": "liver", "2": "spleen", "3": "left kidney", "4": "right kidney"}


def write_series(folder: Path, shape: tuple[int, int, int]) -> None:
    """One CT Image Storage file per slice (z ascending), with the UIDs and geometry a scanner writes."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    columns, rows, slices = shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = (np.random.default_rng(0).normal(40, 30, (rows, columns))).astype(np.int16).tobytes()
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.AccessionNumber = "CT", "BENCH", "Bench^Case", "1"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", "1", 1, k + 1
        ds.Manufacturer, ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "bench", "", "", "O"
        ds.ImagePositionPatient = [-200.0, -200.0, k * SPACING[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING[1], SPACING[0]], SPACING[2]
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = pixels
        ds.save_as(folder / f"slice_{k:04d}.dcm", enforce_file_format=True)


def organ_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Four ellipsoids (label 1..4) in an (X, Y, Z) map, sized like abdominal organs at 0.8 x 0.8 x 2.5 mm."""
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint8)
    organs = (  # centre (fraction of shape), radii in mm
        ((0.35, 0.45, 0.55), (90, 70, 110)),
        ((0.70, 0.60, 0.55), (45, 35, 60)),
        ((0.65, 0.65, 0.40), (30, 30, 55)),
        ((0.35, 0.65, 0.40), (30, 30, 55)),
    )
    for value, (centre, radii) in enumerate(organs, start=1):
        inside = (
            sum(((g - c * s) * sp / r) ** 2 for g, c, s, sp, r in zip(grid, centre, shape, SPACING, radii, strict=True))
            <= 1
        )
        labels[inside] = value
    return labels


def ras_affine() -> np.ndarray:
    """Voxel -> RAS of the series written by :func:`write_series` (LPS origin -200, -200, 0)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.array(
        [[SPACING[0], 0, 0, -200.0], [0, SPACING[1], 0, -200.0], [0, 0, SPACING[2], 0], [0, 0, 0, 1]]
    )


def time_writers(work: Path, series: Path, labels: np.ndarray, repeats: int) -> list[dict]:
    from medattn3d.outputs import dicom_seg
    from medattn3d.outputs.formats import write_nifti_labels, write_seg_nrrd
    from medattn3d.outputs.tables import class_name_map, label_entries

    affine = ras_affine()
    entries = label_entries(labels, class_name_map(CLASS_NAMES, 5), float(np.prod(SPACING)))

    def seg(kind: str):
        def step():
            path = work / f"{kind}.dcm"
            dicom_seg.write_dicom_seg(path, labels, affine, entries, series, segmentation_type=kind)
            return path

        return step

    steps = {
        "dicom-seg BINARY (default)": seg("BINARY"),
        "dicom-seg LABELMAP": seg("LABELMAP"),
        "nifti": lambda: write_nifti_labels(work / "seg.nii.gz", labels, affine),
        "seg.nrrd": lambda: write_seg_nrrd(work / "seg.seg.nrrd", labels, affine, entries),
    }
    rows = []
    for name, step in steps.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            path = step()
            times.append(time.perf_counter() - start)
        rows.append({"writer": name, "seconds": float(np.median(times)), "file_mib": Path(path).stat().st_size / 2**20})
        print(f"{name}: {rows[-1]['seconds']:.2f} s", flush=True)
    headers_start = time.perf_counter()
    dicom_seg.source_headers(series)
    rows.append({"writer": "(of which: reading the series headers)", "seconds": time.perf_counter() - headers_start})
    return rows


def time_inference(shape_xyz: tuple[int, int, int], pixdim: list[float] | None) -> dict:
    """Seconds for the bundle's network + inferer on a random volume of this case's preprocessed shape."""
    import torch
    from monai.bundle import ConfigParser

    from medattn3d.engine.precision import prepare_for_inference

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["device"] = "$torch.device('cpu')"
    spacing = pixdim or parser["pixdim"]
    shape = [round(n * s / t) for n, s, t in zip(shape_xyz, SPACING, spacing, strict=True)]
    network = parser.get_parsed_content("network_def").eval()
    prepare_for_inference(network, parser["precision"], channels_last=parser["channels_last"])
    inferer = parser.get_parsed_content("inferer")
    torch.manual_seed(0)
    volume = torch.randn(1, 1, *shape)
    with torch.no_grad():
        inferer(volume[..., :32], network)  # warm-up (allocator, kernels)
        start = time.perf_counter()
        inferer(volume, network)
        seconds = time.perf_counter() - start
    return {"pixdim": list(spacing), "network_input_shape": shape, "roi_size": parser["roi_size"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[512, 512, 300])
    parser.add_argument("--pixdim", nargs=3, type=float, help="inference spacing (default: the bundle's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    shape = tuple(args.shape)
    work = Path(tempfile.mkdtemp(prefix="medattn3d-bench-seg-"))
    try:
        write_series(work / "series", shape)
        labels = organ_labels(shape)
        rows = time_writers(work, work / "series", labels, args.repeats)
        inference = time_inference(shape, args.pixdim)
        print(f"inference at {inference['pixdim']} mm, shape {inference['network_input_shape']}: "
              f"{inference['seconds']:.1f} s")  # fmt: skip
        for row in rows:
            row["share_of_inference"] = row["seconds"] / inference["seconds"]
        slices_with_foreground = int(labels.any(axis=(0, 1)).sum())
        print(f"\nlabel map {'x'.join(map(str, shape))}, {slices_with_foreground} slices with foreground, {machine()}")
        print_table(rows, ["writer", "seconds", "share_of_inference", "file_mib"])
        write_json(
            args.json,
            {
                "benchmark": "dicom_seg",
                "machine": machine(),
                "shape": list(shape),
                "spacing": list(SPACING),
                "classes": len(CLASS_NAMES) - 1,
                "slices_with_foreground": slices_with_foreground,
                "inference": inference,
                "rows": rows,
                "goal": "dicom-seg BINARY (default) share_of_inference < 0.10",
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
