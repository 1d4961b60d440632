"""Integration fixtures: an Airflow home on the sandbox, and a runner of ``dag.test()``.

Each DAG run happens in a subprocess: Airflow reads ``AIRFLOW_HOME`` and connections from the
environment when it is imported, and a fresh process per run keeps runs from sharing state (the
same reason the task log of a run can be captured whole and searched for secrets).

Least privilege: the sandboxes here (``sandbox``, ``make_sandbox``) enforce ``include/rbac`` for the
token Airflow is given, so every DAG run is a run under the shipped RBAC, and after each test the
request log must show no 403 for that token. A test's own setup and inspection (patching a lock in,
reading a restored key, deleting what a restore made) goes through the sandbox's admin kubeconfig
(``admin_kubeconfig(box)``), which the RBAC does not restrict: the tests never widen it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import UP_ARGS, Sandbox, start_sandbox

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "include" / "rbac"
POOL = "hcp_etcd_backup"

RUNNER = r"""
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.path.join(os.environ["HCP_REPO"], "dags", "hcp_etcd_backup.py"))
assert not bag.import_errors, bag.import_errors
dag = bag.dags["hcp_etcd_backup"]
dr = dag.test(run_conf=json.loads(sys.argv[1]))
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
with create_session() as s:
    tis = s.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id)
    states = {f"{ti.task_id}[{ti.map_index}]": [str(ti.state), ti.try_number] for ti in tis}
print("@@RESULT@@" + json.dumps({"state": str(dr.state), "run_id": dr.run_id, "tis": states}))
"""


@dataclass
class RunResult:
    """Outcome of one ``dag.test()`` run."""

    state: str
    run_id: str
    tis: dict[str, list[Any]]
    output: str

    def state_of(self, task_id: str, map_index: int = -1) -> str:
        return self.tis[f"{task_id}[{map_index}]"][0]

    def tries_of(self, task_id: str, map_index: int = -1) -> int:
        return self.tis[f"{task_id}[{map_index}]"][1]


@dataclass
class AirflowEnv:
    """An Airflow home wired to a sandbox."""

    home: Path
    env: dict[str, str]
    logs: list[str]

    def run(
        self, conf: dict[str, Any], timeout: float = 300, extra_env: dict[str, str] | None = None
    ) -> RunResult:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, json.dumps(conf)],
            capture_output=True, text=True, env={**self.env, **(extra_env or {})},
            timeout=timeout, check=False,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        self.logs.append(out)
        marker = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
        assert marker, f"dag.test did not finish (rc={proc.returncode}):\n{out[-6000:]}"
        data = json.loads(marker[-1][len("@@RESULT@@") :])
        return RunResult(data["state"], data["run_id"], data["tis"], out)

    def db_dump(self) -> bytes:
        """Every row of every table of the metadata DB, as bytes to search."""
        con = sqlite3.connect(self.home / "airflow.db")
        chunks: list[bytes] = []
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            chunks.append(value)
                        elif value is not None:
                            chunks.append(str(value).encode("utf-8", "replace"))
        finally:
            con.close()
        return b"\n".join(chunks)

    def log_files(self) -> bytes:
        """Every file under the Airflow home's logs folder."""
        return b"\n".join(p.read_bytes() for p in (self.home / "logs").rglob("*") if p.is_file())


def make_airflow_env(home: Path, sandbox_env: dict[str, str]) -> AirflowEnv:
    """Create an Airflow home, migrate its DB and create the pool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "HCP_ETCD_"))}
    env.update(sandbox_env)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Keep the provider's API retries short so a fault costs seconds, not minutes.
            "AIRFLOW__WORKERS__API_RETRY_WAIT_MAX": "2",
            "HCP_ETCD_RETRY_DELAY_SECONDS": "1",
            "HCP_REPO": str(REPO),
            "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    for cmd in ([airflow, "db", "migrate"], [airflow, "pools", "set", POOL, "4", "hcp-etcd backups"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return AirflowEnv(home, env, [])


@pytest.fixture(scope="session")
def airflow_env(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """An Airflow home on the shared sandbox (``airflow db migrate`` once per session)."""
    return make_airflow_env(tmp_path_factory.mktemp("airflow-home"), sandbox.env)


@pytest.fixture
def airflow_env_for(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A factory: an Airflow home of its own on a given (own) sandbox."""

    def make(box: Any) -> AirflowEnv:
        return make_airflow_env(tmp_path_factory.mktemp("own-airflow-home"), box.env)

    return make


