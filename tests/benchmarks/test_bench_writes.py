"""The catalog-write benchmark runs (``--quick``): every written run reads back with the rows the
pipeline emitted (or it raises), and its request log adds up: TiledWriter closes each node it
made once, and the experiment without stream closes makes no close at all."""
import re
import subprocess
import sys

from tests.helpers.serving import subprocess_env


def requests_of(block: str) -> dict[str, int]:
    return {kind: int(n) for kind, n in re.findall(r"^    (\w+ \w+)\s+(\d+)\s+\d+\.\d+ s$", block, re.MULTILINE)}


def test_bench_writes_quick_stores_every_run_and_counts_its_requests():
    run = subprocess.run([sys.executable, "-m", "benchmarks.bench_writes", "--quick", "--without-stream-closes"],
                         check=False, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    normal, skipped = run.stdout.split("\nnormal: ")[1].split("\nno stream closes: ")
    made, closed = requests_of(normal), requests_of(skipped)
    nodes = made["POST metadata"] + made["POST register"]  # containers and tables; arrays registered from files
    assert made["DELETE stream"] == nodes > 0, run.stdout
    assert "DELETE stream" not in closed and closed["POST metadata"] == made["POST metadata"], run.stdout
    assert re.search(r"^CPU \d+\.\d\d s .* wall \d+\.\d\d s$", normal, re.MULTILINE), run.stdout
