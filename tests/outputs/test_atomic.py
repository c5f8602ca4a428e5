"""atomic_path: the target appears whole or not at all; the previous version survives a failed write."""

import json

import nibabel as nib
import numpy as np
import pytest

from medattn3d.outputs.atomic import TEMPORARY_PREFIX, atomic_path, atomic_write_text


def test_success_renames_onto_the_target_and_keeps_suffixes(tmp_path):
    target = tmp_path / "sub" / "case_seg.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith("case_seg.nii.gz") and not tmp.exists()
        nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4)), str(tmp))
    assert sorted(p.name for p in target.parent.iterdir()) == ["case_seg.nii.gz"]
    with open(target, "rb") as stream:  # the suffix made nibabel gzip it
        assert stream.read(2) == b"\x1f\x8b"
    assert np.asarray(nib.load(str(target)).dataobj).sum() == 27


def test_failure_removes_the_temporary_file_and_keeps_the_old_target(tmp_path):
    target = atomic_write_text(tmp_path / "a.json", json.dumps({"version": 1}))
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text('{"version": 2, "trunc')
        raise RuntimeError("disk full")
    assert json.loads(target.read_text(encoding="utf-8")) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="produced no file"), atomic_path(tmp_path / "x.txt"):
        pass
    assert not any(p.name.startswith(TEMPORARY_PREFIX) for p in tmp_path.iterdir())
    assert not (tmp_path / "x.txt").exists()
