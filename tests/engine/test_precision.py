"""PrecisionInferer: fp32 is exact, bf16 autocast stays close, outputs come back float32 in every structure."""

import pytest
import torch
from monai.inferers import SimpleInferer, SliceInferer, SlidingWindowInferer

from medattn3d.engine.precision import (
    PrecisionInferer,
    PrepareForInference,
    autocast_dtype,
    cpu_prefers_bf16,
    prepare_for_inference,
)
from medattn3d.networks import AttentionUNet, MultiScaleGuidedAttentionNet

SMALL = {"channels": (8, 16, 32, 64), "strides": (2, 2, 2)}


@pytest.fixture
def net3d():
    return AttentionUNet(3, 1, 3, **SMALL).eval()


def test_fp32_channels_first_is_the_plain_inferer(net3d):
    x = torch.randn(1, 1, 40, 32, 24)
    window = SlidingWindowInferer((32, 32, 16), sw_batch_size=2, overlap=0.25, mode="gaussian")
    with torch.no_grad():
        expected = window(x, net3d)
        got = PrecisionInferer(window, precision="fp32", channels_last=False)(x, net3d)
    assert torch.equal(got, expected)


def test_channels_last_changes_layout_not_values(net3d):
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        expected = net3d(x)
        got = PrecisionInferer(SimpleInferer(), precision="fp32", channels_last=True)(x, net3d)
    assert torch.allclose(got, expected, atol=1e-5)
    assert net3d.head.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_bf16_is_close_to_fp32_and_returns_float32(net3d):
    x = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():
        reference = net3d(x)
        got = PrecisionInferer(SimpleInferer(), precision="bf16")(x, net3d)
    assert got.dtype == torch.float32
    assert (got - reference).abs().max() / reference.abs().max() < 0.05
    assert (got.argmax(1) == reference.argmax(1)).float().mean() > 0.97


def test_training_outputs_are_cast_back_and_backpropagate():
    net = AttentionUNet(3, 1, 2, **SMALL, deep_supervision=True).train()
    outputs = PrecisionInferer(SimpleInferer(), precision="bf16")(torch.randn(2, 1, 16, 16, 16), net)
    assert isinstance(outputs, list) and all(o.dtype == torch.float32 for o in outputs)
    sum(o.mean() for o in outputs).backward()
    assert net.head.weight.grad is not None and net.head.weight.dtype == torch.float32


def test_slice_inferer_runs_a_2d_network_over_a_volume():
    net = AttentionUNet(2, 1, 3, **SMALL).eval()
    inferer = PrecisionInferer(SliceInferer(roi_size=(32, 32), spatial_dim=2, sw_batch_size=4), precision="bf16")
    with torch.no_grad():
        out = inferer(torch.randn(1, 1, 32, 32, 6), net)
    assert out.shape == (1, 3, 32, 32, 6) and out.dtype == torch.float32


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if cpu_prefers_bf16() else None)
    with pytest.raises(ValueError, match="precision must be one of"):
        PrecisionInferer(SimpleInferer(), precision="int8")


def measured(speedup: float | None):
    """A stand-in for the bf16 matmul probe: ``speedup`` (``None``: the probe must not run)."""

    def probe() -> float:
        if speedup is None:
            raise AssertionError("the bf16 probe ran where the CPU's flags decide")
        return speedup

    return probe


