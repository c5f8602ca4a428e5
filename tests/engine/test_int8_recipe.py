"""An INT8 IR made with an older quantization recipe is still served, with a one-line warning naming the fix."""

import pytest
import torch

from medattn3d.networks import AttentionUNet


def _ir(tmp_path, float_layers: str | None):
    ov = pytest.importorskip("openvino")
    net = AttentionUNet(3, 1, 2, channels=(4, 8, 8), strides=(2, 2)).eval()
    with torch.no_grad():
        model = ov.convert_model(net, example_input=torch.zeros(1, 1, 16, 16, 16))
    model.reshape([-1, 1, 16, 16, 16])  # as export leaves it: the window fixed, the batch free
    if float_layers is not None:
        model.set_rt_info(float_layers, ["medattn3d", "float_layers"])
    path = tmp_path / "models" / "model_int8.xml"
    path.parent.mkdir(parents=True)
    ov.save_model(model, str(path))
    return path


def test_an_ir_of_the_old_recipe_warns_and_names_the_export_command(tmp_path):
    from medattn3d.engine.backends import IRNetwork

    path = _ir(tmp_path, None)
    with pytest.warns(UserWarning, match=r"older recipe .*every convolution in int8.*medattn3d export --bundle"):
        network = IRNetwork(path)
    assert network(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_an_ir_of_todays_recipe_is_served_without_a_warning(tmp_path, recwarn):
    from medattn3d.engine.backends import IRNetwork
    from medattn3d.engine.quantize import DEFAULT_FLOAT_LAYERS

    IRNetwork(_ir(tmp_path, ",".join(DEFAULT_FLOAT_LAYERS)))
    assert not [w for w in recwarn if "recipe" in str(w.message)]


def test_export_continue_redoes_an_ir_of_the_old_recipe_only(tmp_path, capsys):
    from medattn3d.cli import _current_int8
    from medattn3d.engine.quantize import DEFAULT_FLOAT_LAYERS

    assert not _current_int8(_ir(tmp_path / "old", None))
    assert "older recipe" in capsys.readouterr().out
    assert _current_int8(_ir(tmp_path / "new", ",".join(DEFAULT_FLOAT_LAYERS)))
