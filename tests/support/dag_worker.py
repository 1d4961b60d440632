"""What a forked ``dag.test()`` worker runs (see :mod:`tests.support.fork_server`).

:func:`warm_up` runs once in the fork server: it imports what every run needs (Airflow's DAG
processing and in-process task runner, the providers' hooks, the project's operators) and builds
the in-process Execution API app (no thread, no DB connection). :func:`run_dags` runs in each
forked worker: it parses the DAG file afresh and runs ``dag.test()`` once per conf, printing one
``@@RESULT@@`` line per run.

``dag.test()`` sleeps a second in its loop whenever no task is ready to run (a task waiting for its
retry, a failure marking one level of downstream tasks ``upstream_failed`` per loop): nothing else
runs in its process meanwhile, so the workers shorten that idle tick (:func:`shorten_idle_ticks`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import time
from datetime import datetime
from typing import Any

import pytest

from tests.support import library_caches
from tests.support.waits import shorten_retry_waits

RESULT = "@@RESULT@@"
IDLE_TICK_SECONDS = 0.05
PRELOAD = [
    "airflow.dag_processing.dagbag",
    "airflow.models.taskinstance",
    "airflow.models.xcom",
    "airflow.utils.session",
    "airflow.sdk.execution_time.supervisor",
    "airflow.api_fastapi.execution_api.app",
    "airflow.providers.cncf.kubernetes.hooks.kubernetes",
    "airflow.providers.amazon.aws.hooks.s3",
    "hcp_etcd.operators.backup",
    "hcp_etcd.operators.drill",
    "hcp_etcd.operators.fleet",
    "hcp_etcd.operators.publish",
    "hcp_etcd.operators.restore",
    "hcp_etcd.operators.transfer",
]


def warm_up() -> None:
    """Import :data:`PRELOAD`, install :mod:`tests.support.library_caches` (the forks inherit the
    parsed AWS models) and initialise the in-process Execution API app that ``dag.test()`` uses.

    The app builds its routes and middleware on its first request (about 3 s): one request here,
    on an event loop of its own that is closed again, so no thread is left before the forks. No DB
    connection is kept either (the pool is disposed of), so each worker opens its own.
    """
    for module in PRELOAD:
        importlib.import_module(module)
    library_caches.install()
    from airflow import settings
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/execution/health", "raw_path": b"/execution/health",
        "query_string": b"", "root_path": "", "headers": [(b"host", b"in-process.invalid")],
        "server": ("in-process.invalid", 80), "client": ("127.0.0.1", 1),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent and sent[0]["type"] == "http.response.start", sent
    settings.engine.dispose()
    assert threading.active_count() == 1, threading.enumerate()


def shorten_idle_ticks(patch: pytest.MonkeyPatch, seconds: float = IDLE_TICK_SECONDS) -> None:
    """``time.sleep`` called by ``DAG.test`` itself (its idle loop) sleeps at most ``seconds``; any
    other caller (the operators, the hooks, the client libraries) sleeps as long as it asked."""
    from airflow.sdk.definitions.dag import DAG

    loop, sleep = DAG.test.__code__, time.sleep

    def tick(wanted: float) -> None:
        sleep(min(wanted, seconds) if sys._getframe(1).f_code is loop else wanted)

    patch.setattr(time, "sleep", tick)


def run_dags(dag_file: str, dag_id: str, runs: list[tuple[dict[str, Any], str]]) -> None:
    """``dag.test()`` of ``dag_id`` from ``dag_file`` for each ``(conf, logical date or "")``.

    Each result line: the run's state and id, every task instance's state and try number, and
    every XCom of the run. The client libraries' retries back off briefly (``tests.support.waits``),
    and ``dag.test()`` idles briefly (:func:`shorten_idle_ticks`).
    """
    patch = pytest.MonkeyPatch()
    shorten_retry_waits(patch)
    shorten_idle_ticks(patch)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=dag_file)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    for conf, logical in runs:
        kwargs = {"logical_date": datetime.fromisoformat(logical)} if logical else {}
        dr = dag.test(run_conf=conf, **kwargs)
        with create_session() as s:
            ours = (TaskInstance.dag_id == dag_id, TaskInstance.run_id == dr.run_id)
            tis = s.query(TaskInstance).filter(*ours)
            states = {f"{ti.task_id}[{ti.map_index}]": [str(ti.state), ti.try_number] for ti in tis}
            xcoms = {
                f"{x.task_id}[{x.map_index}].{x.key}": x.value
                for x in s.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == dr.run_id)
            }
        result = {"state": str(dr.state), "run_id": dr.run_id, "tis": states, "xcoms": xcoms}
        print(RESULT + json.dumps(result, default=str), flush=True)
