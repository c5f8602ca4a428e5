"""INT8 export (NNCF post-training quantization to an OpenVINO IR) and the ``openvino-int8`` runtime that serves it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from medattn3d.engine import PrecisionInferer, prepare_for_inference
from medattn3d.engine.backends import IRNetwork
from medattn3d.engine.quantize import DEFAULT_FLOAT_LAYERS, float_layers, outdated_recipe, quantize_network, save_ir
from medattn3d.errors import InputError
from medattn3d.networks import AttentionUNet

WINDOW = (16, 16, 16)


def blobs(batch: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Smooth random fields (noise blurred by average pooling): bright and dark blobs a few voxels across."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 1, *(s + 4 for s in shape), generator=generator)
    smooth = torch.nn.functional.avg_pool3d(noise, 5, stride=1)
    return smooth / smooth.std()


@pytest.fixture(scope="module")
def network() -> AttentionUNet:
    torch.manual_seed(0)
    return AttentionUNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2)).eval()


@pytest.fixture(scope="module")
def int8_ir(network, tmp_path_factory):
    """The network quantized on 8 calibration patches and saved as <bundle>/models/model_int8.xml."""
    model = quantize_network(network, list(blobs(8, WINDOW, seed=1000)), fast_bias_correction=True)  # test speed
    return model, save_ir(model, tmp_path_factory.mktemp("bundle") / "models" / "model_int8.xml")


def test_int8_model_in_a_sliding_window_agrees_with_pytorch(network, int8_ir):
    model, xml = int8_ir
    # the model really is quantized: NNCF inserted FakeQuantize nodes (OpenVINO runs those layers in int8)
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) >= 10
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert [p.name for p in xml.parent.iterdir() if p.name.startswith(".tmp-")] == []

    x = blobs(1, (40, 36, 20), seed=2000)
    window = SlidingWindowInferer(WINDOW, sw_batch_size=3, overlap=0.25, mode="gaussian")  # last batch smaller
    with torch.no_grad():
        expected = window(x, network)
        served = prepare_for_inference(network, "fp32", runtime="openvino-int8", ir_path=xml)
        assert isinstance(served, IRNetwork)
        got = PrecisionInferer(window, precision="fp32")(x, served)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    difference = (got - expected).abs().max()
    # int8 rounding is real (the IR is not the fp32 network) but bounded: ~10 % of the logit range measured
    assert 0 < difference < 0.25 * (expected.max() - expected.min())
    agree = got.argmax(1) == expected.argmax(1)
    margin = (expected[:, 0] - expected[:, 1]).abs()
    assert agree.float().mean() > 0.95  # ~0.98 measured; flips sit where the fp32 classes nearly tie
    assert agree[margin > margin.median()].float().mean() > 0.995  # voxels the fp32 network clearly decides


def converted(network: torch.nn.Module):
    import openvino as ov

    with torch.no_grad():
        return ov.convert_model(network, example_input=torch.zeros(1, 1, *WINDOW))


def convolutions(model) -> dict[str, tuple[int, ...]]:
    """Every convolution of an OpenVINO model: name -> weight shape."""
    ops = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
    return {op.get_friendly_name(): tuple(op.input(1).get_partial_shape().to_shape()) for op in ops}


def int8_convolutions(model) -> set[str]:
    """The convolutions whose weights NNCF stored in int8 (an i8 constant dequantized by Convert/Multiply)."""

    def int8_constant(node) -> bool:
        if node.get_type_name() == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8")
        if node.get_type_name() in ("Convert", "Multiply", "Subtract"):
            return any(int8_constant(i.get_source_output().get_node()) for i in node.inputs())
        return False

    ops = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
    return {op.get_friendly_name() for op in ops if int8_constant(op.input(1).get_source_output().get_node())}


def test_float_layers_are_found_from_the_graph_and_left_unquantized(network, int8_ir):
    model = converted(network)
    shapes = convolutions(model)
    first, head, gates = (float_layers(model, [kind]) for kind in ("first", "head", "gates"))
    # checked against the PyTorch modules' weights: the 3x3x3 convolution from the 1 input channel, the 1x1 head to
    # the 2 classes, one 1x1 psi convolution to a single channel per attention gate
    assert [shapes[n] for n in first] == [tuple(network.encoder[0].conv_0.conv.weight.shape)] == [(4, 1, 3, 3, 3)]
    assert [shapes[n] for n in head] == [tuple(network.head.weight.shape)] == [(2, 4, 1, 1, 1)]
    psi = [tuple(m.psi.weight.shape) for m in network.modules() if hasattr(m, "psi")]
    assert sorted(shapes[n] for n in gates) == sorted(psi) == [(1, 8, 1, 1, 1)] * 2
    default = [n for kind in DEFAULT_FLOAT_LAYERS for n in float_layers(model, [kind])]
    assert sorted(float_layers(model)) == sorted(default)
    with pytest.raises(ValueError, match="float layer kinds"):
        float_layers(model, ["decoder"])

    quantized, _ = int8_ir  # the default recipe: first + head in float, every other convolution in int8
    quantized_shapes = convolutions(quantized)
    kept = set(quantized_shapes) - int8_convolutions(quantized)
    assert sorted(quantized_shapes[n] for n in kept) == [(2, 4, 1, 1, 1), (4, 1, 3, 3, 3)]
    assert len(quantized_shapes) == len(shapes) and outdated_recipe(quantized) is None


def test_an_int8_model_of_another_recipe_is_named_outdated():
    model = tiny_openvino_model(1.0)  # an export from before the float layers were recorded
    assert "every convolution in int8" in outdated_recipe(model)
    model.set_rt_info("", ["medattn3d", "float_layers"])  # keep_float=()
    assert "float layers none, today's default first,head" in outdated_recipe(model)
    model.set_rt_info(",".join(DEFAULT_FLOAT_LAYERS), ["medattn3d", "float_layers"])
    assert outdated_recipe(model) is None


def test_int8_model_refuses_another_window_in_one_line(int8_ir):
    _, xml = int8_ir
    with pytest.raises(ValueError, match=r"exported for inputs of 1x16x16x16 .* got 1x32x32x16"):
        IRNetwork(xml)(torch.zeros(1, 1, 32, 32, 16))


def test_missing_int8_model_names_the_file_and_the_export_command(tmp_path):
    net = AttentionUNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2))
    xml = tmp_path / "bundle" / "models" / "model_int8.xml"
    with pytest.raises(InputError) as err:
        prepare_for_inference(net, "fp32", runtime="openvino-int8", ir_path=xml)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(xml))
    assert f"medattn3d export --bundle {tmp_path / 'bundle'} --format openvino-int8" in message
    xml.parent.mkdir(parents=True)
    xml.write_text("<net/>")  # an .xml without its .bin is just as missing
    with pytest.raises(InputError, match=r"model_int8\.bin: no INT8 model"):
        IRNetwork(xml)
    with pytest.raises(ValueError, match="needs ir_path"):
        prepare_for_inference(net, "fp32", runtime="openvino-int8")


def tiny_openvino_model(scale: float):
    """An OpenVINO model ``y = x * scale`` built from opset nodes (no conversion: milliseconds)."""
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    return ov.Model([ops.multiply(x, ops.constant(np.full((1, 4), scale, np.float32)))], [x])


def test_save_ir_leaves_no_xml_without_its_bin(tmp_path, monkeypatch):
    import openvino as ov

    import medattn3d.engine.quantize as quantize

    xml = save_ir(tiny_openvino_model(2.0), tmp_path / "model_int8.xml")
    compiled = ov.Core().compile_model(str(xml), "CPU")
    assert compiled(np.array([[1, 2, 3, 4]], np.float32))[0].tolist() == [[2.0, 4.0, 6.0, 8.0]]

    real_replace = quantize.os.replace

    def failing_replace(src, dst):  # the .bin cannot be put in place (disk full, killed, ...)
        if str(dst).endswith(".bin"):
            raise OSError("no space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(quantize.os, "replace", failing_replace)
    with pytest.raises(OSError, match="no space"):
        save_ir(tiny_openvino_model(3.0), xml)
    # the old .xml went first, so no .xml is left pointing at weights of another export; no temporary files remain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.bin"]
    with pytest.raises(InputError, match="no INT8 model"):
        IRNetwork(xml)


@pytest.fixture(scope="module")
def tiny_bundle_with_data(tmp_path_factory):
    """The CLI tests' tiny random-weight bundle, trained-on data replaced by a tiny spleen CT dataset."""
    from tests.cli.conftest import make_tiny_bundle
    from tests.planning.datasets import write_spleen_ct

    root = tmp_path_factory.mktemp("int8")
    datalist = write_spleen_ct(root / "data")
    data = [f"dataset_dir={root / 'data'}", f"datalist={datalist}"]
    return make_tiny_bundle(root / "tiny"), data


