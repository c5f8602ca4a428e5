"""AttentionUNet: shapes, train/eval outputs, gradients, TorchScript, errors, attention maps, and the training-speed
helpers (channel concatenation, small-grid convolution) against plain PyTorch."""

import contextlib
import copy

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from medattn3d.engine.conv_guard import ShallowConv3dInFp32
from medattn3d.networks import AttentionUNet, attention_unet
from medattn3d.networks.blocks import DoubleConv, attention_gate
from medattn3d.networks.blocks.conv import SmallGridConv3d
from medattn3d.networks.utils import cat_channels

SMALL = {"channels": (4, 8, 16, 32), "strides": (2, 2, 2)}


@pytest.mark.parametrize(
    ("spatial_dims", "size", "strides"),
    [
        (2, (32, 32), (2, 2, 2)),
        (2, (48, 24), (2, 2, 2)),
        (3, (16, 16, 16), (2, 2, 2)),
        (3, (24, 16, 8), (2, 2, 2)),
        (3, (32, 32, 8), ((2, 2, 1), (2, 2, 2), (2, 2, 1))),  # anisotropic, e.g. thick-slice CT
    ],
)
def test_output_shape_matches_input(spatial_dims, size, strides):
    net = AttentionUNet(spatial_dims, 2, 3, channels=SMALL["channels"], strides=strides).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 2, *size))
    assert y.shape == (2, 3, *size)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision_output_feeds_monai_loss_and_gradients_reach_every_parameter(spatial_dims):
    net = AttentionUNet(spatial_dims, 1, 3, **SMALL, deep_supervision=True, output_fusion=True, dropout=0.1)
    x = torch.randn(2, 1, *([16] * spatial_dims))
    outputs = net.train()(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    assert [tuple(o.shape[2:]) for o in outputs] == [(16,) * spatial_dims, (8,) * spatial_dims, (4,) * spatial_dims]
    # float labels, as MONAI loaders give: DeepSupervisionLoss resizes them with nearest-exact
    label = torch.randint(0, 3, (2, 1, *([16] * spatial_dims))).float()
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))(outputs, label)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reached {missing}"
    assert isinstance(net.eval()(x), torch.Tensor)


def test_deep_supr_num_limits_the_heads():
    net = AttentionUNet(3, 1, 2, **SMALL, deep_supervision=True, deep_supr_num=1).train()
    outputs = net(torch.randn(2, 1, 16, 16, 16))
    assert len(outputs) == 2 and outputs[1].shape[2:] == (8, 8, 8)


def test_without_deep_supervision_train_mode_returns_a_tensor():
    net = AttentionUNet(2, 1, 2, **SMALL).train()
    assert isinstance(net(torch.randn(2, 1, 16, 16)), torch.Tensor)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torchscript_matches_eager(spatial_dims):
    net = AttentionUNet(spatial_dims, 1, 2, **SMALL, deep_supervision=True, output_fusion=True).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *([16] * spatial_dims))
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)
        eager_logits, eager_maps = net.forward_with_attention(x)
        script_logits, script_maps = scripted.forward_with_attention(x)
    assert torch.allclose(script_logits, eager_logits, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(script_maps, eager_maps, strict=True))


def test_attention_maps_do_not_change_the_output():
    net = AttentionUNet(3, 1, 2, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2), attention_heads=2).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        logits, maps = net.forward_with_attention(x)
        assert torch.equal(logits, net(x))
    assert [tuple(m.shape) for m in maps] == [(1, 2, 16, 16, 16), (1, 2, 8, 8, 8), (1, 2, 4, 4, 4)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)


def test_bad_input_size_names_axis_and_multiple():
    net = AttentionUNet(3, 1, 2, **SMALL)
    with pytest.raises(ValueError, match=r"spatial axis 2 has size 12, which is not a multiple of 8.*pad it to 16"):
        net(torch.randn(1, 1, 16, 16, 12))


