"""The ``medattn3d`` command line: parsing, dispatch, and the subcommands that are not batch inference
(those are in tests/cli/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medattn3d import __version__, cli, planning
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


def test_version_names_the_package_monai_and_torch(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(f"medattn3d {__version__}, monai 1.") and "torch 2." in out


def test_the_run_commands_share_their_flags():
    parser = cli.build_parser()
    shared = ["--device", "cpu", "--precision", "fp32", "--set", "a=1", "--continue", "-q"]
    for command, extra in (("infer", ["-i", "x", "-o", "y"]), ("evaluate", []), ("explain", []), ("export", [])):
        args = parser.parse_args([command, *extra, *shared, "-i", "in", "-o", "out"])
        assert (args.device, args.precision, args.set, args.resume, args.quiet) == ("cpu", "fp32", ["a=1"], True, True)
        assert (args.input, args.output) == ("in", "out")


def test_set_values_parse_as_json_and_device_maps_to_a_config_expression():
    assert cli.run_overrides("cuda:1", "bf16", ["num_classes=3", "name=liver", "roi=[1, 2]"]) == {
        "device": "$torch.device('cuda:1')",
        "precision": "bf16",
        "num_classes": 3,
        "name": "liver",
        "roi": [1, 2],
    }
    assert cli.run_overrides() == {}
    with pytest.raises(ValueError, match="--device must be"):
        cli.run_overrides("tpu")


def test_infer_formats_are_a_repeatable_comma_list(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "infer", lambda *a, **k: seen.update(k) or 0)
    argv = ["infer", "-i", "x", "-o", "y", "--format", "nifti,nrrd", "--format", "dicom-seg", "--save-probabilities"]
    assert cli.main(argv) == 0
    assert seen["formats"] == ["nifti", "nrrd", "dicom-seg"] and seen["save_probabilities"] is True


def test_plan_calls_plan_bundle_with_its_flags(tmp_path, monkeypatch, capsys):
    calls = []

    def plan_bundle(dataset_dir, out, **kwargs):
        calls.append((dataset_dir, out, kwargs))
        return Path(out)

    monkeypatch.setattr(planning, "plan_bundle", plan_bundle, raising=False)
    argv = ["plan", "--dataset-dir", "Task09", "--out", "liver", "--fold", "2", "--set", "pixdim=[1, 1, 2]"]
    assert cli.main([*argv, "--bundle", "ms_guided_attention_2d", "--workers", "1", "--datalist", "d.json"]) == 0
    dataset_dir, out, kwargs = calls[0]
    assert (dataset_dir, out) == ("Task09", "liver")
    assert kwargs == {
        "datalist": "d.json",
        "template": "ms_guided_attention_2d",
        "fold": 2,
        "overrides": {"pixdim": [1, 1, 2]},
        "workers": 1,
        "progress": True,
    }
    assert "medattn3d train --bundle ./liver" in capsys.readouterr().out


def test_a_dataset_check_failure_lists_every_problem_once(monkeypatch, capsys):
    from medattn3d.errors import DatasetError

    def plan_bundle(*args, **kwargs):
        raise DatasetError("x/dataset.json", ["a.nii.gz: file not found", "b.nii.gz: label values [7] lie outside"])

    monkeypatch.setattr(planning, "plan_bundle", plan_bundle, raising=False)
    assert cli.main(["plan", "--dataset-dir", "x", "--out", "y"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: x/dataset.json: 2 problems found, nothing was written:",
        "  a.nii.gz: file not found",
        "  b.nii.gz: label values [7] lie outside",
    ]


def test_an_unexpected_failure_names_its_first_cause(monkeypatch, capsys):
    def plan_bundle(*args, **kwargs):
        try:
            raise TypeError("Input z must be at least a (2, 2) shaped array")
        except TypeError as inner:
            raise RuntimeError("failed to evaluate\n \"__local_refs['label_paths'])\")") from inner

    monkeypatch.setattr(planning, "plan_bundle", plan_bundle, raising=False)
    assert cli.main(["plan", "--dataset-dir", "x", "--out", "y"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: TypeError: Input z must be at least a (2, 2) shaped array (run with --debug for the traceback)"
    )


def test_check_data_subcommand(tmp_path, capsys):
    from medattn3d.data.demo import generate_demo_dataset

    manifest = generate_demo_dataset(tmp_path, num_train=1, num_val=1, num_test=0, shape=(32, 32, 16))
    assert cli.main(["check-data", str(manifest)]) == 0
    data = json.loads(manifest.read_text(encoding="utf-8"))
    (tmp_path / data["training"][0]["label"]).unlink()
    assert cli.main(["check-data", str(manifest)]) == 1
    assert "file not found" in capsys.readouterr().out
