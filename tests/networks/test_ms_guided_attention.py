"""MultiScaleGuidedAttentionNet: shapes, training outputs, gradients, TorchScript, pretrained weights, errors."""

import copy

import pytest
import torch

from medattn3d.networks import MultiScaleGuidedAttentionNet
from medattn3d.networks.blocks import PositionAttention
from medattn3d.networks.blocks.resnet_encoder import ResNetEncoder, ZeroPadShortcut

TINY = {"backbone": "resnet10", "backbone_widths": (8, 16, 16, 32), "feature_channels": 8}


def _tiny(spatial_dims: int, **kwargs) -> MultiScaleGuidedAttentionNet:
    return MultiScaleGuidedAttentionNet(spatial_dims, 1, 3, **{**TINY, **kwargs})


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, (64, 64)), (2, (64, 96)), (3, (32, 32, 32)), (3, (64, 32, 32))])
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
    with pytest.raises(ValueError, match=r"axis 1 has size 48, which is not a multiple of 32.*pad it to 64"):
        net(torch.randn(1, 1, 32, 48, 32))
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


def test_required_input_multiple_is_the_backbone_stride():
    assert MultiScaleGuidedAttentionNet.required_input_multiple(3, backbone="resnet18") == [32, 32, 32]
    assert _tiny(2).multiples == MultiScaleGuidedAttentionNet.required_input_multiple(2) == [32, 32]


def test_training_refuses_a_single_voxel_deepest_stage_with_a_clear_error():
    net = _tiny(3).train()
    with pytest.raises(ValueError, match=r"leaves one voxel in the backbone's deepest stage"):
        net(torch.randn(1, 1, 32, 32, 32))
    assert set(net(torch.randn(1, 1, 64, 32, 32))) >= {"logits"}  # 2 voxels deep: BatchNorm works
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)  # eval uses running stats


def test_attention_map_names_follow_forward_with_attention():
    net = _tiny(2, num_steps=3).eval()
    names = net.attention_map_names()
    assert names[:5] == ["step1_scale1", "step1_scale2", "step1_scale3", "step1_scale4", "step2_scale1"]
    assert names[-1] == "step3_scale4"
    with torch.no_grad():
        _, maps = net.forward_with_attention(torch.randn(1, 1, 32, 32))
    assert len(maps) == len(names)
    assert torch.jit.script(net).attention_map_names() == names


def _medicalnet_state_dict(depth: str) -> dict[str, torch.Tensor]:
    """Random weights in MedicalNet's checkpoint layout, written from its architecture (not from our modules):
    ``module.`` prefixed keys, 7^3 stride-2 stem from 1 channel, BasicBlocks, shortcut A (no downsample keys)
    for resnet18/34, B (1x1 conv + BN, no bias) for resnet10, no ``num_batches_tracked``."""
    blocks = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}[depth]
    shortcut_b = depth == "resnet10"
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        state.update({f"{prefix}.weight": torch.rand(c) * 0.5 + 0.25, f"{prefix}.bias": torch.randn(c) * 0.1})
        state.update({f"{prefix}.running_mean": torch.randn(c) * 0.1, f"{prefix}.running_var": torch.rand(c) + 0.5})

    def conv(*shape: int) -> torch.Tensor:
        return torch.randn(*shape) * (2 / (shape[1] * shape[2] ** 3)) ** 0.5

    state["conv1.weight"] = conv(64, 1, 7, 7, 7)
    bn("bn1", 64)
    cin = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        for b in range(count):
            prefix = f"layer{stage + 1}.{b}"
            state[f"{prefix}.conv1.weight"] = conv(planes, cin, 3, 3, 3)
            bn(f"{prefix}.bn1", planes)
            state[f"{prefix}.conv2.weight"] = conv(planes, planes, 3, 3, 3)
            bn(f"{prefix}.bn2", planes)
            if b == 0 and stage > 0 and shortcut_b:
                state[f"{prefix}.downsample.0.weight"] = conv(planes, cin, 1, 1, 1)
                bn(f"{prefix}.downsample.1", planes)
            cin = planes
    return {f"module.{k}": v for k, v in state.items()}


@pytest.mark.parametrize(
    ("depth", "shortcut"),
    [("resnet10", "B"), ("resnet18", "A"), pytest.param("resnet34", "A", marks=pytest.mark.slow)],
)
def test_medicalnet_weights_load(tmp_path, depth, shortcut):
    state = _medicalnet_state_dict(depth)
    path = tmp_path / f"{depth}_23dataset.pth"
    torch.save({"state_dict": state}, path)
    net = MultiScaleGuidedAttentionNet(
        3, 1, 2, backbone=depth, feature_channels=8, shortcut_type=shortcut, pretrained_backbone=str(path)
    )
    own = net.encoder.resnet.state_dict()
    assert {k for k in own if not k.endswith("num_batches_tracked")} == {k.removeprefix("module.") for k in state}
    for key, value in state.items():
        assert torch.equal(own[key.removeprefix("module.")], value), key
    assert any(isinstance(m, ZeroPadShortcut) for m in net.modules()) == (shortcut == "A")


