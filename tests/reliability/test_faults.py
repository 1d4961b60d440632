"""The fault matrix (issue 6): each (task, fault) pair against the sandbox, then the invariants.

Each scenario runs one backup with the DAG's wiring and retries (``Harness.backup`` in
``tests/support/harness.py`` walks the real DAG object), with the fault injected right before the
task, and then checks: the cluster unpaused with its API servers at their original replicas and
Available, no manifest for a snapshot whose checks did not pass (and one new manifest exactly when
the run succeeded), no snapshot file in any etcd pod, earlier backups untouched. Every scenario states whether the run must succeed through retries or fail cleanly.
"""

# ruff: noqa: E501 -- the case tables read best one case per line

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hcp_etcd.naming import API_SERVER_DEPLOYMENTS, ClusterRef
from hcp_etcd.operators import restore as rops
from hcp_etcd.operators.drill import DeleteRestoredClusterOperator
from hcp_sandbox.faults import S3FaultMiddleware, add_s3_fault
from tests.support.harness import (
    BACKUP_GROUP,
    HA,
    KEY_PREFIX,
    ONE,
    TRIES,
    Harness,
    TaskServer,
    Trace,
    backup_dag,
    sigkill,
    start_task_process,
)

pytestmark = pytest.mark.integration

HA_NS, ONE_NS = f"clusters-{HA}", f"clusters-{ONE}"


@dataclass(frozen=True)
class Case:
    """One row of the matrix."""

    id: str
    cluster: str
    task: str
    fault: tuple[str, ...]
    succeeds: bool  # through retries (True) or fails cleanly (False)
    failed_task: str | None = None
    repair: tuple[str, ...] | None = None  # injected before resume (etcd comes back as its pod restarts)
    method: str | None = None  # upload method; None: the operator's default


CASES = [
    Case("pause-api-500", ONE, "pause", ("api", "--resource", "hostedclusters", "--verb", "patch",
                                         "--code", "500", "--count", "6"), True),
    Case("pause-409-conflict", ONE, "pause", ("api", "--resource", "hostedclusters", "--verb", "patch",
                                              "--code", "409", "--count", "1"), True),
    Case("quiesce-api-500", ONE, "quiesce", ("api", "--resource", "deployments/scale", "--verb", "patch",
                                             "--code", "500", "--count", "6"), True),
    Case("snapshot-exec-dropped", HA, "snapshot", ("exec-drop", "--namespace", HA_NS, "--pod", "etcd-1",
                                                   "--count", "1", "--after-bytes", "0"), True),
    Case("snapshot-etcd-member-stopped", HA, "snapshot", ("etcd-stop", "--namespace", HA_NS, "--pod", "etcd-2"),
         False, "snapshot", ("etcd-start", "--namespace", HA_NS, "--pod", "etcd-2")),
    Case("verify-exec-dropped-every-try", ONE, "verify", ("exec-drop", "--namespace", ONE_NS, "--pod", "etcd-0",
                                                          "--count", "3"), False, "verify"),
    Case("resume-api-500", ONE, "resume", ("api", "--resource", "deployments/scale", "--verb", "patch",
                                           "--code", "500", "--count", "6"), True),
    Case("upload-stream-s3-503", ONE, "upload", ("s3", "--code", "503", "--count", "3"), True, method="stream"),
    Case("upload-presigned-s3-503", ONE, "upload", ("s3", "--code", "503", "--count", "1"), True, method="presigned-curl"),
    Case("upload-stream-s3-dropped-mid-upload", ONE, "upload", ("s3", "--drop", "--after-bytes", "65536",
                                                                "--count", "1"), True, method="stream"),
    Case("upload-presigned-s3-dropped-mid-upload", ONE, "upload", ("s3", "--drop", "--after-bytes", "65536",
                                                                   "--count", "1"), True, method="presigned-curl"),
    Case("upload-exec-dropped-mid-stream", ONE, "upload", ("exec-drop", "--namespace", ONE_NS, "--pod", "etcd-0",
                                                           "--count", "2", "--after-bytes", "100000"), True, method="stream"),
    Case("upload-exec-dropped-every-try", ONE, "upload", ("exec-drop", "--namespace", ONE_NS, "--pod", "etcd-0",
                                                          "--count", "6", "--after-bytes", "100000"), False, "upload", method="stream"),
    Case("escrow-s3-503", ONE, "escrow_key", ("s3", "--code", "503", "--count", "6"), True),
    Case("publish-s3-503", ONE, "publish_manifest", ("s3", "--code", "503", "--count", "6"), True),
    Case("publish-s3-dropped", ONE, "publish_manifest", ("s3", "--drop", "--count", "1"), True),
    Case("cleanup-exec-dropped", ONE, "cleanup", ("exec-drop", "--namespace", ONE_NS, "--pod", "etcd-0",
                                                  "--count", "1"), True),
    Case("unpause-api-500", ONE, "unpause", ("api", "--resource", "hostedclusters", "--verb", "patch",
                                             "--code", "500", "--count", "6"), True),
]  # fmt: skip


