"""A real-MRI tissue demo from nilearn's bundled MNI152 template (optional extra ``mri-demo``; nothing downloads).

``python -m medattn3d.data.mni_demo DIR`` writes ``imagesTr/mni152_t1.nii.gz``, ``labelsTr/mni152_t1.nii.gz``
(0 background, 1 grey matter, 2 white matter: the larger tissue probability where it is at least 0.5) and a
Decathlon-style ``dataset.json`` listing the one case for training and validation (a reading/pipeline demo, not a
benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

LABELS = {"0": "background", "1": "grey matter", "2": "white matter"}


def write_mni152_tissue_demo(root: str | Path, resolution: int = 2) -> Path:
    """Write the MNI152 T1 and its GM/WM label map under ``root``; returns the manifest path."""
    try:
        from nilearn import datasets
    except ImportError as err:
        raise ImportError("the MNI152 demo needs nilearn: pip install -e '.[mri-demo]'") from err
    t1 = datasets.load_mni152_template(resolution=resolution)
    grey = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).get_fdata())
    white = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).get_fdata())
    label = np.zeros(grey.shape, np.uint8)
    label[(grey >= 0.5) & (grey >= white)] = 1
    label[(white >= 0.5) & (white > grey)] = 2
    root = Path(root)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(np.asarray(t1.get_fdata(), np.float32), t1.affine), str(root / "imagesTr" / "mni152_t1.nii.gz")
    )
    nib.save(nib.Nifti1Image(label, t1.affine), str(root / "labelsTr" / "mni152_t1.nii.gz"))
    case = {"image": "imagesTr/mni152_t1.nii.gz", "label": "labelsTr/mni152_t1.nii.gz"}
    manifest = {
        "name": "MNI152-tissue-demo",
        "description": "nilearn's MNI152 2009 T1 template with GM/WM labels",
        "licence": "see nilearn (MNI ICBM152 template terms)",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI T1"},
        "labels": LABELS,
        "training": [case],
        "validation": [case],
        "test": [],
    }
    path = root / "dataset.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medattn3d.data.mni_demo", description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--resolution", type=int, default=2, help="mm (1 or 2)")
    args = parser.parse_args(argv)
    print(f"wrote {write_mni152_tissue_demo(args.root, args.resolution)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
