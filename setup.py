"""Build hook: wheels carry the shipped bundles as package data, ``medattn3d/_bundles/<name>``.

Only what a shipped bundle is goes in: ``configs/``, ``docs/`` and ``LICENSE``; trained weights (``models/``) and run
outputs (``eval/``, ``predictions/``, ``explain/``) never do. Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_PARTS = ("configs", "docs", "LICENSE")


class BuildPyWithBundles(build_py):
    """``build_py`` plus a copy of ``bundles/<name>/{configs,docs,LICENSE}`` into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install runs the checkout's bundles/ in place
            return
        source = Path(__file__).resolve().parent / "bundles"
        target = Path(self.build_lib) / "medattn3d" / "_bundles"
        shutil.rmtree(target, ignore_errors=True)
        for bundle in sorted(p for p in source.iterdir() if (p / "configs").is_dir()):
            for part in SHIPPED_PARTS:
                src, dst = bundle / part, target / bundle.name / part
                if src.is_dir():
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.ts"))
                elif src.is_file():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithBundles})
