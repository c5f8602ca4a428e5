"""The whole-volume fast paths of the writers against plain references: the running-maximum argmax against
``torch.argmax``, ``label_counts`` against ``np.bincount``, column-major label maps against nibabel's own writing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medattn3d.outputs.formats import fortran_order, write_nifti_labels
from medattn3d.outputs.prediction import channel_argmax
from medattn3d.outputs.tables import label_counts


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_channel_argmax_equals_argmax_with_ties(channels):
    scores = torch.rand(channels, 9, 8, 7, generator=torch.Generator().manual_seed(channels))
    scores[:, :2] = scores[:, :2].round(decimals=1)  # many ties: the lower class wins, as with argmax
    labels = channel_argmax(scores)
    assert labels.shape == (1, 9, 8, 7) and labels.dtype == torch.uint8
    assert torch.equal(labels[0].long(), torch.argmax(scores, dim=0))


def test_channel_argmax_keeps_a_column_major_layout_and_never_picks_nan():
    scores = torch.rand(3, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    column_major = scores.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)
    labels = channel_argmax(column_major)[0]
    assert torch.equal(labels.long(), torch.argmax(scores, dim=0))
    assert labels.numpy().flags.f_contiguous
    scores[1, 0, 0, 0] = float("nan")
    scores[:, 1, 0, 0] = torch.tensor([0.1, float("nan"), 0.2])
    labels = channel_argmax(scores)[0]
    assert int(labels[0, 0, 0]) == int(torch.argmax(scores[[0, 2], 0, 0, 0])) * 2
    assert int(labels[1, 0, 0]) == 2


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_label_counts_equal_bincount(dtype, order):
    labels = np.asarray(np.random.default_rng(0).integers(0, 5, size=(11, 7, 5)), dtype=dtype, order=order)
    np.testing.assert_array_equal(label_counts(labels, 8), np.bincount(labels.ravel().astype(np.int64), minlength=8))
    assert label_counts(labels[:, ::2], 3).sum() == labels[:, ::2].size  # neither C nor F ordered


def test_column_major_label_map_writes_the_same_file(tmp_path):
    labels = np.random.default_rng(1).integers(0, 4, size=(13, 9, 6)).astype(np.uint8)
    assert fortran_order(labels).flags.f_contiguous
    np.testing.assert_array_equal(fortran_order(labels), labels)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    ours = write_nifti_labels(tmp_path / "ours.nii.gz", labels, affine)
    plain = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), str(plain))
    np.testing.assert_array_equal(np.asarray(nib.load(str(ours)).dataobj), np.asarray(nib.load(str(plain)).dataobj))
