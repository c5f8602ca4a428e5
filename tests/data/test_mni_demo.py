"""The optional real-MRI demo from nilearn's bundled MNI152 template (skipped without nilearn)."""

import numpy as np
import pytest

from medattn3d.data.check import check_manifest
from medattn3d.data.loading import load_volume

pytest.importorskip("nilearn", reason="the MNI152 demo is behind the optional extra 'mri-demo' (nilearn)")


def test_mni152_tissue_demo(tmp_path):
    from medattn3d.data.mni_demo import write_mni152_tissue_demo

    manifest = write_mni152_tissue_demo(tmp_path)
    assert check_manifest(manifest) == []
    image = np.asarray(load_volume(tmp_path / "imagesTr" / "mni152_t1.nii.gz"))
    label = np.asarray(load_volume(tmp_path / "labelsTr" / "mni152_t1.nii.gz"))
    counts = np.bincount(label.ravel().astype(int), minlength=3)
    assert counts[1] > 10_000 and counts[2] > 10_000  # real grey and white matter
    assert image[label == 2].mean() > image[label == 1].mean()  # T1: white matter brighter than grey
