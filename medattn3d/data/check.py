"""Validate a manifest and the files it lists, reporting every problem at once.

``python -m medattn3d.data.check MANIFEST [--root DIR]``: exit status 0 when clean, 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medattn3d.data.loading import CheckVolumed, load_volume
from medattn3d.data.manifest import SECTIONS, num_classes, read_manifest
from medattn3d.errors import InputError


def check_manifest(path: str | Path, root: str | Path | None = None) -> list[str]:
    """Every problem found in the manifest at ``path`` and its files, as ``"<file>: <problem>"`` lines."""
    try:
        manifest = read_manifest(path)
    except InputError as err:
        return [str(err)]
    base = Path(root) if root is not None else Path(path).parent
    checker = CheckVolumed(num_classes=num_classes(manifest), channels=len(manifest["modality"]))
    problems: list[str] = []
    listed = 0
    for section in SECTIONS:
        entries = manifest.get(section) or []
        if not isinstance(entries, list):
            problems.append(f"{path}: '{section}' is not a list")
            continue
        for entry in entries:
            listed += 1
            record = {"image": entry} if isinstance(entry, str) else dict(entry)
            if "image" not in record:
                problems.append(f"{path}: a '{section}' entry has no 'image': {entry}")
                continue
            loaded, failed = {}, False
            for key in ("image", "label"):
                if key in record:
                    try:
                        loaded[key] = load_volume(base / record[key])
                    except InputError as err:
                        problems.append(str(err))
                        failed = True
            if failed:
                continue
            try:
                checker(loaded)
            except InputError as err:
                problems.append(str(err))
    if listed == 0:
        problems.append(f"{path}: lists no cases in {', '.join(SECTIONS)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print every problem and return 1 if there is any, else print a one-line OK and return 0."""
    parser = argparse.ArgumentParser(prog="python -m medattn3d.data.check", description=__doc__)
    parser.add_argument("manifest")
    parser.add_argument("--root", help="data root the manifest's paths are relative to (default: its folder)")
    args = parser.parse_args(argv)
    problems = check_manifest(args.manifest, args.root)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.manifest}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
