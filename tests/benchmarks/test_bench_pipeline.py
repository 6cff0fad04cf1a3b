"""The pipeline benchmark runs and prints its ratios (figures are measured, not asserted)."""
import re


def test_bench_quick_prints_overhead_speedup_and_memory(capsys):
    from benchmarks import bench_pipeline as bench

    assert bench.main(["--quick", "--events", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    row = re.search(r"256 x 256\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)%\s+([\d.]+)\s+([\d.]+)x", out)
    assert row, out
    assert all(float(v) > 0 for v in row.groups()[:2])
    assert re.search(r"peak RSS, 64 x 64: 50 events \d+ MB, 200 events \d+ MB", out), out
