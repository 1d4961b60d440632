"""A worker that runs the project's operators and can be killed midway (tests/reliability).

Two ways to start one: ``python -m tests.support.operator_worker SPEC`` (a fresh process, see
``tests.support.harness.start_task_process``) runs backup operators and optionally hangs after
them; :func:`run_steps` runs in a worker forked by the fork server (``TaskServer``) and can stop
itself at a kill point. Each prints ``@@DONE@@ <class name>`` (the fork also the JSON result)
after each operator that returned. Their triggers poll as the harness's do
(``tests.support.waits.shorten_poll_intervals``).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.waits import shorten_poll_intervals

REPO = Path(__file__).resolve().parents[2]
# context["dag"] of the operators run here and in the harness: a kill test's killed try and its retry
# are tries of one task of the backup DAG, as in Airflow (the backup lock is owned by DAG and run).
BACKUP_DAG = SimpleNamespace(dag_id="hcp_etcd_backup")
PRELOAD = [
    "hcp_etcd.hooks.hosted_cluster",
    "hcp_etcd.hooks.snapshot_store",
    "hcp_etcd.operators.backup",
    "hcp_etcd.operators.publish",
    "hcp_etcd.operators.restore",
    "hcp_etcd.operators.transfer",
    "tests.support.library_caches:install",
]


def env(box: Any) -> dict[str, str]:
    """The environment of a worker on the sandbox ``box`` (its connections, short API-retry waits)."""
    found = {**os.environ, **box.env}
    found["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins"), str(REPO / "include")])
    found["AIRFLOW__WORKERS__API_RETRY_WAIT_MAX"] = "1"
    return found


class TaskInstance:
    """The part of ``context["ti"]`` the operators use: an XCom push goes to the output."""

    map_index = -1

    def xcom_push(self, key: str, value: Any) -> None:
        print("@@XCOM@@ " + json.dumps({key: value}, default=str), flush=True)


class OutletEvents(dict):
    """``context["outlet_events"]``: each asset event goes to the output."""

    def __missing__(self, key: Any) -> Any:
        class Accessor:
            def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
                print("@@OUTLET@@ " + json.dumps(extra, default=str), flush=True)

        return Accessor()


def arm(target: str, nth: int) -> None:
    """The kill point: right after the ``nth`` call of ``target`` (``"module:attr.path"``) returns,
    the worker stops itself (SIGSTOP); the test looks at the state it left and then SIGKILLs it."""
    module, path = target.split(":")
    owner: Any = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def stop_after(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == nth:
            print("@@KILL-POINT@@ " + target, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        return result

    setattr(owner, name, stop_after)


def run_steps(
    run_id: str, steps: list[tuple[str, str, dict[str, Any]]], kill_point: dict[str, Any] | None
) -> None:
    """Execute each ``(module, class, kwargs)`` operator in turn, with the kill point armed."""
    shorten_poll_intervals(pytest.MonkeyPatch())
    if kill_point:
        arm(**kill_point)
    context = {"run_id": run_id, "dag": BACKUP_DAG, "ti": TaskInstance(), "outlet_events": OutletEvents()}
    for module, name, kwargs in steps:
        result = getattr(importlib.import_module(module), name)(**kwargs).execute(context)
        print("@@DONE@@ " + name + " " + json.dumps(result, default=str), flush=True)


def main(spec: dict[str, Any]) -> None:
    """The fresh-process worker: the backup operators of ``spec["steps"]`` (``(class, kwargs)``), then
    an hour's sleep if ``spec["hang"]`` (a worker stuck after its work, to be killed)."""
    from hcp_etcd.operators import backup as ops

    shorten_poll_intervals(pytest.MonkeyPatch())
    for name, kwargs in spec["steps"]:
        getattr(ops, name)(**kwargs).execute({"run_id": spec["run_id"], "dag": BACKUP_DAG})
        print("@@DONE@@ " + name, flush=True)
    if spec.get("hang"):
        time.sleep(3600)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