# ---- the sandboxes, under include/rbac ---------------------------------------------------------


def admin_kubeconfig(box: Sandbox) -> Path:
    """The kubeconfig whose token ``--rbac`` does not restrict: for tests' setup and inspection only."""
    return Path(box.info["admin_kubeconfig"])


def _requests_since(box: Sandbox, seq: int) -> tuple[list[dict[str, Any]], int]:
    kc = yaml.safe_load(box.kubeconfig.read_text())
    req = urllib.request.Request(
        f"{kc['clusters'][0]['cluster']['server']}/sandbox/v1/requests?since={seq}",
        headers={"Authorization": f"Bearer {kc['users'][0]['user']['token']}"},
    )
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(box.ca)), timeout=30) as r:
        data = json.loads(r.read())
    return data["items"], data["latest"]


def refused_since(box: Sandbox, seq: int) -> list[str]:
    """Requests of Airflow's (restricted) token that include/rbac refused after ``seq``."""
    return [
        f"{i['verb']} {i['plural']}{'/' + i['subresource'] if i.get('subresource') else ''} "
        f"{i.get('namespace') or ''}/{i.get('name') or ''}"
        for i in _requests_since(box, seq)[0]
        if i["code"] == 403 and i.get("user") == "token"
    ]


def start_rbac_sandbox(directory: Path, *up_args: str) -> Sandbox:
    """A sandbox that enforces include/rbac for the token in its ``airflow.env`` and ``kubeconfig``."""
    box = start_sandbox(directory, "--rbac", str(RBAC), *up_args)
    # Proof that it is enforced (else "no 403" below would prove nothing): creating a Namespace,
    # which include/rbac does not grant, is refused for that token.
    kc = yaml.safe_load(box.kubeconfig.read_text())
    req = urllib.request.Request(
        f"{kc['clusters'][0]['cluster']['server']}/api/v1/namespaces",
        data=json.dumps({"metadata": {"name": "rbac-probe"}}).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {kc['users'][0]['user']['token']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(box.ca)), timeout=30)
        assert refused.value.code == 403, refused.value
    except BaseException:
        box.down()
        raise
    return box


# `sandbox` itself is overridden, not only how it starts: pytest keeps one instance of a session
# fixture per definition, so this one is separate from the unrestricted sandbox of tests/sandbox.
@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The shared sandbox of tests/conftest.py (``ha-one``, ``single-one``), enforcing include/rbac."""
    box = start_rbac_sandbox(tmp_path_factory.mktemp("sandbox"), *UP_ARGS)
    try:
        yield box
    finally:
        box.down()


@pytest.fixture
def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """``make_sandbox(*up_args)``: a sandbox of the test's own, enforcing include/rbac; after the
    test, no request of Airflow's token was refused."""
    started: list[tuple[Sandbox, int]] = []

    def make(*up_args: str) -> Sandbox:
        box = start_rbac_sandbox(tmp_path_factory.mktemp("own-sandbox"), *up_args)
        started.append((box, _requests_since(box, 10**12)[1]))  # after the probe's own 403
        return box

    yield make
    try:
        for box, seq in started:
            refused = refused_since(box, seq)
            assert not refused, f"include/rbac lacks what the DAGs did: {refused}"
    finally:
        for box, _ in started:
            box.down()


@pytest.fixture(autouse=True)
def _nothing_refused(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared sandbox: include/rbac refused none of Airflow's requests."""
    if "sandbox" not in request.fixturenames:
        yield
        return
    box: Sandbox = request.getfixturevalue("sandbox")
    seq = _requests_since(box, 10**12)[1]
    yield
    refused = refused_since(box, seq)
    assert not refused, f"include/rbac lacks what the DAGs did: {refused}"
