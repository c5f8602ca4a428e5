"""Network registry and MONAI bundle-config instantiation."""

import json

import pytest
import torch
from monai.bundle import ConfigParser

from medattn3d.networks import (
    NETWORKS,
    PRESETS,
    AttentionUNet,
    MultiScaleGuidedAttentionNet,
    get_network,
    required_input_multiple,
)


def test_short_names_build_the_registered_classes():
    assert isinstance(get_network("attention_unet", spatial_dims=2, in_channels=1, out_channels=2), AttentionUNet)
    net = get_network("MS-Guided-Attention", spatial_dims=2, in_channels=1, out_channels=2, backbone="resnet10")
    assert isinstance(net, MultiScaleGuidedAttentionNet)
    assert set(NETWORKS) == {"attention_unet", "ms_guided_attention"}
    assert set(PRESETS) == {"attention_unet_oktay2018", "ms_guided_attention_sinha2021"}


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown network 'unet3'; available: attention_unet, ms_guided_attention, "):
        get_network("unet3")


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        ("medattn3d.networks.AttentionUNet", {"channels": [4, 8, 16], "strides": [2, 2], "norm": ["instance", {}]}),
        ("medattn3d.networks.MultiScaleGuidedAttentionNet", {"backbone": "resnet10", "feature_channels": 8}),
        ("medattn3d.networks.get_network", {"name": "attention_unet", "channels": [4, 8, 16], "strides": [2, 2]}),
    ],
)
def test_bundle_config_instantiates_with_full_dotted_target(tmp_path, target, extra):
    config = {
        "num_classes": 3,
        "network_def": {
            "_target_": target,
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": "@num_classes",
            **extra,
        },
        "network": "$@network_def.eval()",
    }
    config["network_def"].update(extra)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    parser = ConfigParser()
    parser.read_config(str(path))
    net = parser.get_parsed_content("network")
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def _authors_ct_model_parameters(in_channels: int, classes: int) -> int:
    """Parameters of Oktay et al.'s unet_CT_multi_att_dsv_3D (feature_scale 4), layer by layer as their code builds
    it: every conv has a bias except theta, every BatchNorm has a weight and a bias."""
    f = [16, 32, 64, 128, 256]

    def conv(cin: int, cout: int, k: int = 1, bias: bool = True) -> int:
        return cin * cout * k**3 + (cout if bias else 0)

    def double_conv(cin: int, cout: int) -> int:  # UnetConv3: (conv 3^3 + BN + ReLU) x 2
        return conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + 2 * cout

    def gate(x: int, g: int) -> int:  # GridAttentionBlock3D, inter = x: theta, phi, psi, W (conv + BN)
        return conv(x, x, 2, bias=False) + conv(g, x) + conv(x, 1) + conv(x, x) + 2 * x

    total = double_conv(in_channels, f[0]) + sum(double_conv(f[i], f[i + 1]) for i in range(4))
    total += conv(f[4], f[4]) + 2 * f[4]  # gating signal: 1x1 conv + BN
    total += sum(2 * gate(f[i], f[i + 1]) + conv(2 * f[i], f[i]) + 2 * f[i] for i in (1, 2, 3))  # 2 gates + combine
    total += sum(double_conv(f[i] + f[i + 1], f[i]) for i in range(4))  # UnetUp3_CT
    total += sum(conv(f[i], classes) for i in range(4)) + conv(4 * classes, classes)  # dsv1..4 and final
    return total


def test_oktay2018_preset_is_the_authors_ct_model():
    net = get_network("attention_unet_oktay2018", spatial_dims=3, in_channels=1, out_channels=2)
    assert isinstance(net, AttentionUNet)
    assert [level.gate.heads for level in net.decoder] == [2, 2, 2]
    assert all(isinstance(level.up.project, torch.nn.Identity) for level in net.decoder)  # the authors' decoder
    assert net.output_fusion and net.fuse.in_channels == 4 * 2  # 4 decoder heads fused by a 1x1 conv
    assert net.encoder[0].conv_0.conv.bias is not None  # their double convs have biases
    assert [m.out_channels for m in net.encoder[0].children()] == [16, 16]  # widths 64..1024 / feature_scale 4
    assert sum(p.numel() for p in net.parameters()) == _authors_ct_model_parameters(in_channels=1, classes=2)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_sinha2021_preset_is_resnext101_32x8d_with_the_authors_init():
    small = {"backbone_widths": (8, 16, 16, 32), "feature_channels": 8}  # the preset's structure at tiny widths
    net = get_network("ms_guided_attention_sinha2021", spatial_dims=2, in_channels=1, out_channels=5, **small)
    assert isinstance(net, MultiScaleGuidedAttentionNet) and net.num_steps == 2
    resnet = net.encoder.resnet
    assert [len(layer) for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)] == [3, 4, 23, 3]
    assert {m.groups for m in resnet.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1} == {32}
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight[0].numel() * m.out_channels > 500]
    for conv in convs[:5]:  # Xavier-normal: std sqrt(2 / (fan_in + fan_out)), backbone included
        fan_in = conv.weight[0].numel()
        fan_out = conv.out_channels * conv.weight[0, 0].numel()
        expected = (2 / (fan_in + fan_out)) ** 0.5
        assert abs(float(conv.weight.std()) / expected - 1) < 0.25
    norms = torch.cat([m.weight for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(float(norms.mean()) - 1) < 0.01 and 0.015 < float(norms.std()) < 0.025
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 5, 64, 64)


@pytest.mark.slow
def test_sinha2021_preset_backbone_has_resnext101_32x8d_parameters():
    net = get_network("ms_guided_attention_sinha2021", spatial_dims=2, in_channels=1, out_channels=5)
    # torchvision's resnext101_32x8d has 88,791,336 parameters: less its 2048 x 1000 classifier and the two input
    # channels a grey-scale stem does not have (64 x 2 x 7 x 7)
    assert sum(p.numel() for p in net.encoder.parameters()) == 88_791_336 - (2048 * 1000 + 1000) - 64 * 2 * 49


def test_required_input_multiple_without_building():
    assert required_input_multiple("attention_unet", spatial_dims=3, strides=[[2, 2, 1], 2, 2, 2]) == [16, 16, 8]
    assert required_input_multiple("attention_unet_oktay2018", spatial_dims=3) == [16, 16, 16]
    assert required_input_multiple("ms_guided_attention", spatial_dims=2, backbone="resnet18") == [32, 32]
    assert required_input_multiple("ms_guided_attention_sinha2021", spatial_dims=3) == [32, 32, 32]
