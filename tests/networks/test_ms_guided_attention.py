"""MultiScaleGuidedAttentionNet: shapes, training outputs, gradients, TorchScript, pretrained weights, errors."""

import pytest
import torch

from medattn3d.networks import MultiScaleGuidedAttentionNet
from medattn3d.networks.blocks import PositionAttention
from medattn3d.networks.blocks.resnet_encoder import ResNetEncoder

TINY = {"backbone": "resnet10", "backbone_widths": (8, 16, 16, 32), "feature_channels": 8}


def _tiny(spatial_dims: int, **kwargs) -> MultiScaleGuidedAttentionNet:
    return MultiScaleGuidedAttentionNet(spatial_dims, 1, 3, **{**TINY, **kwargs})


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, (64, 64)), (2, (48, 80)), (3, (32, 32, 32)), (3, (48, 32, 16))])
def test_eval_returns_logits_at_input_size(spatial_dims, size):
    net = _tiny(spatial_dims).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *size)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_outputs_have_the_documented_structure(spatial_dims):
    net = _tiny(spatial_dims).train()
    size = (32,) * spatial_dims
    out = net(torch.randn(2, 1, *size))
    assert set(out) == {"logits", "scale_logits", "latents", "reconstruction_inputs", "reconstructions"}
    assert len(out["logits"]) == 1 and out["logits"][0].shape == (2, 3, *size)
    assert len(out["scale_logits"]) == 2 * net.num_scales
    assert all(p.shape == (2, 3, *size) for p in out["scale_logits"])
    # the fused output is the mean of the last step's per-scale predictions
    last = torch.stack(out["scale_logits"][net.num_scales :]).mean(0)
    assert torch.allclose(out["logits"][0], last, atol=1e-5)
    n = net.num_steps * net.num_scales
    assert len(out["latents"]) == len(out["reconstruction_inputs"]) == len(out["reconstructions"]) == n
    for a, b in zip(out["reconstruction_inputs"], out["reconstructions"], strict=True):
        assert a.shape == b.shape == (2, 2 * TINY["feature_channels"], *(s // 4 for s in size))
    # latents of successive steps pair up per scale for the guided loss
    assert out["latents"][0].shape == out["latents"][net.num_scales].shape


def test_gradients_reach_every_parameter():
    net = _tiny(2, num_steps=3).train()
    for m in net.modules():  # gamma starts at 0, which would block the attention projections' gradients
        if hasattr(m, "gamma"):
            torch.nn.init.constant_(m.gamma, 0.5)
    out = net(torch.randn(2, 1, 32, 32))
    loss = sum(p.square().mean() for key in out for p in out[key])
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reached {missing}"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torchscript_matches_eager(spatial_dims):
    net = _tiny(spatial_dims).eval()
    for m in net.modules():
        if hasattr(m, "gamma"):
            torch.nn.init.constant_(m.gamma, 0.3)
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *([32] * spatial_dims))
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
    scripted.train()
    assert set(scripted(torch.randn(2, 1, *([32] * spatial_dims)))) == {
        "logits",
        "scale_logits",
        "latents",
        "reconstruction_inputs",
        "reconstructions",
    }


def test_attention_maps_do_not_change_the_output():
    net = _tiny(3).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        logits, maps = net.forward_with_attention(x)
        assert torch.equal(logits, net(x))
    assert len(maps) == net.num_steps * net.num_scales
    assert all(m.shape == (1, 1, 8, 8, 8) and float(m.min()) == 0.0 and float(m.max()) == 1.0 for m in maps)


def test_position_attention_modules_exist_per_step_and_scale():
    net = _tiny(2, num_steps=3)
    assert sum(isinstance(m, PositionAttention) for m in net.modules()) == 3 * net.num_scales
    # one encoder-decoder per step, shared by the scales
    assert len({id(step.semantic) for step in net.steps}) == 3


def test_bad_input_size_and_channels_are_explained():
    net = _tiny(3)
    with pytest.raises(ValueError, match=r"axis 1 has size 40, which is not a multiple of 16"):
        net(torch.randn(1, 1, 32, 40, 32))
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\) but the input has 3"):
        net(torch.randn(1, 3, 32, 32, 32))
    with pytest.raises(ValueError, match="unknown backbone depth 'resnet11'"):
        MultiScaleGuidedAttentionNet(3, 1, 2, backbone="resnet11")


def test_pretrained_backbone_loads_from_a_local_file(tmp_path):
    source = ResNetEncoder(3, 1, "resnet10", widths=(8, 16, 16, 32))
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.resnet.state_dict().items()}}, path)
    net = _tiny(3, pretrained_backbone=str(path))
    for key, value in source.resnet.state_dict().items():
        assert torch.equal(net.encoder.resnet.state_dict()[key], value), key


def test_pretrained_backbone_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: pretrained backbone weights not found"):
        _tiny(3, pretrained_backbone=str(tmp_path / "missing.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt: cannot read as a PyTorch checkpoint"):
        _tiny(3, pretrained_backbone=str(garbage))
    other = tmp_path / "other.pt"
    torch.save(ResNetEncoder(3, 1, "resnet10").resnet.state_dict(), other)  # default widths: shapes differ
    with pytest.raises(ValueError, match=r"other\.pt: does not match the backbone: .* of another shape"):
        _tiny(3, pretrained_backbone=str(other))