def run_case(harness: Harness, case: Case, dag: Any = None) -> Trace:
    """One backup with the case's fault injected right before its task (``dag``: the DAG to run,
    default the real one)."""
    inject: dict[str, Callable[[], Any]] = {case.task: lambda: harness.box.fault(*case.fault)}
    if case.repair:
        inject["resume"] = lambda: harness.box.fault(*case.repair)  # type: ignore[misc]
    try:
        return harness.backup(case.cluster, inject, upload_method=case.method, dag=dag)
    finally:
        if case.repair:
            harness.box.fault(*case.repair)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(harness: Harness, case: Case) -> None:
    before = harness.objects(case.cluster)
    trace = run_case(harness, case)
    assert trace.succeeded is case.succeeds, trace.errors()
    if case.succeeds:
        retried = [t for t, o in trace.tasks.items() if o.tries > 1]
        assert set(retried) <= {case.task}, f"only the faulted task may need a retry: {retried}"
    else:
        assert not trace.tasks[case.failed_task].ok and trace.tasks[case.failed_task].tries == 3
        assert trace.tasks["resume"].ok and trace.tasks["cleanup"].ok and trace.tasks["unpause"].ok
    harness.assert_invariants(case.cluster, before, trace)
    if not case.succeeds and case.failed_task == "upload":
        # A snapshot that failed its transfer check is deleted, not left half-written in the bucket.
        assert not [
            k for k in harness.objects(case.cluster) if k not in before and k.endswith("/snapshot.db")
        ]


def test_the_matrix_runs_the_dags_own_wiring(harness: Harness) -> None:
    """The harness runs what ``dags/hcp_etcd_backup.py`` wires, not a copy of it: with two edges of
    the real DAG swapped (quiesce -> snapshot -> verify becomes quiesce -> verify -> snapshot), a
    scenario that passes on the real DAG fails (verify finds no snapshot, snapshot never runs), and
    the teardowns still give the cluster back as the DAG's trigger rules say."""
    case = next(c for c in CASES if c.id == "quiesce-api-500")
    dag = copy.deepcopy(backup_dag())
    tasks = dag.task_dict
    quiesce, snapshot, verify = (tasks[f"{BACKUP_GROUP}.{t}"] for t in ("quiesce", "snapshot", "verify"))
    for upstream, downstream in ((quiesce, snapshot), (snapshot, verify)):
        upstream.downstream_task_ids.discard(downstream.task_id)
        downstream.upstream_task_ids.discard(upstream.task_id)
    quiesce >> verify >> snapshot
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index(verify.task_id) < order.index(snapshot.task_id)
    before = harness.objects(case.cluster)
    trace = run_case(harness, case, dag)
    assert trace.succeeded is not case.succeeds, trace.errors()
    assert not trace.tasks["verify"].ok and trace.tasks["verify"].tries == TRIES, trace.errors()
    assert "snapshot" not in trace.tasks and "upload" not in trace.tasks
    assert trace.tasks["resume"].ok and trace.tasks["cleanup"].ok and trace.tasks["unpause"].ok
    harness.assert_invariants(case.cluster, before, trace)


def test_retention_s3_503(harness: Harness) -> None:
    """Retention under S3 503s: retried, and the newest verified backup of each cluster survives."""
    newest = {c: harness.manifests(c)[-1] for c in (HA, ONE)}
    outcome = harness.retention([HA, ONE], lambda: harness.box.fault("s3", "--code", "503", "--count", "6"))
    assert outcome.ok, outcome.errors
    for cluster, key in newest.items():
        assert key in harness.manifests(cluster)
        harness.assert_invariants(cluster, harness.objects(cluster), None)


