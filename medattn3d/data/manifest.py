"""Decathlon-style datalists: read them into MONAI datalists, split them into folds, build one from a folder.

Accepted as the Medical Segmentation Decathlon ships its ``dataset.json``: ``labels`` and ``modality`` (dicts keyed
``"0"``, ``"1"``, ...), ``training`` (``{"image", "label"}`` paths relative to the data root; an ``image`` may be a
list of files, one per channel) and ``test`` (image paths, or lists of them). Our manifests add a ``validation``
list. Without one, validation is a seeded 5-fold split of ``training`` (:func:`fold_split`), as nnU-Net does; entries
carrying a ``fold`` key (Auto3DSeg's datalists) keep their folds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist, partition_dataset

from medattn3d.data.loading import VOLUME_SUFFIXES, volume_stem
from medattn3d.errors import InputError

SECTIONS = ("training", "validation", "test")
NUM_FOLDS = 5
SPLIT_SEED = 0


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse and sanity-check a manifest; ``InputError`` names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or "labels" not in manifest or "modality" not in manifest:
        raise InputError(path, "is not a Decathlon-style manifest (needs 'labels' and 'modality')")
    return manifest


def num_classes(manifest: dict[str, Any]) -> int:
    """Number of classes, background included (the manifest's ``labels`` entries)."""
    return len(manifest["labels"])


def _absolute(entries: list[Any], base: Path) -> list[dict]:
    """Datalist entries (dicts, or bare image paths / lists of them) with ``image``/``label`` made absolute."""
    records = [dict(e) if isinstance(e, dict) else {"image": e} for e in entries]
    for record in records:
        for key in ("image", "label"):
            value = record.get(key)
            if isinstance(value, (list, tuple)):
                record[key] = [str(base / v) for v in value]
            elif value is not None:
                record[key] = str(base / value)
    return records


@dataclass
class FoldSplit:
    """Training and validation cases for one fold, and where the split came from (to record in a plan).

    ``folds`` lists each fold's validation images as written in the datalist (relative paths), empty when the
    datalist's own ``validation`` list was used; ``source`` says which rule made the split.
    """

    training: list[dict]
    validation: list[dict]
    fold: int | None
    source: str
    seed: int | None = None
    folds: list[list[Any]] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """The split as JSON-ready facts (no absolute paths): rule, fold, seed and every fold's members."""
        return {"source": self.source, "fold": self.fold, "seed": self.seed, "folds": self.folds}


def fold_split(entries: list[Any], fold: int = 0, seed: int = SPLIT_SEED, num_folds: int = NUM_FOLDS) -> tuple:
    """Split ``entries`` into ``num_folds`` folds (fewer when there are fewer entries, at least 2) with MONAI's
    ``partition_dataset`` after a seeded shuffle; returns ``(training, validation, folds)`` for ``fold``.

    The same entries in the same order and the same seed always give the same folds.
    """
    folds_n = min(num_folds, len(entries))
    if folds_n < 2:
        raise ValueError(f"a cross-validation split needs at least 2 training cases, got {len(entries)}")
    if not 0 <= fold < folds_n:
        raise ValueError(f"fold must be in 0..{folds_n - 1} for {len(entries)} training cases, got {fold}")
    indices = partition_dataset(list(range(len(entries))), num_partitions=folds_n, shuffle=True, seed=seed)
    folds = [sorted(part) for part in indices]
    held_out = set(folds[fold])
    training = [e for i, e in enumerate(entries) if i not in held_out]
    validation = [e for i, e in enumerate(entries) if i in held_out]
    return training, validation, folds


def split_datalist(
    path: str | Path, fold: int = 0, seed: int = SPLIT_SEED, root: str | Path | None = None
) -> FoldSplit:
    """Training and validation cases (absolute paths) for ``fold`` of the datalist at ``path``.

    The datalist's ``validation`` list when it has one (``fold`` is then not used); else the ``fold`` keys of the
    training entries when every entry has one; else fold ``fold`` (0..4) of a seeded 5-fold split of ``training``.
    ``root`` (default: the datalist's folder) is what the paths are relative to.
    """
    manifest = read_manifest(path)
    base = Path(root) if root is not None else Path(path).parent
    training = manifest.get("training") or []
    if not isinstance(training, list) or not training:
        hint = f" ({manifest['build']})" if "build" in manifest else ""
        raise InputError(path, f"has no 'training' entries{hint}")
    validation = manifest.get("validation") or []
    if validation:
        return FoldSplit(_absolute(training, base), _absolute(validation, base), None, "validation list")
    names = [e.get("image") if isinstance(e, dict) else e for e in training]
    if all(isinstance(e, dict) and isinstance(e.get("fold"), int) for e in training):
        numbers = sorted({e["fold"] for e in training})
        if fold not in numbers:
            raise InputError(path, f"fold {fold} is not among the datalist's folds {numbers}")
        chosen = [e for e in training if e["fold"] == fold]
        rest = [e for e in training if e["fold"] != fold]
        folds = [[names[i] for i, e in enumerate(training) if e["fold"] == n] for n in numbers]
        return FoldSplit(_absolute(rest, base), _absolute(chosen, base), fold, "fold keys", None, folds)
    try:
        rest, chosen, folds = fold_split(training, fold, seed)
    except ValueError as err:
        raise InputError(path, f"cannot make a validation split: {err} (or add a 'validation' list)") from err
    return FoldSplit(
        _absolute(rest, base),
        _absolute(chosen, base),
        fold,
        f"{len(folds)}-fold split of training, seed {seed}",
        seed,
        [[names[i] for i in members] for members in folds],
    )


def load_datalist(
    path: str | Path,
    section: str = "training",
    root: str | Path | None = None,
    fold: int | None = 0,
    seed: int = SPLIT_SEED,
) -> list[dict]:
    """One section of a datalist as a MONAI datalist with absolute paths (``root`` defaults to the datalist's
    folder). Usable as a bundle-config ``_target_``.

    ``training`` and ``validation`` follow :func:`split_datalist` for ``fold`` when the datalist has no
    ``validation`` list (an MSD ``dataset.json`` as shipped); ``fold=None`` returns the section as written
    (all training cases).
    """
    manifest = read_manifest(path)
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    if section != "test" and fold is not None and not manifest.get("validation"):
        split = split_datalist(path, fold, seed, root)
        return split.training if section == "training" else split.validation
    entries = manifest.get(section) or []
    if not entries:
        hint = f" ({manifest['build']})" if "build" in manifest else ""
        raise InputError(path, f"has no '{section}' entries{hint}")
    base = Path(root) if root is not None else Path(path).parent
    return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=section, base_dir=str(base))


