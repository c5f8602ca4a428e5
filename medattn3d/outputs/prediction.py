"""Predictions back in the input's geometry, written in every requested format: one code path for the bundles'
``postprocessing`` (:func:`prediction_writer`) and for the CLI runner (:func:`write_case`).

The chain: softmax over the network's logits, invert the preprocessing (reorientation, resampling -- the latter with
:class:`medattn3d.data.resample.FastInverseSpacingd`'s separable linear inverse) on the probabilities, argmax to a
label map (:class:`ChannelArgmaxd`), then write the label map (NIfTI, Slicer ``.seg.nrrd``, DICOM SEG), the JSON
sidecar with per-label voxel counts and volumes, Slicer and ITK-SNAP label tables and, if asked, the probabilities.
Every file is written atomically: a failure leaves no partial file behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, Compose, Invertd, MapTransform

from medattn3d.data.blocks import block_rows, run_blocks
from medattn3d.data.classes import is_identity
from medattn3d.errors import InputError
from medattn3d.outputs.atomic import atomic_write_text
from medattn3d.outputs.formats import spacing_of, write_nifti_labels, write_probabilities, write_seg_nrrd
from medattn3d.outputs.naming import (
    FORMAT_SUFFIXES,
    ITKSNAP_TABLE_SUFFIX,
    PROBABILITIES_POSTFIX,
    SIDECAR_SUFFIX,
    SLICER_TABLE_SUFFIX,
    case_output_names,
    check_formats,
    expected_outputs,
    split_name,
)
from medattn3d.outputs.tables import (
    itksnap_label_description,
    label_entries,
    sidecar,
    slicer_color_table,
    value_name_map,
    written_values,
)


class ChannelArgmaxd(MapTransform):
    """Per-voxel argmax over the channel axis as a one-channel integer label map, meta data kept.

    Like ``AsDiscreted(argmax=True)``, but ``torch.argmax`` over a short leading axis of a large volume runs
    strided on one core (2.4 s for 4 x 512 x 512 x 128 here); a running maximum over the channels takes a fifth of
    that (``benchmarks/pipeline_steps.py``). Ties go to the lower class index, as with ``argmax``.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = channel_argmax(d[key])
        return d


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """``(C, ...)`` scores -> ``(1, ...)`` labels (uint8 up to 256 classes), MetaTensor meta kept. A running maximum
    over the channels, block by block along the first spatial axis (:mod:`medattn3d.data.blocks`: a block's
    temporaries stay in cache); NaN scores never win, ties go to the lower class. The labels keep the scores'
    memory layout."""
    values = scores.as_tensor() if isinstance(scores, MetaTensor) else torch.as_tensor(scores)
    dtype = torch.uint8 if values.shape[0] <= 256 else torch.int16
    labels = torch.zeros_like(values[0], dtype=dtype)
    if values.shape[0] > 1 and values.dim() > 1:
        rows = block_rows(values[0, 0].numel() * values.element_size() * values.shape[0])
        run_blocks(
            [
                partial(_argmax_block, values[:, start : start + rows], labels[start : start + rows])
                for start in range(0, values.shape[1], rows)
            ]
        )
    labels = labels[None]
    return MetaTensor(labels, meta=scores.meta) if isinstance(scores, MetaTensor) else labels


def _argmax_block(values: torch.Tensor, labels: torch.Tensor) -> None:
    """One block of :func:`channel_argmax`: ``labels`` (zeros) <- index of the first maximum over ``values``' axis 0."""
    best = values[0].clone()
    better = torch.empty_like(best, dtype=torch.bool)
    for index in range(1, values.shape[0]):
        torch.gt(values[index], best, out=better)
        labels.masked_fill_(better, index)
        if index + 1 < values.shape[0]:
            torch.where(better, values[index], best, out=best)


def restore_chain(preprocessing: Compose, image_key: str = "image", pred_key: str = "pred", softmax: bool = True):
    """Softmax (optional) and the inverse of ``preprocessing`` on ``pred``, linear interpolation: probabilities in
    the input's grid."""
    steps = [Activationsd(pred_key, softmax=True)] if softmax else []
    steps.append(Invertd(pred_key, transform=preprocessing, orig_keys=image_key, nearest_interp=False, to_tensor=True))
    return Compose(steps)


def check_request(source: str | Path, formats: Sequence[str]) -> tuple[str, ...]:
    """Validate ``formats`` for one input before any compute: ``dicom-seg`` needs a DICOM series folder."""
    formats = check_formats(formats)
    if "dicom-seg" in formats and not Path(source).is_dir():
        raise InputError(source, "--format dicom-seg needs a DICOM series folder as input; this is a file")
    return formats


