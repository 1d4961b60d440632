"""Every Airflow process dies after the quiesce (issue 6): the ``pausedUntil`` deadline gives the
cluster back by itself.

A real Airflow (``airflow standalone``: scheduler, LocalExecutor, api-server, triggerer,
dag-processor; ``bench/airflow_run.py``) runs ``hcp_etcd_backup`` with ``mode=quiesced`` and
``pause_deadline_minutes=10`` (the Param's floor) on a hosted cluster of its own, under
``include/rbac``. Once ``quiesce`` succeeded and the API servers are at 0, every Airflow process is
SIGKILLed. Nothing brings the cluster back until the deadline; the sandbox's ``clock`` fault then
runs the HyperShift stand-in's clock past it (ten minutes in one step, the API server, etcd and S3
keep real time) and HyperShift reconciles the API servers back by itself.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from bench.airflow_run import Airflow
from hcp_etcd.naming import (
    API_SERVER_DEPLOYMENTS,
    LOCK_ANNOTATION,
    ORIGINAL_REPLICAS_ANNOTATION,
    PREVIOUS_PAUSE_ANNOTATION,
    ClusterRef,
    parse_rfc3339,
)
from hcp_sandbox import render
from tests.support.airflow import MetadataDb
from tests.support.harness import Harness
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

DIES = "rel-dies"  # a cluster of its own: the dead run's lock stays live for 10 real minutes
REF = ClusterRef("clusters", DIES)
DAG = "hcp_etcd_backup"
GROUP, VERSION = "hypershift.openshift.io", "v1beta1"
AHEAD_SECONDS = 660  # past a deadline of now + 10 min, whatever ran since the pause
# What `airflow standalone` runs (process titles as set by Airflow), each of which must die.
COMPONENTS = (
    "airflow standalone",
    "airflow scheduler",
    "airflow dag-processor",
    "airflow triggerer",
    "airflow api_server",
    "LocalExecutor",
)


def _replicas(harness: Harness) -> set[int]:
    return {
        harness.k8s.get_deployment_replicas(REF.control_plane_namespace, d)[0] for d in API_SERVER_DEPLOYMENTS
    }


def _conditions(harness: Harness) -> dict[str, str]:
    hc = harness.k8s.get_hosted_cluster(REF)
    return {c["type"]: c["status"] for c in hc.get("status", {}).get("conditions", [])}


@dataclass(frozen=True)
class Proc:
    """One process as ``/proc`` shows it."""

    pid: int
    ppid: int
    pgid: int
    started: str  # start time in clock ticks: tells a reused pid apart
    cmdline: str


def _processes() -> dict[int, tuple[Proc, list[bytes]]]:
    """Every live (not zombie) process of our user but this one, with its environment."""
    table = {}
    for path in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(path.name)
            if pid == os.getpid() or path.stat().st_uid != os.getuid():
                continue
            fields = (path / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            cmdline = (path / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (path / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        table[pid] = (Proc(pid, int(fields[1]), int(fields[2]), fields[19], cmdline), environ)
    return table


def airflow_processes(home: Path, group: int, known: Iterable[int] = ()) -> dict[int, Proc]:
    """The processes of this Airflow: ``AIRFLOW_HOME=home`` in their environment, in standalone's
    process group, or descended from one of those (or from ``known``).

    The environment alone misses some: a process that sets its title (``airflow worker --
    LocalExecutor``, ``airflow api_server``, ``serve-logs``) overwrites the memory that
    ``/proc/PID/environ`` reads. The group alone could miss a task process in a group of its own.
    """
    needle = f"AIRFLOW_HOME={home}".encode()
    table = _processes()
    found = {
        pid: proc for pid, (proc, env) in table.items() if proc.pgid == group or needle in env or pid in known
    }
    while children := {
        pid: proc for pid, (proc, _) in table.items() if proc.ppid in found and pid not in found
    }:
        found.update(children)
    return found


def kill_everything(af: Airflow) -> tuple[dict[int, Proc], list[Proc]]:
    """SIGKILL every Airflow process; returns what ran before, and which of those were outside
    standalone's process group.

    Freeze first (SIGSTOP until no new one shows up: a stopped process cannot fork), then SIGKILL
    the frozen ones and the whole group: nothing can start behind the kill.
    """
    assert af.proc is not None
    group = af.proc.pid
    before = airflow_processes(af.home, group)
    frozen: dict[int, Proc] = {}
    while new := {p: v for p, v in airflow_processes(af.home, group, frozen).items() if p not in frozen}:
        for pid, proc in new.items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            frozen[pid] = proc
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    af.proc.wait(30)
    deadline = time.monotonic() + 30
    while _survivors(af, frozen | before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return before, [p for p in before.values() if p.pgid != group]


def _survivors(af: Airflow, procs: dict[int, Proc]) -> list[Proc]:
    """Those of ``procs`` still running (same pid and start time), and any new Airflow process."""
    assert af.proc is not None
    table = _processes()
    left = [p for pid, p in procs.items() if pid in table and table[pid][0].started == p.started]
    return left + [p for pid, p in airflow_processes(af.home, af.proc.pid).items() if pid not in procs]


@pytest.fixture
def dies_cluster(harness: Harness) -> Iterator[ClusterRef]:
    """``clusters/rel-dies`` (1 member), made with the admin identity and deleted after the test."""
    api = config.new_client_from_config(str(harness.box.dir / "admin.kubeconfig"))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    made: list[dict[str, Any]] = []
    try:
        for obj in render.manifests(DIES, members=1, encryption_key=os.urandom(32)):
            kind = obj["kind"]
            if kind == "Secret":
                core.create_namespaced_secret("clusters", obj)
            elif kind in ("HostedCluster", "NodePool"):
                plural = "hostedclusters" if kind == "HostedCluster" else "nodepools"
                custom.create_namespaced_custom_object(GROUP, VERSION, "clusters", plural, obj)
            else:
                continue  # the namespace `clusters` exists
            made.append(obj)
        yield REF
    finally:
        for obj in reversed(made):
            name = obj["metadata"]["name"]
            with contextlib.suppress(ApiException):
                if obj["kind"] == "Secret":
                    core.delete_namespaced_secret(name, "clusters")
                else:
                    plural = "hostedclusters" if obj["kind"] == "HostedCluster" else "nodepools"
                    custom.delete_namespaced_custom_object(GROUP, VERSION, "clusters", plural, name)
        namespaces = lambda: [n.metadata.name for n in core.list_namespace().items]  # noqa: E731
        wait_until(f"{REF} torn down", lambda: REF.control_plane_namespace not in namespaces(), 60)
        api.close()


@pytest.mark.timeout(1200)  # the standalone's start may take up to 600 s (below), the run itself minutes
def test_every_airflow_process_dies_after_quiesce_deadline_gives_cluster_back(
    harness: Harness, dies_cluster: ClusterRef, metadata_db: MetadataDb, tmp_path: Path
) -> None:
    """Real Airflow, SIGKILL of all its processes after quiesce; HyperShift resumes at the deadline."""
    af = Airflow(tmp_path / "airflow", harness.box.env, pool_slots=4)  # the slots of metadata_db's pool
    run_id = f"reliability__airflow-all-dies__{time.time_ns()}"
    # The DAG's task group `backup`, mapped over the clusters: this run's only cluster is index 0.
    quiesce, snapshot = "backup.quiesce[0]", "backup.snapshot[0]"
    try:
        # Up to 10 minutes to start: under `make test` five suites load the 2 cores, and a whole
        # standalone (five components, the DAGs parsed) has taken over 5 minutes there. How fast it
        # starts is not what this test is about.
        af.start(timeout=600, dag_ids=(DAG,), migrated_db=metadata_db.with_pool)
        assert harness.wait_available(DIES).ok, f"{REF} not Available before the run"
        assert _replicas(harness) == {1}
        conf = {"hosted_clusters": [str(REF)], "mode": "quiesced", "pause_deadline_minutes": 10}
        af.trigger(DAG, conf, run_id)

        retried: set[str] = set()

        def quiesce_in(*wanted: str) -> bool:
            states = af.task_states(DAG, run_id)
            failed = {t: v for t, v in states.items() if v in ("failed", "upstream_failed")}
            assert not failed, f"the run failed before the kill: {states}\n{af.why(DAG, run_id, failed)}"
            # A try that ended in a transient error is what retries are for, and not what this test is
            # about (a loaded machine once had resolve_clusters' first try fail): the run goes on, and
            # the test reports the try's log below.
            retried.update(t for t, v in states.items() if v == "up_for_retry")
            assert states.get(snapshot) in (None, "scheduled"), f"the run went past quiesce: {states}"
            return states.get(quiesce) in wanted

        # The kill point: once quiesce is in the executor's hands, pause the DAG. Quiesce runs to its
        # end, and the scheduler queues nothing after it (a paused DAG's runs get no new task): the
        # kill lands between quiesce and snapshot every time, not when a poll happens to see it.
        # Quiesce takes a second or more (it waits for the API-server pods to go); a 0.05 s poll of the
        # DB pauses the DAG well within it. Lost anyway, the snapshot check above fails the test.
        wait_until("quiesce queued", lambda: quiesce_in("queued", "running", "success"), 300, every=0.05)
        af.set_paused(DAG, True)
        wait_until("quiesce to succeed", lambda: quiesce_in("success"), 180)
        assert _replicas(harness) == {0}, "quiesced: API servers at 0"
        states = af.task_states(DAG, run_id)
        assert states.get(snapshot) in (None, "scheduled"), states
        if retried:
            warnings.warn(
                f"retried before the kill: {sorted(retried)}\n{af.why(DAG, run_id, retried)}", stacklevel=1
            )

        before, outside = kill_everything(af)
        seen = " ".join(p.cmdline for p in before.values())
        missing = [c for c in COMPONENTS if c not in seen]
        assert not missing, (
            f"not a whole Airflow ({missing} missing): {sorted(p.cmdline for p in before.values())}"
        )
        assert not _survivors(af, before), f"Airflow processes survived: {_survivors(af, before)}"
        assert af.proc is not None and af.proc.returncode == -signal.SIGKILL
        print(f"killed {len(before)} Airflow processes, {len(outside)} outside standalone's group: {outside}")

        # Nobody is left to resume or unpause. A few reconcile ticks later (0.25 s each) nothing has
        # come back: the run's pausedUntil, ten real minutes away, holds the cluster.
        time.sleep(3)
        hc = harness.k8s.get_hosted_cluster(REF)
        paused_until = hc["spec"].get("pausedUntil")
        assert paused_until, "the run paused the cluster"
        left = parse_rfc3339(paused_until) - datetime.datetime.now(datetime.UTC)
        assert datetime.timedelta(minutes=5) < left < datetime.timedelta(seconds=AHEAD_SECONDS), left
        assert _replicas(harness) == {0}
        assert _conditions(harness).get("ReconciliationActive") == "False"

        answer = harness.post_fault({"kind": "clock", "ahead_seconds": AHEAD_SECONDS})
        assert answer["ahead_seconds"] == AHEAD_SECONDS
        wait_until("API servers back past the deadline", lambda: _replicas(harness) == {1}, 120)
        assert harness.wait_available(DIES).ok, f"{REF} not Available again"
        assert _conditions(harness).get("ReconciliationActive") == "True"

        # Expected: the dead run's lock and annotations stay until a next run takes the (then
        # expired) lock over, as test_lifecycle shows; nothing else touched them.
        hc = harness.k8s.get_hosted_cluster(REF)
        annotations = hc["metadata"].get("annotations") or {}
        assert run_id in annotations.get(LOCK_ANNOTATION, ""), annotations
        assert PREVIOUS_PAUSE_ANNOTATION in annotations and ORIGINAL_REPLICAS_ANNOTATION in annotations
        assert hc["spec"].get("pausedUntil") == paused_until
    finally:
        if af.proc is not None:
            kill_everything(af)  # also what a dead standalone may have left
        with contextlib.suppress(OSError):
            harness.post_fault({"kind": "clock", "ahead_seconds": 0})
        # The task logs join the secret search of test_security.
        for path in sorted((af.home / "logs").rglob("*")) if (af.home / "logs").exists() else []:
            if path.is_file():
                harness.logs.append(path.read_text(errors="replace"))
    assert af.proc is None or not _survivors(af, {})
