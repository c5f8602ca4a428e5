"""Every bundle passes MONAI's own checks offline: layout, verify_metadata, verify_net_in_out, workflow properties."""

import json
import shutil

import pytest
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

from medattn3d.bundles import BUNDLE_NAMES, BUNDLES_DIR

SCHEMA = BUNDLES_DIR / "meta_schema.json"
REQUIRED = [
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
]


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_model_zoo_layout(name):
    bundle = BUNDLES_DIR / name
    assert [f for f in REQUIRED if not (bundle / f).is_file()] == []
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["version"] in metadata["changelog"]
    for config in ("train.json", "inference.json"):
        text = (bundle / "configs" / config).read_text(encoding="utf-8")
        assert '"_target_": "medattn3d.' in text  # our classes by full dotted path


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_verify_metadata_offline(name):
    verify_metadata(meta_file=str(BUNDLES_DIR / name / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_verify_metadata_rejects_a_missing_field(tmp_path):
    metadata = json.loads((BUNDLES_DIR / "attention_unet_3d" / "configs" / "metadata.json").read_text(encoding="utf-8"))
    del metadata["task"]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    shutil.copy(SCHEMA, tmp_path / "schema.json")
    with pytest.raises(ValueError, match="'task' is a required property"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(tmp_path / "schema.json"))


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_verify_net_in_out(name):
    bundle = BUNDLES_DIR / name
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        n=2,
        bundle_root=str(bundle),
    )


@pytest.mark.parametrize("name", BUNDLE_NAMES)
@pytest.mark.parametrize(("configs", "workflow_type"), [(["train.json"], "train"), (["inference.json"], "infer")])
def test_workflow_properties(name, configs, workflow_type, tiny_data, tmp_path):
    bundle = BUNDLES_DIR / name
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / c) for c in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        dataset_dir=str(tiny_data),
        datalist=str(tiny_data / "dataset.json"),
        bundle_root=str(tmp_path),  # TensorBoard writers and checkpoints go there, not into the repository
    )
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_explain_pairs_labels_by_file_not_by_position(name, tiny_data):
    """``--input_paths`` on the command line: a validation case keeps its own label, any other image gets none
    (the labels were once taken from the validation list by position, silently wrong)."""
    from monai.bundle import ConfigParser

    from medattn3d.data import load_datalist

    bundle = BUNDLES_DIR / name
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in ("inference.json", "explain.json")])
    datalist = tiny_data / "dataset.json"
    parser.update({"dataset_dir": str(tiny_data), "datalist": str(datalist), "bundle_root": str(bundle)})
    validation = load_datalist(datalist, "validation", tiny_data, 0)
    assert parser.get_parsed_content("label_paths") == [item["label"] for item in validation]
    test_image = str(tiny_data / "imagesTs" / "case_003.nii.gz")
    parser.update({"input_paths": [test_image, validation[0]["image"]]})
    assert parser.get_parsed_content("label_paths") == [None, validation[0]["label"]]
    # the explainer writes the prediction's tables under the bundle's class names, as infer does
    assert parser["explainer"]["class_names"] == "@class_names"