def _source_of(tensor: Any) -> str:
    meta = getattr(tensor, "meta", None) or {}
    return str(meta.get("filename_or_obj", ""))


def write_restored(
    probabilities: torch.Tensor,
    affine: np.ndarray,
    output_dir: str | Path,
    name: str,
    class_names: Mapping[Any, str] | Sequence[str] | None = None,
    formats: Sequence[str] = ("nifti",),
    save_probabilities: bool = False,
    source: str | Path = "",
    output_postfix: str = "seg",
    model_info: Mapping[str, Any] | None = None,
    series_uid: str | None = None,
) -> list[Path]:
    """Write every output of one case from its probabilities ``(C, X, Y, Z)`` in the input's grid (``affine``:
    voxel -> RAS). Returns the written paths: segmentations in the order of ``formats``, the probabilities, the
    Slicer and ITK-SNAP tables, and last the JSON sidecar (its presence marks a complete case)."""
    formats = check_request(source, formats) if "dicom-seg" in formats else check_formats(formats)
    output_dir = Path(output_dir)
    probabilities = (
        probabilities.as_tensor() if isinstance(probabilities, MetaTensor) else torch.as_tensor(probabilities)
    )
    probabilities = probabilities.detach().cpu()
    affine = np.asarray(affine, dtype=np.float64)
    indices = channel_argmax(probabilities)[0].numpy()
    num_classes = int(probabilities.shape[0])
    values = written_values(class_names, num_classes)
    # class k is written as the dataset's own label value (BraTS: class 3 -> 4); 0 .. n - 1 stays as it is
    labels = indices if is_identity(values) else _as_values(indices, values)
    names = value_name_map(class_names, num_classes)
    spacing = spacing_of(affine)
    entries = label_entries(labels, names, float(np.prod(spacing)))
    base = output_dir / f"{name}_{output_postfix}"
    written: list[Path] = []
    try:
        for fmt in formats:
            path = Path(f"{base}{FORMAT_SUFFIXES[fmt]}")
            if fmt == "nifti":
                write_nifti_labels(path, labels, affine)
            elif fmt == "nrrd":
                write_seg_nrrd(path, labels, affine, entries)
            else:
                from medattn3d.outputs.dicom_seg import write_dicom_seg  # highdicom import only when asked for

                algorithm = str((model_info or {}).get("name", "medattn3d"))
                # DICOM numbers segments 1, 2, 3, ...: there segment k is class k, named as the value it stands for
                segments = [dataclasses.replace(e, value=k) for k, e in enumerate(entries)]
                write_dicom_seg(path, indices, affine, segments, source, series_uid=series_uid, algorithm=algorithm)
            written.append(path)
        probability_path = output_dir / f"{name}_{PROBABILITIES_POSTFIX}.nii.gz"
        files = {fmt: p.name for fmt, p in zip(formats, written, strict=True)}
        if save_probabilities:
            files["probabilities"] = probability_path.name
        files |= {
            "slicer_color_table": f"{base.name}{SLICER_TABLE_SUFFIX}",
            "itksnap_labels": f"{base.name}{ITKSNAP_TABLE_SUFFIX}",
        }
        tables = {
            SLICER_TABLE_SUFFIX: slicer_color_table(entries, base.name),
            ITKSNAP_TABLE_SUFFIX: itksnap_label_description(entries),
            SIDECAR_SUFFIX: sidecar(entries, files, str(source), spacing, labels.shape, model_info),
        }
        if save_probabilities:
            written.append(write_probabilities(probability_path, probabilities, affine))
        # the sidecar goes last: when it exists, every other file of the case is complete
        for suffix in (SLICER_TABLE_SUFFIX, ITKSNAP_TABLE_SUFFIX, SIDECAR_SUFFIX):
            written.append(atomic_write_text(Path(f"{base}{suffix}"), tables[suffix]))
    except BaseException:
        # no half-written case: every file this call was to write goes, an earlier run's copy included (its sidecar
        # would otherwise mark a mixed set as complete); the case is then simply not done, for --continue too
        for path in {*written, *expected_outputs(output_dir, name, formats, save_probabilities, output_postfix)}:
            path.unlink(missing_ok=True)
        raise
    return written


def _as_values(indices: np.ndarray, values: list[int]) -> np.ndarray:
    """The class-index map ``indices`` as the dataset's label values (uint8, or uint16 past 255)."""
    lookup = np.asarray(values, dtype=np.uint8 if max(values) <= 255 else np.uint16)
    return lookup[indices]


