"""The backup graph in README.md is rendered from the DAG: fail when it is out of date."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_graph_matches_the_dag(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, str(REPO / "include/tools/render_graph.py"), "--check"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, (
        "README.md's backup graph differs from dags/hcp_etcd_backup.py: run "
        "`python include/tools/render_graph.py`\n" + result.stdout[-2000:] + result.stderr[-2000:]
    )


def test_the_graph_marks_setups_and_teardowns():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- BEGIN backup-graph", 1)[1].split("<!-- END backup-graph -->", 1)[0]
    assert "```mermaid" in block and "(setup)" in block and "(teardown)" in block
    assert "backup_pause -.-> backup_unpause" in block, "pause's scope over unpause"