def test_wrong_channel_count_and_rank_are_explained():
    net = AttentionUNet(3, 2, 2, **SMALL)
    with pytest.raises(ValueError, match=r"expected 2 input channel\(s\) but the input has 1"):
        net(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"expected a 5D batch"):
        net(torch.randn(2, 16, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": (4, 8), "strides": (2,)}, "at least 3 levels"),
        ({"channels": (4, 8, 16), "strides": (2,)}, r"len\(strides\) must be"),
        ({"channels": (4, 8, 16), "strides": (2, 2), "deep_supervision": True, "deep_supr_num": 3}, "deep_supr_num"),
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        AttentionUNet(**args)


def test_kernel_size_reaches_every_double_conv():
    net = AttentionUNet(2, 1, 2, **SMALL, kernel_size=5)
    sizes = {m.kernel_size for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and "conv_" in n}
    assert sizes == {(5, 5)}


def test_authors_decoder_without_up_projection():
    net = AttentionUNet(3, 1, 2, **SMALL, up_projection=False)
    assert all(isinstance(level.up.project, torch.nn.Identity) for level in net.decoder)
    # the double conv reads skip + full coarse width, as in the authors' UnetUp3_CT
    assert net.final_up.conv.conv_0.conv.in_channels == SMALL["channels"][0] + SMALL["channels"][1]
    y = net.eval()(torch.randn(1, 1, 16, 16, 16))
    assert y.shape == (1, 2, 16, 16, 16)


def test_required_input_multiple_is_the_product_of_the_strides():
    strides = ((2, 2, 1), (2, 2, 2), (2, 2, 1))
    assert AttentionUNet.required_input_multiple(3, strides) == [8, 8, 2]
    # the constructor's keywords are accepted as they are (a planner passes the whole network_def)
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": (4, 8, 16, 32), "strides": strides}
    assert AttentionUNet.required_input_multiple(**kwargs) == AttentionUNet(**kwargs).multiples == [8, 8, 2]
    assert AttentionUNet.required_input_multiple(2) == [16, 16]


def test_attention_map_names_follow_forward_with_attention():
    net = AttentionUNet(3, 1, 2, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2)).eval()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        _, maps = net.forward_with_attention(torch.randn(1, 1, 32, 32, 32))
    assert net.attention_map_names() == scripted.attention_map_names() == ["gate_level1", "gate_level2", "gate_level3"]
    assert len(maps) == len(net.attention_map_names())


def test_conv_bias_and_authors_init():
    plain = AttentionUNet(3, 1, 2, **SMALL)
    assert plain.encoder[0].conv_0.conv.bias is None
    authors = AttentionUNet(3, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), conv_bias=True, init="authors")
    conv = authors.encoder[1][1].conv_1.conv
    assert conv.bias is not None and torch.any(conv.bias != 0)  # PyTorch's default bias init, as the authors keep
    # Kaiming-normal (fan in) weights: std sqrt(2 / fan_in)
    fan_in = conv.weight[0].numel()
    assert abs(float(conv.weight.std()) / (2 / fan_in) ** 0.5 - 1) < 0.1
    norms = torch.cat([m.weight for m in authors.modules() if isinstance(m, torch.nn.BatchNorm3d)])
    assert abs(float(norms.mean()) - 1) < 0.01 and 0.015 < float(norms.std()) < 0.025  # N(1, 0.02)
    with pytest.raises(ValueError, match="init must be 'kaiming' or 'authors'"):
        AttentionUNet(3, 1, 2, **SMALL, init="xavier")


