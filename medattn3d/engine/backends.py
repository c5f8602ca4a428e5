"""Optional inference runtimes: run a trained network through OpenVINO or ONNX Runtime instead of PyTorch.

Both are extras (``pip install medattn3d[openvino]`` / ``[onnxruntime]``), never hard dependencies. A
:class:`RuntimeNetwork` stands in for the network wherever MONAI calls one (``SlidingWindowInferer``,
``SliceInferer``, ``SimpleInferer``): it converts the PyTorch network on the first call, for that call's input shape
with a dynamic batch axis (the last sliding-window batch may be smaller), and returns float32 logits as a torch
tensor. Conversion goes straight from the PyTorch module (OpenVINO's ``convert_model``; ``torch.onnx.export`` for
ONNX Runtime). Converting to OpenVINO takes seconds (more than a whole volume's inference), so the converted model is
cached on disk as OpenVINO IR, keyed by a hash of the network (its class, structure and weights), the input shape and
the OpenVINO version: only the first run of a set of weights pays for the conversion (:func:`openvino_cache_dir`).
Compiling the cached IR for the CPU takes a fraction of a second and is done by every run: OpenVINO's own
compiled-model cache is not used, since its blobs are written in place and a process that maps one while another is
still writing it dies of SIGBUS (seen with two ``torchrun`` ranks). Inference only: training and attention maps
stay in PyTorch.

The ``"openvino-int8"`` runtime is the exception: it serves an INT8 model quantized ahead of time
(``medattn3d export --format openvino-int8``, :mod:`medattn3d.engine.quantize`) from its OpenVINO IR on disk,
through :class:`IRNetwork`, since calibration needs training patches and takes far longer than one conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
CACHE_ENV = "MEDATTN3D_CACHE_DIR"
RUNTIMES = ("auto", "torch", "openvino", "openvino-int8", "onnxruntime")
INT8_EXPORT = "medattn3d export --bundle {bundle} --format openvino-int8"


def resolve_runtime(runtime: str, device: torch.device | str = "cpu") -> str:
    """The runtime ``runtime`` means on ``device``: ``"auto"`` is OpenVINO on a CPU where it is installed (it wins
    there, see docs/benchmarks.md), PyTorch otherwise; any other name is itself (checked)."""
    if runtime != "auto":
        return check_runtime(runtime)
    if torch.device(device).type != "cpu":
        return "torch"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "openvino"


def check_runtime(runtime: str) -> str:
    """``runtime`` if known and importable; a one-line error naming the extra to install otherwise."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    module = {"openvino": "openvino", "openvino-int8": "openvino", "onnxruntime": "onnxruntime"}.get(runtime)
    if module is not None:
        try:
            __import__(module)
        except ImportError as err:
            raise ImportError(
                f"runtime {runtime!r} needs the {module} package: pip install 'medattn3d[{module}]'"
            ) from err
    return runtime


