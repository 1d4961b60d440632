"""Test-wide settings that must be in place before Airflow is first imported.

Airflow reads ``AIRFLOW_HOME`` and its configuration once, at import time; pointing it at a
throw-away folder keeps the tests off the developer's own ``~/airflow`` and makes every run start
from the same defaults. The session's migrated metadata DB is the fixture ``metadata_db`` (tests/conftest.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent

_airflow_home = Path(tempfile.mkdtemp(prefix="hcp-etcd-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_airflow_home))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_airflow_home / 'airflow.db'}")
