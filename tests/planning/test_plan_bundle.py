"""plan_bundle: refuses bad datasets and foreign folders, writes a complete bundle that MONAI's checks accept."""

from __future__ import annotations

import json
import shutil

import pytest
from monai.bundle import verify_metadata, verify_net_in_out

from medattn3d.bundles import BUNDLES_DIR
from medattn3d.errors import DatasetError, InputError
from medattn3d.planning import plan_bundle
from medattn3d.planning.shipped import GENERATED
from tests.planning.datasets import write_broken

SCHEMA = BUNDLES_DIR / "meta_schema.json"
FILES = [*GENERATED, "fingerprint_cache.json"]


@pytest.mark.parametrize("name", ["spleen_ct", "brain_mri", "abdomen_ct_14", "prostate_two_files"])
def test_a_dataset_with_a_problem_is_refused_with_every_problem_on_its_own_line(tmp_path, name):
    _, fragment = write_broken(name, tmp_path / "data")
    with pytest.raises(DatasetError) as caught:
        plan_bundle(tmp_path / "data", tmp_path / "bundle", workers=1, progress=False)
    assert any(fragment in line for line in caught.value.problems), caught.value.problems
    assert str(caught.value).splitlines()[1:] == caught.value.problems
    assert isinstance(caught.value, InputError) and not (tmp_path / "bundle").exists()


def test_the_bundle_is_complete_and_names_its_data(planned, datasets):
    bundle, plan = planned("brain_mri", "attention_unet_3d")
    assert [f for f in FILES if not (bundle / f).is_file()] == []
    inference = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert inference["dataset_dir"] == str(datasets["brain_mri"].resolve())
    assert inference["datalist"] == str(datasets["brain_mri"].resolve() / "dataset.json")
    for key in ("num_classes", "in_channels", "class_names", "channel_names", "roi_size", "pixdim", "normalization"):
        assert inference[key] == plan["values"][key]
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert "## Dataset fingerprint" in readme and "| `roi_size` |" in readme and "fold 0:" in readme


def test_each_fact_is_written_once_and_referenced_elsewhere(planned):
    bundle, _ = planned("spleen_ct", "attention_unet_2d")
    for config in ("train.json", "inference.json"):
        text = (bundle / "configs" / config).read_text(encoding="utf-8")
        assert text.count('"spatial_dims": 2') == 1 and text.count('"precision": "auto"') == 1
        assert '"amp"' not in text.replace('"amp": "$@precision', "")


@pytest.mark.parametrize("template", ["attention_unet_3d", "attention_unet_2d"])
def test_metadata_passes_monai_checks_against_the_published_schema(planned, template):
    bundle, _ = planned("brain_mri", template)
    meta = bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(meta),
        config_file=str(bundle / "configs" / "inference.json"),
        n=1,
        bundle_root=str(bundle),
    )
    image = json.loads(meta.read_text(encoding="utf-8"))["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 4 and list(image["channel_def"].values()) == ["FLAIR", "T1w", "t1gd", "T2w"]


def test_schema_is_monais_published_one():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert schema["required"] == [
        "schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
        "task", "description", "authors", "copyright", "network_data_format",
    ]  # fmt: skip
    assert set(schema["$defs"]["tensor"]["required"]) == {
        "type", "format", "num_channels", "spatial_shape", "dtype", "value_range"
    }  # fmt: skip


def test_a_foreign_non_empty_folder_is_refused(datasets, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        plan_bundle(datasets["spleen_ct"], tmp_path / "out", workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


def test_replanning_keeps_models_and_reads_no_image(datasets, tmp_path, monkeypatch):
    out = plan_bundle(datasets["spleen_ct"], tmp_path / "b", workers=1, progress=False)
    (out / "models").mkdir()
    (out / "models" / "model.pt").write_bytes(b"weights")

    def refuse(*args, **kwargs):
        raise AssertionError("re-planning read an image")

    monkeypatch.setattr("medattn3d.planning.fingerprint.fingerprint_case", refuse)
    plan_bundle(datasets["spleen_ct"], out, overrides={"max_epochs": 7}, workers=1, progress=False)
    assert (out / "models" / "model.pt").read_bytes() == b"weights"
    assert json.loads((out / "configs" / "train.json").read_text(encoding="utf-8"))["max_epochs"] == 7


def test_a_plan_of_another_dataset_is_not_overwritten(datasets, tmp_path):
    out = plan_bundle(datasets["spleen_ct"], tmp_path / "b", workers=1, progress=False)
    before = (out / "plan.json").read_text(encoding="utf-8")
    with pytest.raises(InputError, match="another dataset"):
        plan_bundle(datasets["brain_mri"], out, workers=1, progress=False)
    assert (out / "plan.json").read_text(encoding="utf-8") == before


def test_no_staging_folder_is_left_behind_on_failure(datasets, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(datasets["spleen_ct"], data)
    with pytest.raises(ValueError):
        plan_bundle(data, tmp_path / "b", overrides={"roi_size": [7, 7, 7]}, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
