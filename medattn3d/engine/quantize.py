"""INT8 post-training quantization of a trained bundle network with NNCF, saved as an OpenVINO IR (opt-in).

``medattn3d export --bundle B --format openvino-int8`` converts the trained PyTorch network to OpenVINO (one window
of the bundle's ``roi_size`` with ``in_channels``, dynamic batch axis), calibrates NNCF's post-training quantization
on patches drawn with the bundle's own training preprocessing (``train#preprocessing`` on ``train#dataset``'s cases,
seeded), keeping the first and the head convolution in floating point (``DEFAULT_FLOAT_LAYERS``; every other
convolution runs in int8), and writes ``models/model_int8.xml`` + ``.bin``; ``--runtime openvino-int8`` then serves
that IR (:class:`medattn3d.engine.backends.IRNetwork`). Needs ``openvino`` and ``nncf`` (the ``int8`` extra;
inference needs only ``openvino``). Why opt-in: INT8 trades a little accuracy for speed; benchmarks/int8.py measures
the speed, benchmarks/runtime_agreement.py the accuracy on the demo.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medattn3d.errors import InputError
from medattn3d.outputs.atomic import atomic_path

INT8_IR = "model_int8.xml"
DEFAULT_CALIBRATION_PATCHES = 32
# Convolutions left in floating point by default (see :func:`float_layers`): the first one, which reads the image,
# and the head, which writes the logits; both run at full resolution but do < 1 % of the arithmetic. Measured on the
# shipped 3D bundle's demo validation set against PyTorch fp32 (4 volumes, 3 calibration seeds, bf16 hint for the
# float layers): every convolution in int8 flipped 1008-1092 voxels' argmax and cost the barely-learnt lesion class
# (Dice 0.09, ~70 predicted voxels in all) -0.0045..-0.0100; the first convolution alone in float halved the flips
# (514-551; lesion 0.0000..-0.0022), first + head 482-520 flips, lesion -0.0000..+0.0009, the learnt classes within
# 0.0004. The first convolution has a single input channel and NNCF's default overflow fix gives it 7-bit weights;
# the head maps 16 channels to the class logits, where an int8 step moves the argmax. The attention gates' psi
# convolutions in float helped no further. Paired speed on the bundle's window: benchmarks/int8.py.
DEFAULT_FLOAT_LAYERS: tuple[str, ...] = ("first", "head")
FLOAT_LAYER_KINDS = ("first", "head", "gates")


def int8_ir_path(bundle: str | Path) -> Path:
    """Where a bundle's INT8 model lives: ``<bundle>/models/model_int8.xml`` (its weights in ``model_int8.bin``)."""
    return Path(bundle) / "models" / INT8_IR


def float_layers(model: Any, kinds: Sequence[str] = DEFAULT_FLOAT_LAYERS) -> list[str]:
    """Names of the convolutions of an OpenVINO ``model`` to keep in floating point, found from the graph (the
    converter's names of BatchNorm-folded convolutions are generated, so no fixed list would do): ``"first"`` the
    convolutions reading the network input, ``"head"`` those whose output (after its bias) is a network output,
    ``"gates"`` those feeding a sigmoid (the attention gates' ``psi``). The same for 2D and 3D, any network."""
    unknown = sorted(set(kinds) - set(FLOAT_LAYER_KINDS))
    if unknown:
        raise ValueError(f"float layer kinds must be among {FLOAT_LAYER_KINDS}, got {unknown}")
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        reads = op.input(0).get_source_output().get_node().get_type_name()
        after = _consumers(op)
        after += [node for bias in after if bias.get_type_name() == "Add" for node in _consumers(bias)]
        if (
            ("first" in kinds and reads == "Parameter")
            or ("head" in kinds and any(n.get_type_name() == "Result" for n in after))
            or ("gates" in kinds and any(n.get_type_name() == "Sigmoid" for n in after))
        ):
            names.append(op.get_friendly_name())
    return names


def outdated_recipe(model: Any) -> str | None:
    """Why an INT8 ``model`` (an exported IR, read) was made with another recipe than today's default, or ``None``:
    exports before the float layers were recorded quantized every convolution. For the runtime's staleness warning
    and ``export --continue``, which keep an existing IR otherwise."""
    if not model.has_rt_info(["medattn3d", "float_layers"]):
        return "every convolution in int8 (an export older than the float first/head layers)"
    recorded = str(model.get_rt_info(["medattn3d", "float_layers"]).astype(str))
    if recorded != ",".join(DEFAULT_FLOAT_LAYERS):
        return f"float layers {recorded or 'none'}, today's default {','.join(DEFAULT_FLOAT_LAYERS)}"
    return None


