"""Manifests: the committed ones, building one from a folder, and the validator listing every problem."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medattn3d.data import check, manifest
from medattn3d.data.demo import generate_demo_dataset
from medattn3d.errors import InputError
from tests.helpers import save_nifti

MANIFESTS = Path(__file__).parents[2] / "data_manifests"


@pytest.mark.parametrize("name", ["msd_task09_spleen", "msd_task01_braintumour", "btcv_abdomen", "chaos_mri"])
def test_committed_manifests_are_consistent(name):
    data = manifest.read_manifest(MANIFESTS / f"{name}.json")
    training, validation = data["training"], data["validation"]
    assert len(training) == data["numTraining"] and len(validation) == data["numValidation"]
    assert len(data["test"]) == data["numTest"]
    images = [r["image"] for r in training + validation]
    assert len(set(images)) == len(images)  # no case in both splits
    assert all(set(r) == {"image", "label"} for r in training + validation)
    assert data["labels"]["0"] == "background" and (MANIFESTS / f"{name}.md").is_file()


def test_spleen_manifest_lists_the_41_published_cases():
    data = manifest.read_manifest(MANIFESTS / "msd_task09_spleen.json")
    assert data["numTraining"] + data["numValidation"] == 41 and data["numTest"] == 20


def test_template_manifest_explains_how_to_build_it():
    with pytest.raises(InputError, match=r"has no 'training' entries \(a template: run `python -m medattn3d.data"):
        manifest.load_datalist(MANIFESTS / "msd_task07_pancreas.json")


def test_generated_manifests_match_the_generator(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate", MANIFESTS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    module.main()
    for path in tmp_path.glob("*.json"):
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(
            (MANIFESTS / path.name).read_text(encoding="utf-8")
        ), path.name


def _msd_tree(root: Path, names: list[str], label_prefix: str = "") -> None:
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    for name in names:
        save_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), root / "imagesTr" / f"{name}.nii.gz")
        label = label_prefix + name.removeprefix("img") if label_prefix else name
        save_nifti(np.zeros((8, 8, 8), np.uint8), np.eye(4), root / "labelsTr" / f"{label}.nii.gz")
    save_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), root / "imagesTs" / "t.nii.gz")


def test_build_manifest_pairs_splits_and_takes_labels_from_the_template(tmp_path):
    _msd_tree(tmp_path, [f"case_{i}" for i in range(10)])
    built = manifest.build_manifest(tmp_path, template=MANIFESTS / "msd_task07_pancreas.json", seed=1)
    assert built["labels"] == {"0": "background", "1": "pancreas", "2": "cancer"} and "build" not in built
    assert len(built["validation"]) == 2 and len(built["training"]) == 8 and built["test"] == ["imagesTs/t.nii.gz"]
    assert manifest.build_manifest(tmp_path, template=MANIFESTS / "msd_task07_pancreas.json", seed=1) == built
    out = tmp_path / "m.json"
    assert (
        manifest.main([str(tmp_path), "--template", str(MANIFESTS / "msd_task07_pancreas.json"), "--out", str(out)])
        == 0
    )
    assert check.check_manifest(out) == []


def test_build_manifest_with_btcv_names_and_a_missing_label(tmp_path):
    _msd_tree(tmp_path, ["img0001", "img0002"], label_prefix="label")
    built = manifest.build_manifest(tmp_path, MANIFESTS / "btcv_abdomen.json", label_prefix=("img", "label"))
    assert {r["label"] for r in built["training"] + built["validation"]} == {
        "labelsTr/label0001.nii.gz",
        "labelsTr/label0002.nii.gz",
    }
    (tmp_path / "labelsTr" / "label0002.nii.gz").unlink()
    with pytest.raises(InputError, match=r"labelsTr: has no label for 1 image\(s\): img0002.nii.gz"):
        manifest.build_manifest(tmp_path, MANIFESTS / "btcv_abdomen.json", label_prefix=("img", "label"))


def test_validator_lists_every_problem_at_once(tmp_path, capsys):
    path = generate_demo_dataset(tmp_path, num_train=4, num_val=1, num_test=1, shape=(32, 32, 16))
    data = json.loads(path.read_text(encoding="utf-8"))
    affine = nib.load(tmp_path / data["training"][0]["image"]).affine
    (tmp_path / data["training"][0]["image"]).unlink()  # missing file
    save_nifti(np.zeros((32, 32, 15), np.uint8), affine, tmp_path / data["training"][1]["label"])
    save_nifti(np.full((32, 32, 16), 9, np.uint8), affine, tmp_path / data["training"][2]["label"])
    save_nifti(np.full((32, 32, 16), np.nan, np.float32), affine, tmp_path / data["validation"][0]["image"])
    problems = check.check_manifest(path)
    assert len(problems) == 4, problems
    assert "case_000.nii.gz: file not found" in problems[0]
    assert "label shape (32, 32, 15) differs" in problems[1]
    assert f"label values [9] lie outside the {len(data['labels'])} classes" in problems[2]
    assert "non-finite" in problems[3]
    assert check.main([str(path)]) == 1
    assert capsys.readouterr().out.count("\n") == 4


def test_validator_on_a_broken_manifest_file(tmp_path):
    (tmp_path / "m.json").write_text("{not json")
    assert "is not valid JSON" in check.check_manifest(tmp_path / "m.json")[0]
    assert check.main([str(tmp_path / "nothing.json")]) == 1


def _hand_folds(n: int, seed: int, k: int = 5) -> list[list[int]]:
    """The seeded 5-fold partition computed here: numpy's RandomState shuffle, then every k-th index."""
    order = list(range(n))
    np.random.RandomState(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def test_msd_dataset_json_as_shipped_gets_a_seeded_five_fold_split(tmp_path):
    from tests.planning.datasets import SPLEEN_CASES, write_spleen_ct

    path = write_spleen_ct(tmp_path)
    names = [f"./imagesTr/{c.name}.nii.gz" for c in SPLEEN_CASES]
    splits = [manifest.split_datalist(path, fold=k, seed=3) for k in range(5)]
    hand = _hand_folds(len(names), seed=3)
    for k, split in enumerate(splits):
        assert split.folds == [[names[i] for i in fold] for fold in hand]
        assert split.fold == k and split.seed == 3 and split.source == "5-fold split of training, seed 3"
        held_out = [str(tmp_path / names[i]) for i in hand[k]]
        assert [r["image"] for r in split.validation] == held_out
        assert sorted(r["image"] for r in split.training + split.validation) == sorted(str(tmp_path / n) for n in names)
        assert all(r["label"].replace("labelsTr", "imagesTr") == r["image"] for r in split.training)
    assert sorted(len(s.validation) for s in splits) == [1, 1, 1, 1, 2]  # 6 cases
    assert manifest.split_datalist(path, fold=2, seed=3) == splits[2]  # deterministic
    assert splits[0].as_record() == {"source": splits[0].source, "fold": 0, "seed": 3, "folds": splits[0].folds}
    json.dumps(splits[0].as_record())


def test_load_datalist_reads_msd_sections_and_folds(tmp_path):
    from tests.planning.datasets import write_spleen_ct

    path = write_spleen_ct(tmp_path)
    split = manifest.split_datalist(path)
    assert manifest.load_datalist(path, "training") == split.training
    assert manifest.load_datalist(path, "validation") == split.validation
    assert len(manifest.load_datalist(path, "training", fold=None)) == 6
    assert manifest.load_datalist(path, "test") == [
        {"image": str(tmp_path / "imagesTs" / f"{n}.nii.gz")} for n in ("spleen_1", "spleen_7")
    ]
    with pytest.raises(InputError, match=r"dataset.json: cannot make a validation split: fold must be in 0..4"):
        manifest.split_datalist(path, fold=5)


def test_a_validation_list_is_used_as_given(tmp_path):
    from tests.planning.datasets import write_prostate_two_files

    path = write_prostate_two_files(tmp_path)
    split = manifest.split_datalist(path, fold=3)
    assert split.source == "validation list" and split.fold is None and split.folds == []
    assert [r["image"] for r in split.validation] == [
        [str(tmp_path / "imagesTr" / f"prostate_06_000{c}.nii.gz") for c in range(2)]
    ]
    assert len(split.training) == 4 and manifest.load_datalist(path, "validation") == split.validation
    assert manifest.load_datalist(path, "test")[0]["image"][1].endswith("imagesTs/prostate_03_0001.nii.gz")


def test_fold_keys_in_the_datalist_are_kept(tmp_path):
    entries = [{"image": f"i{n}.nii.gz", "label": f"l{n}.nii.gz", "fold": n % 3} for n in range(7)]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "a"}, "modality": {"0": "CT"}, "training": entries}))
    split = manifest.split_datalist(path, fold=1)
    assert [r["image"] for r in split.validation] == [str(tmp_path / "i1.nii.gz"), str(tmp_path / "i4.nii.gz")]
    assert len(split.training) == 5 and split.source == "fold keys"
    assert split.folds == [
        ["i0.nii.gz", "i3.nii.gz", "i6.nii.gz"],
        ["i1.nii.gz", "i4.nii.gz"],
        ["i2.nii.gz", "i5.nii.gz"],
    ]
    with pytest.raises(InputError, match=r"fold 4 is not among the datalist's folds \[0, 1, 2\]"):
        manifest.split_datalist(path, fold=4)


def test_fewer_than_five_cases_get_fewer_folds_and_one_case_none(tmp_path):
    assert [len(v) for _, v, _ in (manifest.fold_split(list("abc"), k) for k in range(3))] == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 2 training cases"):
        manifest.fold_split(["a"])
