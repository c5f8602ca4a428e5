"""Faster ``.nii.gz`` reading and writing: nibabel's gzip opener swapped for Intel ISA-L's (``isal`` package).

Python's zlib is single-threaded and slow: reading a 512 x 512 x 128 CT took ~0.5 s and writing its label map
~0.3 s of a whole-volume run. ISA-L decompresses about 2.5x and compresses about 8x faster here
(``benchmarks/pipeline_steps.py``), with standard gzip output. nibabel documents ``ImageOpener.compress_ext_map`` as
the place to register openers; every NIfTI that MONAI's readers and writers open goes through it. Without ``isal``
installed, nothing changes.
"""

from __future__ import annotations

from typing import Any

_ENABLED = False


def _isal_gzip_open(
    filename: str, mode: str = "rb", compresslevel: int = 1, mtime: int = 0, keep_open: bool = False
) -> Any:
    """nibabel's ``gzip_open`` signature over ISA-L's ``IGzipFile`` (levels 0-3; nibabel writes at 1)."""
    from isal import igzip

    return igzip.IGzipFile(filename, mode, compresslevel=min(max(int(compresslevel), 0), 3), mtime=mtime)


def enable_fast_gzip() -> bool:
    """Route nibabel's ``.gz`` files through ISA-L when ``isal`` is installed; returns whether it is in use."""
    global _ENABLED
    if _ENABLED:
        return True
    try:
        import isal.igzip  # noqa: F401
        from nibabel.openers import ImageOpener
    except ImportError:
        return False
    ImageOpener.compress_ext_map[".gz"] = (_isal_gzip_open, ("mode", "compresslevel", "mtime", "keep_open"))
    _ENABLED = True
    return True