def openvino_precision_hint(precision: str, device: torch.device) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for our ``precision`` setting ("bf16" where we would run bf16)."""
    from medattn3d.engine.precision import autocast_dtype

    return "bf16" if autocast_dtype(precision, device) == torch.bfloat16 else "f32"


class RuntimeNetwork(nn.Module):
    """A trained (eval-mode, fp32) network served by OpenVINO or ONNX Runtime, callable like the network itself.

    Args:
        network: the PyTorch network with its trained weights loaded (not BatchNorm-folded, fp32 weights).
        runtime: ``"openvino"`` or ``"onnxruntime"``.
        precision: the bundle's precision setting; with OpenVINO it picks the ``INFERENCE_PRECISION_HINT``
            (bf16 where PyTorch would run bf16). ONNX Runtime runs fp32.
        threads: intra-op threads (``None``: the runtime's default, all cores).
    """

    def __init__(self, network: nn.Module, runtime: str, precision: str = "auto", threads: int | None = None) -> None:
        super().__init__()
        if runtime not in ("openvino", "onnxruntime"):
            raise ValueError(f"RuntimeNetwork serves 'openvino' or 'onnxruntime', got {runtime!r}")
        check_runtime(runtime)
        self.network = network.float().eval()
        self.runtime, self.precision, self.threads = runtime, precision, threads
        self._compiled: Any = None
        self._shape: tuple[int, ...] | None = None

    def _compile(self, example: torch.Tensor) -> None:
        # tracing warns about the networks' shape checks (they hold for this shape); an autocast around the caller
        # (PrecisionInferer) must not leak into the traced graph: the runtime picks its own precision
        with warnings.catch_warnings(), torch.autocast(example.device.type, enabled=False):
            warnings.simplefilter("ignore")
            if self.runtime == "openvino":
                self._compiled = _compile_openvino(self.network, example, self.precision, self.threads)
            else:
                self._compiled = _compile_onnxruntime(self.network, example, self.threads)
        self._shape = tuple(example.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is None or tuple(x.shape[1:]) != self._shape:
            self._compile(x[:1].float().contiguous())
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = self._compiled(array)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def _compile_openvino(network: nn.Module, example: torch.Tensor, precision: str, threads: int | None) -> Any:
    cache = openvino_cache_dir()
    from medattn3d.networks.blocks.dual_attention import has_padded_position_attention

    # measured faster in f32 (round 8); networks without padded attention keep their cache key
    unpadded = openvino_precision_hint(precision, example.device) == "f32" and has_padded_position_attention(network)
    if cache is not None:
        xml = cache / network_fingerprint(network, example, "unpadded-attention" if unpadded else "") / "model.xml"
        if xml.parent.exists():  # entries appear whole (renamed into place): one found incomplete was damaged
            if xml.is_file() and xml.with_suffix(".bin").is_file():
                try:
                    return _compile_for_cpu(str(xml), precision, example.device, threads)
                except RuntimeError as err:  # a truncated .bin, an edited .xml
                    LOGGER.warning("the cached OpenVINO model %s is unreadable (%s); converting again", xml.parent, err)
            _discard(xml.parent)  # it would block the new entry's rename
    LOGGER.info("converting the network for OpenVINO (once per set of weights and window)")
    model = _convert_openvino(network, example, unpadded, threads)
    source = model if cache is None else _save_ir(model, xml)
    return _compile_for_cpu(source, precision, example.device, threads)


def _discard(entry: Path) -> None:
    """Remove a cache entry: renamed aside first (atomic), so no other process ever sees it half deleted."""
    aside = entry.with_name(f".discarded-{entry.name}-{os.getpid()}")
    try:
        entry.rename(aside)
    except OSError:  # already discarded or replaced by another process
        return
    shutil.rmtree(aside, ignore_errors=True)


def _convert_openvino(
    network: nn.Module, example: torch.Tensor, unpadded_attention: bool = False, threads: int | None = None
) -> Any:
    """The network as an OpenVINO model for ``example``'s shape, with a dynamic batch axis; with
    ``unpadded_attention``, position attention traced without its q/k zero-padding (``unpadded_position_attention``).

    Conversion time grows with the traced window (the guided-attention network: 59 s at 96^3, 8 s at 32^3), so a
    network that states its input multiple is traced at the smallest window it accepts and reshaped to
    ``example``'s, then checked against PyTorch on ``example`` (:func:`_reshaped_model_agrees`, ``threads`` for its
    OpenVINO run). A small trace that fails (an instance norm over a one-voxel map) or does not agree is discarded
    and the network traced at ``example``'s own window."""
    from medattn3d.networks.blocks.dual_attention import unpadded_position_attention

    def traced(window: torch.Tensor) -> Any:
        with unpadded_position_attention(network) if unpadded_attention else contextlib.nullcontext():
            return _trace_openvino(network, window, example.shape)

    with torch.no_grad():
        small = smallest_trace_window(network, example)
        if small is not None:
            corner = example[(slice(None), slice(None), *(slice(0, n) for n in small))].contiguous()  # real voxels
            try:
                model = traced(corner)
                # the reference runs padded: PyTorch's fused kernel, memory linear (the same function)
                agrees = _reshaped_model_agrees(model, network, example, threads)
            except Exception as err:  # any failure of the shortcut falls back to the plain trace
                LOGGER.info("tracing at window %s failed (%s); converting at %s", small, err, tuple(example.shape[2:]))
            else:
                if agrees:
                    return model
                LOGGER.warning(
                    "the OpenVINO model traced at window %s disagrees with PyTorch; converting at %s",
                    small,
                    tuple(example.shape[2:]),
                )
        return traced(example)


def _trace_openvino(network: nn.Module, example: torch.Tensor, shape: Sequence[int]) -> Any:
    """OpenVINO's conversion of ``network`` traced on ``example``, reshaped to ``shape`` with a dynamic batch axis."""
    import openvino as ov

    model = ov.convert_model(network, example_input=example)
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *(int(n) for n in shape[1:])])})
    return model


def smallest_trace_window(network: nn.Module, example: torch.Tensor) -> tuple[int, ...] | None:
    """The smallest spatial window ``network`` accepts (each axis its stated multiple, ``network.multiples``, as the
    package's networks state it), where that is smaller than ``example``'s; ``None`` for a network that states no
    multiple or an input that is not a whole number of them."""
    multiples = getattr(network, "multiples", None)
    spatial = tuple(int(n) for n in example.shape[2:])
    if not isinstance(multiples, (list, tuple)) or len(multiples) != len(spatial):
        return None
    if any(int(m) < 1 or size % int(m) for size, m in zip(spatial, multiples, strict=True)):
        return None
    small = tuple(int(m) for m in multiples)
    return None if small == spatial else small


