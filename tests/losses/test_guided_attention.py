"""GuidedAttentionLoss against a term-by-term computation; the Attention U-Net's MONAI deep-supervision loss."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss

from medattn3d.losses import GuidedAttentionLoss
from medattn3d.losses.guided_attention import stackable_dice_ce, stacked_dice_ce
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


@pytest.mark.parametrize(
    "options",
    [{}, {"include_background": False}, {"lambda_dice": 0.3, "lambda_ce": 1.7}, {"smooth_nr": 0.0, "smooth_dr": 1e-6}],
)
@pytest.mark.parametrize("chunks", [True, False])
def test_stacked_dice_ce_equals_monai_per_prediction(options, chunks):
    """All predictions at once: MONAI's DiceCELoss values and gradients per prediction, whether the predictions are
    chunks of one tensor (read in place) or separate tensors (stacked)."""
    torch.manual_seed(0)
    loss = DiceCELoss(to_onehot_y=True, softmax=True, **options)
    base = torch.randn(5 * 3, 4, 12, 10, 6, requires_grad=True)
    predictions = list(base.chunk(5)) if chunks else [p.clone() for p in base.chunk(5)]
    target = torch.randint(0, 3, (3, 1, 12, 10, 6)).float()  # class 3 absent: its Dice rests on the smoothing
    assert stackable_dice_ce(loss, predictions, target)
    weights = torch.tensor([1.0, 0.5, 2.0, 0.0, 3.0])
    ours = stacked_dice_ce(loss, predictions, target)
    (grad,) = torch.autograd.grad((ours * weights).sum(), base)
    expected = torch.stack([loss(p, target) for p in predictions])
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), base)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-5 * float(expected_grad.abs().max()))


def test_other_segmentation_losses_are_called_per_prediction(guided_output):
    target = torch.randint(0, 3, (2, 1, 32, 32)).float()
    batch_dice = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)  # Dice over the batch: not stackable
    assert not stackable_dice_ce(batch_dice, guided_output["scale_logits"], target)
    assert not stackable_dice_ce(DiceCELoss(softmax=True), guided_output["scale_logits"], target)
    value = GuidedAttentionLoss(batch_dice, fused_weight=0.5)(guided_output, target)
    out = guided_output
    seg = sum(batch_dice(p, target) for p in out["scale_logits"]) + 0.5 * batch_dice(out["logits"][0], target)
    guided = sum(F.mse_loss(out["latents"][s], out["latents"][4 + s]) for s in range(4))
    recon = sum(F.mse_loss(r, x) for x, r in zip(out["reconstruction_inputs"], out["reconstructions"], strict=True))
    assert torch.allclose(value, seg + 0.25 * guided + 0.1 * recon, rtol=1e-5)


def test_guided_loss_gradients_equal_the_term_by_term_loss(guided_output):
    """The bundle's loss (DiceCE, fused term weight 1) on the network's training output: the value and the gradient
    reaching the predictions (chunks of one tensor, which the loss reads in place) equal the per-prediction MONAI
    computation's."""
    target = torch.randint(0, 3, (2, 1, 32, 32)).float()
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    out = guided_output
    predictions = out["scale_logits"] + out["logits"]
    stacked = predictions[0]._base
    assert stacked is not None and all(p._base is stacked for p in predictions)
    value = GuidedAttentionLoss(dice_ce, fused_weight=1.0, guided_weight=0.0, reconstruction_weight=0.0)(out, target)
    reference = sum(dice_ce(p, target) for p in predictions)
    assert torch.allclose(value, reference, rtol=1e-5)
    (ours,) = torch.autograd.grad(value, stacked, retain_graph=True)
    (theirs,) = torch.autograd.grad(reference, stacked)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))
