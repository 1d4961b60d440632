"""Runs that die, runs that collide, and a restore that fails halfway (issue 6).

- A worker dies after the quiesce (its process SIGKILLed): the ``pausedUntil`` deadline brings the
  cluster back by itself, and the next run takes the expired lock over and ends clean. (Every
  Airflow process dying, under a real scheduler: ``test_airflow_dies.py``.)
- Two runs on one cluster: the second refuses before any write and names the holder.
- Restore ``create`` with the API failing halfway: the partial objects are undone, the retry creates
  the cluster, it is restored and verified — all under ``include/rbac``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hcp_etcd.naming import API_SERVER_DEPLOYMENTS, ClusterRef
from hcp_etcd.operators import restore as rops
from tests.support.harness import ONE, PREFIX, Harness, sigkill, start_task_process

pytestmark = pytest.mark.integration


def replicas(harness: Harness, cluster: str) -> dict[str, int]:
    ns = ClusterRef("clusters", cluster).control_plane_namespace
    return {d: harness.k8s.get_deployment_replicas(ns, d)[0] for d in API_SERVER_DEPLOYMENTS}


def test_airflow_dies_after_quiesce_deadline_gives_cluster_back(harness: Harness) -> None:
    """Pause (deadline 0.2 min) + quiesce in a worker, SIGKILL it: HyperShift resumes at the deadline."""
    before = harness.objects(ONE)
    run_id = harness.new_run_id("airflow-dies")
    common = {"hosted_cluster": f"clusters/{ONE}", "deferrable": False}
    steps = [
        # 12 s: pause and quiesce take about a second in the worker (its imports come before).
        ("PauseReconciliationOperator", {"task_id": "pause", "pause_deadline_minutes": 0.2, **common}),
        ("QuiesceApiServersOperator", {"task_id": "quiesce", **common}),
    ]
    proc = start_task_process(harness.box, run_id, steps, hang=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@@DONE@@ QuiesceApiServersOperator"):
                break
        assert proc.poll() is None, "the worker ended before the kill"
        assert set(replicas(harness, ONE).values()) == {0}, "quiesced: API servers at 0"
    finally:
        sigkill(proc)
    assert proc.returncode == -9
    # Nobody runs resume or unpause now. The deadline passes; the HyperShift stand-in resumes.
    deadline = time.monotonic() + 240
    while replicas(harness, ONE) != {d: 1 for d in API_SERVER_DEPLOYMENTS} and time.monotonic() < deadline:
        time.sleep(0.25)
    assert replicas(harness, ONE) == {d: 1 for d in API_SERVER_DEPLOYMENTS}
    assert harness.wait_available(ONE).ok
    # The dead run's lock has expired: the next run takes it over and puts pausedUntil back to what
    # the dead run found (null), not to the dead run's own deadline.
    trace = harness.backup(ONE)
    assert trace.succeeded, trace.errors()
    harness.assert_invariants(ONE, before, trace)


def test_second_run_refused_names_holder_then_expired_lock_taken_over(harness: Harness) -> None:
    """A run holding the lock makes a second run refuse, without a write; once expired it is taken over."""
    holder = harness.new_run_id("nightly")
    common = {"hosted_cluster": f"clusters/{ONE}", "deferrable": False}
    from hcp_etcd.operators.backup import PauseReconciliationOperator

    pause = harness.attempt(
        "pause",
        lambda: PauseReconciliationOperator(
            task_id="pause", pause_deadline_minutes=0.15, mode="online", **common
        ),
        holder,
    )
    assert pause.ok, pause.errors
    before = harness.objects(ONE)
    seq = harness.seq()
    refused = harness.backup(ONE)
    assert not refused.tasks["preflight"].ok and list(refused.tasks) == ["preflight"]
    assert holder in refused.tasks["preflight"].errors[-1]
    assert not harness.writes_since(seq), harness.writes_since(seq)
    # The holder dies without unlocking; after its expiry (9 s) the next run takes over and succeeds.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1)
        retry = harness.backup(ONE)
        if retry.tasks["preflight"].ok:
            break
    assert retry.succeeded, retry.errors()
    harness.assert_invariants(ONE, before, retry)


def test_restore_create_fails_halfway_undone_then_retried(harness: Harness, tmp_path: Path) -> None:
    """API 500s on the HostedCluster create: the try undoes its objects, the retry restores and verifies."""
    if not harness.manifests(ONE):
        assert harness.backup(ONE).succeeded
    uri = f"s3://{harness.bucket}/{harness.manifests(ONE)[-1]}"
    rendered = harness.box.cli(
        "render", "--dir", str(harness.box.dir), "--name", "rel-restored", "--members", "1"
    )
    assert rendered.returncode == 0, rendered.stderr
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered.stdout)
    conns = {"bucket": harness.bucket, "prefix": PREFIX, "deferrable": False}
    rid = harness.new_run_id("restore")
    target = ClusterRef("clusters", "rel-restored")
    resolved = harness.attempt(
        "resolve",
        lambda: rops.ResolveBackupOperator(
            task_id="resolve", source=uri, target_namespace="clusters", target_name=target.name, **conns
        ),
        rid,
    )
    assert resolved.ok, resolved.errors
    backup = resolved.result
    for cls in (rops.CheckSnapshotOperator, rops.CheckKeyOperator, rops.PresignSnapshotOperator):
        step = harness.attempt(
            cls.__name__, lambda cls=cls: cls(task_id=cls.__name__, backup=backup, **conns), rid
        )
        assert step.ok, step.errors
    seq = harness.seq()
    harness.box.fault(
        "api", "--resource", "hostedclusters", "--verb", "create", "--code", "500", "--count", "5"
    )
    created = harness.attempt(
        "create",
        lambda: rops.CreateRestoredClusterOperator(
            task_id="create", backup=backup, rendered_manifests=str(path), **conns
        ),
        rid,
    )
    try:
        assert created.ok and created.tries == 2, created.errors
        items, _ = harness.requests_since(seq)
        undone = [i for i in items if i["method"] == "DELETE"]
        assert undone, "the failed try deleted what it had created"
        waited = harness.attempt(
            "wait",
            lambda: rops.WaitRestoredOperator(
                task_id="wait", backup=backup, created=created.result, timeout=180, poll_interval=1, **conns
            ),
            rid,
            tries=1,
        )
        assert waited.ok, waited.errors
        verified = harness.attempt(
            "verify",
            lambda: rops.VerifyRestoreOperator(task_id="verify", backup=backup, **conns),
            rid,
            tries=1,
        )
        assert verified.ok and verified.result["passed"], verified.result or verified.errors
    finally:
        # What the drill's teardown does: delete what the run created, then wait until it is gone.
        left = harness.k8s.delete_objects((created.result or {}).get("created", []))
        deadline = time.monotonic() + 120
        while harness.k8s.hosted_cluster_exists(target) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left and not harness.k8s.hosted_cluster_exists(target), left
