"""Airflow homes on a sandbox, and ``dag.test()`` runs in them.

An Airflow home gets a copy of the session's migrated metadata DB (:func:`session_metadata_db`: one
``airflow db migrate`` and the backup pool per session, or per ``make test``, instead of one per
home) and a fork server
that imported Airflow with that home's environment once (:mod:`tests.support.fork_server`). Each
``dag.test()`` call is still a process of its own (a fork of that server), so runs share no state,
and its whole output is kept to be searched for secrets.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.support import dag_worker
from tests.support.fork_server import ForkServer

REPO = Path(__file__).resolve().parents[2]
POOL = "hcp_etcd_backup"
DB_FILE = "airflow.db"
SHARED_DB_ENV = "HCP_ETCD_TEST_METADATA_DB"  # a directory for the migrated DBs that sessions share
# DAGs made by another DAG's file (dags/<file>.py), as the DAG processor finds them.
DAG_FILES = {"hcp_etcd_backup_online": "hcp_etcd_backup"}


def _airflow(env: dict[str, str], *args: str) -> None:
    """``airflow ARGS`` in ``env``; fails the test with its output when it fails."""
    cmd = [sys.executable, "-m", "airflow", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def clean_env(home: Path) -> dict[str, str]:
    """The environment of an Airflow of its own in ``home``: nothing of the caller's Airflow or
    hcp-etcd settings, the project's plugins and include on PYTHONPATH, no examples."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HCP_ETCD"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
    )
    return env


@dataclass(frozen=True)
class MetadataDb:
    """The session's migrated metadata DBs, to copy into Airflow homes.

    :param migrated: after ``airflow db migrate``.
    :param with_pool: the same, with the backup DAG's pool (``airflow pools set``).
    """

    migrated: Path
    with_pool: Path


def make_metadata_db(directory: Path) -> MetadataDb:
    """Migrate a metadata DB in ``directory`` once, and a copy of it with the backup pool."""
    home = directory / "home"
    home.mkdir(parents=True)
    env = clean_env(home)
    _airflow(env, "db", "migrate")
    migrated = shutil.copy2(home / DB_FILE, directory / "migrated.db")
    _airflow(env, "pools", "set", POOL, "4", "hcp-etcd backups")
    with_pool = shutil.copy2(home / DB_FILE, directory / "with-pool.db")
    return MetadataDb(Path(migrated), Path(with_pool))