def _consumers(node: Any) -> list[Any]:
    return [target.get_node() for output in node.outputs() for target in output.get_target_inputs()]


def quantize_network(
    network: nn.Module,
    patches: Sequence[np.ndarray | torch.Tensor],
    subset_size: int | None = None,
    preset: str = "performance",
    fast_bias_correction: bool = False,
    keep_float: Sequence[str] = DEFAULT_FLOAT_LAYERS,
):
    """``network`` (trained weights loaded) as an INT8 OpenVINO model calibrated on ``patches``.

    Each patch is one channel-first input window, ``(C, *roi_size)``; they fix the model's input shape (the batch
    axis stays dynamic, for the sliding window's last, smaller batch). NNCF's symmetric ``"performance"`` preset
    (``"mixed"``: asymmetric activations) and its full bias correction: on the demo it halved the INT8 error of the
    fast one (argmax agreement with fp32 0.9994 vs 0.9988, largest probability difference 0.09 vs 0.17) for ~1.5x the
    export time and no inference cost; ``subset_size`` defaults to every patch. ``keep_float``: the kinds of
    convolution left in floating point (:func:`float_layers`; default the first and the head, see
    ``DEFAULT_FLOAT_LAYERS``; ``()`` quantizes every convolution).
    Returns an ``openvino.Model`` whose rt_info ``medattn3d/float_layers`` lists those kinds.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as err:
        raise ImportError(f"INT8 export needs openvino and nncf: pip install 'medattn3d[int8]' ({err})") from err

    if not patches:
        raise ValueError("INT8 calibration needs at least one patch")
    arrays = [_as_batch(p) for p in patches]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"calibration patches differ in shape: {sorted({a.shape for a in arrays})}")
    network = network.float().eval()
    # tracing warns about the networks' shape checks (they hold for this window); no autocast in the traced graph
    with warnings.catch_warnings(), torch.no_grad(), torch.autocast("cpu", enabled=False):
        warnings.simplefilter("ignore")
        model = ov.convert_model(network, example_input=torch.from_numpy(arrays[0]))
    # the conversion leaves every axis dynamic; fix the window (OpenVINO plans its kernels for it), keep the batch free
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *shape[1:]])})
    kept = float_layers(model, keep_float)
    nncf.set_log_level(40)  # errors only: its log lines and progress bars would interleave with the CLI's output
    with warnings.catch_warnings(), _quiet_progress_bars():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(
            model,
            nncf.Dataset(arrays),
            preset=nncf.QuantizationPreset(preset),
            subset_size=subset_size or len(arrays),
            fast_bias_correction=fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=kept) if kept else None,
        )
    quantized.set_rt_info(",".join(keep_float), ["medattn3d", "float_layers"])
    return quantized


def _as_batch(patch: np.ndarray | torch.Tensor) -> np.ndarray:
    """One channel-first window ``(C, *roi_size)`` as a contiguous float32 batch of one."""
    array = patch.detach().cpu().float().numpy() if isinstance(patch, torch.Tensor) else np.asarray(patch, np.float32)
    return np.ascontiguousarray(array[None])


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence rich's global console for the block: NNCF draws its "Statistics collection" bars there (its log level
    does not reach them), and they would interleave with the CLI's own lines."""
    try:
        import rich
    except ImportError:
        yield
        return
    console = rich.get_console()
    before = console.quiet
    console.quiet = True
    try:
        yield
    finally:
        console.quiet = before


def save_ir(model: Any, xml_path: str | Path) -> Path:
    """Save an OpenVINO model as ``xml_path`` + its ``.bin``, so that an ``.xml`` never stands without its ``.bin``.

    Both are written under temporary names (:func:`medattn3d.outputs.atomic.atomic_path`); an existing ``.xml`` is
    removed first, then the ``.bin`` is renamed into place, then the ``.xml`` last. A crash at any point leaves
    either the complete new pair or no ``.xml`` (which reads as "not exported"), never an ``.xml`` with another
    export's weights. Returns ``xml_path``.
    """
    import openvino as ov

    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise ValueError(f"{xml_path}: an OpenVINO IR is named *.xml")
    bin_path = xml_path.with_suffix(".bin")
    with atomic_path(xml_path) as tmp_xml:
        tmp_bin = tmp_xml.with_suffix(".bin")
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
            xml_path.unlink(missing_ok=True)
            with atomic_path(bin_path) as tmp:
                os.replace(tmp_bin, tmp)
        finally:
            tmp_bin.unlink(missing_ok=True)
    return xml_path


