"""The whole-volume pipeline's fixed steps: MONAI's default transform vs the one medattn3d's presets use.

    .venv/bin/python benchmarks/pipeline_steps.py --json benchmarks/results/pipeline_steps.json

On the whole-volume benchmark's 512 x 512 x 128 float32 CT (``.nii.gz``): reading it (MONAI ``LoadImage`` vs
``medattn3d.data.load_volume``), inverting the resampling of a 4-class probability map back onto it (MONAI
``Spacingd`` at its float64 default vs ``FastInverseSpacingd`` in float32), and the argmax (MONAI ``AsDiscreted``
vs ``ChannelArgmaxd``). Medians of 3 runs (1 for steps over 3 s).

None of these steps does matmul/convolution arithmetic: reading is gzip decompression and copying, the inverse
resampling is interpolation (a few multiply-adds per voxel, memory-bound), the argmax compares. Each row records
``gflop: None`` with a ``gflop_reason`` instead of a GFLOP/s that would compare them with the matmul peaks, which are
still measured at the start of the run and stored (``matmul_peaks``) like every benchmark's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_throughput, machine, matmul_peaks, print_table, write_json
from whole_volume import make_volume

PIXDIM = (1.5, 1.5, 2.0)


def timed(step, repeats: int = 3) -> float:
    """Median seconds of ``step()``; a single run when the first one takes over 3 s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if times[0] > 3.0:
            break
    return sorted(times)[len(times) // 2]


def inverse_step(spacing, image) -> float:
    """Seconds to invert ``spacing`` on a 4-channel map carrying ``image``'s resampling trace."""
    resampled = spacing({"image": image.clone()})["image"]
    prediction = resampled.new_empty((4, *resampled.shape[1:])).uniform_()
    prediction.copy_meta_from(resampled)

    def step():
        spacing.inverse({"image": prediction.clone()})

    return timed(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[512, 512, 128])
    parser.add_argument("--json")
    args = parser.parse_args()
    from monai.transforms import AsDiscreted, EnsureChannelFirst, LoadImage, Spacingd

    from medattn3d.data import FastInverseSpacingd, load_volume
    from medattn3d.outputs.prediction import ChannelArgmaxd

    peaks = matmul_peaks()
    work = Path(tempfile.mkdtemp(prefix="medattn3d-steps-"))
    try:
        path = work / "ct.nii.gz"
        make_volume(path, tuple(args.shape))
        image = EnsureChannelFirst()(load_volume(path))
        scores = torch.rand(4, *args.shape)
        rows = [
            {
                "step": "read the .nii.gz",
                "monai_s": timed(lambda: LoadImage(image_only=True)(str(path))),
                "medattn3d_s": timed(lambda: load_volume(path)),
            },
            {
                "step": "invert the resampling, 4 channels",
                "monai_s": inverse_step(Spacingd("image", pixdim=PIXDIM), image),
                "medattn3d_s": inverse_step(FastInverseSpacingd("image", pixdim=PIXDIM, dtype=torch.float32), image),
            },
            {
                "step": "argmax over 4 channels",
                "monai_s": timed(lambda: AsDiscreted("pred", argmax=True)({"pred": scores})),
                "medattn3d_s": timed(lambda: ChannelArgmaxd("pred")({"pred": scores})),
            },
        ]
        reasons = (
            "file I/O and gzip decompression: no matmul/convolution arithmetic",
            "interpolation: a few multiply-adds per voxel, memory-bound, no matmul/convolution arithmetic",
            "comparisons only: no floating-point arithmetic to speak of",
        )
        for row, reason in zip(rows, reasons, strict=True):
            row["speedup"] = row["monai_s"] / row["medattn3d_s"]
            add_throughput(row, None, peaks, reason=reason)
        print_table(rows, ["step", "monai_s", "medattn3d_s", "speedup"])
        write_json(
            args.json,
            {
                "benchmark": "pipeline_steps",
                "machine": machine(),
                "matmul_peaks": peaks,
                "matmul_peaks_end": matmul_peaks(),
                "shape": args.shape,
                "rows": rows,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
