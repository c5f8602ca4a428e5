"""benchmarks/report.py: the peaks line and throughput columns come from the JSON that common.py's helpers write, a
row without GFLOP shows "-" and its reason, and every stored result renders."""

import json

import pytest

from benchmarks import report
from benchmarks.common import add_throughput, peak_rows


def rendered_runtimes(peaks: dict, rows: list[dict], tmp_path, monkeypatch, capsys) -> str:
    """``report.py runtimes`` on a runtimes.json of these peaks and rows, as printed."""
    payload = {"matmul_peaks": peaks, "shape": [1, 1, 8, 8, 8], "rows": rows}
    (tmp_path / "runtimes.json").write_text(json.dumps(payload))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert report.main(["runtimes"]) == 0
    return capsys.readouterr().out


def test_runtimes_table_has_peaks_and_throughput(tmp_path, monkeypatch, capsys) -> None:
    peaks = {"fp32_gflop_per_s": 100.0, "bf16_gflop_per_s": 400.0, "n": 64, "threads": 2, "repeats": 3}
    peaks["gflop_per_product"] = 2 * 64**3 / 1e9
    rows = peak_rows(peaks)
    rows.append(add_throughput({"case": "net", "median_s": 0.5, "speed_vs_bundle_path": 1.0}, 40.0, peaks))
    rows.append(add_throughput({"case": "read", "median_s": 1.0}, None, peaks, reason="file I/O only"))
    text = rendered_runtimes(peaks, rows, tmp_path, monkeypatch, capsys)
    assert "fp32 100 GFLOP/s, bf16 400 GFLOP/s" in text
    assert "| % fp32 peak | % bf16 peak |" in text
    assert "| net | 0.500 | 1.00x | 40.0 | 80 | 80 | 20 |" in text  # 40 GFLOP in 0.5 s: 80 % / 20 % of the peaks
    assert "| read | 1.000 |  | - | - | - | - |" in text
    assert 'No GFLOP/s ("-"): file I/O only.' in text


def test_unknown_name_is_an_error(capsys) -> None:
    assert report.main(["no_such_benchmark"]) == 2
    assert "no_such_benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(report.RENDERERS))
def test_every_stored_result_renders(name: str) -> None:
    path = report.RESULTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} not stored")
    assert "|---|" in report.RENDERERS[name](json.loads(path.read_text(encoding="utf-8")))


def test_a_cpu_without_bf16_kernels_skips_bf16_rows_and_their_peak_column(tmp_path, monkeypatch, capsys) -> None:
    """AVX2-only CPUs (common.bf16_skip_reason): bf16 measured on a small product, its rows skipped with the reason,
    and no "% bf16 peak" column (thousands of per cent of a scalar fallback say nothing)."""
    peaks = {"fp32_gflop_per_s": 100.0, "bf16_gflop_per_s": 1.25, "n": 64, "bf16_n": 16, "threads": 2, "repeats": 3}
    peaks["gflop_per_product"] = 2 * 64**3 / 1e9
    rows = peak_rows(peaks)
    assert rows[1]["gflop"] == 2 * 16**3 / 1e9 and rows[1]["median_s"] == rows[1]["gflop"] / 1.25
    rows.append(add_throughput({"case": "net", "median_s": 0.5, "speed_vs_pytorch_path": 1.0}, 40.0, peaks))
    rows.append({"case": "MONAI bf16", "skipped": "no bf16 kernels here"})
    text = rendered_runtimes(peaks, rows, tmp_path, monkeypatch, capsys)
    assert "bf16 1.2 GFLOP/s (64 x 64 square matmul, bf16 16 x 16," in text
    assert "% bf16 peak" not in text and "| net | 0.500 | 1.00x | 40.0 | 80 | 80 |" in text
    assert "Rows without a time were skipped: no bf16 kernels here." in text
