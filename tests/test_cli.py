"""The ``medattn3d`` command line."""

import pytest

from medattn3d import cli
from medattn3d.networks import AttentionUNet
from medattn3d.summary import NetworkCase, summarize


def test_networks_summary_prints_every_network(capsys):
    assert cli.main(["networks"]) == 0
    out = capsys.readouterr().out
    for name in ("AttentionUNet 2D", "AttentionUNet 3D", "MultiScaleGuidedAttentionNet 2D", "2x3x64x64x64"):
        assert name in out


def test_summary_reports_shapes_and_parameter_count():
    kwargs = {"channels": (16, 32, 64), "strides": (2, 2)}
    row = summarize(NetworkCase("attention_unet", 2, kwargs, 16))
    assert row["eval output"] == "2x3x16x16"
    expected = sum(p.numel() for p in AttentionUNet(2, 1, 3, **kwargs).parameters()) / 1e6
    assert row["params (M)"] == f"{expected:.2f}" != "0.00"


def test_unknown_subcommand_exits_non_zero():
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code != 0


# --- infer, check-data and errors through the command line (bundle attention_unet_3d, random weights) ---

import json  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402

from medattn3d.bundles import BUNDLES_DIR  # noqa: E402
from tests.helpers import oblique_affine, save_nifti, write_dicom_series  # noqa: E402


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / "attention_unet_3d" / "configs" / "inference.json"))
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _ct(path, shape=(40, 36, 20), affine=None):
    image = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    return save_nifti(image, oblique_affine() if affine is None else affine, path)


def test_infer_writes_one_label_map_per_input_in_its_geometry(tmp_path, random_checkpoint, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _ct(inputs / "a.nii.gz")
    _ct(inputs / "b.nii.gz", shape=(30, 30, 12), affine=np.diag([-1.5, 1.5, 5.0, 1.0]))
    write_dicom_series(np.zeros((6, 20, 24)), inputs / "series")
    out = tmp_path / "out"
    code = cli.main(["infer", "--input", str(inputs), "--output", str(out), "--checkpoint", str(random_checkpoint)])
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_seg.nii.gz", "b_seg.nii.gz", "series_seg.nii.gz"]
    for name in ("a", "b"):
        source, label = nib.load(str(inputs / f"{name}.nii.gz")), nib.load(str(out / f"{name}_seg.nii.gz"))
        assert label.shape == source.shape and np.allclose(label.affine, source.affine, atol=1e-4)
    assert nib.load(str(out / "series_seg.nii.gz")).shape == (24, 20, 6)
    assert "wrote" in capsys.readouterr().out


def test_infer_on_bad_input_exits_non_zero_with_one_line_and_writes_nothing(tmp_path, random_checkpoint, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _ct(inputs / "a_good.nii.gz")
    save_nifti(np.full((20, 20, 20), np.nan, np.float32), np.eye(4), inputs / "b_bad.nii.gz")
    out = tmp_path / "out"
    code = cli.main(["infer", "--input", str(inputs), "--output", str(out), "--checkpoint", str(random_checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "b_bad.nii.gz: contains 8000 non-finite" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_infer_without_weights_says_how_to_get_them(tmp_path, capsys):
    code = cli.main(
        [
            "infer",
            "--bundle",
            "attention_unet_3d",
            "--input",
            str(_ct(tmp_path / "a.nii.gz")),
            "--output",
            str(tmp_path / "o"),
            "--checkpoint",
            str(tmp_path / "none.pt"),
        ]
    )
    assert code == 2 and "none.pt: checkpoint not found" in capsys.readouterr().err


def test_infer_on_a_missing_path_and_an_empty_folder(tmp_path, random_checkpoint, capsys):
    common = ["--output", str(tmp_path / "o"), "--checkpoint", str(random_checkpoint)]
    assert cli.main(["infer", "--input", str(tmp_path / "nope.nii.gz"), *common]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main(["infer", "--input", str(tmp_path / "empty"), *common]) == 2
    err = capsys.readouterr().err
    assert "nope.nii.gz: file not found" in err and "empty: holds no volumes" in err


def test_check_data_subcommand(tmp_path, capsys):
    from medattn3d.data.demo import generate_demo_dataset

    manifest = generate_demo_dataset(tmp_path, num_train=1, num_val=1, num_test=0, shape=(32, 32, 16))
    assert cli.main(["check-data", str(manifest)]) == 0
    data = json.loads(manifest.read_text())
    (tmp_path / data["training"][0]["label"]).unlink()
    assert cli.main(["check-data", str(manifest)]) == 1
    assert "file not found" in capsys.readouterr().out


def test_unknown_bundle_is_explained(capsys):
    assert cli.main(["evaluate", "--bundle", "unet9"]) == 2
    assert "unet9: no such bundle (known: attention_unet_2d" in capsys.readouterr().err


def test_explain_subcommand_writes_maps_and_index(tmp_path, random_checkpoint, capsys):
    image = _ct(tmp_path / "a.nii.gz")
    label = save_nifti(np.zeros((40, 36, 20), np.uint8), oblique_affine(), tmp_path / "a_label.nii.gz")
    out = tmp_path / "explain"
    code = cli.main(
        [
            "explain",
            "--input",
            str(image),
            "--label",
            str(label),
            "--output",
            str(out),
            "--checkpoint",
            str(random_checkpoint),
        ]
    )
    assert code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"a_seg.nii.gz", "a_attention_gate_level1.nii.gz", "a_montage.png", "index.html"} <= names
    assert nib.load(str(out / "a_attention_gate_level3.nii.gz")).shape == (40, 36, 20)
    assert "gate_level1" in capsys.readouterr().out
