"""A real Airflow (``airflow standalone``: scheduler, dag-processor, triggerer, api-server, LocalExecutor).

Runs are triggered through the REST API; their state and task times are read from the
metadata DB (SQLite in the temporary AIRFLOW_HOME), so polling costs no CLI start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import DAGS, PLUGINS, log, python_env

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace(" ", "T")).replace(tzinfo=None)


class Airflow:
    """``airflow standalone`` in ``home`` on the project's DAGs, wired to a sandbox.

    :param home: a fresh AIRFLOW_HOME.
    :param sandbox_env: the sandbox's ``airflow.env`` variables.
    :param pool_slots: slots of the ``hcp_etcd_backup`` pool.
    """

    def __init__(self, home: Path, sandbox_env: dict[str, str], pool_slots: int = 4) -> None:
        self.home = home
        self.port = free_port()
        self.pool_slots = pool_slots
        settings = {
            **sandbox_env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(self.port),
            # Log servers of the scheduler and triggerer: free ports too, so that another Airflow on
            # this machine (a demo, a test suite) cannot make a component fail to start.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            # A task's supervisor gives up on the api-server after 5 s by default; on 2 cores with
            # SQLite and another test suite running beside it, an answer can take longer, and the task
            # then fails before it starts (seen as a flaky test_airflow_dies). The config's own advice
            # for high load: a longer timeout.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            # Never a scheduled run during the bench: manual runs only. Feb 29 at 00:00 has no fire
            # time between the DAGs' start_date (2025-01-01) and 2028, so unpausing creates no run.
            "HCP_ETCD_BACKUP_SCHEDULE": "0 0 29 2 *",
            "HCP_ETCD_DRILL_SCHEDULE": "0 0 29 2 *",
            "HCP_ETCD_ONLINE_SCHEDULE": "",  # off: manual runs only
            "HCP_ETCD_RETRY_DELAY_SECONDS": "5",
        }
        self.env = python_env()
        # Nothing inherited may point this Airflow elsewhere (a test session sets its own DB, home ...).
        for key in [k for k in self.env if k.startswith("AIRFLOW")]:
            del self.env[key]
        self.env.update(settings)
        self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
        # standalone starts its components as `airflow ...` from PATH.
        self.env["PATH"] = os.pathsep.join([str(Path(AIRFLOW).parent), self.env.get("PATH", "")])
        self.proc: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    def cli(self, *args: str, timeout: float = 180) -> str:
        """Run an ``airflow`` CLI command in this Airflow's environment (``self.env``).

        :param args: the arguments.
        :param timeout: seconds.
        """
        proc = subprocess.run(
            [AIRFLOW, *args], capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args[:2])} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
        return proc.stdout

    def start(
        self,
        timeout: float = 300,
        dag_ids: tuple[str, ...] = ("hcp_etcd_backup", "hcp_etcd_restore"),
        migrated_db: Path | None = None,
    ) -> None:
        """Migrate, create the pool, start standalone and wait until the DAGs are parsed.

        :param timeout: seconds.
        :param dag_ids: the DAGs to wait for.
        :param migrated_db: a metadata DB already migrated, with the ``hcp_etcd_backup`` pool: copied
            in instead of migrating one and creating the pool (a test session makes one for all).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        if migrated_db is not None:
            shutil.copyfile(migrated_db, self.home / "airflow.db")
        else:
            self.cli("db", "migrate", timeout=timeout)
            self.cli("pools", "set", "hcp_etcd_backup", str(self.pool_slots), "hcp-etcd bench")
        logfile = (self.home / "standalone.log").open("wb")
        self.proc = subprocess.Popen(
            [AIRFLOW, "standalone"],
            env=self.env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        api_up = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited; see {self.home / 'standalone.log'}")
            api_up = api_up or self._api_up()
            if api_up and self._parsed(set(dag_ids)):
                return
            time.sleep(0.5)
        # Which check failed: the api-server never answered, or it did and the DAGs are not in the DB.
        waiting = (
            "the api-server's /api/v2/version"
            if not api_up
            else f"the DAGs {sorted(dag_ids)} unpaused in the DB"
        )
        tail = (self.home / "standalone.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"airflow standalone not ready in {timeout:.0f}s, still waiting for {waiting}; "
            f"its log ends with:\n{tail}"
        )

    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/version", timeout=3):
                return True
        except OSError:
            return False

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        db = self.home / "airflow.db"
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            try:
                return list(conn.execute(sql, params))
            except sqlite3.OperationalError:
                return []

    def _parsed(self, dag_ids: set[str]) -> bool:
        rows = self._query("SELECT dag_id FROM dag WHERE is_paused = 0")
        return dag_ids <= {r[0] for r in rows}

    def stop(self) -> None:
        """TERM the standalone process group (it started), KILL what is left after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(10)
        # Components may outlive the parent for a moment: the group is ours, make sure it is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call to Airflow's REST API as the bench's all-admin user.

        The REST API, not ``airflow dags trigger``: the CLI starts Airflow for every call (10-20 s
        under load, which was most of a bench run's time that measured nothing).
        """
        if self._token is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/auth/token", timeout=30) as resp:
                self._token = str(json.load(resp)["access_token"])
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.load(resp)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG through the REST API (a paused DAG's runs get no new task queued).

        :param dag_id: the DAG.
        :param paused: the new state.
        """
        self._api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """The state of each task instance of a run, by ``task_id[map_index]``, from the DB.

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        rows = self._query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            dag_id,
            run_id,
        )
        return {f"{t[0]}[{t[1]}]": t[2] for t in rows}

    def why(self, dag_id: str, run_id: str, task_ids: Iterable[str], chars: int = 2500) -> str:
        """What the logs say about some tasks of a run, for an error message: the end of each try's
        task log and the lines of standalone's log (scheduler, executor) that name the task. A test
        machine's Airflow home is gone once its run ended, so an error must carry this itself.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_ids: ``task_id`` or ``task_id[map_index]`` keys of :meth:`task_states`.
        :param chars: the most each log contributes.
        """
        parts = []
        standalone = self.home / "standalone.log"
        components = standalone.read_text(errors="replace").splitlines() if standalone.exists() else []
        for task_id in {key.split("[", 1)[0] for key in task_ids}:
            folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            for path in sorted(folder.rglob("*.log")) if folder.exists() else []:
                text = path.read_text(errors="replace")[-chars:]
                parts.append(f"--- {path.relative_to(self.home / 'logs')} (end):\n{text}")
            lines = "\n".join(line for line in components if task_id in line)
            if lines:
                parts.append(f"--- standalone.log, lines naming {task_id}:\n{lines[-chars:]}")
        return "\n".join(parts) or "(no log found)"

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str) -> str:
        """Trigger a run of ``dag_id`` now with ``conf`` through the REST API.

        :param dag_id: the DAG.
        :param conf: its Params.
        :param run_id: the run id to use.
        """
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return str(self._api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"])

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Wait for a run to end; its state, duration and task instances.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param timeout: seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self._query(
                "SELECT state, start_date, end_date FROM dag_run WHERE dag_id = ? AND run_id = ?",
                dag_id,
                run_id,
            )
            if rows and rows[0][0] in ("success", "failed"):
                state, start, end = rows[0]
                tis = self._query(
                    "SELECT task_id, map_index, state, start_date, end_date, try_number FROM task_instance "
                    "WHERE dag_id = ? AND run_id = ?",
                    dag_id,
                    run_id,
                )
                tasks = {
                    f"{t[0]}[{t[1]}]": {"state": t[2], "start": _ts(t[3]), "end": _ts(t[4]), "tries": t[5]}
                    for t in tis
                }
                started, ended = _ts(start), _ts(end)
                seconds = (ended - started).total_seconds() if started and ended else float("nan")
                return {"state": state, "seconds": seconds, "tasks": tasks}
            time.sleep(1)
        raise TimeoutError(f"{dag_id} {run_id} did not finish in {timeout:.0f}s")

    def run(self, dag_id: str, conf: dict[str, Any], run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Trigger and wait; raises when the run failed (with its failed tasks).

        :param dag_id: the DAG.
        :param conf: its Params.
        :param run_id: the run id.
        :param timeout: seconds.
        """
        log(f"trigger {dag_id} {run_id}")
        self.trigger(dag_id, conf, run_id)
        result = self.wait(dag_id, run_id, timeout)
        if result["state"] != "success":
            failed = [k for k, t in result["tasks"].items() if t["state"] not in ("success", "skipped")]
            raise RuntimeError(
                f"{dag_id} {run_id} {result['state']}: {failed}; logs in {self.home}/logs\n"
                + self.why(dag_id, run_id, failed)
            )
        log(f"{dag_id} {run_id} done in {result['seconds']:.1f}s")
        return result