def test_calibration_patches_are_the_bundles_training_windows_and_repeat_per_seed(tiny_bundle_with_data):
    from medattn3d.cli import parse_overrides
    from medattn3d.engine.quantize import calibration_patches

    bundle, data = tiny_bundle_with_data
    overrides = parse_overrides(data)
    patches = calibration_patches(bundle, 5, overrides, seed=0)
    assert len(patches) == 5 and all(p.shape == (1, 16, 16, 16) and p.dtype == torch.float32 for p in patches)
    # normalised as in training (CT: clip, then z-score with the planned mean/std), not raw HU in the hundreds
    assert all(p.abs().max() < 20 for p in patches) and torch.stack(patches).std() > 0.1
    again = calibration_patches(bundle, 5, overrides, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(patches, again, strict=True))
    other = calibration_patches(bundle, 5, overrides, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(patches, other, strict=True))


def test_cli_infer_without_the_int8_model_stops_at_once_naming_it(tiny_bundle_with_data, tmp_path, capsys):
    from medattn3d import cli
    from tests.cli.conftest import ct

    bundle, _ = tiny_bundle_with_data
    xml = bundle / "models" / "model_int8.xml"
    xml.unlink(missing_ok=True)
    volume = ct(tmp_path / "volume.nii.gz")
    infer = ["infer", "--bundle", str(bundle), "-i", str(volume), "-o", str(tmp_path / "out"), "--runtime"]
    assert cli.main([*infer, "openvino-int8"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: {xml}: no INT8 model: create it with `medattn3d export --bundle {bundle} --format openvino-int8`"
    )
    assert not (tmp_path / "out" / "volume_seg.nii.gz").exists()


@pytest.mark.slow
def test_cli_exports_int8_and_infers_with_it(tiny_bundle_with_data, tmp_path, capsys):
    from medattn3d import cli
    from tests.cli.conftest import ct

    bundle, data = tiny_bundle_with_data
    sets = [arg for item in data for arg in ("--set", item)]
    export = ["export", "--bundle", str(bundle), "--format", "openvino-int8", "--calibration-patches", "4", *sets]
    assert cli.main(export) == 0
    xml = bundle / "models" / "model_int8.xml"
    printed = capsys.readouterr().out
    assert f"wrote {xml}" in printed and xml.with_suffix(".bin").is_file()
    assert "Statistics collection" not in printed and "━" not in printed  # NNCF's progress bars stay silent
    assert cli.main([*export, "--continue"]) == 0 and f"kept {xml}" in capsys.readouterr().out

    volume = ct(tmp_path / "volume.nii.gz")
    infer = ["infer", "--bundle", str(bundle), "-i", str(volume), "--runtime", "openvino-int8"]
    assert cli.main([*infer, "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "volume_seg.nii.gz").is_file()

    weights = bundle / "models" / "model.pt"  # trained again after the export: the IR holds the old network
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match=r"model_int8\.xml: exported from an older model\.pt; run `medattn3d export"):
        IRNetwork(xml)
    xml.unlink()