class _PassThrough(torch.nn.Module):
    """A gate forced open: the skip unchanged, coefficients 1."""

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.ones_like(x[:, :1])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_without_gates_it_is_the_gated_network_with_its_gates_replaced_by_the_identity(spatial_dims):
    kwargs = {"channels": (4, 8, 16, 32), "strides": (2, 2, 2), "deep_supervision": True, "output_fusion": True}
    gated = AttentionUNet(spatial_dims, 1, 3, **kwargs)
    plain = AttentionUNet(spatial_dims, 1, 3, **kwargs, attention_gates=False)
    gated_keys, plain_keys = set(gated.state_dict()), set(plain.state_dict())
    # same network otherwise: every parameter of the plain one is in the gated one; the rest are the gates'
    assert plain_keys < gated_keys
    assert all(".gate." in k or k.startswith("gating.") for k in gated_keys - plain_keys)
    # copy the shared weights, force the gated network's gates open: the two compute the same function
    gated.load_state_dict(plain.state_dict(), strict=False)
    for level in gated.decoder:
        level.gate = _PassThrough()
    x = torch.randn(2, 1, *([16] * spatial_dims))
    with torch.no_grad():
        assert torch.equal(gated.eval()(x), plain.eval()(x))
        train_outputs = zip(gated.train()(x), plain.train()(x), strict=True)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in train_outputs)


def test_without_gates_every_parameter_trains_and_no_maps_are_returned():
    net = AttentionUNet(3, 1, 2, **SMALL, attention_gates=False).train()
    net(torch.randn(2, 1, 16, 16, 16)).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())  # no unused parameters (DDP needs none)
    net.eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        logits, maps = scripted.forward_with_attention(x)
        assert torch.allclose(logits, net(x), atol=1e-6)
    assert maps == [] and net.attention_map_names() == scripted.attention_map_names() == []


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_channel_cat_gives_torch_cat_gradients_contiguous_in_the_incoming_layout(spatial_dims):
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    size = (2, 3, *([6] * spatial_dims))
    a = torch.randn(size).contiguous(memory_format=layout).requires_grad_()
    b = torch.randn(size[:1] + (5,) + size[2:]).contiguous(memory_format=layout).requires_grad_()
    upstream = torch.randn(size[:1] + (8,) + size[2:]).contiguous(memory_format=layout)
    reference = torch.autograd.grad(torch.cat([a, b], dim=1), [a, b], upstream)
    assert not reference[0].is_contiguous(memory_format=layout)  # what plain cat hands back: a strided slice
    out = cat_channels([a, b])
    assert torch.equal(out, torch.cat([a, b], dim=1))
    grads = torch.autograd.grad(out, [a, b], upstream)
    assert all(torch.equal(g, r) for g, r in zip(grads, reference, strict=True))
    assert all(g.is_contiguous(memory_format=layout) for g in grads)


def test_channel_cat_of_mixed_dtypes_promotes_like_cat_and_returns_each_input_its_own_gradient_dtype():
    a = torch.randn(2, 3, 4, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(2, 2, 4, 4, 4, requires_grad=True)
    out = cat_channels([a, b])
    assert out.dtype == torch.float32 and torch.equal(out, torch.cat([a, b], dim=1))
    out.square().sum().backward()
    assert a.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.float32
    assert torch.equal(b.grad, 2 * b.detach()) and torch.equal(a.grad, (2 * a.detach().float()).bfloat16())


@pytest.mark.parametrize("autocast", [False, True])
def test_training_step_equals_the_one_with_plain_cat(monkeypatch, autocast):
    """The fast concatenation changes the gradients' memory layout only: same outputs, same gradients."""
    torch.manual_seed(0)
    net = AttentionUNet(3, 1, 3, **SMALL, deep_supervision=True).to(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 16, 16, 8).contiguous(memory_format=torch.channels_last_3d)

    def step(model):
        # under bf16, with the shallow-input guard the bundles' trainer applies (PrecisionInferer): without it oneDNN's
        # bf16 weight gradient of the 2 x 2 x 1 level is wrong (garbage, 1e26 x the gradients' scale, on a CPU that
        # emulates bf16 once any other network has run: engine/conv_guard.py), whichever concatenation feeds it
        guard = ShallowConv3dInFp32() if autocast else contextlib.nullcontext()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), guard:
            outputs = model.train()(x)
            sum(o.float().square().mean() for o in outputs).backward()
        return [o.detach().float() for o in outputs], [p.grad for p in model.parameters()]

    fast_out, fast_grads = step(copy.deepcopy(net))
    monkeypatch.setattr(attention_unet, "cat_channels", lambda ts: torch.cat(ts, dim=1))
    monkeypatch.setattr(attention_gate, "cat_channels", lambda ts: torch.cat(ts, dim=1))
    plain_out, plain_grads = step(copy.deepcopy(net))
    assert all(torch.equal(a, b) for a, b in zip(fast_out, plain_out, strict=True))
    scale = max(float(g.abs().max()) for g in plain_grads)
    tolerance = 2e-2 if autocast else 1e-5  # bf16: only the summation order of the backward differs
    assert all(float((a - b).abs().max()) <= tolerance * scale for a, b in zip(fast_grads, plain_grads, strict=True))


