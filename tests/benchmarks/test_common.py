"""benchmarks/common.py's GFLOP accounting: FlopCounterMode's counts checked against hand formulas (conv3d, linear,
attention), the training-step count, the throughput fields of a row, and the matmul peak measurement."""

import math

import pytest
import torch

from benchmarks.common import add_throughput, count_gflop, matmul_peaks, network_gflop, sliding_windows


def test_conv3d_count_matches_hand_formula() -> None:
    cin, cout, k, size, stride = 3, 5, 3, (7, 8, 9), 2
    conv = torch.nn.Conv3d(cin, cout, k, stride=stride, padding=1, bias=True)
    x = torch.randn(2, cin, *size)
    out_voxels = 2 * math.prod((s + 2 - k) // stride + 1 for s in size)  # batch 2
    with torch.no_grad():
        assert conv(x).shape[2:].numel() * 2 == out_voxels
    assert count_gflop(conv, x) * 1e9 == pytest.approx(2 * cin * cout * k**3 * out_voxels)


def test_training_step_counts_forward_and_backward() -> None:
    # Second layer: forward 2*MAC, backward input- and weight-gradient 2*MAC each; the first layer's input needs no
    # gradient, so its backward is the weight gradient only.
    first, second = torch.nn.Conv3d(2, 4, 3, padding=1, bias=False), torch.nn.Conv3d(4, 3, 3, padding=1, bias=False)
    network = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    x = torch.randn(1, 2, 6, 6, 6)
    mac1, mac2 = 2 * 4 * 27 * 216, 4 * 3 * 27 * 216
    assert network_gflop(network, x) * 1e9 == pytest.approx(2 * (mac1 + mac2))
    assert network_gflop(network, x, train=True) * 1e9 == pytest.approx(2 * (2 * mac1 + 3 * mac2))
    assert all(p.grad is None for p in network.parameters())


def test_linear_is_counted() -> None:
    linear = torch.nn.Linear(16, 8, bias=False)
    assert count_gflop(linear, torch.randn(5, 16)) * 1e9 == 2 * 5 * 16 * 8


def test_cpu_fused_attention_counts_as_plain_products() -> None:
    # PyTorch's own FlopCounterMode counts the CPU fused kernel as 0; ours must count what the math backend (plain
    # bmm, counted natively) does: 2 products of n x n x c forward; backward 4, plus the fused kernel's recomputation
    # of the scores (one more product).
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, n, c = 1, 2, 64, 8
    q, k, v = (torch.randn(b, h, n, c, requires_grad=True) for _ in range(3))
    product = 2 * b * h * n * n * c

    def forward() -> None:
        with torch.no_grad():
            torch.nn.functional.scaled_dot_product_attention(q, k, v)

    def step() -> None:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()

    fused = count_gflop(forward) * 1e9, count_gflop(step) * 1e9
    with sdpa_kernel(SDPBackend.MATH):
        plain = count_gflop(forward) * 1e9, count_gflop(step) * 1e9
    assert plain == (2 * product, 6 * product)
    assert fused == (plain[0], plain[1] + product)


def test_add_throughput_fields() -> None:
    peaks = {"fp32_gflop_per_s": 100.0, "bf16_gflop_per_s": 400.0}
    row = add_throughput({"median_s": 0.5}, 20.0, peaks)
    assert row == {"median_s": 0.5, "gflop": 20.0, "gflop_per_s": 40.0, "pct_fp32_peak": 40.0, "pct_bf16_peak": 10.0}
    io = add_throughput({"median_s": 1.0}, None, peaks, reason="file I/O")
    assert io["gflop"] is None and io["pct_bf16_peak"] is None and io["gflop_reason"] == "file I/O"
    with pytest.raises(ValueError, match="reason"):
        add_throughput({"median_s": 1.0}, None, peaks)


def test_matmul_peaks_small() -> None:
    threads = torch.get_num_threads()
    peaks = matmul_peaks(threads=1, n=128, repeats=2)
    assert peaks["fp32_gflop_per_s"] > 0 and peaks["bf16_gflop_per_s"] > 0
    assert peaks["fp32_best_gflop_per_s"] >= peaks["fp32_gflop_per_s"]
    assert peaks["threads"] == 1 and peaks["gflop_per_product"] == 2 * 128**3 / 1e9
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("size", "roi", "overlap"),
    [((274, 274, 160), (96, 96, 96), 0.25), ((96, 50, 97), (96, 96, 96), 0.5), ((200, 300), (64, 64), 0.0)],
)
def test_sliding_windows_matches_monai(size, roi, overlap) -> None:
    from monai.inferers import sliding_window_inference

    calls = []

    def predictor(window: torch.Tensor) -> torch.Tensor:
        calls.append(window.shape[0])
        return window

    sliding_window_inference(torch.zeros(1, 1, *size), roi, 1, predictor, overlap=overlap)
    assert sliding_windows(size, roi, overlap) == sum(calls)
