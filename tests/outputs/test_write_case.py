"""write_case: every format lands in the input's geometry and agrees with the NIfTI label map; failures leave
nothing half-written; the bundles' prediction_writer writes the same files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medattn3d.errors import InputError
from medattn3d.outputs import expected_outputs, prediction_writer, write_case
from tests.outputs.conftest import CLASS_NAMES, prepared

ALL = ("nifti", "nrrd")


def _nifti_labels(path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def test_all_files_and_their_agreement(nifti_case, tmp_path):
    image, mask, affine, shape = nifti_case
    data, logits, infer = prepared(image, mask, (1.5, 1.5, 2.0))
    out = tmp_path / "out"
    written = write_case(logits, data, infer, out, "ct", CLASS_NAMES, ALL, save_probabilities=True)
    assert sorted(written) == sorted(expected_outputs(out, "ct", ALL, save_probabilities=True))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temporary left over

    labels, label_affine = _nifti_labels(out / "ct_seg.nii.gz")
    assert labels.shape == shape and labels.dtype == np.uint8
    assert np.allclose(label_affine, affine, atol=1e-4)
    assert set(np.unique(labels)) == {0, 1, 2}

    # seg.nrrd: same voxels and geometry (read back by ITK in LPS), Slicer's header fields
    nrrd = sitk.ReadImage(str(out / "ct_seg.seg.nrrd"))
    reference = sitk.ReadImage(str(out / "ct_seg.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(nrrd), sitk.GetArrayFromImage(reference))
    assert np.allclose(nrrd.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(nrrd.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    assert np.allclose(nrrd.GetDirection(), reference.GetDirection(), atol=1e-5)
    header = {key: nrrd.GetMetaData(key) for key in nrrd.GetMetaDataKeys()}
    assert header["Segmentation_SourceRepresentation"] == "Binary labelmap"
    assert header["Segment0_Name"] == "liver" and header["Segment0_LabelValue"] == "1"
    assert header["Segment1_Name"] == "Kidney_Left" and header["Segment1_LabelValue"] == "2"
    assert header["Segment0_Color"] == "0.866667 0.509804 0.396078"  # Slicer's liver colour 221 130 101
    assert "SCT^10200004^Liver" in header["Segment0_Tags"] and "SCT^7771000^Left" in header["Segment1_Tags"]
    for index, value in enumerate((1, 2)):
        i0, i1, j0, j1, k0, k1 = (int(v) for v in header[f"Segment{index}_Extent"].split())
        where = np.argwhere(labels == value)
        assert (i0, j0, k0) == tuple(where.min(0)) and (i1, j1, k1) == tuple(where.max(0))

    # sidecar: counts and volumes from the label map and its spacing
    side = json.loads((out / "ct_seg.json").read_text(encoding="utf-8"))
    voxel_ml = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0))) / 1000
    for record in side["labels"]:
        count = int((labels == record["value"]).sum())
        assert record["voxels"] == count
        assert record["volume_ml"] == pytest.approx(count * voxel_ml, abs=1e-4)
    assert [r["name"] for r in side["labels"]] == ["background", "liver", "Kidney_Left"]
    assert side["labels"][1]["code"]["type"] == ["SCT", "10200004", "Liver"]
    # the sidecar's colours are the Slicer table's (background: none)
    assert [r["colour_rgb"] for r in side["labels"]][:2] == [[0, 0, 0], [221, 130, 101]]
    assert side["source"] == str(image) and side["files"]["nifti"] == "ct_seg.nii.gz"

    # tables in their documented formats
    ctbl = [line.split() for line in (out / "ct_seg.ctbl").read_text(encoding="utf-8").splitlines()]
    assert (out / "ct_seg.ctbl").read_text(encoding="utf-8").startswith("# Color table file ")
    assert ctbl[2:] == [["0", "background", "0", "0", "0", "0"], ["1", "liver", "221", "130", "101", "255"],
                        ["2", "Kidney_Left", "185", "102", "83", "255"]]  # fmt: skip
    rows = [
        line
        for line in (out / "ct_seg.itksnap.txt").read_text(encoding="utf-8").splitlines()
        if not line.startswith("#")
    ]
    fields = [row.split(maxsplit=7) for row in rows]
    assert [f[0] for f in fields] == ["0", "1", "2"] and fields[1][1:4] == ["221", "130", "101"]
    assert fields[1][7] == '"liver"' and float(fields[1][4]) == 1.0 and fields[0][5:7] == ["0", "0"]

    # probabilities: 4D, input geometry, [0, 1], sum 1, argmax = label map except at ties
    prob_image = nib.load(str(out / "ct_probabilities.nii.gz"))
    probabilities = prob_image.get_fdata(dtype=np.float32)
    assert probabilities.shape == (*shape, 3) and np.allclose(prob_image.affine, affine, atol=1e-4)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert np.allclose(probabilities.sum(-1), 1.0, atol=1e-3)
    top = np.sort(probabilities, -1)
    clear = top[..., -1] > top[..., -2]
    assert np.array_equal(probabilities.argmax(-1)[clear], labels[clear])


def test_a_failing_writer_leaves_nothing_half_written(nifti_case, tmp_path, monkeypatch):
    image, mask, _, _ = nifti_case
    data, logits, infer = prepared(image, mask, None)
    out = tmp_path / "out"

    def broken(image, path, *args):
        with open(path, "wb") as stream:
            stream.write(b"NRRD0004\npartial")
        raise OSError("disk full")

    write_case(logits, data, infer, out, "ct", CLASS_NAMES, ("nifti",))  # an earlier, complete run
    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(OSError, match="disk full"):
        write_case(logits, data, infer, out, "ct", CLASS_NAMES, ("nifti", "nrrd"))
    # the NIfTI this call rewrote goes too, and the earlier run's sidecar that would mark a mixed set complete
    assert sorted(p.name for p in out.iterdir()) == []


def test_dicom_seg_is_refused_for_a_file_input(nifti_case, tmp_path):
    image, mask, _, _ = nifti_case
    data, logits, infer = prepared(image, mask, None)
    with pytest.raises(InputError, match=r"ct\.nii\.gz: --format dicom-seg needs a DICOM series folder"):
        write_case(logits, data, infer, tmp_path / "out", "ct", CLASS_NAMES, ("nifti", "dicom-seg"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_prediction_writer_writes_what_write_case_writes(nifti_case, tmp_path):
    image, mask, _, _ = nifti_case
    data, logits, infer = prepared(image, mask, (1.5, 1.5, 2.0))
    direct = write_case(logits, data, infer, tmp_path / "a", "ct", CLASS_NAMES, ALL, save_probabilities=True)
    chain = prediction_writer(infer, tmp_path / "b", CLASS_NAMES, ALL, save_probabilities=True)
    result = chain({"image": data["image"], "pred": logits})
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in direct)
    assert sorted(result["pred_files"]) == sorted(str(tmp_path / "b" / p.name) for p in direct)
    for name in ("ct_seg.nii.gz", "ct_probabilities.nii.gz"):
        assert np.array_equal(_nifti_labels(tmp_path / "a" / name)[0], _nifti_labels(tmp_path / "b" / name)[0])
    assert (tmp_path / "a" / "ct_seg.json").read_text(encoding="utf-8") == (tmp_path / "b" / "ct_seg.json").read_text(
        encoding="utf-8"
    )


def test_prediction_writer_names_are_unique_per_input(tmp_path, nifti_case):
    image, mask, _, _ = nifti_case
    twin = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(image)), str(twin))
    out = tmp_path / "out"
    for path in (image, twin):
        data, logits, infer = prepared(path, mask, None)
        prediction_writer(infer, out, CLASS_NAMES, input_paths=[str(image), str(twin)])(
            {"image": data["image"], "pred": logits}
        )
    assert {"ct_nii_gz_seg.nii.gz", "ct_nrrd_seg.nii.gz"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("case", ["nifti_case", "dicom_case"])
def test_dataset_label_values_are_written_back(case, request, tmp_path):
    """Class k is written as the dataset's value for it (BraTS: class 3 -> 4) in every format; compared with the
    same prediction written with plain class indices."""
    import highdicom as hd

    from tests.outputs.conftest import logits_from_mask

    brats = {"0": "background", "1": "necrosis", "2": "edema", "4": "enhancing tumour"}
    source, mask = request.getfixturevalue(case)[:2]
    name = "ct" if case == "nifti_case" else "series"
    data, _, infer = prepared(source, mask, None)
    label = ct_transforms_label(source, mask)
    label[label == 2] = 3  # the mask's class 2 plays BraTS' class 3 (value 4)
    logits = logits_from_mask(label, num_classes=4)
    formats = ("nifti", "nrrd") + (("dicom-seg",) if name == "series" else ())
    write_case(logits, data, infer, tmp_path / "indices", name, None, ("nifti",))
    write_case(logits, data, infer, tmp_path / "values", name, brats, formats)
    indices, _ = _nifti_labels(tmp_path / "indices" / f"{name}_seg.nii.gz")
    values, _ = _nifti_labels(tmp_path / "values" / f"{name}_seg.nii.gz")
    assert np.array_equal(values, np.array([0, 1, 2, 4], np.uint8)[indices]) and (values == 4).any()
    nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "values" / f"{name}_seg.seg.nrrd")))
    assert set(np.unique(nrrd)) == set(np.unique(values))
    side = json.loads((tmp_path / "values" / f"{name}_seg.json").read_text(encoding="utf-8"))
    assert [(r["value"], r["name"]) for r in side["labels"]] == [(int(k), v) for k, v in brats.items()]
    assert int((values == 4).sum()) == next(r["voxels"] for r in side["labels"] if r["value"] == 4)
    if name == "series":  # DICOM numbers its segments 1, 2, 3: segment k is class k, under the value's name
        seg = hd.seg.segread(tmp_path / "values" / "series_seg.dcm")
        numbered = [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence]
        assert numbered == [(1, "necrosis"), (2, "edema"), (3, "enhancing tumour")]


def ct_transforms_label(image, mask):
    """The mask in network space, as the prediction's labels (channel first)."""
    from medattn3d.data.transforms import ct_transforms

    return ct_transforms("val", pixdim=None)({"image": str(image), "label": str(mask)})["label"].clone()