def session_metadata_db(directory: Path) -> MetadataDb:
    """The migrated metadata DBs of this test session: made in ``directory``, or, when
    ``make test`` runs its suites side by side (:data:`SHARED_DB_ENV` set by ``tests.support.suites``),
    the ones all its sessions share: the first session that asks migrates them, under a lock the
    others wait on. Homes only copy them, so one migration serves every session.

    :param directory: an empty directory of this session.
    """
    shared = os.environ.get(SHARED_DB_ENV)
    if not shared:
        return make_metadata_db(directory)
    where = Path(shared)
    where.mkdir(parents=True, exist_ok=True)
    with (where / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        made = MetadataDb(where / "migrated.db", where / "with-pool.db")
        return made if made.with_pool.exists() else make_metadata_db(where)


def install_db(home: Path, template: Path) -> None:
    """Put a copy of a migrated metadata DB into the Airflow home (what ``db migrate`` would make)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / DB_FILE)


@dataclass
class RunResult:
    """Outcome of one ``dag.test()`` run."""

    state: str
    run_id: str
    tis: dict[str, str]  # "task_id[map_index]" -> state
    tries: dict[str, int]  # "task_id[map_index]" -> try number
    xcoms: dict[str, Any]  # "task_id[map_index].key" -> value
    output: str

    def state_of(self, task_id: str, map_index: int = -1) -> str:
        return self.tis[f"{task_id}[{map_index}]"]

    def tries_of(self, task_id: str, map_index: int = -1) -> int:
        return self.tries[f"{task_id}[{map_index}]"]

    def xcom(self, task: str, key: str = "return_value", map_index: int = -1) -> Any:
        raw = self.xcoms.get(f"{task}[{map_index}].{key}")
        return json.loads(raw) if isinstance(raw, str) and raw[:1] in '{["' else raw


@dataclass
class AirflowEnv:
    """An Airflow home wired to a sandbox, with the fork server of its ``dag.test()`` runs."""

    home: Path
    env: dict[str, str]
    logs: list[str]
    sandbox: dict[str, str] = field(default_factory=dict)  # the sandbox's airflow.env
    _server: ForkServer | None = field(default=None, repr=False)
    _runs: int = 0
    _base: AirflowEnv | None = field(default=None, repr=False)  # whose home and server these are

    @property
    def server(self) -> ForkServer:
        """The fork server (started on first use, with this home's environment)."""
        if self._base is not None:
            return self._base.server
        if self._server is None:
            self._server = ForkServer(self.env, [f"{dag_worker.__name__}:warm_up"])
        return self._server

    def on(self, sandbox_env: dict[str, str]) -> AirflowEnv:
        """This home, its metadata DB and its fork server, running on another sandbox.

        A fork server costs about 11 CPU-s to start (Airflow's imports, the Execution API's routes);
        what tells sandboxes apart (their connections, bucket, CA bundle: ``airflow.env``) is read
        at use, never at import, so each run's worker gets the other sandbox's in its environment.

        :param sandbox_env: the other sandbox's ``airflow.env``.
        """
        base = self._base or self  # the logs list too: its runs join the searches of the home
        missing = sorted(set(base.sandbox) - set(sandbox_env))  # what the fork server was started with
        assert not missing, f"the other sandbox does not set {missing}: the runs would see this one's"
        return replace(self, sandbox=dict(sandbox_env), _server=None, _base=base)

    def run_dags(
        self,
        dag_id: str,
        runs: list[tuple[dict[str, Any], str]],
        timeout: float = 600,
        extra_env: dict[str, str] | None = None,
    ) -> list[RunResult]:
        """Several ``dag.test()`` runs of ``dag_id``, ``(conf, logical date or "")`` each, in one worker.

        :param extra_env: set in the worker only: what Airflow reads at use time, e.g. a connection.
        """
        owner = self._base or self
        owner._runs += 1
        # On another sandbox (:meth:`on`), its airflow.env goes into each worker; the server has the base's.
        run_env = self.sandbox if self._base is not None else {}
        log = self.home / f"dag-test-{owner._runs}.out"
        dag_file = str(REPO / "dags" / f"{DAG_FILES.get(dag_id, dag_id)}.py")
        pid = self.server.fork(
            f"{dag_worker.__name__}:run_dags", {"dag_file": dag_file, "dag_id": dag_id, "runs": runs},
            log, {**run_env, **(extra_env or {})},
        )  # fmt: skip
        code = self.server.wait(pid, timeout)
        out = log.read_text(errors="replace")
        self.logs.append(out)
        markers = [line for line in out.splitlines() if line.startswith(dag_worker.RESULT)]
        assert len(markers) == len(runs), f"dag.test did not finish (exit code {code}):\n{out[-6000:]}"
        results = []
        for marker in markers:
            data = json.loads(marker[len(dag_worker.RESULT) :])
            tis = {k: v[0] for k, v in data["tis"].items()}
            tries = {k: v[1] for k, v in data["tis"].items()}
            results.append(RunResult(data["state"], data["run_id"], tis, tries, data["xcoms"], out))
        return results

    def run(
        self, conf: dict[str, Any], timeout: float = 300, extra_env: dict[str, str] | None = None
    ) -> RunResult:
        """One ``dag.test()`` run of the backup DAG."""
        return self.run_dags("hcp_etcd_backup", [(conf, "")], timeout, extra_env)[0]

    def close(self) -> None:
        """Stop the fork server (the one of :meth:`on`'s result is its base's)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def db_dump(self) -> bytes:
        """Every row of every table of the metadata DB, as bytes to search."""
        con = sqlite3.connect(self.home / DB_FILE)
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


def make_airflow_env(home: Path, sandbox_env: dict[str, str], db: MetadataDb) -> AirflowEnv:
    """An Airflow home on a sandbox: the session's migrated metadata DB with the backup pool."""
    install_db(home, db.with_pool)
    env = clean_env(home)
    env.update(sandbox_env)
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Keep the provider's API retries short so a fault costs seconds, not minutes (the
            # workers shorten the back-off of the client libraries too: tests.support.waits).
            "AIRFLOW__WORKERS__API_RETRY_WAIT_MAX": "2",
            # A task retry starts at once (as the retries of the client libraries above back off briefly):
            # dag.test() runs the same tries, without idling one retry delay and one loop tick for each.
            "HCP_ETCD_RETRY_DELAY_SECONDS": "0",
            "HCP_REPO": str(REPO),
        }
    )
    return AirflowEnv(home, env, [], sandbox=dict(sandbox_env))
