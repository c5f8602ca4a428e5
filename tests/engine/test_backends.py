"""Optional runtimes (OpenVINO, ONNX Runtime) give the PyTorch network's predictions."""

from pathlib import Path

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from medattn3d.engine import PrecisionInferer, prepare_for_inference
from medattn3d.engine.backends import RuntimeNetwork, check_runtime
from medattn3d.networks import AttentionUNet

SMALL = {"channels": (8, 16, 32, 64), "strides": (2, 2, 2)}
TINY = {"channels": (4, 8, 8), "strides": (2, 2)}  # the cache tests: conversion time grows with depth


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_runtime_matches_pytorch_in_a_sliding_window(runtime):
    pytest.importorskip(runtime)
    torch.manual_seed(0)
    net = AttentionUNet(3, 1, 3, **SMALL).eval()
    x = torch.randn(1, 1, 40, 36, 20)
    window = SlidingWindowInferer((32, 32, 16), sw_batch_size=3, overlap=0.25, mode="gaussian")  # last batch smaller
    with torch.no_grad():
        expected = window(x, net)
        served = prepare_for_inference(net, precision="fp32", runtime=runtime)
        assert isinstance(served, RuntimeNetwork)
        got = PrecisionInferer(window, precision="fp32")(x, served)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-3
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_openvino_bf16_under_autocast_agrees_with_pytorch():
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    net = AttentionUNet(3, 1, 3, **SMALL).eval()
    x = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():
        expected = net(x)
        got = PrecisionInferer(SimpleInferer(), precision="bf16")(
            x, prepare_for_inference(net, "bf16", runtime="openvino")
        )
    assert (got - expected).abs().max() / expected.abs().max() < 0.05
    assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.97


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_openvino_f32_serves_the_guided_network_with_unpadded_attention(spatial_dims, tmp_path, monkeypatch):
    """In f32 the guided network is traced for OpenVINO with q/k at their own width (faster there, round 8); the
    served model still gives PyTorch's output, and the network keeps its padding for PyTorch afterwards."""
    pytest.importorskip("openvino")
    from medattn3d.engine import backends
    from medattn3d.networks import MultiScaleGuidedAttentionNet
    from medattn3d.networks.blocks.dual_attention import PositionAttention

    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    net = MultiScaleGuidedAttentionNet(
        spatial_dims, 1, 3, backbone="resnet10", backbone_widths=(8, 16, 16, 32), feature_channels=8
    ).eval()
    attention = [m for m in net.modules() if isinstance(m, PositionAttention)]
    pads = [m.pad_qk for m in attention]
    assert attention and all(pad > 0 for pad in pads)
    for module in attention:
        torch.nn.init.constant_(module.gamma, 0.7)  # the attention term counts in the output
    traced_pads = []
    convert = backends._convert_openvino

    def spy(network, example, unpadded_attention=False, threads=None):
        traced_pads.append(unpadded_attention)
        return convert(network, example, unpadded_attention, threads)

    monkeypatch.setattr(backends, "_convert_openvino", spy)
    x = torch.randn(1, 1, *([32] * spatial_dims))
    with torch.no_grad():
        expected = net(x)
        got = PrecisionInferer(SimpleInferer(), "fp32")(x, prepare_for_inference(net, "fp32", runtime="openvino"))
    assert traced_pads == [True] and [m.pad_qk for m in attention] == pads
    unet = AttentionUNet(3, 1, 2, **TINY).eval()  # no position attention: traced as before, its cache key unchanged
    with torch.no_grad():
        served_unet = prepare_for_inference(unet, "fp32", runtime="openvino")
        PrecisionInferer(SimpleInferer(), "fp32")(torch.randn(1, 1, 16, 16, 8), served_unet)
    assert traced_pads == [True, False]
    assert (got - expected).abs().max() < 1e-3 * max(1.0, float(expected.abs().max()))


def test_unpadded_position_attention_computes_the_same_function():
    from medattn3d.networks.blocks.dual_attention import PositionAttention, unpadded_position_attention

    torch.manual_seed(0)
    module = PositionAttention(3, 32).eval()
    torch.nn.init.constant_(module.gamma, 1.0)
    x = torch.randn(1, 32, 6, 5, 4)
    with torch.no_grad():
        padded = module(x)
        with unpadded_position_attention(module):
            assert module.pad_qk == 0
            unpadded = module(x)
    assert module.pad_qk == 28 and torch.allclose(padded, unpadded, atol=1e-5)


