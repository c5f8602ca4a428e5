"""Decathlon-style manifests: read them into MONAI datalists, and build one (with a validation split) from a folder.

A manifest is MSD's ``dataset.json`` plus a ``validation`` list: ``labels``, ``modality``, ``training`` and
``validation`` (lists of ``{"image", "label"}`` paths relative to the data root) and ``test`` (image paths).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

from medattn3d.errors import InputError

SECTIONS = ("training", "validation", "test")
NIFTI_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and sanity-check a manifest; ``InputError`` names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or "labels" not in manifest or "modality" not in manifest:
        raise InputError(path, "is not a Decathlon-style manifest (needs 'labels' and 'modality')")
    return manifest


def num_classes(manifest: dict[str, Any]) -> int:
    """Number of classes, background included (the manifest's ``labels`` entries)."""
    return len(manifest["labels"])


def load_datalist(path: str | Path, section: str = "training", root: str | Path | None = None) -> list[dict]:
    """One section of a manifest as a MONAI datalist with absolute paths (``root`` defaults to the manifest's
    folder). Usable as a bundle-config ``_target_``."""
    manifest = read_manifest(path)
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    entries = manifest.get(section) or []
    if not entries:
        hint = f" ({manifest['build']})" if "build" in manifest else ""
        raise InputError(path, f"has no '{section}' entries{hint}")
    base = Path(root) if root is not None else Path(path).parent
    return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=section, base_dir=str(base))


def _stem(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def build_manifest(
    root: str | Path,
    template: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    image_dir: str = "imagesTr",
    label_dir: str = "labelsTr",
    test_dir: str = "imagesTs",
    label_prefix: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A manifest for the data under ``root``: image/label pairs matched by file name (after swapping
    ``label_prefix = (image_prefix, label_prefix)``, e.g. BTCV's ``("img", "label")``), a seeded validation split,
    and ``labels``/``modality`` from ``template`` (or from ``root/dataset.json`` when MSD shipped one)."""
    root = Path(root)
    source = Path(template) if template else root / "dataset.json"
    if not source.is_file():
        raise InputError(source, "no template manifest to take labels and modality from")
    base = read_manifest(source)
    images = sorted(
        p for p in (root / image_dir).glob("*") if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
    )
    if not images:
        raise InputError(root / image_dir, "holds no NIfTI/NRRD/MHA images")
    labels = {_stem(p.name): p for p in (root / label_dir).glob("*") if p.name.endswith(NIFTI_SUFFIXES)}
    pairs, unmatched = [], []
    for image in images:
        key = _stem(image.name)
        if label_prefix and key.startswith(label_prefix[0]):
            key = label_prefix[1] + key[len(label_prefix[0]) :]
        if key in labels:
            pairs.append({"image": f"{image_dir}/{image.name}", "label": f"{label_dir}/{labels[key].name}"})
        else:
            unmatched.append(image.name)
    if unmatched:
        raise InputError(root / label_dir, f"has no label for {len(unmatched)} image(s): {', '.join(unmatched[:5])}")
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(val_fraction * len(pairs))) if len(pairs) > 1 else 0
    validation = sorted(shuffled[:n_val], key=lambda r: r["image"])
    training = sorted(shuffled[n_val:], key=lambda r: r["image"])
    tests = sorted(f"{test_dir}/{p.name}" for p in (root / test_dir).glob("*") if p.name.endswith(NIFTI_SUFFIXES))
    manifest = {k: v for k, v in base.items() if k not in (*SECTIONS, "build", "numTraining", "numTest")}
    manifest.update(
        numTraining=len(training),
        numValidation=len(validation),
        numTest=len(tests),
        training=training,
        validation=validation,
        test=tests,
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m medattn3d.data.manifest ROOT --template T --out FILE``: write a manifest for a data folder."""
    parser = argparse.ArgumentParser(prog="python -m medattn3d.data.manifest", description=build_manifest.__doc__)
    parser.add_argument("root", help="data root holding imagesTr/, labelsTr/ (and imagesTs/)")
    parser.add_argument("--template", help="manifest giving labels and modality (default: ROOT/dataset.json)")
    parser.add_argument("--out", required=True, help="manifest file to write")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-prefix", nargs=2, metavar=("IMAGE_PREFIX", "LABEL_PREFIX"))
    args = parser.parse_args(argv)
    try:
        manifest = build_manifest(
            args.root,
            args.template,
            args.val_fraction,
            args.seed,
            label_prefix=tuple(args.label_prefix) if args.label_prefix else None,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out)
    print(
        f"wrote {out}: {manifest['numTraining']} training, {manifest['numValidation']} validation, "
        f"{manifest['numTest']} test"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
