"""Plan -> train -> evaluate -> infer -> explain -> export on tiny MSD-layout datasets, every template, through
MONAI's own bundle functions with no run-time overrides at all. Slow (~20-60 s each): ``pytest -m slow``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, run

from medattn3d.errors import InputError
from medattn3d.planning import plan_bundle

pytestmark = pytest.mark.slow

CASES = [
    ("attention_unet_3d", "spleen_ct"),  # 2 classes, mixed stored orientations, MSD datalist (5-fold split)
    ("attention_unet_3d", "abdomen_ct_14"),  # 14 classes, 5 mm slices: anisotropic strides
    ("attention_unet_2d", "brain_mri"),  # 4 channels in one 4D NIfTI per case, slice by slice
    ("ms_guided_attention_3d", "prostate_two_files"),  # one file per channel, the datalist's validation list
    ("ms_guided_attention_2d", "abdomen_ct_14"),
]
SMALL = {"max_epochs": 2, "val_interval": 1}  # plan-time settings; the runs below pass nothing


def _run(bundle: Path, *configs: str) -> None:
    files = [str(bundle / "configs" / c) for c in configs]
    run(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle),
    )


def _first_file(image: str | list[str]) -> str:
    return image[0] if isinstance(image, list) else image


@pytest.mark.parametrize(("template", "dataset"), CASES)
def test_planned_bundle_runs_end_to_end_without_overrides(template, dataset, datasets, tmp_path):
    bundle = tmp_path / "bundle"
    plan_bundle(datasets[dataset], bundle, template=template, overrides=dict(SMALL), workers=1, progress=False)
    if template.startswith("attention_unet"):  # same planned depth, narrower widths: seconds per epoch
        depth = len(json.loads((bundle / "plan.json").read_text(encoding="utf-8"))["values"]["channels"])
        narrow = {**SMALL, "channels": [4, 8, 16, 32, 64][:depth]}
        plan_bundle(datasets[dataset], bundle, template=template, overrides=narrow, workers=1, progress=False)
    plan = json.loads((bundle / "plan.json").read_text(encoding="utf-8"))
    classes = plan["values"]["num_classes"]

    _run(bundle, "train.json")
    assert (bundle / "models" / "model.pt").is_file()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    best = json.loads((bundle / "models" / "model_metric.json").read_text(encoding="utf-8"))
    assert metadata["eval_metrics"]["epoch"] == best["epoch"] in (1, 2)
    assert metadata["eval_metrics"]["val_mean_dice"] == pytest.approx(best["value"], abs=1e-4)

    _run(bundle, "train.json", "evaluate.json")
    assert (bundle / "eval" / "val_mean_dice_raw.csv").is_file()

    _run(bundle, "inference.json")
    datalist = json.loads((datasets[dataset] / "dataset.json").read_text(encoding="utf-8"))
    tests = [_first_file(t) for t in datalist["test"]]
    predictions = sorted((bundle / "predictions").glob("*_seg.nii.gz"))
    assert len(predictions) == len(tests)
    for test, prediction in zip(sorted(tests), predictions, strict=True):
        source = nib.load(str(datasets[dataset] / test))
        written = nib.load(str(prediction))
        assert written.shape == source.shape[:3]  # a 4D multi-channel input gives a 3D label map
        assert np.allclose(written.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= set(range(classes))

    _run(bundle, "inference.json", "explain.json")
    assert (bundle / "explain" / "index.html").is_file()
    assert len(list((bundle / "explain").glob("*.nii.gz"))) > 0

    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    size = plan["values"]["roi_size"]
    out = scripted(torch.zeros(1, plan["values"]["in_channels"], *size))
    assert tuple(out.shape) == (1, classes, *size)


def test_inference_with_weights_of_another_plan_stops_in_one_line(datasets, tmp_path):
    two = plan_bundle(datasets["spleen_ct"], tmp_path / "two", overrides=SMALL, workers=1, progress=False)
    fourteen = plan_bundle(datasets["abdomen_ct_14"], tmp_path / "many", overrides=SMALL, workers=1, progress=False)
    _run(two, "train.json")
    (fourteen / "models").mkdir(exist_ok=True)
    (fourteen / "models" / "model.pt").write_bytes((two / "models" / "model.pt").read_bytes())
    with pytest.raises(Exception) as caught:
        _run(fourteen, "inference.json")
    error = caught.value
    while not isinstance(error, InputError) and (error.__cause__ or error.__context__):
        error = error.__cause__ or error.__context__
    assert isinstance(error, InputError), caught.value
    # the two plans also differ in their strides (5 mm slices): both facts, on one line
    assert "model.pt: checkpoint predicts 2 classes, the bundle 14" in str(error) and "\n" not in str(error)