def test_smallest_trace_window_is_each_axis_stated_multiple():
    from medattn3d.engine.backends import smallest_trace_window
    from medattn3d.networks import MultiScaleGuidedAttentionNet

    unet = AttentionUNet(3, 1, 2, **SMALL)  # strides 2, 2, 2: multiples of 8
    assert smallest_trace_window(unet, torch.zeros(1, 2, 96, 64, 24)) == (8, 8, 8)
    assert smallest_trace_window(unet, torch.zeros(1, 1, 8, 8, 8)) is None  # already the smallest
    assert smallest_trace_window(unet, torch.zeros(1, 1, 96, 60, 24)) is None  # not a whole number of them
    guided = MultiScaleGuidedAttentionNet(2, 1, 2, backbone="resnet10", backbone_widths=(8, 16, 16, 32))
    assert smallest_trace_window(guided, torch.zeros(1, 1, 96, 64)) == (32, 32)
    assert smallest_trace_window(torch.nn.Conv3d(1, 2, 3), torch.zeros(1, 1, 32, 32, 32)) is None  # states none


@pytest.mark.parametrize("agrees", [True, False])
def test_openvino_traces_at_the_smallest_window_and_falls_back_when_it_disagrees(agrees, monkeypatch):
    """The network is traced at its smallest window and reshaped to the real one when that model gives PyTorch's
    output on the real window; else it is traced again at the real window. Either way the served model agrees."""
    pytest.importorskip("openvino")
    from medattn3d.engine import backends

    traced = []
    trace, check = backends._trace_openvino, backends._reshaped_model_agrees

    def spy(network, example, shape):
        traced.append(tuple(example.shape[2:]))
        return trace(network, example, shape)

    checks = []

    def judged(model, network, example, threads=None):
        checks.append(check(model, network, example, threads))  # the real check, on a model that does agree
        return agrees and checks[-1]

    monkeypatch.setattr(backends, "_trace_openvino", spy)
    monkeypatch.setattr(backends, "_reshaped_model_agrees", judged)
    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", "")
    torch.manual_seed(0)
    net = AttentionUNet(3, 1, 3, **SMALL).eval()
    x = torch.randn(2, 1, 32, 24, 16)
    with torch.no_grad():
        expected = net(x)
        got = RuntimeNetwork(net, "openvino", precision="fp32")(x)
    assert checks == [True]
    assert traced == ([(8, 8, 8)] if agrees else [(8, 8, 8), (32, 24, 16)])
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-3 * max(1.0, float(expected.abs().max()))


def test_a_network_that_cannot_run_at_its_smallest_window_is_traced_at_the_real_one(monkeypatch):
    """Instance norm refuses the one-voxel deepest map of the smallest window: the shortcut fails, and the
    network is converted at the real window instead, serving PyTorch's output."""
    pytest.importorskip("openvino")
    from medattn3d.engine import backends

    traced = []
    trace = backends._trace_openvino

    def spy(network, example, shape):
        traced.append(tuple(example.shape[2:]))
        return trace(network, example, shape)

    monkeypatch.setattr(backends, "_trace_openvino", spy)
    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", "")
    torch.manual_seed(0)
    net = AttentionUNet(3, 1, 2, norm="instance", **SMALL).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = net(x)
        got = RuntimeNetwork(net, "openvino", precision="fp32")(x)
    assert traced == [(8, 8, 8), (16, 16, 16)]
    assert (got - expected).abs().max() < 1e-3 * max(1.0, float(expected.abs().max()))


def test_a_reshaped_model_of_other_weights_is_rejected():
    """The agreement check is not a formality: a model whose function differs (here: other weights) fails it."""
    pytest.importorskip("openvino")
    from medattn3d.engine.backends import _reshaped_model_agrees, _trace_openvino

    torch.manual_seed(0)
    net, other = AttentionUNet(3, 1, 3, **SMALL).eval(), AttentionUNet(3, 1, 3, **SMALL).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert _reshaped_model_agrees(_trace_openvino(net, x[..., :8, :8, :8], x.shape), net, x)
        assert not _reshaped_model_agrees(_trace_openvino(other, x[..., :8, :8, :8], x.shape), net, x)


def test_unknown_runtime_is_refused_in_one_line():
    with pytest.raises(ValueError, match="runtime must be one of"):
        check_runtime("tensorrt")


