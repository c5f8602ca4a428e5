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
