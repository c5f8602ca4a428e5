"""benchmarks/gradcam_vs_attention.py: Grad-CAM taken where it should be (MONAI's GradCAM on the last decoder
block, not rescaled) and the gate maps the explainer would show, checked against independent computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.gradcam_vs_attention import explain_case, saliency_maps
from medattn3d.explain import AttentionPredictor
from medattn3d.networks import AttentionUNet

SMALL = {"channels": (4, 8, 16, 32), "strides": (2, 2, 2)}


def test_gradcam_at_the_last_decoder_block_is_the_rectified_class_logit():
    # the output head is a 1x1 convolution of the last decoder block, so d(sum of logit c)/d(feature k) is the head
    # weight w_ck everywhere: Grad-CAM's channel weights are (w_ck * voxels) / voxels and its map relu(logit_c - b_c)
    network = AttentionUNet(3, 1, 3, **SMALL).eval()
    image = torch.randn(1, 20, 24, 16)  # padded to 24 x 24 x 16 inside, cropped back
    prediction, gates, gradcams, _ = saliency_maps(network, image, [1, 2], ["final_up"])
    padded = F.pad(image, (0, 0, 0, 0, 0, 4))[None]
    with torch.no_grad():
        logits = network(padded)[0, :, :20]
        expected_gates = AttentionPredictor(network)(padded)
    assert np.array_equal(prediction, logits.argmax(0).numpy())
    for c in (1, 2):
        rectified = torch.relu(logits[c] - network.head.bias[c]).detach().numpy()
        assert np.allclose(gradcams["gradcam_final_up"][c], rectified, atol=1e-4 * float(np.abs(rectified).max()))
    for name in ("gate_level1", "gate_level2"):
        assert np.allclose(gates[name], expected_gates[name][0, 0, :20].numpy(), atol=1e-6)


def test_case_scores_every_map_on_every_class():
    network = AttentionUNet(3, 1, 3, **SMALL).eval()
    label = np.zeros((24, 24, 16), np.int64)
    label[4:12, 4:12, 4:10], label[14:20, 14:20, 6:12] = 1, 2
    result = explain_case(network, torch.randn(1, 24, 24, 16), label, [1, 2], ["final_up", "decoder.0.up"])
    assert set(result["ratios"]) == {"gate_level1", "gate_level2", "gradcam_final_up", "gradcam_decoder.0.up"}
    assert all(set(r) == {1, 2} for r in result["ratios"].values())
    assert set(result["auc"]) == set(result["ratios"])
    assert all(0 <= v <= 1 for v in result["auc"]["gate_level1"].values())
    assert all(0 <= d <= 1 for d in result["dice"].values())


def test_unknown_target_layer_is_named():
    with pytest.raises(SystemExit, match=r"'decoder\.9' is not a module of AttentionUNet"):
        saliency_maps(AttentionUNet(3, 1, 3, **SMALL).eval(), torch.randn(1, 16, 16, 16), [1], ["decoder.9"])
