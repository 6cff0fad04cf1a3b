"""The live-science benchmark runs end to end on tiny sizes and prints its tables (figures are measured, not asserted)."""
import re

import pytest

from benchmarks import bench_live

NUMBER = r"\s+(\d+\.\d+)"


def test_quick_benchmark_prints_both_sections(capsys):
    assert bench_live.main(["--quick", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "RunEngine callback time per document: grid_scan 4 x 3 (12 events), 256 x 256 detector" in out, out
    for mode in ("thread=True", "thread=False"):
        row = re.search(re.escape(mode) + r"\s+(\d+)" + NUMBER * 9, out)
        assert row, (mode, out)
        assert int(row.group(1)) >= 12 + 3  # start, descriptor, 12 events, stop
        assert all(float(v) >= 0 for v in row.groups()[1:])
    # the results of both modes were compared (the benchmark raises if they differ)
    assert re.search(r"results after flush\(\): identical in every repeat of both modes \(12 events, \d+ features", out), out
    assert "live placement + linking (RunState.add) per event: 6 x 5 grid (30 events), 5 peaks/event (150 features)" in out
    for linking in ("sample", r"trackpy \(memory=8\)"):
        row = re.search(r"\n" + linking + NUMBER * 9 + NUMBER + NUMBER + r"\s+(-?\d+\.\d+)", out)
        assert row, (linking, out)
    for linking in ("sample", "trackpy"):
        assert re.search(linking + r": live tracks = batch linking as a partition: yes \((\d+) particles live, \1 batch\)",
                         out), out
        assert re.search(r"  " + linking + r"\s+after 25% of the run \d+ ms .*after 50% .*after 100% of the run \d+ ms", out), out


def test_the_batch_linkings_and_the_partition_check():
    assert bench_live.same_partition([0, 0, 1, 2], [5, 5, 7, 3])
    assert not bench_live.same_partition([0, 0, 1], [5, 6, 7])  # one live particle split in the batch
    assert not bench_live.same_partition([0, 1, 1], [5, 5, 5])  # two live particles one in the batch


def test_help_describes_the_sections(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_live.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--section" in out and "--repeats" in out and "python -m benchmarks.bench_live" in out
