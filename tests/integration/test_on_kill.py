"""A killed task leaves no process in the pods (issue 13): ``on_kill`` against the sandbox's pods.

Airflow calls ``on_kill`` from the task's SIGTERM handler (the UI's "mark failed", the supervisor,
``execution_timeout``). The sandbox runs a pod's commands as local processes with
``HCP_SANDBOX_POD_ROOT=<pod root>`` in their environment: that is how these tests find them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hcp_etcd import etcd
from hcp_etcd.hooks.hosted_cluster import ETCD_CONTAINER, ExecError, HostedClusterHook
from hcp_etcd.operators.backup import SnapshotMembersOperator
from hcp_etcd.operators.kubernetes import KubernetesExecOperator

pytestmark = pytest.mark.integration

# Long enough never to end by itself during a test; the tests never wait for it.
FOREVER = ["sleep", "3600"]


@pytest.fixture
def connections(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    return sandbox


def pod_roots(sandbox: Any, cluster: str) -> dict[str, str]:
    """Pod name -> its root directory, for the etcd pods of ``cluster``."""
    info = json.loads((sandbox.dir / "sandbox.json").read_text())
    return {Path(m["pod_root"]).name: m["pod_root"] for m in info["hosted_clusters"][cluster]["etcd"]}


def pod_processes(roots: dict[str, str]) -> dict[int, str]:
    """Live processes the sandbox runs "in" those pods: pid -> command line."""
    marks = {f"HCP_SANDBOX_POD_ROOT={root}".encode() for root in roots.values()}
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours
        if environ & marks:
            found[int(proc.name)] = cmdline
    return found


def until(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {seconds:.0f}s: {what}")
        time.sleep(0.05)
    return result


def run_in_thread(execute: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``execute`` as the task's main work; its exception, if any, lands in the list."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            execute()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_killed_exec_task_leaves_no_process_in_the_pod(connections: Any) -> None:
    """The project's KubernetesExec operator, killed while its command runs: the command is gone."""
    roots = {"etcd-0": pod_roots(connections, "single-one")["etcd-0"]}
    op = KubernetesExecOperator(
        task_id="sleep", pod_name="etcd-0", namespace="clusters-single-one", container_name=ETCD_CONTAINER,
        command=FOREVER,
    )  # fmt: skip
    thread, errors = run_in_thread(lambda: op.execute({}))
    until(lambda: any("sleep 3600" in c for c in pod_processes(roots).values()), "the command in the pod")
    op.on_kill()
    thread.join(timeout=60)
    assert not thread.is_alive(), "execute did not end after on_kill"
    assert errors and isinstance(errors[0], ExecError) and "stopped" in str(errors[0]), errors
    until(lambda: not pod_processes(roots), f"no process left in the pod: {pod_processes(roots)}")


def test_killed_snapshot_stops_every_member(connections: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot step runs one exec per member in threads: on_kill stops all of them."""
    roots = pod_roots(connections, "ha-one")
    # A snapshot that never ends by itself, so that the kill finds all three running.
    monkeypatch.setattr(etcd, "snapshot_save_command", lambda path: FOREVER)
    op = SnapshotMembersOperator(
        task_id="snapshot", hosted_cluster="clusters/ha-one", snapshot_path="/var/lib/data/killed.db"
    )
    thread, errors = run_in_thread(lambda: op.execute({"run_id": "on-kill"}))

    def every_member_runs() -> bool:
        running = pod_processes(roots).values()
        # The command itself, not the shell around it (its script names the command too).
        return len([c for c in running if c.startswith("sleep 3600")]) == len(roots)

    until(every_member_runs, f"the snapshot command in each of {sorted(roots)}")
    op.on_kill()
    thread.join(timeout=60)
    assert not thread.is_alive(), "execute did not end after on_kill"
    assert errors and f"snapshot of {len(roots)} member(s)" in str(errors[0]), errors
    until(lambda: not pod_processes(roots), f"no process left in the pods: {pod_processes(roots)}")


def test_stop_in_pod_ends_a_command_whose_stream_stays_open(connections: Any) -> None:
    """A container runtime does not end a command when its exec stream closes (runc#3359): the hook
    ends the exec's processes in the pod itself. Here the stream stays open while it does."""
    roots = {"etcd-0": pod_roots(connections, "single-one")["etcd-0"]}
    hook = HostedClusterHook()
    # A shell with a child: both carry the exec's id, both must go.
    command = ["sh", "-c", "sleep 3600 & wait"]
    with hook.open_exec("clusters-single-one", "etcd-0", command, timeout=120) as stream:
        until(lambda: len(pod_processes(roots)) >= 2, "the shell and its sleep in the pod")
        [running] = hook.running_execs()
        other = HostedClusterHook()  # a second client, as on_kill may run while the first one reads
        other.stop_in_pod(running)
        stream.drain()
        assert stream.returncode != 0, "the command was ended by a signal, not by itself"
    until(lambda: not pod_processes(roots), f"no process left in the pod: {pod_processes(roots)}")
