"""The DAG folder parses cleanly, and importing a DAG file touches no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))

# Run in a fresh interpreter so that nothing imported earlier by the test session hides a
# connection made at import time. Every way Python opens a socket is recorded, and refused.
_PROBE = r"""
import importlib.util, json, socket, sys

opened = []

def refuse(*args, **kwargs):
    opened.append(repr(args[:2]))
    raise OSError("network access at DAG import time")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

path = sys.argv[1]
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(opened))
"""


def test_there_are_dag_files() -> None:
    assert DAG_FILES, "dags/ holds no DAG file"


def test_dag_folder_imports_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert "hcp_etcd_backup" in bag.dag_ids
    files_with_dags = {Path(dag.fileloc).name for dag in bag.dags.values()}
    assert files_with_dags == {p.name for p in DAG_FILES}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_importing_a_dag_file_opens_no_connection(dag_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include")])}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dag_file)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