def wait_for_request(harness: Harness, seq: int, proc: Any, match: Callable[[dict[str, Any]], bool]) -> None:
    """Poll the request log until a request of the task process matches (or the process ends)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(match(i) for i in harness.requests_since(seq)[0]):
            return
        time.sleep(0.05)
    raise AssertionError(f"the task process never got there (rc={proc.poll()})")


def test_quiesce_sigkilled_midway_then_retried(harness: Harness) -> None:
    """SIGKILL the quiesce task after its first scale-down; the retry still records 3 replicas, not 0."""
    before = harness.objects(HA)
    run_id = harness.new_run_id("sigkill-quiesce")
    common = {"hosted_cluster": f"clusters/{HA}", "deferrable": False}
    pause = harness.attempt("pause", lambda: __import__("hcp_etcd.operators.backup").operators.backup
                            .PauseReconciliationOperator(task_id="pause", **common), run_id)  # fmt: skip
    assert pause.ok, pause.errors
    seq = harness.seq()
    proc = start_task_process(harness.box, run_id, [("QuiesceApiServersOperator", {"task_id": "quiesce", **common})],
                              hang=False)  # fmt: skip
    try:
        wait_for_request(
            harness, seq, proc, lambda i: i["method"] == "PATCH" and i.get("subresource") == "scale"
        )
        assert proc.poll() is None, "the task ended before it could be killed"
    finally:
        output = sigkill(proc)
    assert proc.returncode == -9, output[-2000:]
    trace = harness.backup(HA, run_id=run_id, inject={})  # the Airflow retry: same run, same lock
    assert trace.succeeded, trace.errors()
    assert trace.tasks["quiesce"].result["replicas"] == {
        d: 3 for d in trace.tasks["quiesce"].result["replicas"]
    }
    harness.assert_invariants(HA, before, trace)


def test_snapshot_sigkilled_midway_then_retried(harness: Harness) -> None:
    """SIGKILL the snapshot task after its first exec; the retried run ends with a good backup, no file left."""
    before = harness.objects(HA)
    run_id = harness.new_run_id("sigkill-snapshot")
    common = {"hosted_cluster": f"clusters/{HA}", "deferrable": False}
    steps = [
        ("PauseReconciliationOperator", {"task_id": "pause", **common}),
        ("QuiesceApiServersOperator", {"task_id": "quiesce", **common}),
        ("SnapshotMembersOperator", {"task_id": "snapshot", **common}),
    ]
    seq = harness.seq()
    proc = start_task_process(harness.box, run_id, steps, hang=False)
    try:
        # The first exec of the snapshot task is its `rm -f` in etcd-0; the kill lands after it.
        wait_for_request(
            harness, seq, proc, lambda i: i.get("subresource") == "exec" and i.get("name") == "etcd-0"
        )
        assert proc.poll() is None
    finally:
        output = sigkill(proc)
    assert proc.returncode == -9, output[-2000:]
    trace = harness.backup(HA, run_id=run_id)
    assert trace.succeeded, trace.errors()
    harness.assert_invariants(HA, before, trace)


OPS = {
    "snapshot": ("hcp_etcd.operators.backup", "SnapshotMembersOperator"),
    "resume": ("hcp_etcd.operators.backup", "ResumeApiServersOperator"),
    "upload": ("hcp_etcd.operators.transfer", "SnapshotToS3Operator"),
    "escrow_key": ("hcp_etcd.operators.backup", "EscrowEncryptionKeyOperator"),
    "publish_manifest": ("hcp_etcd.operators.publish", "PublishManifestOperator"),
    "unpause": ("hcp_etcd.operators.backup", "UnpauseReconciliationOperator"),
}
HOOKS = "hcp_etcd.hooks.hosted_cluster:HostedClusterHook"
STORE_HOOK = "hcp_etcd.hooks.snapshot_store:SnapshotStoreHook"


@dataclass(frozen=True)
class KillCase:
    """A task SIGKILLed in its worker right after a given call returned, then retried by Airflow."""

    id: str
    task: str
    kill_point: tuple[str, int]  # ("module:attr.path", nth call): the worker stops right after it
    method: str | None = None  # upload method
    midway: Callable[[Harness, dict[str, Any]], None] | None = None  # what must hold at the kill
    prepare: Callable[[Harness], None] | None = None  # the state the task starts from, if not the run's


def _scaled_back_halfway(harness: Harness, results: dict[str, Any]) -> None:
    # One API server is back at its original replicas, the others still at 0: killed halfway.
    assert sorted(replicas(harness, ONE).values()) == [0, 0, 1], replicas(harness, ONE)


def _api_servers_left_at_zero(harness: Harness) -> None:
    # As a snapshot task that died before it scaled them back leaves them: resume is the safety net.
    ns = ClusterRef("clusters", ONE).control_plane_namespace
    for dep in API_SERVER_DEPLOYMENTS:
        harness.k8s.scale_deployment(ns, dep, 0)


def _publish_midway(harness: Harness, results: dict[str, Any]) -> None:
    # The manifest is written; the worker dies before it returns (its result and Asset event are lost).
    assert harness.manifests(ONE)[-1].endswith(f"/{results['snapshot']['ts']}/manifest.json")


def _unpause_midway(harness: Harness, results: dict[str, Any]) -> None:
    # The patch went through; the worker dies before Airflow records the task as done.
    hc = harness.k8s.get_hosted_cluster(ClusterRef("clusters", ONE))
    assert hc["spec"].get("pausedUntil") in (None, "false"), hc["spec"].get("pausedUntil")


KILL_CASES = [
    KillCase("snapshot-after-first-scale-back", "snapshot", (f"{HOOKS}.scale_deployment", 1), midway=_scaled_back_halfway),
    KillCase("resume-after-first-scale-up", "resume", (f"{HOOKS}.scale_deployment", 1), midway=_scaled_back_halfway,
             prepare=_api_servers_left_at_zero),
    KillCase("upload-stream-mid-stream", "upload", ("hcp_etcd.hooks.snapshot_store:HashingReader.read", 1), method="stream"),
    KillCase("upload-presigned-curl-put-in-flight", "upload", ("hcp_etcd.hooks.hosted_cluster:ExecStream.write_stdin", 1), method="presigned-curl"),
    KillCase("escrow-holding-the-key", "escrow_key", (f"{HOOKS}.read_secret_data", 1)),
    KillCase("publish-after-manifest-written", "publish_manifest", (f"{STORE_HOOK}.put_json", 1), midway=_publish_midway),
    KillCase("unpause-after-patch", "unpause", (f"{HOOKS}.patch_hosted_cluster", 1), midway=_unpause_midway),
]  # fmt: skip


def replicas(harness: Harness, cluster: str) -> dict[str, int]:
    ns = ClusterRef("clusters", cluster).control_plane_namespace
    return {d: harness.k8s.get_deployment_replicas(ns, d)[0] for d in API_SERVER_DEPLOYMENTS}


def kill_task_kwargs(harness: Harness, case: KillCase, results: dict[str, Any]) -> dict[str, Any]:
    """The operator arguments ``Harness.backup`` gives the task, from the results of its upstream."""
    common, store = harness.common(ONE, case.task), harness.store(ONE, case.task)
    if case.task == "snapshot":
        return {**common, "quiesce": results["quiesce"]}
    if case.task in ("resume", "unpause"):
        return {**common, "mode": "quiesced"}
    if case.task == "upload":
        return {**store, "snapshot": results["snapshot"], "verify": results["verify"], "method": case.method}
    if case.task == "escrow_key":
        return {**store, "key_prefix": KEY_PREFIX}
    keys = ("snapshot", "verify", "upload", "escrow_key", "resume")
    inputs = {k.removesuffix("_key"): results[k] for k in keys}
    return {**store, **inputs, "mode": "quiesced"}


@pytest.mark.parametrize("case", KILL_CASES, ids=[c.id for c in KILL_CASES])
def test_sigkilled_midway_then_retried(harness: Harness, task_server: TaskServer, case: KillCase) -> None:
    """The task's worker is SIGKILLed right after a write (or mid-transfer); Airflow's retry (a
    fresh operator, same run, the upstream results from XCom) ends the run clean."""
    before = harness.objects(ONE)
    first = harness.backup(ONE, stop_before=case.task, upload_method=case.method)
    assert first.tasks and all(o.ok for o in first.tasks.values()), first.errors()
    results = {t: o.result for t, o in first.tasks.items()}
    if case.prepare:
        case.prepare(harness)
    module, cls = OPS[case.task]
    worker = task_server.start(
        first.run_id, [(module, cls, kill_task_kwargs(harness, case, results))], case.kill_point
    )
    try:
        worker.wait_kill_point()
        if case.midway:
            case.midway(harness, results)
    finally:
        code = worker.sigkill()
    assert code == -9 and not worker.results(), worker.output()[-2000:]
    trace = harness.backup(
        ONE, run_id=first.run_id, done=results, retried=case.task, upload_method=case.method
    )
    assert trace.succeeded, trace.errors()
    assert trace.tasks[case.task].tries == 1, trace.errors()
    if case.task == "snapshot":
        # The API servers its killed try had scaled back were stopped again before the snapshot.
        assert trace.tasks["snapshot"].result["stopped_again"] is True, trace.tasks["snapshot"].result
    harness.assert_invariants(ONE, before, trace)


def restored_objects(harness: Harness, rendered: Path, name: str) -> list[str]:
    """The objects of the restore of ``name`` that exist now (the Namespace aside: it is shared)."""
    left = []
    for doc in yaml.safe_load_all(rendered.read_text()):
        if doc and doc["kind"] != "Namespace":
            meta = doc["metadata"]
            if harness.k8s.object_exists(doc["apiVersion"], doc["kind"], meta.get("namespace"), meta["name"]):
                left.append(f"{doc['kind']} {meta['name']}")
    return left


def test_restore_create_sigkilled_midway_then_retried(
    harness: Harness, task_server: TaskServer, tmp_path: Path
) -> None:
    """The create task's worker is SIGKILLed after its first object (no chance to undo it); the retry
    creates the cluster, which restores and verifies, and the teardown leaves nothing behind."""
    rendered, name = tmp_path / "rendered.yaml", "rel-killed"
    rid, backup = harness.prepare_restore(ONE, name, rendered)
    kwargs = {**harness.restore_store("create"), "backup": backup, "rendered_manifests": str(rendered)}
    worker = task_server.start(
        rid,
        [("hcp_etcd.operators.restore", "CreateRestoredClusterOperator", kwargs)],
        (f"{HOOKS}.create_object", 1),
    )
    try:
        worker.wait_kill_point()
        assert restored_objects(harness, rendered, name), "killed after its first object was created"
    finally:
        code = worker.sigkill()
    assert code == -9 and not worker.results(), worker.output()[-2000:]
    target = ClusterRef("clusters", name)
    created = harness.attempt(
        "create", lambda: rops.CreateRestoredClusterOperator(**kwargs), rid, tries=TRIES - 1
    )
    try:
        assert created.ok, created.errors
        waited = harness.attempt(
            "wait",
            lambda: rops.WaitRestoredOperator(
                **harness.restore_store("wait"), backup=backup, created=created.result, timeout=180,
                poll_interval=0.5,
            ),
            rid,
            tries=1,
        )  # fmt: skip
        assert waited.ok, waited.errors
        verified = harness.attempt(
            "verify",
            lambda: rops.VerifyRestoreOperator(**harness.restore_store("verify"), backup=backup),
            rid,
        )
        assert verified.ok and verified.result["passed"], verified.result or verified.errors
    finally:
        # The drill's teardown: deletes what the create task reports it made.
        deleted = harness.attempt(
            "delete",
            lambda: DeleteRestoredClusterOperator(
                **harness.restore_store("delete"), created=created.result, timeout=120
            ),
            rid,
        )
    assert deleted.ok, deleted.errors
    assert not harness.k8s.hosted_cluster_exists(target)
    assert not restored_objects(harness, rendered, name), "objects of the killed try left behind"


def s3_faults_logged(harness: Harness) -> int:
    """How many S3 requests got an injected 503 for a drill report, per the S3 log."""
    log = harness.box.dir / "logs" / "s3.log"
    return sum(
        "S3 fault: 503 for PUT" in line and "/_drills/" in line for line in log.read_text().splitlines()
    )


@dataclass(frozen=True)
class DrillCase:
    """One fault during a drill of rel-one."""

    id: str
    task: str
    fault: Callable[[Harness], Any]
    passes: bool  # the drill passes through retries (True) or fails cleanly (False)


def _drill_member(harness: Harness) -> tuple[str, str]:
    """The control-plane namespace and etcd pod of today's drill cluster of rel-one."""
    backup = harness.xcoms[harness.drill_run_id].get(("resolve_backup", "return_value"))
    return ClusterRef.parse(backup["target"]).control_plane_namespace, "etcd-0"


