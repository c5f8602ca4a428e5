"""The batch inference loop behind ``medattn3d infer``: a finished case is never lost.

One run = one bundle model: the bundle's ``configs/inference.json`` is parsed once, the network is built and its
weights loaded and prepared once, and then the cases go through one at a time:

1. before any compute, a header-only pass checks every input (rank, channels, size, DICOM series consistency,
   whether the requested formats suit it) and reports every failing input at once; those are skipped, the rest run;
2. per case, the bundle's preprocessing reads the volume once (its ``CheckVolumed`` checks the voxels on that same
   load), the inferer predicts, :func:`medattn3d.outputs.write_case` writes every file atomically, and one line
   with the time and an ETA is printed;
3. a failing case is reported with its file and reason and the run goes on (``fail_fast`` stops it); the summary
   lists written / skipped / failed.

Cases can be split across processes or machines (``num_parts``/``part_id``); under ``torchrun`` the rank and world
size map onto the same split (:func:`distributed_part`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medattn3d.bundles import bundle_config  # re-exported: the run's config reader lives with the bundles
from medattn3d.data.inputs import check_case
from medattn3d.errors import InputError, find_input_error

# --- splitting the cases -------------------------------------------------------------------------------------------


def select_part(items: Sequence[Any], num_parts: int = 1, part_id: int = 0) -> list[Any]:
    """Share ``part_id`` of ``num_parts`` of ``items``: every ``num_parts``-th item from ``part_id`` (interleaved, so
    sorted inputs of mixed sizes spread evenly). The shares of all parts cover ``items`` exactly once."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must lie in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")
    return list(items[part_id::num_parts])


