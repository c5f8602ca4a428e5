"""DICOM Segmentation (SEG) output with highdicom, for predictions on a DICOM series.

The SEG references the source series and each of its instances frame by frame: the label map (already in the
series' geometry) is cut into one frame per source slice, matched to that slice by position, and encoded as a
BINARY segmentation with one segment per class (segment number = label value) carrying its name and codes
(:mod:`medattn3d.outputs.terminology`). Empty frames are left out (``omit_empty_frames``), as most are.
"""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import medattn3d
from medattn3d.data.dicom import inspect_series, missing_seg_reference_tags
from medattn3d.errors import InputError
from medattn3d.outputs.atomic import atomic_path
from medattn3d.outputs.formats import lps_affine
from medattn3d.outputs.tables import LabelEntry
from medattn3d.outputs.terminology import Concept

GRID_TOLERANCE = 1e-2  # voxels: how far a source slice may sit from the prediction grid
SEG_SERIES_NUMBER = 901


def _coded(concept: Concept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def source_headers(folder: str | Path, series_uid: str | None = None) -> list[pydicom.Dataset]:
    """The headers (no pixels) of the checked, sorted slices of the DICOM series in ``folder``."""
    series = inspect_series(folder, series_uid)
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]


# Patient and study attributes a SEG copies from its source (highdicom reads each one); all type 2 in the source's
# IOD, so an anonymised or converted series may lack them, and the SEG then carries them empty, as type 2 allows.
SEG_COPIED_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def seg_ready_headers(headers: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """``headers`` as highdicom needs them, the user's files never touched: a slice lacking SliceThickness (type 2,
    often left out by converters and anonymisers) gets a copy carrying the distance between slice centres, the
    thickness of the SEG's own voxels; one lacking a patient/study attribute of :data:`SEG_COPIED_TYPE2` gets it
    empty. Headers that have them all are returned as they are."""
    if all("SliceThickness" in h and all(k in h for k in SEG_COPIED_TYPE2) for h in headers):
        return headers
    orientation = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    along = [float(np.dot(np.asarray(h.ImagePositionPatient, dtype=float), normal)) for h in headers]
    spacing = float(np.median(np.abs(np.diff(along)))) if len(along) > 1 else float(min(headers[0].PixelSpacing))
    ready = []
    for header in headers:
        header = copy.copy(header)
        if "SliceThickness" not in header:
            header.SliceThickness = pydicom.valuerep.DSfloat(spacing, auto_format=True)
        for keyword in SEG_COPIED_TYPE2:
            if keyword not in header:
                setattr(header, keyword, "")
        ready.append(header)
    return ready


def frames_for_sources(
    labels: np.ndarray, affine_ras: np.ndarray, headers: list[pydicom.Dataset], source: str | Path
) -> np.ndarray:
    """``(N, rows, columns)`` frames of ``labels`` (X, Y, Z), frame ``n`` covering ``headers[n]`` pixel for pixel.

    Each source slice's position and in-plane axes are mapped into the label map's voxel grid; they must land on
    whole voxels of one Z plane with columns along X and rows along Y (how ITK reads a series). Otherwise the
    prediction is not in the series' geometry and an ``InputError`` names ``source``.
    """
    to_index = np.linalg.inv(lps_affine(affine_ras))
    shape = labels.shape
    planes = []
    for header in headers:
        position = np.asarray(header.ImagePositionPatient, dtype=float)
        orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
        row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
        origin = to_index @ np.append(position, 1.0)
        along_columns = to_index[:3, :3] @ (orientation[:3] * column_spacing)
        along_rows = to_index[:3, :3] @ (orientation[3:] * row_spacing)
        k = round(float(origin[2]))
        fits = (
            np.allclose(origin[:3], (0, 0, k), atol=GRID_TOLERANCE)
            and np.allclose(along_columns, (1, 0, 0), atol=GRID_TOLERANCE)
            and np.allclose(along_rows, (0, 1, 0), atol=GRID_TOLERANCE)
            and 0 <= k < shape[2]
            and (int(header.Columns), int(header.Rows)) == tuple(shape[:2])
        )
        if not fits:
            raise InputError(
                source,
                f"slice {header.get('SOPInstanceUID', '?')} does not lie on the prediction grid "
                f"{tuple(shape)}: the label map is not in this series' geometry, cannot write a DICOM SEG",
            )
        planes.append(k)
    return np.ascontiguousarray(np.asarray(labels, dtype=np.uint8)[:, :, planes].transpose(2, 1, 0))


def segment_descriptions(entries: list[LabelEntry], algorithm: str, version: str) -> list[hd.seg.SegmentDescription]:
    """One description per class (segment number = label value): name, category/type codes, laterality modifier,
    display colour, and the algorithm that produced it."""
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64] or "medattn3d", family=codes.cid7162.ArtificialIntelligence, version=version[:64]
    )
    descriptions = []
    for entry in entries:
        if entry.value == 0:
            continue
        description = hd.seg.SegmentDescription(
            segment_number=entry.value,
            segment_label=entry.name[:64],
            segmented_property_category=_coded(entry.term.category),
            segmented_property_type=_coded(entry.term.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            tracking_uid=hd.UID(),
            tracking_id=entry.name[:64],
            display_color=hd.color.CIELabColor.from_rgb(*entry.colour),
        )
        if entry.term.modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _coded(entry.term.modifier)
            ]
        descriptions.append(description)
    return descriptions


def write_dicom_seg(
    path: Path,
    labels: np.ndarray,
    affine_ras: np.ndarray,
    entries: list[LabelEntry],
    source: str | Path,
    series_uid: str | None = None,
    headers: list[pydicom.Dataset] | None = None,
    algorithm: str = "medattn3d",
    workers: int = 0,
    segmentation_type: str = "BINARY",
) -> Path:
    """Write ``labels`` (X, Y, Z, in the series' geometry) as a DICOM SEG referencing the series in ``source``.

    ``source`` must be a DICOM series folder; anything else is refused with an ``InputError`` naming it.
    ``headers`` (the series' sorted slice headers) may be passed when already read; ``workers`` > 0 encodes
    frames in that many threads (highdicom's option). ``segmentation_type`` "BINARY" (default: what PACS and viewers
    read) or "LABELMAP" (DICOM 2024: one frame per slice for all segments, fewer readers yet).
    """
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "--format dicom-seg needs a DICOM series folder as input; this is a file")
    if headers is None:
        headers = source_headers(source, series_uid)
    first = headers[0]
    missing = missing_seg_reference_tags(first)
    if missing:
        raise InputError(source, f"cannot reference this series in a DICOM SEG: its slices lack {', '.join(missing)}")
    frames = frames_for_sources(labels, affine_ras, headers, source)
    segmentation = hd.seg.Segmentation(
        source_images=seg_ready_headers(headers),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues(segmentation_type),
        segment_descriptions=segment_descriptions(entries, algorithm, medattn3d.__version__),
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medattn3d",
        manufacturer_model_name=algorithm[:64] or "medattn3d",
        software_versions=medattn3d.__version__,
        device_serial_number="0",
        content_description=f"Segmentation of {str(first.get('SeriesDescription', 'series'))[:40]}"[:64],
        content_label="SEGMENTATION",
        series_description=f"{algorithm} segmentation"[:64],
        omit_empty_frames=True,
        workers=workers,
    )
    with atomic_path(path) as tmp:
        segmentation.save_as(tmp)
    return path
