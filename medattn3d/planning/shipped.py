"""The shipped bundles are what ``plan`` writes for the embedded demo data: ``python -m medattn3d.planning.shipped``
regenerates ``bundles/*`` (and ``--check`` says whether the committed ones are current).

They name the demo folder by expression (``$str(medattn3d.data.demo.default_demo_dir())``) so they work on any
machine, generate the demo data on first use, and are planned for CPU training (no GPU at planning time). The
overrides below keep the demo's fast settings (the README's ~3-minute demo); they are recorded in each
``plan.json`` and README like any user's ``--set``.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path
from typing import Any

from medattn3d.planning.bundle import build_bundle
from medattn3d.planning.configs import DataSource

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "bundles"
DEMO_SOURCE = DataSource(
    dataset_dir="$str(medattn3d.data.demo.default_demo_dir())",
    datalist="$os.path.join(@dataset_dir, 'dataset.json')",
    fold=None,
    demo=True,
)
# The rules would train on whole 96x96x48 (3D U-Net) or 96x96x64 (guided) demo volumes; 64x64x32 patches train the
# demo to the same Dice in a third of the time on 2 CPU cores.
SHIPPED_OVERRIDES: dict[str, dict[str, Any]] = {
    "attention_unet_3d": {"roi_size": [64, 64, 32]},
    "attention_unet_2d": {},
    "ms_guided_attention_3d": {"roi_size": [64, 64, 32]},
    "ms_guided_attention_2d": {},
}
README_EXTRA = """## Demo data and measured results

By default this bundle trains on the embedded synthetic demo data (generated on first use under
`~/.cache/medattn3d/demo_abdomen`, or `$MEDATTN3D_DEMO_DIR`): its weights segment that synthetic CT, not real
scans. For your own data, plan a new bundle from this template: see docs/your_data.md
(`medattn3d plan --dataset-dir DIR --bundle {name} --out NEW_BUNDLE`). Figures measured on the demo:
[results.md](results.md)."""


def demo_dataset() -> Path:
    """The demo dataset folder, generated when missing or written by another generator version."""
    from medattn3d.data.demo import default_demo_dir, generate_demo_dataset

    root = default_demo_dir()
    generate_demo_dataset(root)
    return root


def generate(out_dir: Path = SHIPPED_DIR, cache_file: Path | None = None, progress: bool = False) -> list[Path]:
    """Write the four shipped bundles under ``out_dir`` (models/ and docs/results.md there are kept)."""
    from medattn3d.data.check import check_dataset
    from medattn3d.errors import DatasetError

    root = demo_dataset()
    problems = check_dataset(root / "dataset.json", root)  # once for the four bundles
    if problems:
        raise DatasetError(root / "dataset.json", problems)
    cache = cache_file or Path(tempfile.gettempdir()) / "medattn3d_demo_fingerprint.json"
    written = []
    for name, overrides in SHIPPED_OVERRIDES.items():
        written.append(
            build_bundle(
                root,
                out_dir / name,
                template=name,
                overrides=overrides,
                workers=1,
                progress=progress,
                source=DEMO_SOURCE,
                cache_file=cache,
                name=name,
                readme_extra=README_EXTRA.format(name=name),
                cuda_available=False,
                check=False,
            )
        )
    return written


GENERATED = (
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/explain.json",
    "configs/multi_gpu_train.json",
    "configs/multi_gpu_evaluate.json",
    "configs/metadata.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
    "plan.json",
)


def differences(committed: Path = SHIPPED_DIR, cache_file: Path | None = None) -> list[str]:
    """Generated files of the committed bundles that differ from a fresh generation (empty: current)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), cache_file)
        stale = []
        for name in SHIPPED_OVERRIDES:
            for f in GENERATED:
                ours, fresh = committed / name / f, Path(tmp) / name / f
                if not ours.is_file() or not filecmp.cmp(ours, fresh, shallow=False):
                    stale.append(f"{name}/{f}")
        return stale


def main(argv: list[str] | None = None) -> int:
    """``python -m medattn3d.planning.shipped [--check]``."""
    parser = argparse.ArgumentParser(prog="python -m medattn3d.planning.shipped", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report bundles that differ from a fresh generation")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences()
        for line in stale:
            print(f"stale: bundles/{line}", file=sys.stderr)
        return 1 if stale else 0
    for path in generate(progress=True):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
