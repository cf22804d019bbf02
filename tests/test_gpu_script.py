"""bench/gpu.py, the one prepared run for the GPU machine, run end to end with --dry-run (every step tiny, on the
CPU), so that it is known to work before GPU time is ever spent on it."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from throughput import GPU_GROUPS  # noqa: E402

pytestmark = pytest.mark.heavy(1)  # about a minute and a half of steps


def test_the_gpu_script_runs_every_step_end_to_end(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    names = [r["step"] for r in results]
    assert names[:3] == ["env", "data", "cuda-tests"] and names[-1] == "suite" and len(names) == 13
    assert all(r["rc"] == 0 and not r["timed_out"] for r in results)
    tests = next(r for r in results if r["step"] == "cuda-tests")
    assert tests["passed"] == 5 and tests["skipped"] == 1  # the CUDA module really ran, on the CPU (not torchrun)
    # every variant of every group timed (none failed), with its share of the GEMM peak
    records = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    assert sorted(r["variant"] for r in records) == sorted(v for group in GPU_GROUPS.values() for v in group)
    assert all("error" not in r and r["ms_per_it"] > 0 and r["flops_per_it"] > 0 for r in records)
    with open(out / "ttq.csv") as f:
        assert {row["run"] for row in csv.DictReader(f)} == {"ttq-auto", "ttq-bf16"}  # compiling: the GPU's
    exact = next(r for r in results if r["step"] == "exactness")["exactness"]
    assert len(exact) == 2 and all(" == " in line for line in exact)
    summary = (out / "summary.txt").read_text()
    assert all(name in summary for name in names) and summary in done.stdout
    assert len(list(out.iterdir())) <= 8  # what the device tool can bring back
