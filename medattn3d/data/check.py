"""Validate a datalist (MSD ``dataset.json`` as shipped, or our manifest) and every file it lists, reporting every
problem at once, one line each.

Checked: the JSON and its ``labels`` (keys 0..N-1) and ``modality``; every entry's shape (an ``image`` path or list
of channel paths, a ``label`` for training/validation cases); cases listed twice; then each file: missing or
unreadable, channel files on different grids, wrong rank or channel count for ``modality``, non-finite
intensities, labels whose shape, affine or values disagree with the image and ``labels``.

``python -m medattn3d.data.check DATALIST [--root DIR]``: exit status 0 when clean, 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from medattn3d.data.classes import class_values
from medattn3d.data.loading import CheckVolumed, load_volume, minimum_shape
from medattn3d.data.manifest import SECTIONS, read_manifest
from medattn3d.errors import InputError


def _header_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with ``labels`` and ``modality`` themselves."""
    problems = []
    labels, modality = manifest["labels"], manifest["modality"]
    if not isinstance(labels, dict) or not labels:
        problems.append(f'{path}: \'labels\' must be a dict like {{"0": "background", "1": "spleen"}}')
    else:
        keys = [str(k) for k in labels]
        if not all(k.isdigit() for k in keys) or len({int(k) for k in keys}) != len(keys) or "0" not in keys:
            shown = ", ".join(sorted(keys))
            problems.append(
                f"{path}: 'labels' keys must be the label values in the files, distinct integers >= 0 with 0 the "
                f"background (e.g. 0, 1, 2 or BraTS' 0, 1, 2, 4), got {shown}"
            )
    if not isinstance(modality, (dict, list)) or not modality:
        problems.append(f'{path}: \'modality\' must name one modality per input channel, e.g. {{"0": "CT"}}')
    return problems


def _entry_problem(path: Path, section: str, entry: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The entry as ``{"image", ["label"]}``, or a problem line saying what is wrong with its shape."""
    record = {"image": entry} if isinstance(entry, (str, list)) else entry
    if not isinstance(record, dict) or "image" not in record:
        return None, f"{path}: a '{section}' entry has no 'image': {entry}"
    image = record["image"]
    if not (isinstance(image, str) or (isinstance(image, list) and image and all(isinstance(p, str) for p in image))):
        return None, f"{path}: a '{section}' entry's 'image' must be a path or a list of paths: {image!r}"
    if section != "test" and not isinstance(record.get("label"), str):
        return None, f"{path}: the '{section}' entry for {image} has no 'label' path"
    return record, None


def check_dataset(
    datalist_path: str | Path, root: str | Path | None = None, workers: int = 1, spatial_dims: int = 3
) -> list[str]:
    """Every problem found in the datalist at ``datalist_path`` and its files, as ``"<file>: <problem>"`` lines
    (empty when the dataset is usable). ``root`` (default: the datalist's folder) is what its paths are relative to.
    ``workers`` > 1 reads the cases in that many processes when there is enough data (:mod:`medattn3d.data.workers`);
    the lines come in the datalist's order either way. ``spatial_dims=2`` checks for a 2D network, which also takes
    volumes of a single slice.
    """
    path = Path(datalist_path)
    try:
        manifest = read_manifest(path)
    except InputError as err:
        return [str(err)]
    problems = _header_problems(path, manifest)
    base = Path(root) if root is not None else path.parent
    channels = len(manifest["modality"]) if isinstance(manifest["modality"], (dict, list)) else 1
    labels = manifest["labels"]
    classes = len(labels) if isinstance(labels, dict) else None
    values = class_values(labels) if isinstance(labels, dict) else None
    checker = CheckVolumed(
        num_classes=classes, channels=max(channels, 1), min_size=minimum_shape(spatial_dims), class_values=values
    )
    listed, seen, records = 0, {}, []
    for section in SECTIONS:
        entries = manifest.get(section) or []
        if not isinstance(entries, list):
            problems.append(f"{path}: '{section}' is not a list")
            continue
        for entry in entries:
            listed += 1
            record, problem = _entry_problem(path, section, entry)
            if problem:
                problems.append(problem)
                continue
            assert record is not None
            key = str(record["image"])
            if section != "test" and key in seen:
                problems.append(f"{path}: {record['image']} is listed twice ('{seen[key]}' and '{section}')")
            seen.setdefault(key, section)
            records.append(record)
    if listed == 0:
        problems.append(f"{path}: lists no cases in {', '.join(SECTIONS)}")
    return problems + _all_file_problems(records, base, checker, workers)


def _all_file_problems(records: list[dict[str, Any]], base: Path, checker: CheckVolumed, workers: int) -> list[str]:
    """:func:`_file_problems` for every record, in a process pool when that pays for itself; in order."""
    from medattn3d.data import workers as pools

    def files(record: dict[str, Any]) -> list[Path]:
        return [base / p for key in ("image", "label") for p in _as_list(record.get(key))]

    if not pools.use_workers(workers, len(records), pools.bytes_on_disk(f for r in records for f in files(r))):
        return [line for record in records for line in _file_problems(record, base, checker)]
    context = pools.worker_context(["medattn3d.data.check"])
    with ProcessPoolExecutor(workers, mp_context=context, initializer=pools.init_worker) as pool:
        results = pool.map(_file_problems, records, [base] * len(records), [checker] * len(records))
        return [line for lines in results for line in lines]


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def _file_problems(record: dict[str, Any], base: Path, checker: CheckVolumed) -> list[str]:
    """Load one case's image (and label) and run the content checks; the problems found, one line each."""
    loaded, problems = {}, []
    for key in ("image", "label"):
        value = record.get(key)
        if value is None:
            continue
        try:
            # stored dtype: what the checks need, at a fraction of float32's memory and time
            target = [base / v for v in value] if isinstance(value, list) else base / value
            loaded[key] = load_volume(target, dtype=None)
        except InputError as err:
            problems.append(str(err))
    if not problems:
        problems += [str(err) for err in checker.problems(loaded)]
    return problems


def check_manifest(path: str | Path, root: str | Path | None = None) -> list[str]:
    """Former name of :func:`check_dataset` (same result)."""
    return check_dataset(path, root)


def main(argv: list[str] | None = None) -> int:
    """Print every problem and return 1 if there is any, else print a one-line OK and return 0."""
    parser = argparse.ArgumentParser(prog="python -m medattn3d.data.check", description=__doc__)
    parser.add_argument("manifest", help="the datalist: MSD's dataset.json or a manifest")
    parser.add_argument("--root", help="data root the datalist's paths are relative to (default: its folder)")
    parser.add_argument("--workers", type=int, default=2, help="processes reading the cases (default 2)")
    parser.add_argument(
        "--spatial-dims",
        type=int,
        choices=(2, 3),
        default=3,
        help="the network the data is for: 2 also takes single-slice volumes (default 3)",
    )
    args = parser.parse_args(argv)
    problems = check_dataset(args.manifest, args.root, args.workers, args.spatial_dims)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.manifest}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
