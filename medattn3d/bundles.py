"""Find bundles safely and run their configs through ``monai.bundle``.

A bare name (``attention_unet_3d``) means a shipped bundle and nothing else; a bundle folder must be written as a
path (``./my_bundle``, ``runs/liver``), so a folder that happens to sit in the working directory is never run by
accident: bundle configs execute code (MONAI ``$`` expressions and ``_target_`` calls), so only trusted bundles may
run.

Where the shipped bundles live:

- source checkout: ``<repo>/bundles/<name>``, run in place (weights in ``models/``, outputs in ``eval/``,
  ``predictions/``, ``explain/``; all gitignored);
- installed wheel: read-only package data in ``medattn3d/_bundles/<name>`` (configs, docs, LICENSE). Each is run
  from a copy in ``$MEDATTN3D_HOME/bundles/<name>`` (default ``~/.local/share/medattn3d``), made on first use and
  whose configs are refreshed when the package version changes, so weights and outputs never go to site-packages.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from medattn3d import __version__
from medattn3d.errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLE_NAMES = ("attention_unet_3d", "attention_unet_2d", "ms_guided_attention_3d", "ms_guided_attention_2d")
SHIPPED_PARTS = ("configs", "docs", "LICENSE")  # what a shipped bundle is; weights and outputs are not
VERSION_STAMP = ".medattn3d-version"
HOME_ENV = "MEDATTN3D_HOME"


def shipped_bundles_dir() -> Path:
    """The folder of the shipped bundles: package data in a wheel install, else the checkout's ``bundles/``."""
    packaged = PACKAGE_DIR / "_bundles"
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent / "bundles"


BUNDLES_DIR = shipped_bundles_dir()


def is_checkout() -> bool:
    """True when the package runs from a source checkout (shipped bundles are run in place there)."""
    return shipped_bundles_dir() == PACKAGE_DIR.parent / "bundles" and (PACKAGE_DIR.parent / "pyproject.toml").is_file()


def home_dir() -> Path:
    """Where an installed copy keeps weights and run outputs: ``$MEDATTN3D_HOME`` or ``~/.local/share/medattn3d``."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".local" / "share" / "medattn3d"


def shipped_names() -> list[str]:
    """Names of the shipped bundles (every folder with ``configs/`` in :func:`shipped_bundles_dir`)."""
    root = shipped_bundles_dir()
    return sorted(p.name for p in root.glob("*") if (p / "configs").is_dir()) if root.is_dir() else []


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or (os.altsep is not None and os.altsep in spec) or spec.startswith(".")


def _user_copy(name: str, source: Path) -> Path:
    """The run copy of shipped bundle ``name`` under :func:`home_dir`; configs/docs/LICENSE (re)copied when missing
    or written by another package version. ``models/`` and run outputs in the copy are kept."""
    target = home_dir() / "bundles" / name
    stamp = target / VERSION_STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == __version__ and (target / "configs").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for part in SHIPPED_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            staged = target / f".{part}.new"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(src, staged)
            shutil.rmtree(dst, ignore_errors=True)
            staged.rename(dst)
        elif src.is_file():
            shutil.copy2(src, dst)
    (target / "models").mkdir(exist_ok=True)
    stamp.write_text(__version__ + "\n", encoding="utf-8")
    return target


def resolve_bundle(spec: str | Path) -> Path:
    """The folder to run for ``spec``: a shipped bundle for a bare name, a folder for a path (``InputError``
    when it is neither). An installed shipped bundle resolves to its run copy under :func:`home_dir`."""
    text = str(spec)
    if isinstance(spec, Path) or _looks_like_path(text):
        folder = Path(text).expanduser()
        if not (folder / "configs" / "inference.json").is_file():
            raise InputError(folder, "is not a bundle folder (no configs/inference.json)")
        return folder.resolve()
    source = shipped_bundles_dir() / text
    if not (source / "configs").is_dir():
        known = ", ".join(shipped_names())
        raise InputError(
            text, f"no such bundle (known: {known}; a bundle folder must be given as a path, e.g. ./{text})"
        )
    return source if is_checkout() else _user_copy(text, source)


bundle_path = resolve_bundle  # the earlier name, kept for benchmarks and scripts


def is_shipped(path: str | Path) -> bool:
    """True for a shipped bundle's folder or its run copy: user-data training must not write into these."""
    path = Path(path).resolve()
    if path.parent == shipped_bundles_dir().resolve():
        return True
    copies = (home_dir() / "bundles").resolve()
    return path.parent == copies and path.name in shipped_names() and (path / VERSION_STAMP).is_file()


