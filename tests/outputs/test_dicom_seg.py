"""DICOM SEG round trip: read back with highdicom and pydicom; frames sit on the source slices, pixels equal the
NIfTI output of the same prediction, every source instance is referenced."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from medattn3d.data.transforms import ct_transforms
from medattn3d.errors import InputError
from medattn3d.outputs import write_case
from medattn3d.outputs.dicom_seg import frames_for_sources, source_headers
from tests.outputs.conftest import CLASS_NAMES, prepared


@pytest.mark.parametrize("pixdim", [None, (1.5, 1.5, 2.0)])
def test_dicom_seg_round_trip(dicom_case, tmp_path, pixdim):
    series, mask = dicom_case
    data, logits, infer = prepared(series, mask, pixdim)
    out = tmp_path / "out"
    write_case(logits, data, infer, out, "series", CLASS_NAMES, ("nifti", "dicom-seg"))
    sources = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in sorted(series.iterdir()))}

    # reference: the NIfTI output read by ITK (LPS), slice k <-> the source slice at its index-(0, 0, k) position
    nifti = sitk.ReadImage(str(out / "series_seg.nii.gz"))
    reference = sitk.GetArrayFromImage(nifti)  # (z, y, x) = (slice, row, column)
    by_position = {
        tuple(np.round(nifti.TransformIndexToPhysicalPoint((0, 0, k)), 3)): reference[k] for k in range(len(reference))
    }

    seg = hd.seg.segread(out / "series_seg.dcm")
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(sources)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == next(iter(sources.values())).SeriesInstanceUID
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["liver", "Kidney_Left"]
    kidney = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert (kidney.CodeValue, kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue) == ("64033007", "7771000")
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"

    # highdicom: the label map per source instance equals the NIfTI slice at that instance's position
    uids = list(sources)
    stacked = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    for uid, frame in zip(uids, stacked, strict=True):
        position = tuple(np.round([float(v) for v in sources[uid].ImagePositionPatient], 3))
        assert np.array_equal(frame, by_position[position]), uid

    # pydicom: each stored frame's ImagePositionPatient is its source slice's, and its pixels that slice's mask
    raw = pydicom.dcmread(out / "series_seg.dcm")
    pixels = raw.pixel_array.reshape(-1, raw.Rows, raw.Columns)
    assert len(pixels) == raw.NumberOfFrames > 0
    for frame, item in zip(pixels, raw.PerFrameFunctionalGroupsSequence, strict=True):
        source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in sources[source_uid].ImagePositionPatient], atol=1e-3)
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert np.array_equal(frame.astype(bool), by_position[tuple(np.round(position, 3))] == segment)


def test_a_label_map_off_the_series_grid_is_refused(dicom_case):
    series, _ = dicom_case
    headers = source_headers(series)
    labels = np.zeros((28, 24, 10), np.uint8)
    shifted = np.eye(4)
    shifted[:3, 3] = 100.0
    with pytest.raises(InputError, match="does not lie on the prediction grid"):
        frames_for_sources(labels, shifted, headers, series)


def test_dicom_seg_of_pydicoms_real_ct_series(tmp_path):
    folder = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
    infer = ct_transforms("infer", pixdim=None)
    data = infer({"image": str(folder)})
    image = data["image"]
    label = (image > image.mean()).long() + (image > image.mean() + image.std()).long()
    logits = torch.cat([(label == k).float() for k in range(3)]) * 5.0
    out = tmp_path / "out"
    write_case(logits, data, infer, out, "CT5N", CLASS_NAMES, ("nifti", "dicom-seg"))
    seg = hd.seg.segread(out / "CT5N_seg.dcm")
    headers = {str(h.SOPInstanceUID): h for h in (pydicom.dcmread(p) for p in folder.iterdir())}
    uids = sorted(headers, key=lambda u: float(headers[u].ImagePositionPatient[2]))
    stacked = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    nifti = sitk.ReadImage(str(out / "CT5N_seg.nii.gz"))
    reference = sitk.GetArrayFromImage(nifti)
    for k, uid in enumerate(uids):
        assert np.allclose(nifti.TransformIndexToPhysicalPoint((0, 0, k)), headers[uid].ImagePositionPatient, atol=1e-3)
        assert np.array_equal(stacked[k], reference[k])
    assert reference.any() and seg.FrameOfReferenceUID == headers[uids[0]].FrameOfReferenceUID


def test_a_series_without_slice_thickness_or_patient_tags_still_gets_a_seg(dicom_case, tmp_path):
    """SliceThickness and the patient/study attributes are type 2 and often missing after conversion or
    anonymisation; highdicom reads them, so the SEG carries the slice spacing (2.5 mm here) and empty patient/study
    values, and the user's files stay as they were."""
    series, mask = dicom_case
    for path in sorted(series.iterdir()):
        header = pydicom.dcmread(path)
        for keyword in ("SliceThickness", "PatientID", "PatientName", "StudyDate", "StudyTime", "AccessionNumber"):
            if keyword in header:
                delattr(header, keyword)
        header.save_as(path)
    before = {p.name: p.read_bytes() for p in series.iterdir()}
    data, logits, infer = prepared(series, mask, None)
    write_case(logits, data, infer, tmp_path / "out", "series", CLASS_NAMES, ("nifti", "dicom-seg"))
    seg = hd.seg.segread(tmp_path / "out" / "series_seg.dcm")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(2.5)
    assert seg.PatientID == "" and str(seg.PatientName) == "" and seg.StudyDate == ""
    assert {p.name: p.read_bytes() for p in series.iterdir()} == before


def test_a_series_without_pixel_spacing_is_refused_before_compute(dicom_case):
    from medattn3d.data.inputs import check_header

    series, _ = dicom_case
    for path in sorted(series.iterdir()):
        header = pydicom.dcmread(path)
        del header.PixelSpacing
        header.save_as(path)
    with pytest.raises(InputError, match="its slices lack PixelSpacing"):
        check_header(series, 1, ("nifti", "dicom-seg"))
