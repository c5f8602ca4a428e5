"""Planning rules against values computed by hand (spacing, topology, patch) and on the tiny datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from medattn3d.planning import PlanError
from medattn3d.planning.rules import pooling_strides, round_to_multiples, target_spacing
from tests.planning.datasets import ABDOMEN_CASES, BRAIN_CASES, PROSTATE_CASES, PROSTATE_VALIDATION, SPLEEN_CASES


def test_target_spacing_is_the_median_per_axis():
    spacings = np.array([[0.8, 0.8, 2.5], [0.7, 0.7, 2.5], [0.9, 0.9, 2.0]])
    shapes = np.array([[30, 30, 16]] * 3)
    spacing, rule = target_spacing(spacings, shapes)
    assert spacing == [0.8, 0.8, 2.5] and rule == "median spacing per axis"


def test_anisotropic_axis_takes_its_10th_percentile_when_it_also_has_few_voxels():
    # z median 5.0 >= 3 x 0.8 and 20 z voxels x 3 < 256 in-plane voxels: nnU-Net's anisotropy exception
    z = [5.0, 5.0, 3.0, 5.0, 6.0]
    spacings = np.array([[0.8, 0.8, s] for s in z])
    shapes = np.array([[256, 256, 20]] * 5)
    spacing, rule = target_spacing(spacings, shapes)
    assert spacing[:2] == [0.8, 0.8]
    assert spacing[2] == pytest.approx(np.percentile(z, 10)) == pytest.approx(3.8)
    assert "anisotropic" in rule
    # the same spacings with many slices: no exception (resampling would not lose information)
    spacing, _ = target_spacing(spacings, np.array([[256, 256, 120]] * 5))
    assert spacing[2] == 5.0


def test_pooling_skips_the_coarse_axis_until_its_spacing_is_within_2x():
    # 0.8 x 0.8 x 5 mm, 64 x 64 x 16: z waits for in-plane to reach 3.2 mm (5 <= 2 x 3.2), stops at 4 voxels
    strides = pooling_strides([64, 64, 16], [0.8, 0.8, 5.0], 4)
    assert strides == [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert pooling_strides([32, 32], [1.0, 1.0], 4) == [[2, 2], [2, 2], [2, 2]]  # 32 -> 4: three poolings


def test_sizes_round_to_the_nearest_multiple_not_below_one():
    assert round_to_multiples([96, 97, 3], [16, 16, 8]) == [96, 96, 8]


def _hand_median_spacing(specs):
    return [float(np.median([s.spacing[a] for s in specs])) for a in range(3)]


@pytest.mark.parametrize(
    ("dataset", "specs", "classes", "channels"),
    [
        ("spleen_ct", SPLEEN_CASES, {"0": "background", "1": "spleen"}, ["CT"]),
        ("brain_mri", BRAIN_CASES, None, ["FLAIR", "T1w", "t1gd", "T2w"]),
        ("abdomen_ct_14", ABDOMEN_CASES, None, ["CT"]),
        ("prostate_two_files", PROSTATE_CASES + PROSTATE_VALIDATION, {"0": "background", "1": "PZ", "2": "TZ"},
         ["T2", "ADC"]),
    ],
)  # fmt: skip
def test_classes_channels_and_spacing_come_from_the_data(planned, dataset, specs, classes, channels):
    _, plan = planned(dataset, "attention_unet_3d")
    values = plan["values"]
    assert values["channel_names"] == channels and values["in_channels"] == len(channels)
    if classes is not None:
        assert values["class_names"] == classes
    assert values["num_classes"] == len(values["class_names"])
    assert values["pixdim"] == pytest.approx(_hand_median_spacing(specs), abs=1e-4)
    assert plan["overrides"] == {}


def test_ct_normalisation_uses_the_foreground_statistics(planned, datasets):
    import nibabel as nib

    _, plan = planned("spleen_ct", "attention_unet_3d")
    values = []
    for spec in SPLEEN_CASES:
        image = np.asarray(nib.load(datasets["spleen_ct"] / "imagesTr" / f"{spec.name}.nii.gz").dataobj, float)
        label = np.asarray(nib.load(datasets["spleen_ct"] / "labelsTr" / f"{spec.name}.nii.gz").dataobj)
        values.append(image[label > 0])
    pooled = np.concatenate(values)
    (norm,) = plan["values"]["normalization"]
    assert norm["scheme"] == "ct"
    assert norm["mean"] == pytest.approx(pooled.mean(), abs=0.01)
    assert norm["std"] == pytest.approx(pooled.std(), abs=0.01)
    assert norm["lower"] == pytest.approx(np.percentile(pooled, 0.5), abs=0.01)
    assert norm["upper"] == pytest.approx(np.percentile(pooled, 99.5), abs=0.01)


def test_mr_channels_are_z_scored_per_volume(planned):
    _, plan = planned("brain_mri", "attention_unet_3d")
    assert plan["values"]["normalization"] == [{"scheme": "zscore"}] * 4


def test_msd_datalist_gets_a_seeded_five_fold_split_recorded_in_the_plan(planned):
    _, plan = planned("spleen_ct", "attention_unet_3d")
    split = plan["split"]
    images = [f"imagesTr/{s.name}.nii.gz" for s in SPLEEN_CASES]
    folds = [[m.removeprefix("./") for m in members] for members in split["folds"]]
    members = [m for fold in folds for m in fold]
    assert len(folds) == 5 and sorted(members) == sorted(images)  # every case in exactly one fold
    assert split["fold"] == 0 and sorted(split["validation"]) == sorted(folds[0])
    assert sorted(split["training"] + split["validation"]) == sorted(images)
    assert not set(split["training"]) & set(split["validation"])


def test_a_validation_list_in_the_datalist_is_used_as_it_is(planned):
    _, plan = planned("prostate_two_files", "attention_unet_3d")
    assert plan["split"]["source"] == "validation list"
    assert plan["split"]["validation"] == [[f"imagesTr/{PROSTATE_VALIDATION[0].name}_0000.nii.gz",
                                            f"imagesTr/{PROSTATE_VALIDATION[0].name}_0001.nii.gz"]]  # fmt: skip


def test_overrides_win_and_are_recorded_with_the_planned_value(planned):
    _, base = planned("spleen_ct", "attention_unet_3d")
    _, plan = planned("spleen_ct", "attention_unet_3d", roi_size="[16, 16, 8]", max_epochs=3)
    assert plan["values"]["roi_size"] == [16, 16, 8] and plan["values"]["max_epochs"] == 3
    assert plan["overrides"]["roi_size"] == {"planned": base["values"]["roi_size"], "value": [16, 16, 8]}
    assert plan["overrides"]["max_epochs"] == {"planned": base["values"]["max_epochs"], "value": 3}
    # the topology follows the overridden patch; val_interval follows the overridden epochs
    assert plan["values"]["val_interval"] == 1
    multiples = [int(np.prod([s[a] for s in plan["values"]["strides"]])) for a in range(3)]
    assert all(size % m == 0 for size, m in zip([16, 16, 8], multiples, strict=True))


def test_an_unknown_key_or_a_patch_the_network_cannot_take_is_refused(datasets, tmp_path):
    from medattn3d.planning import plan_bundle

    with pytest.raises(PlanError, match="not a planned value"):
        plan_bundle(datasets["spleen_ct"], tmp_path / "a", overrides={"num_clases": 3}, workers=1, progress=False)
    with pytest.raises(PlanError, match="multiples of"):
        plan_bundle(datasets["spleen_ct"], tmp_path / "b", template="ms_guided_attention_3d",
                    overrides={"roi_size": [40, 40, 40]}, workers=1, progress=False)  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "template",
    [
        "attention_unet_3d",
        "attention_unet_2d",
        pytest.param("ms_guided_attention_3d", marks=pytest.mark.slow),  # ~6-12 s: a ResNet-18 per call
        pytest.param("ms_guided_attention_2d", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("dataset", ["abdomen_ct_14", "brain_mri"])
def test_the_planned_network_takes_the_planned_patch(planned, template, dataset):
    bundle, plan = planned(dataset, template)
    values = plan["values"]
    dims = 2 if template.endswith("2d") else 3
    assert len(values["roi_size"]) == dims
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        out = network(torch.zeros(1, values["in_channels"], *values["roi_size"]))
    assert tuple(out.shape) == (1, values["num_classes"], *values["roi_size"])