def test_auto_runtime_is_openvino_on_cpu_where_installed_and_torch_elsewhere():
    from medattn3d.engine.backends import resolve_runtime

    try:
        import openvino  # noqa: F401

        expected = "openvino"
    except ImportError:
        expected = "torch"
    assert resolve_runtime("auto", "cpu") == expected
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("torch", "cpu") == "torch"


def _served(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return RuntimeNetwork(net, "openvino", precision="fp32")(x)


def test_openvino_model_is_converted_once_and_served_from_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from medattn3d.engine import backends

    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", str(tmp_path))
    net = AttentionUNet(3, 1, 2, **TINY).eval()
    x = torch.randn(2, 1, 16, 16, 8)
    first = _served(net, x)
    cached = list((tmp_path / "openvino").glob("*/model.xml"))
    assert len(cached) == 1 and cached[0].with_suffix(".bin").is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds this network")

    monkeypatch.setattr(backends, "_convert_openvino", no_conversion)
    copy = AttentionUNet(3, 1, 2, **TINY).eval()
    copy.load_state_dict(net.state_dict())
    again = _served(copy, x)
    assert torch.equal(first, again)
    with torch.no_grad():
        assert (again - net(x)).abs().max() < 1e-3


def test_changed_weights_or_window_get_their_own_cached_model(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", str(tmp_path))
    net = AttentionUNet(3, 1, 2, **TINY).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    _served(net, x)
    with torch.no_grad():
        next(net.parameters()).add_(0.5)
        expected = net(x)
    assert (_served(net, x) - expected).abs().max() < 1e-3  # the new weights, not the cached old model
    _served(net, torch.randn(1, 1, 16, 16, 16))
    assert len(list((tmp_path / "openvino").glob("*/model.xml"))) == 3


def test_an_empty_cache_setting_converts_in_memory(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from medattn3d.engine.backends import openvino_cache_dir

    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert openvino_cache_dir() is None
    net = AttentionUNet(3, 1, 2, **TINY).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        assert (_served(net, x) - net(x)).abs().max() < 1e-3
    assert not any(tmp_path.rglob("*.xml"))


def test_a_failed_cache_write_serves_the_model_from_memory_and_leaves_nothing(tmp_path, monkeypatch):
    openvino = pytest.importorskip("openvino")
    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", str(tmp_path))

    def disk_full(model, path, *args, **kwargs):
        Path(path).write_text("<half")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(openvino, "save_model", disk_full)
    net = AttentionUNet(3, 1, 2, **TINY).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        assert (_served(net, x) - net(x)).abs().max() < 1e-3
    cache = tmp_path / "openvino"
    assert not list(cache.glob(".staging-*")) and not list(cache.glob("*/model.*"))  # no half-written entry


@pytest.mark.parametrize("damage", ["truncate the weights", "delete the weights"])
def test_a_damaged_cache_entry_is_converted_again(tmp_path, monkeypatch, damage):
    pytest.importorskip("openvino")
    monkeypatch.setenv("MEDATTN3D_CACHE_DIR", str(tmp_path))
    net = AttentionUNet(3, 1, 2, **TINY).eval()
    x = torch.randn(1, 1, 16, 16, 8)
    _served(net, x)
    (weights,) = (tmp_path / "openvino").glob("*/model.bin")
    if damage == "delete the weights":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:100])
    with torch.no_grad():
        assert (_served(net, x) - net(x)).abs().max() < 1e-3
    assert weights.stat().st_size > 100  # the entry was written again, whole


def test_a_batch_runs_on_parallel_streams_and_gives_each_input_its_own_result():
    pytest.importorskip("openvino")
    from medattn3d.engine.backends import OpenVINOServer

    net = AttentionUNet(3, 1, 2, **TINY).eval()
    x = torch.randn(3, 1, 16, 16, 8)  # an odd batch: the last stream gets one input
    served = RuntimeNetwork(net, "openvino", precision="fp32")
    with torch.no_grad():
        batch = served(x)
        server = served._compiled
        assert isinstance(server, OpenVINOServer)
        if server._parallel_requests() < 2:
            pytest.skip("OpenVINO picks a single stream on this machine")
        assert server._latency is None  # batches alone never compile the one-input model
        one_by_one = torch.cat([served(x[i : i + 1]) for i in range(3)])
        expected = net(x)
    assert (batch - one_by_one).abs().max() < 1e-4
    assert (batch - expected).abs().max() < 1e-3