NVIMGCODEC_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"


def quiet_monai(quiet: bool = True) -> None:
    """Hide MONAI's INFO logs and its per-config trust warning (``quiet``), or let them through again.

    ``monai.apps.utils.get_logger`` gives each MONAI module its own INFO-level stdout handler, so the levels are
    set per logger; the trust warning is a ``UserWarning`` raised by ``monai.bundle.scripts.run``.
    """
    import monai.bundle  # noqa: F401  (creates MONAI's loggers, so their levels can be set)

    level = logging.WARNING if quiet else logging.INFO
    for name in list(logging.root.manager.loggerDict):
        if name == NVIMGCODEC_LOGGER:  # kept at ERROR (medattn3d.data.loading): its warning is noise on every CPU
            continue
        if name == "monai" or name.startswith("monai."):
            logging.getLogger(name).setLevel(level)
    # "Logging file is set to False, skipping logging." is a warning in quiet mode, where we skip it on purpose
    logging.getLogger("monai.bundle.workflows").setLevel(logging.ERROR if quiet else logging.INFO)
    action = "ignore" if quiet else "default"
    warnings.filterwarnings(action, message=r"parsing config_file", category=UserWarning)
    # MONAI's nvImageCodec warning is filtered, quiet or not, where the loaders are built (medattn3d.data.loading)


class _StdoutHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stdout`` is at the time of each record (not at creation)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _medattn3d_console() -> None:
    """Our own INFO lines (training and validation logs) as plain lines, once (records still propagate, so a
    root handler that the user configured sees them too)."""
    logger = logging.getLogger("medattn3d")
    if not any(getattr(h, "_medattn3d", False) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._medattn3d = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run_bundle(bundle: Path, configs: list[str], quiet: bool = True, **overrides: Any) -> Any:
    """``python -m monai.bundle run`` on ``bundle`` with ``configs`` merged in order and ``overrides`` applied.

    ``quiet`` skips the bundle's ``logging.conf`` (MONAI's INFO logs, ignite's engine logs) and MONAI's trust
    warning; medattn3d's own log lines (training progress, validation Dice) still print.
    """
    from monai.bundle import run

    quiet_monai(quiet)
    logging_file: str | bool = False
    if quiet:
        _medattn3d_console()
        overrides = {**quiet_overrides(bundle, configs), **overrides}
    else:
        logging_file = str(bundle / "configs" / "logging.conf")
    files = [str(bundle / "configs" / c) for c in configs]
    return run(
        config_file=files,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=logging_file,
        bundle_root=str(bundle),
        **overrides,
    )


def quiet_overrides(bundle: Path, configs: list[str]) -> dict[str, bool]:
    """``{"show_progress": False}`` when one of ``configs`` has that setting (the planned bundles' switch for their
    caching and epoch progress bars, the only output a quiet run would otherwise show); nothing otherwise."""
    return {"show_progress": False} if any("show_progress" in read_config(bundle, c) for c in configs) else {}


def read_config(bundle: Path, config: str = "inference.json") -> dict[str, Any]:
    """A bundle config as plain JSON (for looking up literal values such as ``num_classes``)."""
    return json.loads((bundle / "configs" / config).read_text(encoding="utf-8"))


def bundle_config(bundle: Path, overrides: dict[str, Any] | None = None) -> Any:
    """``bundle/configs/inference.json`` as a MONAI ``ConfigParser`` rooted at ``bundle``, ``overrides`` applied."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def bundle_class_names(bundle: Path, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The bundle's ``class_names`` (from ``inference.json``), else the datalist's ``labels``, else ``{}``."""
    parser = bundle_config(bundle, overrides)
    names = parser.get_parsed_content("class_names", default=None)
    if isinstance(names, dict) and names:
        return {str(k): str(v) for k, v in names.items()}
    try:
        datalist = Path(parser.get_parsed_content("datalist"))
        return {str(k): str(v) for k, v in json.loads(datalist.read_text(encoding="utf-8")).get("labels", {}).items()}
    except Exception:  # no datalist (yet): the CSV's own names are printed
        print(f"note: no class names in {bundle} or its datalist", file=sys.stderr)
        return {}