@pytest.mark.parametrize(
    ("flags", "speedup", "expected"),
    [
        ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, None, None),  # emulated: never, no probe
        ({"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, 2.4, torch.bfloat16),  # AMD EPYC (round 7)
        ({"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, 0.5, None),  # Intel, AMX hidden (round 9)
        ({"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, 1.1, None),  # not clearly faster: fp32
        ({"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, 1.2, torch.bfloat16),  # the threshold itself
        ({"avx2": True, "amx_bf16": True}, None, torch.bfloat16),  # AMX: always, no probe
    ],
)
def test_auto_picks_bf16_only_where_it_beats_fp32(monkeypatch, flags, speedup, expected):
    """oneDNN also "supports" bf16 on plain AVX-512 by emulating it (4x slower than fp32 there), and AVX512-BF16
    alone can be slower than fp32: auto goes by the CPU's native bf16 flags, then by the measured speed-up."""
    import medattn3d.engine.precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "measured_bf16_speedup", measured(speedup))
    assert precision.cpu_supports_bf16() is bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    assert autocast_dtype("auto", cpu) == expected
    assert autocast_dtype("bf16", cpu) == torch.bfloat16  # asked for by name: always honoured


def test_bf16_probe_is_fp32_time_over_bf16_time_of_the_same_product(monkeypatch):
    """On a clock that a bf16 product advances by 1 and an fp32 one by 2.5 the probe reads 2.5x, whatever an
    enclosing autocast says; every product multiplies two operands of the same dtype and shape."""
    import medattn3d.engine.precision as precision

    now = [0.0]
    seen = []

    def clocked_mm(a, b):
        seen.append((a.dtype, b.dtype, tuple(a.shape)))
        now[0] += 2.5 if a.dtype == torch.float32 else 1.0
        return a

    monkeypatch.setattr(torch, "mm", clocked_mm)
    monkeypatch.setattr(precision.time, "perf_counter", lambda: now[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert precision.bf16_matmul_speedup(size=64, repeats=3) == pytest.approx(2.5)
    assert len(seen) == 2 * (1 + 3) and {a for a, _, _ in seen} == {torch.float32, torch.bfloat16}
    assert all(a == b and shape == (64, 64) for a, b, shape in seen)


def test_bf16_by_name_on_a_cpu_without_native_bf16_warns_once(monkeypatch):
    """On AVX2-only CPUs PyTorch has no bf16 kernel (a matmul ~70x slower than fp32): a bundle or --precision that
    names bf16 gets told so, once; auto and fp32 stay silent."""
    import warnings

    import medattn3d.engine.precision as precision

    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 4, 4, 4)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2": True})
    precision._warn_slow_bf16.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("auto", "fp32"):
            PrecisionInferer(SimpleInferer(), precision=name, channels_last=False)(x, net)
        assert not [w for w in caught if "native bf16" in str(w.message)]
        for _ in range(2):
            PrecisionInferer(SimpleInferer(), precision="bf16", channels_last=False)(x, net)
    messages = [str(w.message) for w in caught if "native bf16" in str(w.message)]
    assert len(messages) == 1 and "precision 'bf16'" in messages[0] and "'auto'" in messages[0]
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512_bf16": True})
    for speedup, warned in ((2.4, False), (0.5, True)):  # AVX512-BF16 faster (AMD) / slower (Intel, AMX hidden)
        monkeypatch.setattr(precision, "measured_bf16_speedup", measured(speedup))
        precision._warn_slow_bf16.cache_clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                PrecisionInferer(SimpleInferer(), precision="bf16", channels_last=False)(x, net)
        messages = [str(w.message) for w in caught if "precision 'bf16'" in str(w.message)]
        assert len(messages) == int(warned)
        assert not warned or ("no faster than fp32" in messages[0] and "0.50x fp32's rate" in messages[0])
    precision._warn_slow_bf16.cache_clear()


def test_cpu_flags_agree_with_proc_cpuinfo():
    """The flags the decision goes by are this machine's own (an independent read of /proc/cpuinfo)."""
    from pathlib import Path

    import medattn3d.engine.precision as precision

    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    line = next((ln for ln in info.read_text().splitlines() if ln.startswith("flags")), None)
    if line is None:
        pytest.skip("/proc/cpuinfo lists no flags")
    native = {"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split())
    assert precision.cpu_supports_bf16() is bool(native)


def trained_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and scales, as after training (folding must carry them)."""
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            torch.nn.init.uniform_(module.running_mean, -0.5, 0.5)
            torch.nn.init.uniform_(module.running_var, 0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    return net


def test_folding_batch_norm_keeps_the_eval_output(net3d):
    trained_statistics(net3d)
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        expected = net3d(x)
        prepare_for_inference(net3d, precision="fp32", channels_last=False)
        got = PrecisionInferer(SimpleInferer(), precision="fp32", channels_last=False)(x, net3d)
    assert torch.allclose(got, expected, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net3d.modules())


def test_folding_reaches_the_resnet_backbone_of_the_guided_network():
    net = trained_statistics(_guided_net(3))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = net(x)
        prepare_for_inference(net, precision="fp32", channels_last=False)
        got = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    assert torch.allclose(got, expected, atol=1e-4 * expected.abs().max())


def test_prepare_handler_runs_once_when_the_engine_starts(net3d):
    from ignite.engine import Engine

    engine = Engine(lambda e, batch: None)
    PrepareForInference(net3d, precision="bf16").attach(engine)
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in net3d.modules())
    engine.run([0], max_epochs=1)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net3d.modules())
    assert all(p.dtype == torch.bfloat16 for p in net3d.parameters())


def _guided_net(spatial_dims: int) -> torch.nn.Module:
    widths = {"backbone_widths": (8, 16, 16, 32), "feature_channels": 8}
    return MultiScaleGuidedAttentionNet(spatial_dims, 1, 3, backbone="resnet10", **widths).eval()


@pytest.mark.parametrize(
    ("make_net", "shape"),
    [
        (lambda: AttentionUNet(3, 1, 3, **SMALL).eval(), (2, 1, 32, 32, 16)),
        (lambda: AttentionUNet(2, 1, 3, **SMALL).eval(), (2, 1, 64, 48)),
        (lambda: _guided_net(3), (1, 1, 32, 32, 32)),
        (lambda: _guided_net(2), (1, 1, 64, 64)),
    ],
)
def test_bf16_weights_stay_close_to_fp32(make_net, shape):
    torch.manual_seed(0)
    net = make_net()
    x = torch.randn(shape)
    with torch.no_grad():
        reference = net(x)
        got = PrecisionInferer(SimpleInferer(), precision="bf16")(x, prepare_for_inference(net, precision="bf16"))
    assert all(p.dtype == torch.bfloat16 for p in net.parameters())
    assert got.dtype == torch.float32
    assert (got - reference).abs().max() / reference.abs().max() < 0.05
    assert (got.argmax(1) == reference.argmax(1)).float().mean() > 0.95


def test_training_networks_keep_fp32_weights_and_fp32_preparation_keeps_fp32():
    net = AttentionUNet(3, 1, 2, **SMALL).train()
    PrecisionInferer(SimpleInferer(), precision="bf16")(torch.randn(2, 1, 16, 16, 16), net)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    prepare_for_inference(net, precision="fp32")
    assert not net.training
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_int8_tip_quotes_the_speed_up_measured_on_cpus_of_this_class(monkeypatch, tmp_path):
    """``medattn3d infer`` suggests an INT8 model only where OpenVINO serves fp32 and INT8 was measured faster: int8
    dot products (round 5, and round 9's AVX512-BF16 that is slower than fp32) or AVX2 without them (round 8); never
    where bf16 beats fp32, with another precision or runtime, or
    when the bundle already has one."""
    pytest.importorskip("openvino")
    import medattn3d.engine.precision as precision
    from medattn3d.engine.runner import int8_would_help

    cpu = torch.device("cpu")
    tips = {}
    for name, flags in (
        ("vnni", {"avx2": True, "avx512_vnni": True}),
        ("avx2", {"avx2": True}),
        ("bf16", {"avx2": True, "avx512_vnni": True, "avx512_bf16": True}),
        ("slow bf16", {"avx2": True, "avx512_vnni": True, "avx512_bf16": True}),
        ("old", {"sse4_2": True}),
    ):
        monkeypatch.setattr(precision, "_cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(precision, "measured_bf16_speedup", measured(0.5 if name == "slow bf16" else 2.4))
        tips[name] = int8_would_help("auto", "auto", cpu, tmp_path)
        assert int8_would_help("auto", "fp32", cpu, tmp_path) is None
        assert int8_would_help("torch", "auto", cpu, tmp_path) is None
    assert tips["vnni"] == "2.5-3x" and tips["avx2"] == "about 1.9x" and tips["avx2"] != tips["vnni"]
    assert tips["bf16"] is None and tips["old"] is None and tips["slow bf16"] == "2.5-3x"
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2": True})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model_int8.xml").write_text("<net/>")
    assert int8_would_help("auto", "auto", cpu, tmp_path) is None