def _reshaped_model_agrees(model: Any, network: nn.Module, example: torch.Tensor, threads: int | None = None) -> bool:
    """Whether OpenVINO (f32) computes ``network``'s fp32 output on ``example`` up to float rounding: within 1e-3 of
    the logits' largest magnitude everywhere. A graph that traced a shape-dependent branch differently fails by
    far more (the guided-attention network traced at 32^3 and reshaped to 96^3 agreed within 2e-5)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": str(threads)} if threads else {})}
    compiled = ov.Core().compile_model(model, "CPU", config)
    array = np.ascontiguousarray(example.detach().float().cpu().numpy())
    served = np.asarray(compiled(array)[compiled.outputs[0]], dtype=np.float32)
    reference = network(example.float())
    if isinstance(reference, (list, tuple)):  # the runtime serves the first output
        reference = reference[0]
    reference = reference.detach().float().cpu().numpy()
    if served.shape != reference.shape or not np.isfinite(served).all():
        return False
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(served - reference).max()) <= 1e-3 * scale


def openvino_cache_dir() -> Path | None:
    """Where converted OpenVINO models are cached: ``$MEDATTN3D_CACHE_DIR/openvino`` when that variable is set (an
    empty value turns the cache off), else ``$XDG_CACHE_HOME/medattn3d/openvino`` (``~/.cache/...``). ``None`` when
    caching is off or that folder cannot be created (then every run converts in memory)."""
    root = os.environ.get(CACHE_ENV)
    if root is None:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medattn3d")
    if not root:
        return None
    folder = Path(root).expanduser() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def network_fingerprint(network: nn.Module, example: torch.Tensor, recipe: str = "") -> str:
    """A hex key that changes whenever the converted model would: the network's class and structure (``repr``), every
    parameter and buffer (names, dtypes, shapes, values), the input's shape and dtype, the OpenVINO version and the
    conversion ``recipe`` (e.g. unpadded attention)."""
    import openvino as ov

    digest = hashlib.blake2b(digest_size=16)
    texts = (type(network).__qualname__, repr(network), str(tuple(example.shape)), str(example.dtype))
    for text in texts + ((recipe,) if recipe else ()):
        digest.update(text.encode())
    digest.update(ov.__version__.encode())
    for name, tensor in network.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().data if tensor.numel() else b"")
    return digest.hexdigest()


def _save_ir(model: Any, xml: Path) -> Any:
    """Write ``model`` as IR at ``xml`` (fp32 weights, as converted) through a temporary folder renamed into place,
    so a concurrent or interrupted run never leaves a half-written model; returns the path, or the in-memory model
    when the cache cannot be written."""
    import openvino as ov

    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=xml.parent.parent))
    except OSError as err:
        LOGGER.warning("could not cache the OpenVINO model in %s (%s); converting in memory", xml.parent.parent, err)
        return model
    try:
        ov.save_model(model, str(staging / xml.name), compress_to_fp16=False)
        staging.rename(xml.parent)  # fails when another run cached the same model first: theirs is kept
    except (OSError, RuntimeError) as err:  # OpenVINO reports a failed write (disk full) as RuntimeError
        if not xml.is_file():
            LOGGER.warning("could not cache the OpenVINO model in %s (%s); serving it from memory", xml.parent, err)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a successful rename; a partial write otherwise
    return str(xml) if xml.is_file() else model


def _compile_for_cpu(model: Any, precision: str, device: torch.device, threads: int | None) -> Any:
    """Compile an OpenVINO model (in memory or an IR path) for the CPU; returns ``array -> first output``."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": openvino_precision_hint(precision, device)}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return OpenVINOServer(ov.Core(), model, config)


