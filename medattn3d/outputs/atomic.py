"""The package's one atomic-write helper: a file appears complete under its final name, or not at all.

Writers (nibabel, SimpleITK, pydicom, ``torch.save``, ``json``) write to a temporary file in the target's folder --
the same file system, so the final ``os.replace`` is atomic -- whose name ends with the target's full name, so
suffix-driven writers (``.nii.gz`` compresses, ``.seg.nrrd`` picks NRRD) choose the same format. On any failure the
temporary file is removed and the target, if it existed, is left untouched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_PREFIX = ".tmp-"


def temporary_sibling(target: str | Path) -> Path:
    """A fresh, not yet existing path next to ``target``: hidden, unique per process and call, same suffixes."""
    target = Path(target)
    return target.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{target.name}")


@contextmanager
def atomic_path(target: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` to write to; rename it onto ``target`` when the block succeeds,
    delete it when the block raises (the exception propagates). Creates ``target``'s folder if needed.

    ``fsync=True`` flushes the file to disk before the rename (checkpoints: survive a power cut, not just a crash).

    Example::

        with atomic_path(out / "case_seg.nii.gz") as tmp:
            nib.save(image, tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{target}: the writer produced no file (expected it at {tmp.name})")
        if fsync:
            with open(tmp, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically (JSON sidecars, manifests, tables); returns ``target``."""
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return target


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target``."""
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target