DRILL_CASES = [
    DrillCase("wait-api-500-on-hostedcontrolplane", "wait_restored",
              lambda h: h.box.fault("api", "--resource", "hostedcontrolplanes", "--verb", "get", "--code", "500",
                                    "--count", "5"), True),
    DrillCase("report-s3-503", "report", lambda h: h.box.fault("s3", "--code", "503", "--count", "6"), True),
    DrillCase("teardown-api-500-on-delete", "delete_drill_cluster",
              lambda h: h.box.fault("api", "--resource", "hostedclusters", "--verb", "delete", "--code", "500",
                                    "--count", "2"), True),
    DrillCase("verify-etcd-member-stopped", "verify",
              lambda h: h.box.fault("etcd-stop", "--namespace", _drill_member(h)[0], "--pod", "etcd-0"), False),
]  # fmt: skip


@pytest.mark.parametrize("case", DRILL_CASES, ids=[c.id for c in DRILL_CASES])
def test_drill_fault(harness: Harness, case: DrillCase) -> None:
    """A drill under a fault: it passes through retries or fails with a report that says why; either
    way the teardown deletes the drill cluster, and the drilled cluster and its backups are untouched."""
    if not harness.manifests(ONE):
        assert harness.backup(ONE).succeeded
    before = harness.objects(ONE)
    seq, faults_before = harness.seq(), s3_faults_logged(harness)
    trace, report = harness.drill(ONE, {case.task: lambda: case.fault(harness)})
    tasks = trace.tasks
    assert tasks["create"].ok and tasks["delete_drill_cluster"].ok, trace.errors()
    target = ClusterRef.parse(tasks["resolve_backup"].result["target"])
    assert not harness.k8s.hosted_cluster_exists(target), f"{target} not deleted"
    assert report is not None and report["airflow"]["run_id"] == trace.run_id, trace.errors()
    assert report["passed"] is case.passes and tasks["verdict"].ok is case.passes, (report, trace.errors())
    if case.passes:
        assert tasks["wait_restored"].tries == 1 and tasks["verify"].result["passed"], trace.errors()
    else:
        assert not tasks["verify"].ok and tasks["verify"].tries == TRIES, trace.errors()
        assert any(e.startswith("verify:") for e in report["errors"]), report["errors"]
    if case.task == "wait_restored":
        # The fault did hit the wait: the trigger polled through the 500s.
        items, _ = harness.requests_since(seq)
        assert [i for i in items if i["plural"] == "hostedcontrolplanes" and i["code"] == 500]
    if case.task == "delete_drill_cluster":
        # The teardown's delete got the 500s and still removed the cluster (asserted above).
        items, _ = harness.requests_since(seq)
        assert [
            i
            for i in items
            if i["method"] == "DELETE" and i["plural"] == "hostedclusters" and i["code"] == 500
        ]
    if case.task == "report":
        # Every 503 went to the report's PUT (the S3 log names each faulted request).
        assert s3_faults_logged(harness) - faults_before == 6 and tasks["report"].ok
    harness.assert_invariants(ONE, before, None, succeeded=False)