def test_shortcut_a_network_scripts_and_matches_eager():
    net = _tiny(3, backbone="resnet18", shortcut_type="A").eval()
    assert sum(isinstance(m, ZeroPadShortcut) for m in net.modules()) == 3  # the first blocks of stride-2 stages 2-4
    for m in net.modules():
        if hasattr(m, "gamma"):
            torch.nn.init.constant_(m.gamma, 0.3)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-5)


def test_zero_pad_shortcut_is_monai_shortcut_a_with_gradients():
    from monai.networks.nets.resnet import ResNet

    x = torch.randn(2, 8, 6, 6, 6, requires_grad=True)
    expected = ResNet._downsample_basic_block(None, x, planes=16, stride=2, spatial_dims=3)
    out = ZeroPadShortcut(3, planes=16, stride=2)(x)
    assert torch.equal(out, expected)
    assert torch.equal(out[:, :8], x[:, :, ::2, ::2, ::2]) and not torch.any(out[:, 8:])
    out.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) == 2 * 8 * 27  # the identity part carries gradients


def test_resnext_backbone_and_bad_shortcut():
    net = _tiny(3, backbone="resnext50_32x4d", backbone_widths=(16, 16, 32, 32))
    assert net.encoder.out_channels == [64, 64, 128, 128]
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    with pytest.raises(ValueError, match="shortcut_type must be 'A', 'B' or None"):
        _tiny(3, shortcut_type="C")