class OpenVINOServer:
    """An OpenVINO model compiled for the CPU, called as ``array -> first output``.

    One input at a time runs on all cores (the latency hint). A batch (``sw_batch_size`` > 1) runs as one request
    per input on parallel streams of fewer threads each (the throughput hint, compiled on first use): no thread
    waits for another at a layer's end, which is even with one request on free cores and 1.1-1.4x per window when
    other processes load them (docs/benchmarks.md). The results are the same network's; only the split of work
    across cores differs. Each of the two is compiled on its first use (a compile costs about two windows' time):
    a sliding window whose every batch is full never needs the latency one."""

    def __init__(self, core: Any, model: Any, config: dict[str, str]) -> None:
        # an IR path is read now: a damaged file fails here (RuntimeError), where the cache can still replace it
        self.core, self.config = core, config
        self.model = core.read_model(model) if isinstance(model, (str, Path)) else model
        self._latency: Any = None
        self._streams: Any = None

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if len(array) > 1 and self._parallel_requests() > 1:
            return self._run_streams(array)
        if self._latency is None:
            self._latency = self.core.compile_model(self.model, "CPU", {**self.config, "PERFORMANCE_HINT": "LATENCY"})
        return self._latency(array)[self._latency.outputs[0]]

    def _parallel_requests(self) -> int:
        if self._streams is None:
            compiled = self.core.compile_model(self.model, "CPU", {**self.config, "PERFORMANCE_HINT": "THROUGHPUT"})
            jobs = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._streams = (compiled, [compiled.create_infer_request() for _ in range(jobs)])
        return len(self._streams[1])

    def _run_streams(self, array: np.ndarray) -> np.ndarray:
        """One request per input, as many at once as there are streams. Plain requests waited on, not an
        ``AsyncInferQueue`` with a Python callback: a callback is a Python object on OpenVINO's stream threads, and
        releasing the compiled model while one of them waited for the interpreter lock deadlocked a test run."""
        _, requests = self._streams
        results: list[np.ndarray] = []
        for start in range(0, len(array), len(requests)):
            running = list(zip(requests, range(start, min(start + len(requests), len(array))), strict=False))
            for request, index in running:
                request.start_async({0: array[index : index + 1]})
            for request, _ in running:
                request.wait()
                results.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(results)


class IRNetwork(nn.Module):
    """An OpenVINO IR on disk (the INT8 model ``medattn3d export --format openvino-int8`` writes), callable like the
    network it was exported from: float32 tensor in, float32 logits out, dynamic batch axis.

    The IR's spatial window is fixed at export (the bundle's ``roi_size``); sliding-window and slice inferers only
    ever pass that window. Args: ``path`` the ``.xml`` (its ``.bin`` beside it); ``precision`` the bundle's setting,
    OpenVINO's precision hint for the layers left in floating point; ``threads`` intra-op threads.
    """

    def __init__(self, path: str | Path, precision: str = "auto", threads: int | None = None) -> None:
        super().__init__()
        from medattn3d.errors import InputError

        check_runtime("openvino-int8")
        self.path = Path(path)
        for part in (self.path, self.path.with_suffix(".bin")):
            if not part.is_file():
                raise InputError(part, f"no INT8 model: create it with `{INT8_EXPORT.format(bundle=bundle_of(path))}`")
        import openvino as ov

        model = ov.Core().read_model(str(self.path))
        warn_if_stale(model, self.path)
        self.window = tuple(d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:])
        self.precision, self.threads = precision, threads
        self._compiled = _compile_for_cpu(model, precision, torch.device("cpu"), threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.window:
            raise ValueError(
                f"{self.path}: exported for inputs of {'x'.join(map(str, self.window))} (channels x roi_size), "
                f"got {'x'.join(map(str, x.shape[1:]))}; export it again for this roi_size"
            )
        out = self._compiled(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def warn_if_stale(model: Any, path: Path) -> None:
    """Warn (one line) when the weights an IR was exported from have changed since (the bundle was trained again):
    the IR still holds the old network. Export records the weights' path, size and mtime in the IR's rt_info. Also
    when the IR was made with an older quantization recipe (:func:`medattn3d.engine.quantize.outdated_recipe`)."""
    from medattn3d.engine.quantize import outdated_recipe  # reads rt_info only: no nncf import

    reason = outdated_recipe(model)
    if reason is not None:
        command = INT8_EXPORT.format(bundle=bundle_of(path))
        warnings.warn(f"{path}: INT8 model of an older recipe ({reason}); run `{command}` again", stacklevel=3)
    if not model.has_rt_info(["medattn3d", "weights_stamp"]):
        return
    weights = Path(str(model.get_rt_info(["medattn3d", "weights"]).astype(str)))
    stamp = str(model.get_rt_info(["medattn3d", "weights_stamp"]).astype(str))
    if weights.is_file() and f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}" != stamp:
        command = INT8_EXPORT.format(bundle=bundle_of(path))
        warnings.warn(f"{path}: exported from an older {weights.name}; run `{command}` again", stacklevel=3)


def bundle_of(path: str | Path) -> str:
    """The bundle folder an IR at ``<bundle>/models/<name>.xml`` belongs to (for messages); ``BUNDLE`` otherwise."""
    path = Path(path)
    return str(path.parent.parent) if path.parent.name == "models" else "BUNDLE"


def _compile_onnxruntime(network: nn.Module, example: torch.Tensor, threads: int | None) -> Any:
    import onnxruntime as ort

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            network,
            (example,),
            buffer,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda array: session.run(["logits"], {"image": array})[0]
