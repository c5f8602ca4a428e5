"""Viewer volumes: reduction against plain numpy, affines against voxel-centre geometry, the base64 NIfTI round
trip through nibabel, the per-case script, and the vendored viewer shipped with its licence."""

import base64
import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from medattn3d.explain.viewer import (
    Layer,
    copy_viewer_assets,
    nifti_base64,
    reduce_volume,
    reduced_affine,
    reduction_factor,
    write_case_layers,
)
from tests.helpers import oblique_affine


def _decode(text: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(text)))


def test_reduction_factor_is_the_smallest_that_fits():
    assert reduction_factor((100, 100, 60), 160**3) == 1
    assert reduction_factor((400, 400, 300), 160**3) == 3  # factor 2 leaves 200 x 200 x 150 = 6.0 M voxels > 4.1 M
    assert reduction_factor((10, 10, 10), 125) == 2


def test_reduced_volumes_are_block_means_and_block_maxima():
    rng = np.random.default_rng(1)
    volume = rng.random((6, 4, 8)).astype(np.float32)
    expected = volume.reshape(3, 2, 2, 2, 4, 2).mean(axis=(1, 3, 5))
    assert np.allclose(reduce_volume(volume, 2, labels=False), expected, atol=1e-6)
    labels = rng.integers(0, 4, (6, 4, 8)).astype(np.uint8)
    reduced = reduce_volume(labels, 2, labels=True)
    assert reduced.dtype == np.uint8 and np.array_equal(reduced, labels.reshape(3, 2, 2, 2, 4, 2).max(axis=(1, 3, 5)))
    assert reduce_volume(volume, 1, labels=False) is volume


def test_reduced_affine_puts_each_voxel_at_its_block_centre():
    affine = oblique_affine()
    grid = reduced_affine(affine, 3)
    block = np.array([[i, j, k, 1] for i in (6, 7, 8) for j in (3, 4, 5) for k in (0, 1, 2)], dtype=float)
    centre = (affine @ block.T).T.mean(axis=0)
    assert np.allclose(grid @ np.array([2, 1, 0, 1.0]), centre)


def test_layers_round_trip_through_base64_nifti():
    affine = oblique_affine()
    attention = np.linspace(0, 1, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    decoded = _decode(nifti_base64(np.round(attention * 255).astype(np.uint8), affine, slope=1 / 255))
    assert np.allclose(decoded.get_fdata(), attention, atol=0.5 / 255 + 1e-6)
    assert np.allclose(decoded.affine, affine, atol=1e-5)


def test_case_script_holds_every_layer_on_one_grid(tmp_path):
    affine = oblique_affine()
    scan = np.random.default_rng(2).normal(0, 1, (8, 6, 4)).astype(np.float32)
    labels = np.zeros((8, 6, 4), np.uint8)
    labels[2:5, 1:3, 1:3] = 2
    attention = np.full((8, 6, 4), 0.25, np.float32)
    layers = [Layer("scan", "scan", scan), Layer("prediction", "labels", labels), Layer("g1", "attention", attention)]
    entry = write_case_layers(tmp_path, "case 1", layers, affine, max_voxels=100)
    assert (
        entry["factor"] == 2
        and entry["script"] == "viewer/case 1.js"
        and entry["layers"] == ["scan", "prediction", "g1"]
    )
    text = (tmp_path / entry["script"]).read_text(encoding="utf-8")
    assert text.startswith("medattn3dViewer.addCase(") and text.rstrip().endswith(");")
    payload = json.loads(text[len("medattn3dViewer.addCase(") : text.rstrip().rindex(")")])
    images = {layer["name"]: _decode(layer["base64"]) for layer in payload["layers"]}
    assert all(image.shape == (4, 3, 2) for image in images.values())
    assert np.array_equal(
        np.asarray(images["prediction"].dataobj), labels.reshape(4, 2, 3, 2, 2, 2).max(axis=(1, 3, 5))
    )
    assert np.allclose(images["g1"].get_fdata(), 0.25, atol=0.5 / 255 + 1e-6)
    scan_values = np.asarray(images["scan"].dataobj)
    assert scan_values.dtype == np.uint8 and scan_values.max() >= 200 and scan_values.min() <= 55  # window spans 0..255
    assert np.allclose(images["scan"].affine, reduced_affine(affine, 2), atol=1e-5)


def test_layers_of_different_shapes_are_refused(tmp_path):
    layers = [Layer("scan", "scan", np.zeros((4, 4, 4))), Layer("g1", "attention", np.zeros((4, 4, 3)))]
    with pytest.raises(ValueError, match="one shape"):
        write_case_layers(tmp_path, "c", layers, np.eye(4))


def test_vendored_viewer_is_copied_with_its_licence(tmp_path):
    copied = {p.name: p for p in copy_viewer_assets(tmp_path)}
    assert set(copied) == {"niivue.umd.js", "explain_viewer.js", "explain_viewer.css", "LICENSE-niivue.txt"}
    assert 1_000_000 < copied["niivue.umd.js"].stat().st_size < 4_000_000
    assert (
        copied["niivue.umd.js"].read_text(encoding="utf-8")[:200].startswith("(function(")
    )  # a classic script: runs from file://
    licence = copied["LICENSE-niivue.txt"].read_text(encoding="utf-8")
    assert "BSD 2-Clause License" in licence and "@niivue/niivue 0.69.0" in licence and "gl-matrix" in licence