def distributed_part() -> tuple[int, int] | None:
    """``(world_size, rank)`` when launched by ``torchrun`` with more than one process, else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (world, int(os.environ.get("RANK", "0"))) if world > 1 else None


# --- the bundle's model ---------------------------------------------------------------------------------------------


def device_expression(device: str) -> str | None:
    """The bundle config value for ``--device`` (``auto`` keeps the bundle's own choice: CUDA when available)."""
    if device == "auto":
        return None
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return f"$torch.device('{device}')"


@dataclass
class BundleModel:
    """What one inference run needs from a bundle, built once: the prepared network, the preprocessing (which the
    writers invert), the inferer, the device and the class names."""

    network: torch.nn.Module
    preprocessing: Any
    inferer: Any
    device: torch.device
    class_names: dict[str, str]
    in_channels: int
    info: dict[str, Any] = field(default_factory=dict)
    spatial_dims: int = 3

    @classmethod
    def from_bundle(
        cls, bundle: Path, checkpoint: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> BundleModel:
        """Parse ``bundle/configs/inference.json`` (+ ``overrides``), build the network on its device, load
        ``checkpoint`` (default: the config's ``checkpoint``) and prepare it for inference, once."""
        from medattn3d.engine.precision import prepare_for_inference
        from medattn3d.training import load_weights

        parser = bundle_config(bundle, overrides)
        weights = Path(checkpoint) if checkpoint else Path(parser.get_parsed_content("checkpoint"))
        if not weights.is_file():
            raise InputError(weights, "no trained weights: train the bundle first or pass --checkpoint")
        device = torch.device(parser.get_parsed_content("device"))
        network = parser.get_parsed_content("network_def")
        load_weights(network, weights)  # one line naming what differs when the weights do not fit
        runtime = parser.get_parsed_content("runtime", default="torch")
        # the torch runtime prepares the network in place; openvino/onnxruntime return a stand-in module
        network = prepare_for_inference(
            network.to(device),
            parser.get_parsed_content("precision"),
            device,
            runtime=runtime,
            ir_path=bundle / "models" / "model_int8.xml",  # runtime "openvino-int8" (medattn3d export)
        )
        int8_tip = int8_would_help(runtime, parser.get_parsed_content("precision"), device, bundle)
        names = parser.get_parsed_content("class_names", default=None) or {}
        if not names:
            names = {str(i): f"class{i}" for i in range(int(parser.get_parsed_content("num_classes")))}
        return cls(
            network=network,
            preprocessing=parser.get_parsed_content("preprocessing"),
            inferer=parser.get_parsed_content("inferer"),
            device=device,
            class_names={str(k): str(v) for k, v in names.items()},
            in_channels=int(parser.get_parsed_content("in_channels")),
            spatial_dims=int(parser.get_parsed_content("spatial_dims", default=3)),
            info={
                "name": f"medattn3d {bundle.name}",
                "bundle": str(bundle),
                "checkpoint": str(weights),
                "runtime": runtime,
                "int8_tip": int8_tip,
            },
        )

    def predict(self, path: Path | Sequence[Path]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Read and preprocess one input (a volume, or one file per channel; one read, the voxel checks run on that
        load), run the network; returns the logits (channel first, network space, on the CPU) and the preprocessed
        data the writers invert."""
        image_entry = str(path) if isinstance(path, (str, Path)) else [str(p) for p in path]
        data = self.preprocessing({"image": image_entry})
        image = data["image"]
        with torch.inference_mode():
            logits = self.inferer(image[None].to(self.device), self.network)[0]
        return logits.float().cpu(), data


def int8_would_help(runtime: str, precision: str, device: torch.device, bundle: Path) -> str | None:
    """How much faster an INT8 model would run (``"2.5-3x"``), when this run serves the network through OpenVINO in
    fp32 (bf16 is not faster on this CPU: :func:`medattn3d.engine.precision.cpu_prefers_bf16`), the CPU's class
    gained from INT8 (int8 dot products, or AVX2: :func:`medattn3d.engine.precision.int8_speedup_over_fp32`) and the
    bundle has no INT8 model yet; else ``None``.
    There ``medattn3d export --format openvino-int8`` makes one (an opt-in: its accuracy is the user's to check)."""
    from medattn3d.engine.backends import resolve_runtime
    from medattn3d.engine.precision import cpu_prefers_bf16, int8_speedup_over_fp32

    if precision != "auto" or device.type != "cpu" or resolve_runtime(runtime, device) != "openvino":
        return None
    if cpu_prefers_bf16() or (bundle / "models" / "model_int8.xml").is_file():
        return None
    return int8_speedup_over_fp32()


# --- the loop ------------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What a run did, case by case: written outputs, skipped (already complete) inputs, failures with reasons."""

    written: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def merge(self, other: RunSummary) -> RunSummary:
        """This summary with ``other``'s cases added (the parts of a distributed run)."""
        return RunSummary(
            {**self.written, **other.written}, [*self.skipped, *other.skipped], {**self.failed, **other.failed}
        )

    def lines(self) -> list[str]:
        """The closing summary: counts, then each failure with its reason."""
        out = [f"summary: {len(self.written)} written, {len(self.skipped)} skipped, {len(self.failed)} failed"]
        out += [f"  failed: {reason}" for reason in self.failed.values()]
        return out


def _reason(err: BaseException) -> str:
    """``<file>: <problem>`` for bad input, else the error's last line."""
    from medattn3d.errors import find_input_error

    found = find_input_error(err)
    if found is not None:
        return str(found)
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class InferenceRun:
    """One batch run over ``inputs`` (all of the run's inputs; ``num_parts``/``part_id`` choose this process's share;
    names are decided over all of them, so every part names a case the same way).

    Args:
        model: the bundle model (built once).
        output_dir: where every case's files go.
        formats: segmentation formats (``nifti``, ``nrrd``, ``dicom-seg``).
        save_probabilities: also write the per-class probabilities.
        resume: skip cases whose expected outputs all exist (``--continue``).
        fail_fast: stop at the first failing case.
        series_uid: the DICOM series to read from a folder holding several.
        print_line: where progress lines go (``None``: nowhere).
        channel_files: cases stored one file per channel (:func:`medattn3d.data.inputs.group_channel_files`): the
            input that stands for the case (its first channel file) -> its channel files in order.
    """

    model: BundleModel
    output_dir: Path
    formats: Sequence[str] = ("nifti",)
    save_probabilities: bool = False
    resume: bool = False
    fail_fast: bool = False
    series_uid: str | None = None
    print_line: Callable[[str], None] | None = print
    channel_files: dict[Path, list[Path]] = field(default_factory=dict)

    @property
    def _min_size(self) -> tuple[int, int, int]:
        from medattn3d.data.loading import minimum_shape

        return minimum_shape(self.model.spatial_dims)

    def _files(self, path: Path) -> list[Path]:
        return self.channel_files.get(path, [path])

    def _label(self, path: Path) -> str:
        files = self._files(path)
        return path.name if len(files) == 1 else f"{path.name} (+{len(files) - 1} channel files)"

    def _output_names(self, inputs: Sequence[Path]) -> dict[Path, str]:
        """Output names; a case stored one file per channel is named after its case (``case_0000.nii.gz`` and its
        siblings -> ``case``), as nnU-Net names it."""
        from medattn3d.outputs import case_output_names

        return case_output_names(self._files(path) for path in inputs)

    def _say(self, line: str) -> None:
        if self.print_line is not None:
            self.print_line(line)

    def run(self, inputs: Sequence[Path], num_parts: int = 1, part_id: int = 0) -> RunSummary:
        """Check this share's inputs (headers), then predict and write each good one; returns the summary."""
        from medattn3d.outputs import expected_outputs

        names = self._output_names(inputs)
        share = select_part(list(inputs), num_parts, part_id)
        summary = RunSummary()
        todo: list[Path] = []
        for path in share:
            name = names[Path(path).absolute()]
            if self.resume and all(
                p.is_file() for p in expected_outputs(self.output_dir, name, self.formats, self.save_probabilities)
            ):
                summary.skipped.append(str(path))
                continue
            try:
                check_case(self._files(path), self.model.in_channels, self.formats, self.series_uid, self._min_size)
            except InputError as err:
                summary.failed[str(path)] = str(err)
                continue
            todo.append(path)
        for reason in summary.failed.values():
            self._say(f"failed, bad input (not run): {reason}")
        if summary.failed and self.fail_fast:
            return summary
        if summary.skipped:
            self._say(f"{len(summary.skipped)} case(s) already complete in {self.output_dir} (--continue)")
        start = time.perf_counter()
        for index, path in enumerate(todo, 1):
            name = names[Path(path).absolute()]
            case_start = time.perf_counter()
            try:
                files = self._case(path, name)
            except Exception as err:
                reason = _reason(err)
                # the summary lists failures on their own: each names its case, whatever raised
                summary.failed[str(path)] = reason if find_input_error(err) is not None else f"{path}: {reason}"
                self._say(f"[{index}/{len(todo)}] {self._label(path)}: FAILED {summary.failed[str(path)]}")
                if self.fail_fast:
                    break
                continue
            summary.written[str(path)] = [str(f) for f in files]
            elapsed = time.perf_counter() - start
            eta = elapsed / index * (len(todo) - index)
            self._say(
                f"[{index}/{len(todo)}] {self._label(path)} -> {Path(files[0]).name} "
                f"{time.perf_counter() - case_start:.1f} s (ETA {_clock(eta)})"
            )
        return summary

    def _case(self, path: Path, name: str) -> list[Path]:
        from medattn3d.outputs.prediction import write_case

        files = self._files(path)
        logits, data = self.model.predict(files[0] if len(files) == 1 else files)
        return write_case(
            logits,
            data,
            self.model.preprocessing,
            self.output_dir,
            name,
            self.model.class_names,
            tuple(self.formats),
            self.save_probabilities,
            source=path,
            model_info=self.model.info,
            series_uid=self.series_uid,
        )


def gather_summaries(summary: RunSummary) -> RunSummary:
    """The union of every process's summary when ``torch.distributed`` runs (rank 0 prints it), else ``summary``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return summary
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, summary)
    merged = RunSummary()
    for part in parts:
        merged = merged.merge(part)
    return merged
