"""The served-pipeline benchmark runs (``--quick``) and prints its figures."""
import re
import subprocess
import sys

from serving import subprocess_env


def test_bench_serve_quick_prints_both_paths():
    run = subprocess.run([sys.executable, "-m", "streamcrystal.bench_serve", "--quick"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("256 x 256 detector, 5 frames/event, 4 events a run, medians of 2; server writes to jsonl")
    number = r"\s+(\d+\.\d+)"
    local = re.fullmatch(r"in-process pipeline" + number + number, lines[2].strip())
    served = re.fullmatch(r"served: publisher->proxy->server" + number + number, lines[3].strip())
    assert local and served, run.stdout
    assert all(float(value) > 0 for value in (*local.groups(), *served.groups()))
    assert re.fullmatch(r"served/in-process throughput: \d+%", lines[4])
    assert re.fullmatch(r"publisher side \(not timed above\): msgpack serialization \d+\.\d ms an event", lines[5])