def test_eval_runs_the_shared_encoder_decoder_once_on_all_scales_with_the_same_result():
    net = _tiny(3).eval()
    for m in net.modules():
        if hasattr(m, "gamma"):
            torch.nn.init.constant_(m.gamma, 0.4)
        if isinstance(m, torch.nn.BatchNorm3d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    step = net.steps[0]
    features = [torch.randn(2, 8, 8, 8, 8) for _ in range(net.num_scales)]
    guides = [torch.randn(2, 8, 8, 8, 8) for _ in range(net.num_scales)]
    with torch.no_grad():
        attended, latents, inputs, recons = step(features, guides)
        for s in range(net.num_scales):  # one call per scale, as in training mode
            stacked = torch.cat([features[s], guides[s]], dim=1)
            latent, recon = step.semantic(stacked)
            assert torch.equal(inputs[s], stacked)
            assert torch.allclose(latents[s], latent, atol=1e-5) and torch.allclose(recons[s], recon, atol=1e-5)
            assert torch.allclose(attended[s], step.modules_per_scale[s](stacked, recon), atol=1e-5)


def _plain_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy whose convolutions are PyTorch's own classes again (no kernel trimming)."""
    plain = copy.deepcopy(module)
    for m in plain.modules():
        for cls in (torch.nn.Conv2d, torch.nn.Conv3d):
            if isinstance(m, cls):
                m.__class__ = cls
    return plain


@pytest.mark.parametrize(("spatial_dims", "size"), [(3, (64, 64, 32)), (2, (64, 32))])
def test_encoder_trimmed_kernels_on_single_voxel_axes_match_plain_convolutions(spatial_dims, size):
    """The deepest stage is 2 x 2 x 1 (3D) / 2 x 1 (2D): its 3^d convolutions skip the taps that only meet padding,
    with the plain convolutions' values and gradients, the same state-dict keys, and TorchScript unaffected."""
    torch.manual_seed(0)
    encoder = ResNetEncoder(spatial_dims, 1, "resnet18", (8, 8, 16, 16)).train()
    plain = _plain_copy(encoder)
    x = torch.randn(2, 1, *size)
    ours, theirs = encoder(x), plain(x)
    assert ours[-1].shape[-1] == 1 and encoder.resnet.layer4[1].conv1._trimmable_axes(ours[-1]) == [spatial_dims - 1]
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in ours).backward()
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in theirs).backward()
    for (name, p), q in zip(encoder.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-4), name
    assert list(encoder.state_dict()) == list(plain.state_dict())
    with torch.no_grad():
        scripted = torch.jit.script(encoder.eval())
        for a, b in zip(scripted(x), plain.eval()(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_training_runs_the_shared_encoder_decoder_batched_with_per_scale_batch_norm(monkeypatch):
    """Training batches the scales through the shared encoder-decoder, each BatchNorm per scale: the same outputs,
    gradients and running statistics as one call per scale (the authors' loop, kept for TorchScript)."""
    from medattn3d.networks.blocks.guided_attention import SemanticEncoderDecoder

    torch.manual_seed(0)
    net = _tiny(3).train()
    for m in net.modules():
        if hasattr(m, "gamma"):
            torch.nn.init.constant_(m.gamma, 0.3)
    looped = copy.deepcopy(net)
    x = torch.randn(2, 1, 32, 32, 64)
    batched_calls = []
    original = SemanticEncoderDecoder.forward_groups

    def spy(self, inputs, groups):
        batched_calls.append(inputs.shape[0])
        return original(self, inputs, groups)

    monkeypatch.setattr(SemanticEncoderDecoder, "forward_groups", spy)
    ours = net(x)
    monkeypatch.setattr(SemanticEncoderDecoder, "forward_groups", lambda self, inputs, groups: None)
    theirs = looped(x)
    assert batched_calls == [2 * net.num_scales] * net.num_steps
    for key in ours:
        for a, b in zip(ours[key], theirs[key], strict=True):
            assert torch.allclose(a, b, atol=1e-5), key
    _backward_with_fixed_weights(ours), _backward_with_fixed_weights(theirs)
    _assert_same_gradients(net, looped)
    for (name, a), b in zip(net.named_buffers(), looped.buffers(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def _backward_with_fixed_weights(output: dict) -> None:
    tensors = [t for key in sorted(output) for t in output[key]]
    sum((t * torch.linspace(-1, 1, t.numel()).view_as(t)).sum() for t in tensors).backward()


def _assert_same_gradients(net: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Gradients equal up to float rounding, measured against the largest gradient (a convolution bias before a
    BatchNorm has an exactly-zero gradient, i.e. pure rounding noise, which no relative tolerance can compare)."""
    scale = max(float(p.grad.abs().max()) for p in reference.parameters())
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale), name


@pytest.mark.parametrize(("spatial_dims", "size"), [(3, (32, 32, 64)), (2, (64, 96))])
def test_training_heads_upsample_like_interpolate(spatial_dims, size):
    """The training heads' separable upsampling (and the fused prediction taken before it) give F.interpolate's
    predictions and gradients; the returned predictions are consecutive chunks of one tensor, in order."""
    import torch.nn.functional as F

    import medattn3d.networks.ms_guided_attention as module

    torch.manual_seed(0)
    net = _tiny(spatial_dims).train()
    reference = copy.deepcopy(net)
    x = torch.randn(2, 1, *size)
    ours = net(x)
    mode = "trilinear" if spatial_dims == 3 else "bilinear"
    original = module._upsample_stacked
    module._upsample_stacked = lambda low, size: (
        [F.interpolate(t.float(), size=size, mode=mode, align_corners=False) for t in low[:-1]]
        + [torch.stack([F.interpolate(t, size=size, mode=mode) for t in low[net.num_scales : -1]]).mean(0)]
    )
    try:
        theirs = reference(x)
    finally:
        module._upsample_stacked = original
    for key in ("scale_logits", "logits"):
        for a, b in zip(ours[key], theirs[key], strict=True):
            assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5), key
    chunks = ours["scale_logits"] + ours["logits"]
    assert all(c.data_ptr() == chunks[0].data_ptr() + i * c.numel() * 4 for i, c in enumerate(chunks))
    _backward_with_fixed_weights(ours), _backward_with_fixed_weights(theirs)
    _assert_same_gradients(net, reference)


@pytest.mark.parametrize(("n_in", "n_out"), [(16, 64), (8, 32), (5, 13), (7, 7), (12, 5)])
def test_linear_interpolation_matrix_is_interpolate(n_in, n_out):
    import torch.nn.functional as F

    from medattn3d.networks.ms_guided_attention import _linear_interpolation_matrix

    x = torch.randn(3, 2, n_in)
    expected = F.interpolate(x, size=n_out, mode="linear", align_corners=False)
    assert torch.allclose(x @ _linear_interpolation_matrix(n_in, n_out, x.device).t(), expected, atol=1e-6)


def test_encoder_stem_runs_in_fp32_under_bf16_autocast():
    """With one input channel the stem convolution runs in fp32 under CPU autocast (bf16 kernels are slower there)
    and hands on its bf16 rounding, as a bf16 convolution would hand on bf16."""
    torch.manual_seed(0)
    encoder = ResNetEncoder(3, 1, "resnet10", (8, 8, 16, 16)).train()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stem = encoder._stem(x)
        features = encoder(x)
    assert stem.dtype == torch.bfloat16 and features[0].dtype == torch.bfloat16
    assert torch.equal(stem, encoder.resnet.conv1(x).to(torch.bfloat16))
    sum(f.float().sum() for f in features).backward()
    assert encoder.resnet.conv1.weight.grad is not None and encoder.resnet.conv1.weight.grad.dtype == torch.float32