def _conv_pair(bias: bool) -> tuple[torch.nn.Conv3d, SmallGridConv3d]:
    reference = torch.nn.Conv3d(6, 5, 3, padding=1, bias=bias)
    fast = copy.deepcopy(reference)
    fast.__class__ = SmallGridConv3d
    return reference, fast


@pytest.mark.parametrize("bias", [False, True])
def test_small_grid_conv_has_the_conv_outputs_and_gradients_in_bf16_training(bias):
    reference, fast = _conv_pair(bias)
    x = torch.randn(2, 6, 4, 5, 3).contiguous(memory_format=torch.channels_last_3d)
    results = []
    for conv in (reference, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        y.float().square().sum().backward()
        results.append((y, xi.grad, conv.weight.grad, conv.bias.grad if bias else None))
    assert "ConvGemmWeightGrad" in type(y.grad_fn).__name__  # the GEMM path ran
    (y_ref, gx_ref, gw_ref, gb_ref), (y_fast, gx_fast, gw_fast, gb_fast) = results
    assert torch.equal(y_fast, y_ref) and torch.equal(gx_fast, gx_ref)
    # the weight gradient against an independent fp64 one on the same bf16-rounded tensors
    upstream = 2 * y_ref.detach().double()
    expected = torch.nn.grad.conv3d_weight(x.bfloat16().double(), gw_ref.shape, upstream, padding=1)
    assert torch.allclose(gw_fast.double(), expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max()))
    assert torch.allclose(gw_fast, gw_ref, rtol=2e-2, atol=2e-2 * float(gw_ref.abs().max()))
    if bias:
        assert torch.allclose(gb_fast.double(), upstream.sum(dim=(0, 2, 3, 4)), rtol=1e-2)
        assert torch.allclose(gb_fast, gb_ref, rtol=2e-2)


def test_small_grid_conv_is_the_plain_conv_outside_bf16_training():
    reference, fast = _conv_pair(True)
    x = torch.randn(2, 6, 4, 5, 3, requires_grad=True)
    assert type(fast(x).grad_fn).__name__ == "ConvolutionBackward0"  # fp32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fast(x), reference(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        large = torch.randn(2, 6, 16, 16, 8)  # 4096 positions: oneDNN's own weight gradient is faster there
        assert type(fast(large).grad_fn).__name__ == "ConvolutionBackward0"
        shallow = torch.randn(2, 6, 4, 4, 2)  # shallower than the kernel: the conv3d guard's case
        assert type(fast(shallow).grad_fn).__name__ == "ConvolutionBackward0"


def test_double_conv_uses_the_small_grid_conv_in_3d_only_and_keeps_the_state_dict_keys():
    net = AttentionUNet(3, 1, 2, **SMALL)
    convs = [block.conv for double in net.modules() if isinstance(double, DoubleConv) for block in double]
    assert convs and all(type(conv) is SmallGridConv3d for conv in convs)
    assert not any(isinstance(m, SmallGridConv3d) for m in AttentionUNet(2, 1, 2, **SMALL).modules())
    assert all(k.endswith((".conv.weight", ".conv.bias")) for k in net.state_dict() if ".conv_0.conv." in k)
