"""The bench harness runs in its tiny mode (no timed assertion: the numbers mean nothing here).

Figures 2, 3 and 6 (transfer, worker memory, DAG parse) run here. Figures 1, 4 and 5 drive a real
Airflow (`airflow standalone`), which costs minutes on two cores: `make bench` runs them, and the
harness they use (`bench.airflow_run.Airflow`: start, REST trigger, run state from the DB) is
exercised by `tests/reliability/test_airflow_dies.py`.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_bench_quick_prints_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    env = {"PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}:{REPO}"}
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "2,3,6", "--json", str(out)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    numbers = {int(line[1]) for line in lines}
    assert numbers == {2, 3, 6}, proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] and len(data["figures"]) == len(lines)
    assert all(f["target"] and f["unit"] for f in data["figures"])
