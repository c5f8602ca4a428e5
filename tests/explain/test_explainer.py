"""Attention explanations: maps in the input's geometry and in [0, 1], seamless blending, montage, index, ratios,
summary returned (not printed)."""

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from medattn3d.data import ct_transforms
from medattn3d.explain import (
    AttentionExplainer,
    AttentionPredictor,
    attention_names,
    attention_ratio,
    class_ratios,
    default_map,
    separation_auc,
    summary_lines,
)
from medattn3d.networks import AttentionUNet, MultiScaleGuidedAttentionNet
from tests.helpers import blob_mask, oblique_affine, save_nifti

SMALL = {"channels": (4, 8, 16, 32), "strides": (2, 2, 2)}


class ConstantAttentionNet(nn.Module):
    """Logits favouring class 1 and gate maps of a constant 0.7 at half and quarter resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.ModuleList([nn.Identity(), nn.Identity()])
        self.scale = nn.Parameter(torch.ones(1))

    def forward_with_attention(self, x):
        logits = torch.cat([torch.zeros_like(x), self.scale * torch.ones_like(x)], dim=1)
        maps = [torch.full((x.shape[0], 2, *(s // f for s in x.shape[2:])), 0.7) for f in (2, 4)]
        return logits, maps


def _volume(tmp_path, shape=(40, 36, 20)):
    rng = np.random.default_rng(0)
    image = save_nifti(rng.normal(0, 200, shape).astype(np.float32), oblique_affine(), tmp_path / "ct.nii.gz")
    label = save_nifti(blob_mask(shape), oblique_affine(), tmp_path / "ct_label.nii.gz")
    return image, label


@pytest.mark.parametrize(
    ("network", "names"),
    [
        (AttentionUNet(3, 1, 3, **SMALL), ["gate_level1", "gate_level2"]),
        (
            MultiScaleGuidedAttentionNet(
                3, 1, 3, backbone="resnet10", backbone_widths=(8, 8, 16, 16), feature_channels=8
            ),
            [f"step{k}_scale{s}" for k in (1, 2) for s in (1, 2, 3, 4)],
        ),
    ],
)
def test_predictor_returns_prediction_and_maps_at_input_size(network, names):
    out = AttentionPredictor(network.eval())(torch.randn(1, 1, 32, 32, 32))
    assert list(out) == ["pred", *names]
    assert all(v.shape[2:] == (32, 32, 32) for v in out.values())
    assert all(float(out[n].min()) >= 0 and float(out[n].max()) <= 1 for n in names)


def test_constant_attention_is_blended_without_seams_and_lands_in_the_input_geometry(tmp_path):
    image, _ = _volume(tmp_path)
    pre = ct_transforms("infer", pixdim=(1.5, 1.5, 2.0))
    inferer = SlidingWindowInferer((16, 16, 16), sw_batch_size=4, overlap=0.5, mode="gaussian")
    explainer = AttentionExplainer(ConstantAttentionNet(), pre, inferer, tmp_path / "out")
    explainer.run([str(image)])
    source = nib.load(str(image))
    for name in ("gate_level1", "gate_level2"):
        written = nib.load(str(tmp_path / "out" / f"ct_attention_{name}.nii.gz"))
        assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-4)
        assert np.allclose(np.asarray(written.dataobj), 0.7, atol=1e-5)


def test_explain_writes_maps_montage_index_and_ratios(tmp_path, capsys):
    image, label = _volume(tmp_path)
    network = AttentionUNet(3, 1, 3, **SMALL).eval()
    inferer = SlidingWindowInferer((32, 32, 16), sw_batch_size=2, overlap=0.25, mode="gaussian")
    explainer = AttentionExplainer(
        network,
        ct_transforms("infer", pixdim=(1.5, 1.5, 2.0)),
        inferer,
        tmp_path / "o",
        label_preprocessing=ct_transforms("val", pixdim=(1.5, 1.5, 2.0)),
    )
    summary = explainer.run([str(image)], [str(label)])
    out = tmp_path / "o"
    source = nib.load(str(image))
    for name in ("gate_level1", "gate_level2"):
        volume = nib.load(str(out / f"ct_attention_{name}.nii.gz"))
        values = np.asarray(volume.dataobj)
        assert volume.shape == source.shape and np.allclose(volume.affine, source.affine, atol=1e-4)
        assert values.min() >= 0.0 and values.max() <= 1.0 and values.std() > 0
    assert nib.load(str(out / "ct_seg.nii.gz")).shape == source.shape
    picture = matplotlib.image.imread(str(out / "ct_montage.png"))
    assert picture.shape[0] >= 600 and picture.shape[1] >= 600 and picture[..., :3].std() > 0.05  # not blank
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="ct_montage.png"' in page and "ct_attention_gate_level1.nii.gz" in page
    case = summary["cases"][0]
    assert case["structure"] == "ground truth" and set(case["ratios"]) == {"gate_level1", "gate_level2"}
    assert (
        (out / "attention_summary.csv").read_text(encoding="utf-8").startswith("case,structure,gate_level1,gate_level2")
    )
    assert capsys.readouterr().out == ""  # results are returned; printing is the caller's job
    lines = summary_lines(summary)
    assert lines[1].split() == ["gate_level1", f"{summary['mean_inside_outside_ratio']['gate_level1']:.2f}"]
    assert lines[-1] == f"index: {out / 'index.html'}"
    viewer = case["viewer"]
    assert viewer["layers"] == ["scan", "prediction", "truth", "gate_level1", "gate_level2"]
    assert (out / viewer["script"]).is_file() and (out / "viewer" / "niivue.umd.js").is_file()
    assert 'data-overlay="truth"' in page and 'src="viewer/niivue.umd.js"' in page
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]  # nothing half-written left behind


def test_attention_ratio_against_hand_values():
    attention = np.array([0.9, 0.8, 0.1, 0.3])
    assert attention_ratio(attention, np.array([True, True, False, False])) == pytest.approx(0.85 / 0.2)
    assert np.isnan(attention_ratio(attention, np.zeros(4, bool)))


def test_class_ratios_per_class_against_hand_values():
    attention = np.array([0.9, 0.6, 0.1, 0.2, 0.2])
    labels = np.array([1, 1, 2, 0, 0])
    ratios = class_ratios(attention, labels, [1, 2])
    assert ratios[1] == pytest.approx(0.75 / ((0.1 + 0.2 + 0.2) / 3))
    assert ratios[2] == pytest.approx(0.1 / ((0.9 + 0.6 + 0.2 + 0.2) / 4))


def test_map_names_come_from_the_network_or_its_structure():
    unet = AttentionUNet(3, 1, 3, **SMALL)
    assert attention_names(unet) == ["gate_level1", "gate_level2"]
    declared = ConstantAttentionNet()
    declared.attention_map_names = lambda: ["coarse", "fine"]
    assert attention_names(declared) == ["coarse", "fine"]
    assert default_map(["step1_scale1", "step1_scale2", "step2_scale1", "step2_scale2"]) == "step2_scale1"
    assert default_map(["gate_level1", "gate_level2"]) == "gate_level1"


def test_unknown_montage_map_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'gate_level9' is not one of this network's maps: gate_level1, gate_level2"):
        AttentionExplainer(ConstantAttentionNet(), ct_transforms("infer"), None, tmp_path, montage_map="gate_level9")


def test_separation_auc_against_all_pairs():
    rng = np.random.default_rng(3)
    saliency = rng.integers(0, 5, 60).astype(float)  # ties on purpose
    structure = rng.random(60) < 0.3
    inside, outside = saliency[structure], saliency[~structure]
    pairs = (inside[:, None] > outside[None, :]) + 0.5 * (inside[:, None] == outside[None, :])
    assert separation_auc(saliency, structure) == pytest.approx(pairs.mean())
    assert separation_auc(np.where(structure, 0.9, 0.1), structure) == 1.0
    assert np.isnan(separation_auc(saliency, np.zeros(60, bool)))


def test_montage_of_a_one_slice_volume(tmp_path):
    """A 2D bundle's single-slice input: two of the three views are one line of voxels, with nothing to outline."""
    from medattn3d.explain import write_montage

    prediction = np.zeros((20, 18, 1), np.uint8)
    prediction[5:12, 4:10] = 2
    image = np.random.default_rng(0).random((20, 18, 1)).astype(np.float32)
    path = write_montage(image, prediction, image, tmp_path / "m.png", "one slice", label=prediction, spacing=[1, 1, 3])
    assert matplotlib.image.imread(str(path)).shape[0] >= 600


def test_labels_are_found_by_file_whatever_the_path_spelling(tmp_path, monkeypatch):
    from medattn3d.explain import labels_for

    (tmp_path / "imagesTr").mkdir()
    datalist = [{"image": str(tmp_path / "imagesTr" / "a.nii.gz"), "label": "a_label"}]
    monkeypatch.chdir(tmp_path / "imagesTr")
    spellings = ["a.nii.gz", "../imagesTr/a.nii.gz", str(tmp_path / "x" / ".." / "imagesTr" / "a.nii.gz"), "b.nii.gz"]
    assert labels_for(spellings, datalist) == ["a_label", "a_label", "a_label", None]
