"""evaluate, explain and export through the command line, on the tiny random-weight bundle."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from medattn3d import cli
from tests.cli.conftest import CLASS_NAMES, ct
from tests.helpers import oblique_affine, save_nifti


def test_evaluate_prints_dice_per_class_under_the_bundles_class_names(tmp_path, tiny_bundle, capsys):
    from medattn3d.data.demo import generate_demo_dataset

    generate_demo_dataset(tmp_path / "data", num_train=1, num_val=2, num_test=0, shape=(32, 32, 16))
    out = tmp_path / "eval"
    argv = ["evaluate", "--bundle", str(tiny_bundle), "-i", str(tmp_path / "data"), "-o", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("Dice")]
    assert [" ".join(words[1:-1]) for words in lines] == [
        *(CLASS_NAMES[str(i)] for i in range(1, len(CLASS_NAMES))),
        "mean",
    ]
    assert all(np.isnan(float(words[-1])) or 0.0 <= float(words[-1]) <= 1.0 for words in lines)
    assert (out / "val_mean_dice_raw.csv").is_file()


def test_explain_subcommand_writes_maps_and_index(tmp_path, tiny_bundle, capsys):
    image = ct(tmp_path / "a.nii.gz")
    label = save_nifti(np.zeros((24, 20, 12), np.uint8), oblique_affine(), tmp_path / "a_label.nii.gz")
    out = tmp_path / "explain"
    argv = ["explain", "--bundle", str(tiny_bundle), "-i", str(image), "--label", str(label), "-o", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "attention inside / outside" in capsys.readouterr().out
    names = {p.name for p in out.rglob("*")}
    assert "index.html" in names and any("attention" in n for n in names)
    maps = [p for p in out.rglob("*attention*.nii.gz")]
    assert maps and nib.load(str(maps[0])).shape[:3] == (24, 20, 12)


def test_explain_of_one_volume_without_a_label(tmp_path, tiny_bundle, capsys):
    """As docs/cli.md shows it: ``explain -i case.nii.gz`` alone (the bundle's validation labels are not its)."""
    image = ct(tmp_path / "a.nii.gz")
    out = tmp_path / "explain"
    assert cli.main(["explain", "--bundle", str(tiny_bundle), "-i", str(image), "-o", str(out)]) == 0, (
        capsys.readouterr().err
    )
    assert (out / "index.html").is_file() and list(out.rglob("*attention*.nii.gz"))


def test_explain_groups_one_file_per_channel_cases_as_infer_does(tmp_path, tmp_path_factory, capsys):
    from tests.cli.conftest import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "two_channels_explain", in_channels=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for channel in range(2):
        ct(inputs / f"p1_000{channel}.nii.gz", seed=channel)
    out = tmp_path / "explain"
    assert cli.main(["explain", "--bundle", str(bundle), "-i", str(inputs), "-o", str(out)]) == 0, (
        capsys.readouterr().err
    )
    maps = sorted(out.rglob("*attention*.nii.gz"))
    assert maps and all("p1_0001" not in p.name for p in maps)  # one case, by its first channel file
    # the same case as one 4D file explains to the same maps
    first, second = (nib.load(str(inputs / f"p1_000{c}.nii.gz")) for c in range(2))
    stacked = np.stack([np.asarray(first.dataobj), np.asarray(second.dataobj)], axis=-1)
    save_nifti(stacked, first.affine, tmp_path / "p1_4d.nii.gz")
    out4d = tmp_path / "explain4d"
    assert cli.main(["explain", "--bundle", str(bundle), "-i", str(tmp_path / "p1_4d.nii.gz"), "-o", str(out4d)]) == 0
    maps4d = sorted(out4d.rglob("*attention*.nii.gz"))
    assert len(maps4d) == len(maps)
    for grouped, four_d in zip(maps, maps4d, strict=True):
        assert np.allclose(np.asarray(nib.load(str(grouped)).dataobj), np.asarray(nib.load(str(four_d)).dataobj))


def test_export_writes_torchscript_and_continue_keeps_it(tmp_path, tiny_bundle, capsys):
    import torch

    target = tmp_path / "model.ts"
    assert cli.main(["export", "--bundle", str(tiny_bundle), "-o", str(target)]) == 0
    scripted = torch.jit.load(str(target))
    assert scripted(torch.zeros(1, 1, 16, 16, 16)).shape == (1, len(CLASS_NAMES), 16, 16, 16)
    before = target.stat().st_mtime_ns
    assert cli.main(["export", "--bundle", str(tiny_bundle), "-o", str(target), "--continue"]) == 0
    assert target.stat().st_mtime_ns == before and "kept" in capsys.readouterr().out


def test_multi_gpu_evaluate_needs_the_bundles_config(tiny_bundle, capsys):
    missing = tiny_bundle / "configs" / "multi_gpu_evaluate.json"
    if missing.is_file():
        missing.unlink()
    assert cli.main(["evaluate", "--bundle", str(tiny_bundle), "--multi-gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multi_gpu_evaluate.json: missing" in err[0]
