"""GuidedAttentionLoss against a term-by-term computation; the Attention U-Net's MONAI deep-supervision loss."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss

from medattn3d.losses import GuidedAttentionLoss
from medattn3d.networks import AttentionUNet, MultiScaleGuidedAttentionNet


@pytest.fixture
def guided_output():
    net = MultiScaleGuidedAttentionNet(2, 1, 3, backbone="resnet10", backbone_widths=(8, 8, 16, 16), feature_channels=8)
    return net.train()(torch.randn(2, 1, 32, 32))


def test_guided_loss_equals_its_terms(guided_output):
    target = torch.randint(0, 3, (2, 1, 32, 32)).float()
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    loss = GuidedAttentionLoss(dice_ce, seg_weight=0.5, fused_weight=2.0, guided_weight=0.25, reconstruction_weight=0.1)
    value = loss(guided_output, target)
    out = guided_output
    seg = sum(dice_ce(p, target) for p in out["scale_logits"])  # 8 predictions
    fused = dice_ce(out["logits"][0], target)
    guided = sum(F.mse_loss(out["latents"][s], out["latents"][4 + s]) for s in range(4))  # step 1 vs 2 per scale
    recon = sum(F.mse_loss(r, x) for x, r in zip(out["reconstruction_inputs"], out["reconstructions"], strict=True))
    expected = 0.5 * seg + 2.0 * fused + 0.25 * guided + 0.1 * recon
    assert torch.allclose(value, expected, rtol=1e-5)
    assert len(out["scale_logits"]) == 8 and len(out["latents"]) == 8
    value.backward()


def test_guided_loss_defaults_are_the_authors_objective(guided_output):
    """8 segmentation terms + 0.25 x guided + 0.1 x reconstruction, nothing on the averaged prediction."""
    target = torch.randint(0, 3, (2, 1, 32, 32)).float()
    ce = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0)  # plain cross-entropy, as the authors
    out = guided_output
    value = GuidedAttentionLoss(ce)(out, target)
    labels = target[:, 0].long()
    seg = sum(F.cross_entropy(p, labels) for p in out["scale_logits"])
    guided = sum(F.mse_loss(out["latents"][s], out["latents"][4 + s]) for s in range(4))
    recon = sum(F.mse_loss(r, x) for x, r in zip(out["reconstruction_inputs"], out["reconstructions"], strict=True))
    assert torch.allclose(value, seg + 0.25 * guided + 0.1 * recon, rtol=1e-5)
    assert not hasattr(GuidedAttentionLoss(), "last_terms")  # no per-step host syncs for values nobody reads


def test_guided_loss_on_an_eval_tensor_is_the_segmentation_loss():
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8)).float()
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    assert torch.allclose(GuidedAttentionLoss(dice_ce)(logits, target), dice_ce(logits, target))


def test_attention_unet_deep_supervision_loss_weights_the_heads():
    net = AttentionUNet(3, 1, 2, channels=(4, 8, 16, 32), strides=(2, 2, 2), deep_supervision=True).train()
    outputs = net(torch.randn(2, 1, 16, 16, 16))
    target = torch.randint(0, 2, (2, 1, 16, 16, 16)).float()
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    value = DeepSupervisionLoss(dice_ce, weight_mode="exp")(outputs, target)
    resized = [F.interpolate(target, size=o.shape[2:], mode="nearest-exact") for o in outputs]
    expected = sum(0.5**i * dice_ce(o, t) for i, (o, t) in enumerate(zip(outputs, resized, strict=True)))
    assert torch.allclose(value, expected, rtol=1e-5)
