"""``medattn3d infer``: one output per input, every finished case kept, failures reported, folders split."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from medattn3d import cli
from medattn3d.engine import runner
from medattn3d.engine.runner import RunSummary, select_part
from tests.cli.conftest import CLASS_NAMES, ct, make_tiny_bundle
from tests.helpers import save_nifti, write_dicom_series


def _infer(bundle, inputs, out, *extra) -> int:
    return cli.main(["infer", "--bundle", str(bundle), "-i", str(inputs), "-o", str(out), *extra])


def test_each_input_gets_its_own_output_in_its_geometry(tmp_path, tiny_bundle, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    ct(inputs / "case.nii.gz")
    sitk_image = nib.load(str(ct(tmp_path / "tmp.nii.gz", shape=(20, 18, 10), seed=1)))
    import SimpleITK as sitk

    nrrd = sitk.GetImageFromArray(np.asarray(sitk_image.dataobj).transpose(2, 1, 0))
    sitk.WriteImage(nrrd, str(inputs / "case.nrrd"))
    write_dicom_series(np.zeros((6, 20, 24)), inputs / "series")
    out = tmp_path / "out"
    assert _infer(tiny_bundle, inputs, out) == 0
    segs = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert len(segs) == 3 and len({s.split("_seg")[0] for s in segs}) == 3  # case.nii.gz and case.nrrd both kept
    nifti_seg = next(p for p in out.glob("*_seg.nii.gz") if "nii" in p.name.split("_seg")[0])
    source, label = nib.load(str(inputs / "case.nii.gz")), nib.load(str(nifti_seg))
    assert label.shape == source.shape and np.allclose(label.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2, 3}
    assert nib.load(str(next(out.glob("series*_seg.nii.gz")))).shape == (24, 20, 6)
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 3 and all(re.search(r"\d+\.\d s \(ETA \d:\d\d:\d\d\)", line) for line in progress)
    assert "summary: 3 written, 0 skipped, 0 failed" in lines
    assert not list(out.glob(".tmp-*"))


def test_a_failing_case_is_reported_and_the_others_are_written(tmp_path, tiny_bundle, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    ct(inputs / "a_good.nii.gz")
    save_nifti(np.full((20, 20, 20), np.nan, np.float32), np.eye(4), inputs / "b_nan.nii.gz")  # fails on load
    save_nifti(np.zeros((20, 20), np.float32), np.eye(4), inputs / "c_2d.nii.gz")  # fails the header check
    ct(inputs / "d_good.nii.gz", seed=3)
    out = tmp_path / "out"
    assert _infer(tiny_bundle, inputs, out) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["a_good_seg.nii.gz", "d_good_seg.nii.gz"]
    assert "summary: 2 written, 0 skipped, 2 failed" in captured.out
    assert "b_nan.nii.gz: contains 8000 non-finite" in captured.err
    assert "c_2d.nii.gz: is 2D (shape (20, 20))" in captured.err
    # the header failure is reported before any case is computed
    lines = captured.out.splitlines()
    assert lines.index(next(x for x in lines if "c_2d" in x)) < lines.index(next(x for x in lines if "[1/3]" in x))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_fail_fast_stops_at_the_first_failure(tmp_path, tiny_bundle):
    inputs = tmp_path / "in"
    inputs.mkdir()
    save_nifti(np.full((20, 20, 20), np.nan, np.float32), np.eye(4), inputs / "a_nan.nii.gz")
    ct(inputs / "b_good.nii.gz")
    out = tmp_path / "out"
    assert _infer(tiny_bundle, inputs, out, "--fail-fast") == 1
    assert not out.exists() or not list(out.glob("*_seg.nii.gz"))


def test_continue_skips_complete_cases_and_redoes_incomplete_ones(tmp_path, tiny_bundle, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    ct(inputs / "a.nii.gz")
    ct(inputs / "b.nii.gz", seed=2)
    out = tmp_path / "out"
    assert _infer(tiny_bundle, inputs, out) == 0
    (out / "b_seg.nii.gz").unlink()
    before = (out / "a_seg.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert _infer(tiny_bundle, inputs, out, "--continue") == 0
    assert "summary: 1 written, 1 skipped, 0 failed" in capsys.readouterr().out
    assert (out / "a_seg.nii.gz").stat().st_mtime_ns == before and (out / "b_seg.nii.gz").is_file()


def test_parts_split_a_folder_exactly_once(tmp_path, tiny_bundle):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        ct(inputs / f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    assert _infer(tiny_bundle, inputs, out, "--num-parts", "2", "--part-id", "1", "-q") == 0
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["c1_seg.nii.gz"]
    assert _infer(tiny_bundle, inputs, out, "--num-parts", "2", "--part-id", "0", "-q") == 0
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["c0_seg.nii.gz", "c1_seg.nii.gz", "c2_seg.nii.gz"]


def test_select_part_covers_every_item_once():
    items = list(range(11))
    shares = [select_part(items, 3, k) for k in range(3)]
    assert sorted(x for share in shares for x in share) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match=r"--part-id must lie in 0\.\.2"):
        select_part(items, 3, 3)


def test_quiet_prints_only_the_summary_and_verbose_adds_monai_logs(tmp_path, tiny_bundle, capsys):
    image = ct(tmp_path / "a.nii.gz")
    assert _infer(tiny_bundle, image, tmp_path / "o1", "--quiet") == 0
    assert capsys.readouterr().out.strip().splitlines() == ["summary: 1 written, 0 skipped, 0 failed"]
    assert _infer(tiny_bundle, image, tmp_path / "o2") == 0
    normal = capsys.readouterr()
    assert "INFO" not in normal.out + normal.err and "trust" not in normal.err


def test_network_is_built_and_each_input_read_once_per_run(tmp_path, tiny_bundle, monkeypatch):
    import medattn3d.data.loading as loading

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        ct(inputs / f"c{i}.nii.gz", seed=i)
    reads: list[str] = []
    original_read = loading._read
    monkeypatch.setattr(
        loading, "_read", lambda loader, source, shown: reads.append(str(shown)) or original_read(loader, source, shown)
    )
    builds: list[int] = []
    original = runner.BundleModel.from_bundle.__func__
    monkeypatch.setattr(
        runner.BundleModel, "from_bundle", classmethod(lambda cls, *a, **k: builds.append(1) or original(cls, *a, **k))
    )
    assert _infer(tiny_bundle, inputs, tmp_path / "out", "-q") == 0
    assert len(builds) == 1
    assert sorted(reads) == sorted(str(p) for p in inputs.iterdir())


def test_missing_inputs_weights_and_bad_formats_stop_with_one_line(tmp_path, tiny_bundle, capsys):
    out = tmp_path / "o"
    assert _infer(tiny_bundle, tmp_path / "nope.nii.gz", out) == 2
    (tmp_path / "empty").mkdir()
    assert _infer(tiny_bundle, tmp_path / "empty", out) == 2
    image = ct(tmp_path / "a.nii.gz")
    assert _infer(tiny_bundle, image, out, "--checkpoint", str(tmp_path / "none.pt")) == 2
    err = capsys.readouterr().err
    assert "nope.nii.gz: file not found" in err and "empty: holds no volumes" in err
    assert "none.pt: checkpoint not found" in err
    assert _infer(tiny_bundle, image, out, "--format", "nifti,dicom-seg") == 1
    assert "a.nii.gz: --format dicom-seg needs a DICOM input" in capsys.readouterr().err


def test_weights_that_do_not_fit_are_refused_in_one_line(tmp_path, tiny_bundle, capsys):
    import torch

    wrong = tmp_path / "wrong.pt"
    state = torch.load(tiny_bundle / "models" / "model.pt", weights_only=True)
    torch.save(
        {
            k: (v[:2] if v.ndim and v.shape[0] == len(CLASS_NAMES) and k.startswith("head") else v)
            for k, v in state.items()
        },
        wrong,
    )
    assert _infer(tiny_bundle, ct(tmp_path / "a.nii.gz"), tmp_path / "o", "--checkpoint", str(wrong)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "wrong.pt" in err[0]
    assert f"checkpoint predicts 2 classes, the bundle {len(CLASS_NAMES)}" in err[0]


def test_summary_merges_parts():
    a = RunSummary({"x": ["x_seg"]}, ["y"], {})
    b = RunSummary({}, [], {"z": "z: broken"})
    merged = a.merge(b)
    assert merged.lines() == ["summary: 1 written, 1 skipped, 1 failed", "  failed: z: broken"]


def test_no_warning_about_the_optional_gpu_dicom_decoder(tmp_path, tiny_bundle, caplog):
    image = ct(tmp_path / "a.nii.gz")
    for flags in (["--quiet"], []):
        caplog.clear()
        assert _infer(tiny_bundle, image, tmp_path / f"o{len(flags)}", *flags) == 0
        assert not [r for r in caplog.records if "nvImageCodec" in r.getMessage()]


def test_one_file_per_channel_cases_are_grouped_as_nnunet_names_them(tmp_path, tmp_path_factory, capsys):
    from tests.cli.conftest import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "two_channels", in_channels=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case, seed in (("p1", 0), ("p2", 5)):
        for channel in range(2):
            ct(inputs / f"{case}_000{channel}.nii.gz", seed=seed + channel)
    ct(inputs / "p3_0000.nii.gz")  # one channel file of two, alone: refused, naming the missing sibling
    ct(inputs / "p4_0000.nii.gz")
    ct(inputs / "p4_0002.nii.gz")  # _0001 missing
    out = tmp_path / "out"
    assert _infer(bundle, inputs, out) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["p1_seg.nii.gz", "p2_seg.nii.gz"]
    assert "summary: 2 written, 0 skipped, 2 failed" in captured.out
    assert "p3_0000.nii.gz: is one channel file of case 'p3' and no sibling lies beside it" in captured.err
    assert "p4_0000.nii.gz: has channel files _0000, _0002 where the bundle needs 2: _0000 to _0001" in captured.err
    assert "p1_0000.nii.gz (+1 channel files) -> p1_seg.nii.gz" in captured.out
    # the same case as one 4D file (channels last, as NIfTI stores them) gives the same segmentation
    first, second = (nib.load(str(inputs / f"p1_000{c}.nii.gz")) for c in range(2))
    stacked = np.stack([np.asarray(first.dataobj), np.asarray(second.dataobj)], axis=-1)
    save_nifti(stacked, first.affine, tmp_path / "p1_4d.nii.gz")
    assert _infer(bundle, tmp_path / "p1_4d.nii.gz", tmp_path / "out4d") == 0
    grouped = np.asarray(nib.load(str(out / "p1_seg.nii.gz")).dataobj)
    four_d = nib.load(str(tmp_path / "out4d" / "p1_4d_seg.nii.gz"))
    assert np.array_equal(grouped, np.asarray(four_d.dataobj)) and np.allclose(four_d.affine, first.affine, atol=1e-4)
    # one channel file given alone brings its siblings
    assert _infer(bundle, inputs / "p2_0001.nii.gz", tmp_path / "single") == 0
    single = np.asarray(nib.load(str(tmp_path / "single" / "p2_seg.nii.gz")).dataobj)
    assert np.array_equal(single, np.asarray(nib.load(str(out / "p2_seg.nii.gz")).dataobj))


@pytest.mark.parametrize(
    ("flags", "extra", "expected"),
    [
        ({"avx512_f": True, "avx512_vnni": True}, [], "2.5-3x"),  # no native bf16, VNNI: INT8 would help
        ({"avx512_f": True, "avx512_vnni": True}, ["--runtime", "torch"], None),
        ({"avx512_f": True, "avx512_vnni": True}, ["--precision", "fp32"], None),  # fp32 asked for by name
        ({"avx512_bf16": True, "avx512_vnni": True}, [], None),  # bf16 2.4x fp32 (AMD, round 7): runs bf16
        ({"avx512_bf16": True, "avx512_vnni": True, "slow": True}, [], "2.5-3x"),  # bf16 0.5x fp32 (round 9)
        ({"avx2": True}, [], "about 1.9x"),  # no int8 dot products: AVX2's multiply-adds, measured 1.9x (round 8)
        ({"sse4_2": True}, [], None),  # no measured class
    ],
)
def test_infer_points_to_int8_only_where_it_pays(tmp_path, tiny_bundle, capsys, monkeypatch, flags, extra, expected):
    pytest.importorskip("openvino")
    import medattn3d.engine.precision as precision

    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "measured_bf16_speedup", lambda: 0.5 if flags.get("slow") else 2.4)
    image = ct(tmp_path / "a.nii.gz")
    assert _infer(tiny_bundle, image, tmp_path / "out", "--precision", "auto", *extra) == 0
    out = capsys.readouterr().out
    assert ("medattn3d export --bundle" in out and "--format openvino-int8" in out) is (expected is not None)
    assert expected is None or f"an INT8 model runs {expected} faster per window" in out


def test_a_two_d_bundle_segments_a_single_slice_and_a_three_d_one_refuses_it(tmp_path, tiny_bundle, capsys):
    image = ct(tmp_path / "slice.nii.gz", shape=(40, 36, 1))
    bundle_2d = make_tiny_bundle(tmp_path / "tiny_2d", spatial_dims=2)
    assert _infer(bundle_2d, image, tmp_path / "o2") == 0
    written = nib.load(str(tmp_path / "o2" / "slice_seg.nii.gz"))
    assert written.shape == (40, 36, 1) and np.allclose(written.affine, nib.load(str(image)).affine, atol=1e-4)
    assert _infer(tiny_bundle, image, tmp_path / "o3") == 1
    assert "slice.nii.gz: is too small: shape (40, 36, 1) has axis 2 below the minimum of 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags", [["--format", "nifti", "nrrd"], ["--format", "nifti,nrrd"], ["--format", "nrrd", "--format", "nifti"]]
)
def test_several_formats_however_they_are_written(tmp_path, tiny_bundle, flags):
    image = ct(tmp_path / "a.nii.gz")
    assert _infer(tiny_bundle, image, tmp_path / "o", *flags) == 0
    assert (tmp_path / "o" / "a_seg.nii.gz").is_file() and (tmp_path / "o" / "a_seg.seg.nrrd").is_file()


def test_an_unexpected_failure_is_reported_under_its_case(tmp_path, tiny_bundle, capsys, monkeypatch):
    from medattn3d.outputs import prediction

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(prediction, "write_nifti_labels", broken)
    image = ct(tmp_path / "a.nii.gz")
    assert _infer(tiny_bundle, image, tmp_path / "o") == 1
    assert f"  failed: {image}: disk on fire" in capsys.readouterr().err


def test_a_lone_channel_file_is_told_its_siblings_are_missing(tmp_path, capsys):
    bundle = make_tiny_bundle(tmp_path / "two", in_channels=2)
    image = ct(tmp_path / "brats_7_0000.nii.gz")
    assert _infer(bundle, image, tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert "brats_7_0000.nii.gz: is one channel file of case 'brats_7' and no sibling lies beside it" in err
    assert "(brats_7_0000.nii.gz, brats_7_0001.nii.gz) or one 4D file" in err