def _as_prediction(pred: Any, image: Any) -> MetaTensor:
    """The network output as a MetaTensor carrying the preprocessed image's meta and applied operations."""
    if isinstance(pred, MetaTensor):
        return pred
    result = MetaTensor(torch.as_tensor(pred), meta=dict(getattr(image, "meta", {}) or {}))
    result.applied_operations = list(getattr(image, "applied_operations", []))
    return result


def write_case(
    pred: torch.Tensor,
    data: Mapping[Hashable, Any],
    preprocessing: Compose,
    output_dir: str | Path,
    name: str,
    class_names: Mapping[Any, str] | Sequence[str] | None = None,
    formats: Sequence[str] = ("nifti",),
    save_probabilities: bool = False,
    source: str | Path | None = None,
    output_postfix: str = "seg",
    model_info: Mapping[str, Any] | None = None,
    series_uid: str | None = None,
    image_key: str = "image",
    softmax: bool = True,
) -> list[Path]:
    """Write one case: ``pred`` = network logits ``(C, ...)`` in network space, ``data`` = the preprocessed dict
    (its image's meta and applied operations are inverted). ``source`` (default: the image's file) is the input
    path recorded in the sidecar and, for ``dicom-seg``, the series folder the SEG references. Returns the paths."""
    image = data[image_key]
    source = source if source is not None else _source_of(image)
    formats = check_request(source, formats)
    restored = restore_chain(preprocessing, image_key, "pred", softmax)(
        {image_key: image, "pred": _as_prediction(pred, image)}
    )
    probabilities = restored["pred"]
    return write_restored(
        probabilities,
        probabilities.affine.numpy() if isinstance(probabilities, MetaTensor) else image.affine.numpy(),
        output_dir,
        name,
        class_names,
        formats,
        save_probabilities,
        source,
        output_postfix,
        model_info,
        series_uid,
    )


class WriteCased(MapTransform):
    """The writing end of :func:`prediction_writer`: restored probabilities under ``pred_key`` -> every output file
    of the case (see :func:`write_restored`). The case name is the input's stem, made unique among
    ``input_paths`` when given (``case.nii.gz`` and ``case.nrrd`` in one run do not overwrite each other)."""

    def __init__(
        self,
        pred_key: str,
        output_dir: str | Path,
        class_names: Mapping[Any, str] | Sequence[str] | None = None,
        formats: Sequence[str] = ("nifti",),
        save_probabilities: bool = False,
        output_postfix: str = "seg",
        input_paths: Sequence[str | Path] | None = None,
        model_info: Mapping[str, Any] | None = None,
        series_uid: str | None = None,
    ) -> None:
        super().__init__(pred_key)
        self.pred_key, self.output_dir, self.class_names = pred_key, Path(output_dir), class_names
        self.formats, self.save_probabilities = check_formats(formats), save_probabilities
        self.output_postfix, self.model_info, self.series_uid = output_postfix, model_info, series_uid
        # keyed by each case's first file (what its meta records); one file per channel -> the case's name
        self.names = case_output_names(input_paths) if input_paths else {}

    def name_for(self, source: str) -> str:
        return self.names.get(Path(source).absolute()) or split_name(source)[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        probabilities = d[self.pred_key]
        source = _source_of(probabilities)
        written = write_restored(
            probabilities,
            probabilities.affine.numpy(),
            self.output_dir,
            self.name_for(source),
            self.class_names,
            self.formats,
            self.save_probabilities,
            source,
            self.output_postfix,
            self.model_info,
            self.series_uid,
        )
        d[f"{self.pred_key}_files"] = [str(p) for p in written]
        d[self.pred_key] = channel_argmax(probabilities)
        return d


def prediction_writer(
    preprocessing: Compose,
    output_dir: str | Path,
    class_names: Mapping[Any, str] | Sequence[str] | None = None,
    formats: Sequence[str] = ("nifti",),
    save_probabilities: bool = False,
    output_postfix: str = "seg",
    image_key: str = "image",
    pred_key: str = "pred",
    softmax: bool = True,
    input_paths: Sequence[str | Path] | None = None,
    model_info: Mapping[str, Any] | None = None,
    series_uid: str | None = None,
) -> Compose:
    """The bundles' ``postprocessing``: softmax, invert ``preprocessing`` on the probabilities, write every output
    of the case as :func:`write_case` does (same files, same code). Afterwards ``pred`` holds the label map and
    ``pred_files`` the written paths."""
    chain = restore_chain(preprocessing, image_key, pred_key, softmax)
    writer = WriteCased(
        pred_key,
        output_dir,
        class_names,
        formats,
        save_probabilities,
        output_postfix,
        input_paths,
        model_info,
        series_uid,
    )
    return Compose([*chain.transforms, writer])