def build_manifest(
    root: str | Path,
    template: str | Path | None = None,
    fold: int = 0,
    seed: int = SPLIT_SEED,
    image_dir: str = "imagesTr",
    label_dir: str = "labelsTr",
    test_dir: str = "imagesTs",
    label_prefix: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A manifest for the data under ``root``: image/label pairs matched by file name (after swapping
    ``label_prefix = (image_prefix, label_prefix)``, e.g. BTCV's ``("img", "label")``), validation = fold ``fold``
    of the seeded 5-fold split (:func:`fold_split`, as planning uses), and ``labels``/``modality`` from
    ``template`` (or from ``root/dataset.json`` when MSD shipped one)."""
    root = Path(root)
    source = Path(template) if template else root / "dataset.json"
    if not source.is_file():
        raise InputError(source, "no template manifest to take labels and modality from")
    base = read_manifest(source)
    images = sorted(
        p
        for p in (root / image_dir).glob("*")
        if p.name.lower().endswith(VOLUME_SUFFIXES) and not p.name.startswith(".")
    )
    if not images:
        raise InputError(root / image_dir, f"holds no images ({', '.join(VOLUME_SUFFIXES)})")
    labels = {volume_stem(p.name): p for p in (root / label_dir).glob("*") if p.name.lower().endswith(VOLUME_SUFFIXES)}
    pairs, unmatched = [], []
    for image in images:
        key = volume_stem(image.name)
        if label_prefix and key.startswith(label_prefix[0]):
            key = label_prefix[1] + key[len(label_prefix[0]) :]
        if key in labels:
            pairs.append({"image": f"{image_dir}/{image.name}", "label": f"{label_dir}/{labels[key].name}"})
        else:
            unmatched.append(image.name)
    if unmatched:
        raise InputError(root / label_dir, f"has no label for {len(unmatched)} image(s): {', '.join(unmatched[:5])}")
    if len(pairs) > 1:
        training, validation, _ = fold_split(pairs, fold, seed)
    else:
        training, validation = pairs, []
    tests = sorted(
        f"{test_dir}/{p.name}" for p in (root / test_dir).glob("*") if p.name.lower().endswith(VOLUME_SUFFIXES)
    )
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
    parser.add_argument("--fold", type=int, default=0, help="which of the 5 seeded folds is validation (0..4)")
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--label-prefix", nargs=2, metavar=("IMAGE_PREFIX", "LABEL_PREFIX"))
    args = parser.parse_args(argv)
    try:
        manifest = build_manifest(
            args.root,
            args.template,
            args.fold,
            args.seed,
            label_prefix=tuple(args.label_prefix) if args.label_prefix else None,
        )
    except (InputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from medattn3d.outputs.atomic import atomic_write_text

    out = atomic_write_text(args.out, json.dumps(manifest, indent=2) + "\n")
    print(
        f"wrote {out}: {manifest['numTraining']} training, {manifest['numValidation']} validation, "
        f"{manifest['numTest']} test"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
