"""Dataset fingerprint: geometry, classes and foreground statistics against values computed here with nibabel and
numpy from the generated files; the cache; parallel workers; errors naming the file."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

from medattn3d.data import loading
from medattn3d.data import workers as pools
from medattn3d.data.manifest import load_datalist
from medattn3d.errors import InputError
from medattn3d.planning import fingerprint
from medattn3d.planning.fingerprint import fingerprint_dataset
from tests.planning import datasets


def _array(path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _foreground_values(cases) -> list[np.ndarray]:
    """Per channel, every foreground voxel of every case (all of them: the tiny cases have < 10k each)."""
    pooled = None
    for case in cases:
        paths = case["image"] if isinstance(case["image"], list) else [case["image"]]
        image = np.stack([_array(p) for p in paths], -1) if len(paths) > 1 else _array(paths[0])
        image = image.reshape(*image.shape[:3], -1).astype(np.float64)
        mask = _array(case["label"]) > 0
        values = [image[..., c][mask] for c in range(image.shape[3])]
        pooled = values if pooled is None else [np.concatenate([a, b]) for a, b in zip(pooled, values, strict=True)]
    return pooled


def _expected_intensities(cases) -> list[dict]:
    result = []
    for values in _foreground_values(cases):
        p05, median, p995 = np.percentile(values, [0.5, 50, 99.5])
        result.append(
            {
                "mean": values.mean(),
                "std": values.std(),
                "median": median,
                "min": values.min(),
                "max": values.max(),
                "percentile_00_5": p05,
                "percentile_99_5": p995,
            }
        )
    return result


@pytest.mark.parametrize(
    ("name", "specs", "channels"),
    [
        ("spleen_ct", datasets.SPLEEN_CASES, 1),
        ("brain_mri", datasets.BRAIN_CASES, 4),
        ("abdomen_ct_14", datasets.ABDOMEN_CASES, 1),
        ("prostate_two_files", datasets.PROSTATE_CASES, 2),
    ],
)
def test_fingerprint_matches_the_generated_data(tmp_path, name, specs, channels):
    path = datasets.DATASETS[name](tmp_path)
    cases = load_datalist(path, "training", fold=None)
    result = fingerprint_dataset(cases, None, workers=1, progress=False)
    assert result["version"] == 1 and result["num_cases"] == len(specs) == len(result["cases"])
    for spec, case, entry in zip(specs, result["cases"], cases, strict=True):
        assert case["image"] == entry["image"] and case["label"] == entry["label"]
        assert case["shape"] == list(spec.shape)
        assert case["spacing"] == pytest.approx(spec.spacing, abs=1e-6)
        assert case["axcodes"] == spec.axcodes and case["channels"] == channels
        values, counts = np.unique(_array(entry["label"]), return_counts=True)
        assert case["class_voxels"] == {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)}
    expected = _expected_intensities(cases)
    assert len(result["intensities"]) == channels
    for got, want in zip(result["intensities"], expected, strict=True):
        assert got == pytest.approx(want, rel=1e-9)


def test_spleen_foreground_is_the_planted_distribution(tmp_path):
    cases = load_datalist(datasets.write_spleen_ct(tmp_path), "training", fold=None)
    stats = fingerprint_dataset(cases, None, workers=1, progress=False)["intensities"][0]
    mean, std = datasets.SPLEEN_HU["spleen"]
    assert abs(stats["mean"] - mean) < 2 and abs(stats["std"] - std) < 2  # ~2700 draws from N(110, 15)


def test_shape_and_spacing_are_what_monai_orientation_gives(tmp_path):
    cases = load_datalist(datasets.write_spleen_ct(tmp_path), "training", fold=None)
    result = fingerprint_dataset(cases, None, workers=1, progress=False)
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS")])
    for case, fp in zip(cases, result["cases"], strict=True):
        image = load({"image": case["image"]})["image"]
        assert list(image.shape[1:]) == fp["shape"]
        assert [float(s) for s in image.pixdim] == pytest.approx(fp["spacing"], abs=1e-6)
    assert {c["axcodes"] for c in result["cases"]} == {"RAS", "LPS", "SAR"}


def test_percentiles_pool_seeded_samples_when_cases_are_large(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "SAMPLES_PER_CASE", 200)
    cases = load_datalist(datasets.write_spleen_ct(tmp_path), "training", fold=None)
    first = fingerprint_dataset(cases, None, workers=1, progress=False)["intensities"][0]
    again = fingerprint_dataset(cases, None, workers=1, progress=False)["intensities"][0]
    want = _expected_intensities(cases)[0]
    assert first == again  # seeded
    for key in ("mean", "std", "min", "max"):  # exact from running sums, whatever the sampling
        assert first[key] == pytest.approx(want[key], rel=1e-9)
    assert first["median"] == pytest.approx(want["median"], abs=3)  # 1200 samples of a std-15 distribution
    assert first["percentile_00_5"] != want["percentile_00_5"]  # they really were sampled


def test_cache_hit_reads_no_image_and_a_changed_file_is_reread(tmp_path, monkeypatch):
    cases = load_datalist(datasets.write_brain_mri(tmp_path / "data"), "training", fold=None)
    cache = tmp_path / "fingerprint_cache.json"
    first = fingerprint_dataset(cases, cache, workers=1, progress=False)
    assert cache.is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("an image was read although the cache holds every case")

    monkeypatch.setattr(fingerprint, "read_volume", refuse)
    monkeypatch.setattr(loading, "load_volume", refuse)
    assert fingerprint_dataset(cases, cache, workers=1, progress=False) == first
    monkeypatch.undo()

    read = []
    original = fingerprint.read_volume

    def counting(path, *args, **kwargs):
        read.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(fingerprint, "read_volume", counting)
    stat = os.stat(cases[2]["image"])
    os.utime(cases[2]["image"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint_dataset(cases, cache, workers=1, progress=False) == first
    assert read == [cases[2]["image"], cases[2]["label"]]


def test_damaged_cache_is_recomputed(tmp_path):
    cases = load_datalist(datasets.write_spleen_ct(tmp_path / "data"), "training", fold=None)[:2]
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    result = fingerprint_dataset(cases, cache, workers=1, progress=False)
    assert result["num_cases"] == 2 and cache.read_text(encoding="utf-8").startswith("{")


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    cases = load_datalist(datasets.write_spleen_ct(tmp_path), "training", fold=None)[:2]
    fingerprint_dataset(cases, None, workers=1, progress=True)
    captured = capsys.readouterr()
    assert "fingerprint" in captured.err and "2/2" in captured.err and captured.out == ""
    fingerprint_dataset(cases, None, workers=1, progress=False)
    assert capsys.readouterr().err == ""


def test_worker_processes_give_the_same_fingerprint_and_name_a_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pools, "MIN_BYTES_FOR_WORKERS", 0)  # tiny files: workers only when told
    started = []
    original = pools.worker_context
    monkeypatch.setattr(pools, "worker_context", lambda preload: started.append(1) or original(preload))
    cases = load_datalist(datasets.write_prostate_two_files(tmp_path), "training", fold=None)
    serial = fingerprint_dataset(cases, None, workers=1, progress=False)
    assert fingerprint_dataset(cases, None, workers=2, progress=False) == serial
    assert started  # the pool really ran
    (tmp_path / "imagesTr" / "prostate_01_0001.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match=r"prostate_01_0001.nii.gz: cannot be read as an image"):
        fingerprint_dataset(cases, None, workers=2, progress=False)


def test_errors_name_the_file(tmp_path):
    path, _ = datasets.write_broken("abdomen_ct_14", tmp_path)
    cases = load_datalist(path, "training", fold=None)
    os.remove(cases[0]["label"])
    with pytest.raises(InputError, match=r"labelsTr/img0001.nii.gz: file not found"):
        fingerprint_dataset(cases, None, workers=1, progress=False)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), cases[0]["label"])
    with pytest.raises(InputError, match=r"img0001.nii.gz: label shape \(8, 8, 8\) differs from its image's"):
        fingerprint_dataset(cases, None, workers=1, progress=False)
    with pytest.raises(ValueError, match="no cases"):
        fingerprint_dataset([], None, workers=1, progress=False)


def test_cases_with_different_channel_counts_are_refused(tmp_path):
    path, _ = datasets.write_broken("brain_mri", tmp_path)
    cases = load_datalist(path, "training", fold=None)
    with pytest.raises(InputError, match=r"BRATS_003.nii.gz: has 3 channel\(s\) where .*BRATS_001.nii.gz has 4"):
        fingerprint_dataset(cases, None, workers=1, progress=False)


def test_a_case_without_foreground_adds_nothing_to_the_intensities(tmp_path):
    cases = load_datalist(datasets.write_spleen_ct(tmp_path), "training", fold=None)
    empty = nib.load(cases[0]["label"])
    nib.save(nib.Nifti1Image(np.zeros(empty.shape, np.uint8), empty.affine), cases[0]["label"])
    result = fingerprint_dataset(cases, tmp_path / "cache.json", workers=1, progress=False)
    assert result["cases"][0]["class_voxels"] == {"0": int(np.prod(empty.shape))}
    assert result["intensities"][0] == pytest.approx(_expected_intensities(cases[1:])[0], rel=1e-9)
    only_empty = fingerprint_dataset(cases[:1], None, workers=1, progress=False)
    assert set(only_empty["intensities"][0].values()) == {None}


def test_nrrd_files_give_the_same_fingerprint_as_nifti(tmp_path):
    import SimpleITK as sitk

    cases = load_datalist(datasets.write_spleen_ct(tmp_path), "training", fold=None)[:4]
    converted = []
    for case in cases:
        pair = {}
        for key in ("image", "label"):
            target = case[key].replace(".nii.gz", ".nrrd")
            sitk.WriteImage(sitk.ReadImage(case[key]), target)
            pair[key] = target
        converted.append(pair)
    nifti = fingerprint_dataset(cases, None, workers=1, progress=False)
    nrrd = fingerprint_dataset(converted, None, workers=1, progress=False)
    assert nrrd["intensities"] == nifti["intensities"]
    for a, b in zip(nrrd["cases"], nifti["cases"], strict=True):
        assert (a["shape"], a["axcodes"], a["class_voxels"]) == (b["shape"], b["axcodes"], b["class_voxels"])
        assert a["spacing"] == pytest.approx(b["spacing"], abs=1e-5)
