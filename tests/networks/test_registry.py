"""Network registry and MONAI bundle-config instantiation."""

import json

import pytest
import torch
from monai.bundle import ConfigParser

from medattn3d.networks import NETWORKS, AttentionUNet, MultiScaleGuidedAttentionNet, get_network


def test_short_names_build_the_registered_classes():
    assert isinstance(get_network("attention_unet", spatial_dims=2, in_channels=1, out_channels=2), AttentionUNet)
    net = get_network("MS-Guided-Attention", spatial_dims=2, in_channels=1, out_channels=2, backbone="resnet10")
    assert isinstance(net, MultiScaleGuidedAttentionNet)
    assert set(NETWORKS) == {"attention_unet", "ms_guided_attention"}


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown network 'unet3'; available: attention_unet, ms_guided_attention"):
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
