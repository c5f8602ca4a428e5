"""Fast inference and training steps: mixed precision (bf16/fp16 autocast) and channels-last around any MONAI inferer.

MONAI's engines only autocast on CUDA (``amp=True``); :class:`PrecisionInferer` wraps the inferer instead, so the
same switch works on CPU (bf16, where the CPU supports it) and GPU, for ``SimpleInferer`` in training and
``SlidingWindowInferer``/``SliceInferer`` in evaluation. Outputs come back as float32 (the sliding-window buffers,
losses and metrics stay in full precision). Training leaves the weights in fp32; ``fold_norm`` / ``cast_weights``
change an inference-only network in memory (never its checkpoint file). During bf16 training on CPU, 3D
convolutions on inputs shallower than their kernel run in fp32 (:mod:`medattn3d.engine.conv_guard`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from medattn3d.engine.conv_guard import ShallowConv3dInFp32

LOGGER = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_supports_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX): PyTorch and OpenVINO then compute bf16
    natively instead of emulating it. Native is not always faster than fp32 (:func:`cpu_prefers_bf16` decides).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is also true on plain AVX-512 CPUs, where it
    emulates bf16: there a 3072^2 bf16 matmul ran at 59 GFLOP/s against 227 in fp32 (Intel Xeon, AVX-512 without
    AVX512-BF16). The flags come from PyTorch's CPU feature probe, else from ``/proc/cpuinfo``.
    """
    flags = _cpu_flags()
    if flags is not None:
        return any(flags.get(name, False) for name in NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


BF16_SPEEDUP_NEEDED = 1.2
PROBE_DTYPES = (torch.float32, torch.bfloat16)


def cpu_prefers_bf16() -> bool:
    """True when bf16 computes clearly faster than fp32 on this CPU: what ``precision: auto`` goes by.

    Always with AMX (bf16 matmuls 4-6x fp32); never without native bf16. With AVX512-BF16 alone it depends on the
    core, so a short matmul probe decides (:func:`bf16_matmul_speedup`, needing ``BF16_SPEEDUP_NEEDED``): bf16 ran
    2-2.4x fp32 on an AMD EPYC, but 0.3-0.6x on an Intel Xeon whose VM hides its AMX, where OpenVINO's bf16 hint
    served a 96^3 window 1.4x slower than its f32 (docs/benchmarks.md, rounds 7 and 9).
    """
    if not cpu_supports_bf16():
        return False
    if (_cpu_flags() or {}).get("amx_bf16", False):
        return True
    return measured_bf16_speedup() >= BF16_SPEEDUP_NEEDED


@functools.cache
def measured_bf16_speedup() -> float:
    """:func:`bf16_matmul_speedup`, probed once per process (the first time ``auto`` is resolved on such a CPU) and
    logged; an explicit ``fp32`` never probes, an explicit ``bf16`` only for its warning."""
    speedup = bf16_matmul_speedup()
    choice = "bf16" if speedup >= BF16_SPEEDUP_NEEDED else "fp32"
    LOGGER.info("bf16 matmuls run at %.2fx fp32's rate on this CPU: precision auto = %s", speedup, choice)
    return speedup


def bf16_matmul_speedup(size: int = 768, repeats: int = 5) -> float:
    """How many times faster a ``size``^2 matmul runs in bf16 than in fp32 here, best of ``repeats`` each,
    interleaved so a neighbour's load hits both alike (about 0.1 s on a 2-core AVX-512 VM)."""
    best = dict.fromkeys(PROBE_DTYPES, float("inf"))
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # a caller's autocast must not turn fp32 into bf16
        operands = {dtype: (torch.rand(size, size, dtype=dtype), torch.rand(size, size, dtype=dtype)) for dtype in best}
        for dtype in PROBE_DTYPES:  # first calls pick and warm up the kernels
            torch.mm(*operands[dtype])
        for _ in range(repeats):
            for dtype in PROBE_DTYPES:
                start = time.perf_counter()
                torch.mm(*operands[dtype])
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def warn_if_bf16_is_slow_here(precision: str, device: torch.device) -> None:
    """Warn (once per process) when ``precision: bf16``, asked for by name, will run in PyTorch on a CPU where it is
    slower than fp32: oneDNN emulates it on plain AVX-512 (a 3072^2 matmul 4x slower than fp32), has no bf16 kernel
    at all on AVX2-only CPUs, where PyTorch's scalar fallback ran a 512^2 matmul at ~1 GFLOP/s against ~75 in fp32
    (docs/benchmarks.md, rounds 5 and 8), and some CPUs with AVX512-BF16 compute it slower than fp32 (round 9).
    ``auto`` picks fp32 on such CPUs."""
    if precision == "bf16" and device.type == "cpu" and not cpu_prefers_bf16():
        _warn_slow_bf16()


@functools.cache
def _warn_slow_bf16() -> None:
    capability = torch.backends.cpu.get_cpu_capability()
    if cpu_supports_bf16():
        warnings.warn(
            f"precision 'bf16' on a CPU that computes bf16 no faster than fp32 ({capability}: a bf16 matmul ran at "
            f"{measured_bf16_speedup():.2f}x fp32's rate here); precision 'auto' (or 'fp32') runs fp32 on this CPU",
            UserWarning,
            stacklevel=3,
        )
        return
    try:
        emulated = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        emulated = False
    cost = "about 4x slower than fp32 (emulated)" if emulated else "tens of times slower than fp32 (no bf16 kernels)"
    warnings.warn(
        f"precision 'bf16' on a CPU without native bf16 ({capability}, no AVX512-BF16 "
        f"or AMX): PyTorch runs bf16 {cost} here; precision 'auto' (or 'fp32') runs fp32 on this CPU",
        UserWarning,
        stacklevel=3,
    )


INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_has_int8_dot_product() -> bool:
    """True when this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8), which OpenVINO's
    INT8 models use: on such CPUs, where the bundles ran fp32, an INT8 window ran 2.45-3.2x faster than OpenVINO
    fp32 (docs/benchmarks.md, rounds 5 and 9)."""
    flags = _cpu_flags() or {}
    return any(flags.get(name, False) for name in INT8_DOT_PRODUCT_FLAGS)


def int8_speedup_over_fp32() -> str | None:
    """How much faster OpenVINO's INT8 model ran than OpenVINO fp32 per 96^3 window on CPUs of this one's class, as
    ``medattn3d infer``'s tip quotes it: with int8 dot products (AVX512-VNNI, AVX-VNNI, AMX-INT8) 2.5-3x (3.2x in
    round 5, 2.45x in round 9); on AVX2 without them, where OpenVINO multiplies int8 with AVX2's 16-bit
    multiply-adds, about 1.9x (round 8; docs/benchmarks.md). ``None`` on CPUs of no measured class."""
    if cpu_has_int8_dot_product():
        return "2.5-3x"
    if (_cpu_flags() or {}).get("avx2", False):
        return "about 1.9x"
    return None


@functools.cache
def _cpu_flags() -> dict[str, bool] | None:
    """The CPU's feature flags (``None`` when neither PyTorch nor the OS tells them)."""
    probe = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if probe is not None:
        try:
            return {str(k): bool(v) for k, v in probe().items() if isinstance(v, bool)}
        except RuntimeError:
            pass
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return {flag: True for flag in line.split(":", 1)[1].split()}
    return None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: run in fp32).

    ``auto`` picks bf16 on CPUs where it beats fp32 (:func:`cpu_prefers_bf16`) and on GPUs that support it, fp16
    on other GPUs, else fp32.
    """
    check_precision(precision)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_prefers_bf16() else None


def needs_conv3d_guard(dtype: torch.dtype | None, device: torch.device) -> bool:
    """Whether a step must run shallow conv3d calls in fp32: bf16 autocast on CPU with gradients being recorded
    (oneDNN's bf16 weight gradients are wrong there, see :mod:`medattn3d.engine.conv_guard`)."""
    return dtype == torch.bfloat16 and device.type == "cpu" and torch.is_grad_enabled()


def to_float(output: Any) -> Any:
    """Cast every floating tensor in a tensor / list / tuple / dict structure to float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, dict):
        return {k: to_float(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(to_float(v) for v in output)
    return output


def memory_format_for(ndim: int) -> torch.memory_format | None:
    """channels_last for 4D (2D images), channels_last_3d for 5D (volumes), else None."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


class PrecisionInferer(Inferer):
    """Run ``inferer`` with the network under autocast and, optionally, in channels-last memory format.

    A network prepared by :func:`prepare_for_inference` with bf16 weights gets bf16 inputs and runs without autocast
    (no per-call weight casts; pooling/upsampling stay in bf16). Outputs always come back as float32.

    Args:
        inferer: any MONAI inferer (``SimpleInferer``, ``SlidingWindowInferer``, ``SliceInferer``, ...).
        precision: ``"auto"`` (bf16 where the hardware has fast bf16, else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        channels_last: convert the network (once) and each input window to channels-last; conv kernels on CPU and
            GPU are faster in that layout.
    """

    def __init__(self, inferer: Inferer, precision: str = "auto", channels_last: bool = True) -> None:
        super().__init__()
        check_precision(precision)
        self.inferer = inferer
        self.precision = precision
        self.channels_last = channels_last
        self._converted: set[int] = set()

    def _to_layout(self, network: nn.Module, ndim: int) -> None:
        layout = memory_format_for(ndim)
        if self.channels_last and layout is not None and id(network) not in self._converted:
            network.to(memory_format=layout)
            self._converted.add(id(network))

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        dtype = autocast_dtype(self.precision, inputs.device)
        if not _served_by_a_runtime(network):
            warn_if_bf16_is_slow_here(self.precision, inputs.device)

        def forward(x: torch.Tensor, *a: Any, **k: Any) -> Any:
            layout = memory_format_for(x.dim()) if self.channels_last else None
            if isinstance(network, nn.Module):
                self._to_layout(network, x.dim())
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            if weights_dtype(network) == torch.bfloat16:
                return to_float(network(x.to(torch.bfloat16), *a, **k))
            guard = needs_conv3d_guard(dtype, x.device)
            with (
                ShallowConv3dInFp32() if guard else contextlib.nullcontext(),
                torch.autocast(device_type=x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
            ):
                return to_float(network(x, *a, **k))

        return self.inferer(inputs, forward, *args, **kwargs)


def _served_by_a_runtime(network: Any) -> bool:
    """Whether ``network`` is OpenVINO's / ONNX Runtime's stand-in (they pick their own precision per CPU)."""
    from medattn3d.engine.backends import IRNetwork, RuntimeNetwork

    return isinstance(network, (RuntimeNetwork, IRNetwork))


def weights_dtype(network: Any) -> torch.dtype | None:
    """The dtype of ``network``'s first floating parameter (``None`` for a plain callable or a parameterless net)."""
    if not isinstance(network, nn.Module):
        return None
    for parameter in network.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def prepare_for_inference(
    network: nn.Module,
    precision: str = "auto",
    device: torch.device | str | None = None,
    channels_last: bool = True,
    runtime: str = "torch",
    ir_path: str | Path | None = None,
) -> nn.Module:
    """Turn a network whose trained weights are loaded into an inference-only one, once.

    With ``runtime="torch"``, in place: eval mode, BatchNorm folded into the preceding convolutions, in-place conv
    activations, channels-last weights, and bf16 weights when ``precision`` resolves to bf16 on ``device`` (default:
    where the weights are); returns ``network``. With ``"openvino"`` / ``"onnxruntime"``: returns a
    :class:`medattn3d.engine.backends.RuntimeNetwork` serving the (unchanged) network through that runtime;
    ``"auto"``: OpenVINO on a CPU where it is installed, else PyTorch. ``"openvino-int8"`` serves the INT8 IR at
    ``ir_path`` (the bundle's ``models/model_int8.xml``, written by ``medattn3d export --format openvino-int8``)
    instead of ``network``. Either way the result computes the same function (up to bf16 / int8 rounding) but can
    no longer be trained; the checkpoint file is untouched. Call it after loading the weights, never on a network
    that is still training.
    """
    from medattn3d.engine.backends import IRNetwork, RuntimeNetwork, resolve_runtime

    check_precision(precision)
    network.eval()
    if device is None:
        first = next(network.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    runtime = resolve_runtime(runtime, device)
    if runtime == "openvino-int8":
        if ir_path is None:
            raise ValueError("runtime 'openvino-int8' needs ir_path: the bundle's models/model_int8.xml")
        return IRNetwork(ir_path, precision)
    if runtime != "torch":
        return RuntimeNetwork(network, runtime, precision)
    fold_batch_norm(network)
    make_conv_activations_inplace(network)
    spatial_dims = getattr(network, "spatial_dims", None)
    layout = memory_format_for(int(spatial_dims) + 2) if channels_last and spatial_dims else None
    if layout is not None:
        network.to(memory_format=layout)
    if autocast_dtype(precision, torch.device(device)) == torch.bfloat16:
        network.to(torch.bfloat16)
    return network


class PrepareForInference:
    """Ignite handler: :func:`prepare_for_inference` on ``network`` when the engine starts.

    Place it right after the handler that loads the weights (handlers run in the order they are attached). With an
    optional ``runtime`` ("openvino", "onnxruntime") the engine's network is replaced by the runtime's stand-in;
    ``"openvino-int8"`` also needs ``ir_path`` (``$os.path.join(@ckpt_dir, 'model_int8.xml')`` in a bundle).
    """

    def __init__(
        self,
        network: nn.Module,
        precision: str = "auto",
        channels_last: bool = True,
        runtime: str = "torch",
        ir_path: str | Path | None = None,
    ) -> None:
        from medattn3d.engine.backends import check_runtime

        check_precision(precision)
        self.runtime = check_runtime(runtime)
        self.network, self.precision, self.channels_last, self.ir_path = network, precision, channels_last, ir_path

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        device = getattr(engine.state, "device", None) or getattr(engine, "device", None)
        prepared = prepare_for_inference(
            self.network, self.precision, device, self.channels_last, self.runtime, self.ir_path
        )
        if prepared is not self.network and hasattr(engine, "network"):
            engine.network = prepared


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; a ``ValueError`` naming the choices otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a (non-transposed) convolution into that convolution
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``), in place, and drop the norm layer.

    The pairs it knows: MONAI ``Convolution`` blocks (``conv`` then ``adn.N``), adjacent convolution/BatchNorm
    entries of an ``nn.Sequential`` (ResNet downsample paths), and ``convK``/``bnK`` attributes of MONAI's ResNet
    stem and blocks (whose forward applies ``bnK`` right after ``convK``). Inference only: the folded network
    computes the same function in ``eval()`` with one memory pass less per convolution, but can no longer be
    trained (the batch statistics are gone). Returns ``network``.
    """
    from monai.networks.blocks import Convolution
    from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck

    for block in list(network.modules()):
        if isinstance(block, Convolution) and hasattr(block, "adn") and hasattr(block.adn, "N"):
            if _foldable(block.conv, block.adn.N):
                block.conv = _fuse(block.conv, block.adn.N)
                block.adn.N = nn.Identity()
        elif isinstance(block, nn.Sequential):
            names = list(block._modules)
            for first, second in itertools.pairwise(names):
                if _foldable(block._modules[first], block._modules[second]):
                    block._modules[first] = _fuse(block._modules[first], block._modules[second])
                    block._modules[second] = nn.Identity()
        elif isinstance(block, (ResNet, ResNetBlock, ResNetBottleneck)):
            for k in (1, 2, 3):
                conv, norm = getattr(block, f"conv{k}", None), getattr(block, f"bn{k}", None)
                if _foldable(conv, norm):
                    setattr(block, f"conv{k}", _fuse(conv, norm))
                    setattr(block, f"bn{k}", nn.Identity())
    return network


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: Any, norm: Any) -> bool:
    """An eval-mode plain convolution followed by an eval-mode BatchNorm over its output channels."""
    return (
        isinstance(conv, _CONVS)
        and isinstance(norm, _BATCH_NORMS)
        and not conv.training
        and not norm.training
        and norm.num_features == conv.out_channels
        and norm.track_running_stats
    )


def _fuse(conv: nn.Module, norm: nn.Module) -> nn.Module:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv, norm)


def make_conv_activations_inplace(network: nn.Module) -> nn.Module:
    """Switch the activations inside MONAI ``Convolution`` blocks to in-place where the activation supports it.

    Their input is the block's own fresh convolution output, so overwriting it is safe; an out-of-place ReLU
    allocates (and page-faults) a new full-size tensor per layer, which costs more than the ReLU itself on CPU.
    Inference only (autograd needs the pre-activation for some activations). Returns ``network``.
    """
    from monai.networks.blocks import Convolution

    for block in network.modules():
        activation = getattr(getattr(block, "adn", None), "A", None) if isinstance(block, Convolution) else None
        if activation is not None and hasattr(activation, "inplace"):
            activation.inplace = True
    return network
