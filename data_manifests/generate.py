"""Regenerate the committed manifests from the datasets' published case lists (run from the repository root).

``python data_manifests/generate.py`` rewrites every ``*.json`` here; the validation splits are seeded, so the
output is stable. Pancreas has no committed case list (see msd_task07_pancreas.md): build it from the download.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

SPLEEN_TRAIN = [
    2,
    3,
    6,
    8,
    9,
    10,
    12,
    13,
    14,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    24,
    25,
    26,
    27,
    28,
    29,
    31,
    32,
    33,
    38,
    40,
    41,
    44,
    45,
    46,
    47,
    49,
    52,
    53,
    56,
    59,
    60,
    61,
    62,
    63,
]
SPLEEN_TEST = [1, 7, 11, 15, 23, 30, 34, 35, 36, 37, 39, 42, 43, 48, 50, 51, 54, 55, 57, 58]
BTCV_LABELS = [
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal and splenic veins",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
]


def split(pairs: list[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle, then the first ``val_fraction`` go to validation; both lists sorted by image path."""
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    n_val = round(val_fraction * len(pairs))
    return sorted(shuffled[n_val:], key=lambda r: r["image"]), sorted(shuffled[:n_val], key=lambda r: r["image"])


def write(name: str, manifest: dict) -> None:
    (HERE / f"{name}.json").write_text(json.dumps(manifest, indent=1) + "\n")


def msd(task: str, modality: dict, labels: list[str], ids: list[str], tests: list[str], **extra) -> dict:
    pairs = [{"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"} for i in ids]
    training, validation = split(pairs)
    return {
        "name": task,
        **extra,
        "tensorImageSize": "3D" if len(modality) == 1 else "4D",
        "modality": modality,
        "labels": {str(i): n for i, n in enumerate(labels)},
        "numTraining": len(training),
        "numValidation": len(validation),
        "numTest": len(tests),
        "training": training,
        "validation": validation,
        "test": [f"imagesTs/{t}.nii.gz" for t in tests],
    }


CHAOS_MR_IDS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


def main() -> None:
    write(
        "msd_task09_spleen",
        msd(
            "Task09_Spleen",
            {"0": "CT"},
            ["background", "spleen"],
            [f"spleen_{i}" for i in SPLEEN_TRAIN],
            [f"spleen_{i}" for i in SPLEEN_TEST],
            reference="Memorial Sloan Kettering Cancer Center",
            licence="CC-BY-SA 4.0",
        ),
    )
    write(
        "msd_task01_braintumour",
        msd(
            "Task01_BrainTumour",
            {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            ["background", "edema", "non-enhancing tumor", "enhancing tumour"],
            [f"BRATS_{i:03d}" for i in range(1, 485)],
            [f"BRATS_{i:03d}" for i in range(485, 751)],
            reference="BraTS 2016 and 2017 (MSD)",
            licence="CC-BY-SA 4.0",
        ),
    )
    btcv_train = [i for i in range(1, 41) if not 11 <= i <= 20]
    write(
        "btcv_abdomen",
        {
            "name": "BTCV_Abdomen",
            "reference": "MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault",
            "licence": "see Synapse syn3193805 terms",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {str(i): n for i, n in enumerate(BTCV_LABELS)},
            "numTraining": 24,
            "numValidation": 6,
            "numTest": 20,
            "training": [
                {"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"}
                for i in btcv_train
                if i < 35
            ],
            "validation": [
                {"image": f"imagesTr/img{i:04d}.nii.gz", "label": f"labelsTr/label{i:04d}.nii.gz"}
                for i in range(35, 41)
            ],
            "test": [f"imagesTs/img{i:04d}.nii.gz" for i in range(61, 81)],
        },
    )
    write(
        "msd_task07_pancreas",
        {
            "name": "Task07_Pancreas",
            "reference": "Memorial Sloan Kettering Cancer Center",
            "licence": "CC-BY-SA 4.0",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
            "build": "a template: run `python -m medattn3d.data.manifest DATA/Task07_Pancreas --out "
            "DATA/Task07_Pancreas/medattn3d.json` to list the cases of your download with a validation split",
            "training": [],
            "validation": [],
            "test": [],
        },
    )
    chaos_pairs = [
        {"image": f"Train_Sets/MR/{i}/T2SPIR/DICOM_anon", "label": f"labels/{i}_T2SPIR.nii.gz"} for i in CHAOS_MR_IDS
    ]
    training, validation = split(chaos_pairs)
    write(
        "chaos_mri",
        {
            "name": "CHAOS_MR_T2SPIR",
            "reference": "CHAOS challenge (ISBI 2019), Kavur et al. 2021",
            "licence": "CC-BY-SA 4.0",
            "tensorImageSize": "3D",
            "modality": {"0": "MRI T2-SPIR"},
            "labels": {"0": "background", "1": "liver", "2": "right kidney", "3": "left kidney", "4": "spleen"},
            "numTraining": len(training),
            "numValidation": len(validation),
            "numTest": 0,
            "training": training,
            "validation": validation,
            "test": [],
        },
    )


if __name__ == "__main__":
    main()
