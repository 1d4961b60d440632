"""Backups and restores against etcd history that moves by itself, as on HyperShift (issue 14, items 1 and 5).

- Quiesced members do not stand still: the etcd leader revokes expired Events leases while every API
  server is stopped, each revocation a new revision, so members snapshotted a moment apart differ
  in revision. The backup must still pass, judged as etcd judges members (hashkv at a common revision).
- A restored etcd is compacted (etcd-init's ``--mark-compacted``, then kube-apiserver every
  interval): the verification reads the current revision, passes long after the restore, and still
  fails when data of the backup is missing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from hcp_etcd import etcd
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.backup import SnapshotMembersOperator
from tests.support.harness import BACKUP_GROUP, HA, ONE, Harness

HA_NS = ClusterRef("clusters", HA).control_plane_namespace


def etcdctl(harness: Harness, ns: str, pod: str, *args: str, check: bool = True) -> Any:
    return harness.k8s.exec_command(ns, pod, etcd.etcdctl(*args), timeout=60, check=check)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Poll until ``predicate()``; the bound only ends a broken run, it is not what is tested."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def test_quiesced_backup_passes_while_leases_are_revoked_between_member_snapshots(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Event's lease ends between the members' snapshots, and the restarted kube-apiserver
    compacts etcd past the revision they share before verify runs: the members were compared while
    the API servers were stopped, so verify still passes."""
    before = harness.objects(HA)
    event = "/kubernetes.io/events/openshift-kube-apiserver/last-words"
    exec_in_pod = SnapshotMembersOperator.exec_in_pod

    leases: list[str] = []
    revoked = threading.Event()  # the members' snapshots run in threads of one task

    def steered(op: Any, ns: str, pod: str, command: list[str], **kw: Any) -> Any:
        # Only the timing is steered, so that it holds however slow the machine is (a 3 s lease
        # granted before the task once expired before etcd-0's snapshot, under a loaded CI):
        # - just before etcd-0's snapshot, an Event under a lease, as kube-apiserver writes every
        #   Event (--event-ttl), so etcd-0's snapshot holds it;
        # - once that snapshot is taken, the lease ends: `lease revoke` is the request etcd's leader
        #   makes itself when a lease's TTL runs out (lessor.go's expiry loop), the one revision that
        #   moves while every API server is at 0; the TTL is long so that only this ends it;
        # - etcd-1's snapshot starts after the revocation, so its revision is past etcd-0's.
        saving = "snapshot save" in " ".join(command)
        if saving and pod == "etcd-0" and not leases:
            leases.append(etcdctl(harness, HA_NS, pod, "lease", "grant", "600").stdout.split()[1])
            etcdctl(harness, HA_NS, pod, "put", f"--lease={leases[0]}", event, "{}")
        if saving and pod == "etcd-1":
            assert revoked.wait(600), "etcd-0's snapshot never ended"
            assert not etcdctl(harness, HA_NS, pod, "get", event).stdout, "the Event outlived its lease"
        result = exec_in_pod(op, ns, pod, command, **kw)
        if saving and pod == "etcd-0":
            etcdctl(harness, HA_NS, pod, "lease", "revoke", leases[0], check=False)  # again on a retry
            revoked.set()
        return result

    def compacted_revision() -> int:
        out = etcdctl(harness, HA_NS, "etcd-0", "endpoint", "hashkv", "-w", "json").stdout
        return int(json.loads(out)[0]["HashKV"]["compact_revision"])

    def compacted_past_the_common_revision() -> None:
        taken = harness.xcoms[run_id][(f"{BACKUP_GROUP}.snapshot", "return_value")]
        common = min(s["revision"] for s in taken["statuses"].values())
        wait_for(
            f"kube-apiserver compacts etcd past revision {common}",
            lambda: compacted_revision() >= common,
        )

    monkeypatch.setattr(SnapshotMembersOperator, "exec_in_pod", steered)
    run_id = harness.new_run_id(HA)
    inject = {"verify": compacted_past_the_common_revision}
    trace = harness.backup(HA, inject, run_id=run_id)
    assert trace.succeeded, trace.errors()
    revisions = {m["pod"]: m["revision"] for m in trace.tasks["verify"].result["members"]}
    assert revisions["etcd-1"] > min(revisions.values()), revisions  # the members did differ
    assert set(trace.tasks["snapshot"].result["hashkv"]) == set(revisions)  # compared in the window
    assert trace.tasks["verify"].tries == 1
    harness.assert_invariants(HA, before, trace)


def _drill_etcd(harness: Harness) -> tuple[str, int]:
    backup = harness.xcoms[harness.drill_run_id][("resolve_backup", "return_value")]
    ns = ClusterRef.parse(backup["target"]).control_plane_namespace
    return ns, int(backup["manifest"]["etcd"]["revision"])


def _compacted_twice(harness: Harness) -> None:
    """Wait until kube-apiserver's compactor ran on the restored etcd, after etcd-init's compaction."""
    ns, revision = _drill_etcd(harness)
    out = etcdctl(harness, ns, "etcd-0", "get", f"--rev={revision}", "/kubernetes.io/", check=False)
    assert out.returncode != 0 and "compacted" in out.stderr_tail, "etcd-init left the backup's revision"

    def compacted_by_the_api_server() -> bool:
        out = etcdctl(harness, ns, "etcd-0", "get", "compact_rev_key", "-w", "json").stdout
        kvs = json.loads(out).get("kvs") or []
        return bool(kvs) and int(kvs[0]["mod_revision"]) > revision + 1

    wait_for("kube-apiserver compacted the restored etcd", compacted_by_the_api_server)


def test_restore_verified_after_compaction_passes(harness: Harness) -> None:
    """The backup carries samples; the restored etcd is compacted past its revision; verify passes."""
    assert harness.backup(ONE).succeeded
    trace, report = harness.drill(ONE, {"verify": lambda: _compacted_twice(harness)})
    assert report is not None and report["passed"], (report, trace.errors())
    checks = {c["name"]: c for c in report["checks"]}
    assert {"key_counts", "samples", "secret_decrypts"} <= set(checks), checks
    assert all(c["passed"] for c in checks.values()), checks
    manifest = harness.xcoms[trace.run_id][("resolve_backup", "return_value")]["manifest"]
    assert manifest["etcd"]["samples"] and any("/secrets/" in s["key"] for s in manifest["etcd"]["samples"])


def test_restore_missing_data_fails_verification(harness: Harness) -> None:
    """The same restore with the backup's ConfigMaps gone from etcd: key counts and samples fail."""
    if not harness.manifests(ONE):
        assert harness.backup(ONE).succeeded

    def lose_configmaps() -> None:
        _compacted_twice(harness)
        ns, _ = _drill_etcd(harness)
        etcdctl(harness, ns, "etcd-0", "del", "--prefix", "/kubernetes.io/configmaps/")

    trace, report = harness.drill(ONE, {"verify": lose_configmaps})
    assert report is not None and not report["passed"], trace.errors()
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert {"key_counts", "samples"} <= failed, report["checks"]
    assert trace.tasks["delete_drill_cluster"].ok