def test_sandbox_s3_error_fault_reaches_chunked_puts(tmp_path: Path) -> None:
    """boto3 sends small PUTs aws-chunked (no Content-Length): the fault drains the body and answers
    the error, so the client reads a 403/503 instead of a reset connection (a fix found here)."""
    faults = tmp_path / "faults.json"
    app = S3FaultMiddleware(lambda environ, start: [b"ok"], faults)
    add_s3_fault(faults, count=1, code=403)
    body, seen = io.BytesIO(b"x" * 200_000), []
    environ = {"wsgi.input": body, "wsgi.input_terminated": True, "PATH_INFO": "/b/k"}
    answer = b"".join(app(environ, lambda status, headers: seen.append(status)))
    assert seen == ["403 Forbidden"] and b"<Code>AccessDenied</Code>" in answer
    assert body.read() == b"", "the chunked body was drained"


def test_snapshot_gives_the_api_servers_back_before_resume(harness: Harness) -> None:
    """The downtime window ends in the snapshot task: when resume starts, the API servers are already
    scaled back to the recorded replicas (resume only waits for them, and is the safety net)."""
    before = harness.objects(ONE)
    seen: dict[str, int] = {}
    trace = harness.backup(ONE, inject={"resume": lambda: seen.update(replicas(harness, ONE))})
    assert trace.succeeded, trace.errors()
    recorded = trace.tasks["quiesce"].result["replicas"]
    assert seen == recorded and all(n > 0 for n in seen.values()), (seen, recorded)
    assert trace.tasks["snapshot"].result["stopped_again"] is False
    harness.assert_invariants(ONE, before, trace)