def calibration_patches(
    bundle: str | Path, count: int = DEFAULT_CALIBRATION_PATCHES, overrides: dict[str, Any] | None = None, seed: int = 0
) -> list[torch.Tensor]:
    """``count`` training patches ``(C, *roi_size)`` drawn as the bundle trains: ``configs/train.json``'s
    ``train#preprocessing`` (load, normalise, foreground-aware random crops, augmentation) on ``train#dataset``'s
    cases, with ``overrides`` applied and a fixed ``seed`` (the same export gives the same patches).

    At most ``count`` cases, spread evenly over the training list, are loaded once (MONAI ``CacheDataset`` keeps
    everything before the first random transform); further draws from a case reuse its cached volume.
    """
    from monai.bundle import ConfigParser
    from monai.data import CacheDataset

    if count < 1:
        raise ValueError(f"--calibration-patches must be at least 1, got {count}")
    bundle = Path(bundle)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(bundle)
    for key, value in (overrides or {}).items():
        parser[key] = value
    datalist = Path(parser.get_parsed_content("datalist"))
    if not datalist.is_file():
        raise InputError(datalist, "INT8 calibration draws patches from the bundle's training data; it is missing")
    cases = parser.get_parsed_content("train#dataset#data")
    if not cases:
        raise InputError(datalist, "no training cases to draw INT8 calibration patches from")
    chosen = [cases[int(i)] for i in np.unique(np.linspace(0, len(cases) - 1, min(count, len(cases))).round())]
    transform = parser.get_parsed_content("train#preprocessing")
    transform.set_random_state(seed)
    dataset = CacheDataset(chosen, transform, cache_rate=1.0, num_workers=0, progress=False)
    window = tuple(int(s) for s in parser.get_parsed_content("roi_size"))
    patches: list[torch.Tensor] = []
    draw = 0
    while len(patches) < count:
        samples = dataset[draw % len(dataset)]
        for sample in samples if isinstance(samples, list) else [samples]:
            patches.append(_window_of(torch.as_tensor(sample["image"]).float(), window))
        draw += 1
    return patches[:count]


def _window_of(image: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """A training patch ``(C, *roi_size)``: 2D bundles crop ``(C, *roi_size, 1)`` slabs, whose last axis goes."""
    while image.dim() > len(window) + 1 and image.shape[-1] == 1:
        image = image[..., 0]
    if tuple(image.shape[1:]) != window:
        raise ValueError(f"a training patch has shape {tuple(image.shape)}, expected (channels, *{window})")
    return image.contiguous()


def export_int8(
    bundle: str | Path,
    weights: str | Path,
    output: str | Path | None = None,
    calibration: int = DEFAULT_CALIBRATION_PATCHES,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    keep_float: Sequence[str] = DEFAULT_FLOAT_LAYERS,
) -> Path:
    """Quantize ``bundle``'s network with the trained ``weights`` to INT8 and save it as ``output`` (default
    :func:`int8_ir_path`), calibrated on ``calibration`` training patches, the ``keep_float`` convolutions left in
    floating point (:func:`quantize_network`); returns the ``.xml`` path.

    The network is built from ``configs/inference.json`` (``network_def``, ``overrides`` applied) on the CPU; the
    weights load with :func:`medattn3d.training.load_weights` (one-line error when they do not fit).
    """
    from medattn3d.engine.runner import bundle_config
    from medattn3d.training import load_weights

    bundle = Path(bundle)
    target = Path(output) if output else int8_ir_path(bundle)
    if target.suffix != ".xml":
        raise InputError(target, "an OpenVINO IR is named *.xml (its weights go next to it as *.bin)")
    cpu = {**(overrides or {}), "device": "$torch.device('cpu')"}
    network = bundle_config(bundle, cpu).get_parsed_content("network_def")
    load_weights(network, weights)
    patches = calibration_patches(bundle, calibration, cpu, seed)
    model = quantize_network(network, patches, keep_float=keep_float)
    stat = Path(weights).stat()  # what the runtime checks to warn about an export older than retrained weights
    model.set_rt_info(str(Path(weights).resolve()), ["medattn3d", "weights"])
    model.set_rt_info(f"{stat.st_size}:{stat.st_mtime_ns}", ["medattn3d", "weights_stamp"])
    model.set_rt_info(str(len(patches)), ["medattn3d", "calibration_patches"])
    return save_ir(model, target)
