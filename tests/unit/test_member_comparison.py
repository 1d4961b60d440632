"""Quiesced members are compared while the API servers are still stopped (SnapshotMembersOperator),
and verify judges with what was measured then (VerifySnapshotsOperator); the pods' execs faked.

A running kube-apiserver compacts etcd's history (every 5 minutes upstream): the revision that every
member's snapshot holds can be gone one scheduler hand-off after the API servers are back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from hcp_etcd import etcd
from hcp_etcd.hooks.hosted_cluster import ExecResult
from hcp_etcd.operators.backup import SnapshotMembersOperator, VerifySnapshotsOperator

PODS = ["etcd-0", "etcd-1", "etcd-2"]
REVISIONS = {"etcd-0": 120, "etcd-1": 118, "etcd-2": 121}  # leases revoked between the snapshots


class FakeCluster:
    """The etcd pods (a snapshot status and a hashkv each) and the API servers' Deployments."""

    def __init__(self, hashes: dict[str, int] | None = None) -> None:
        self.calls: list[str] = []
        self.hashes = hashes or dict.fromkeys(PODS, 77)
        self.compacted = False

    def list_etcd_pods(self, ns: str) -> list[str]:
        return list(PODS)

    def get_hosted_cluster(self, ref: Any) -> dict[str, Any]:
        # AES-CBC: verify's KMS check (KMS-encrypted clusters only) does nothing.
        return {"spec": {"secretEncryption": {"type": "aescbc", "aescbc": {"activeKey": {"name": "k"}}}}}

    def scale_deployment(self, ns: str, name: str, replicas: int) -> None:
        self.calls.append(f"scale {name} {replicas}")
        self.compacted = True  # the API servers are back: history may be compacted from now on

    def exec_in_pod(self, ns: str, pod: str, command: list[str], **_: Any) -> ExecResult:
        text = " ".join(command)
        if "hashkv" in text:
            self.calls.append(f"hashkv {pod}")
            if self.compacted:
                return ExecResult(1, "", "Error: etcdserver: mvcc: required revision has been compacted")
            return ExecResult(0, json.dumps([{"HashKV": {"hash": self.hashes[pod], "compact_revision": -1,
                                                         "header": {"revision": 200}}}]), "")  # fmt: skip
        if "snapshot status" in text:
            self.calls.append(f"status {pod}")
            rev = REVISIONS[pod]
            status = {"hash": 1000 + rev, "revision": rev, "totalKey": 9, "totalSize": 4096}
            return ExecResult(0, f"Snapshot saved at /var/lib/data/snapshot.db\n{json.dumps(status)}\n", "")
        if "endpoint status" in text:
            status = {"version": "3.5.21", "header": {"revision": 200, "member_id": 1}, "leader": 1}
            return ExecResult(0, json.dumps([{"Status": status}]), "")
        self.calls.append(f"{command[0]} {pod}")
        return ExecResult(0, "", "")  # snapshot save, rm, and the key listing (no keys)


def _operator(cls: type, cluster: FakeCluster, **kwargs: Any) -> Any:
    op = cls(task_id=cls.__name__, hosted_cluster="clusters/ha", **kwargs)
    op.__dict__["k8s"] = cluster  # the cached hook

    def exec_in_pod(ns: str, pod: str, command: list[str], **kw: Any) -> ExecResult:
        result = cluster.exec_in_pod(ns, pod, command, **kw)
        if result.returncode:
            from hcp_etcd.hooks.hosted_cluster import ExecError

            raise ExecError(f"{pod}: {result.stderr_tail}")
        if kw.get("on_stdout_line"):  # streamed, not collected (as the hook does)
            for line in result.stdout.splitlines():
                kw["on_stdout_line"](line)
            return ExecResult(result.returncode, "", result.stderr_tail)
        return result

    op.exec_in_pod = exec_in_pod
    op._thread_hook = lambda: None
    return op


def _snapshot(cluster: FakeCluster) -> dict[str, Any]:
    op = _operator(SnapshotMembersOperator, cluster, quiesce={"replicas": {"kube-apiserver": 3}})
    op._wait_api_servers_ready = lambda ns, replicas: "2026-12-02T05:00:00.000Z"
    return op.execute({})


def test_members_at_different_revisions_are_compared_before_the_api_servers_come_back() -> None:
    cluster = FakeCluster()
    result = _snapshot(cluster)
    scale = cluster.calls.index("scale kube-apiserver 3")
    assert {c for c in cluster.calls[:scale] if c.startswith("hashkv")} == {f"hashkv {p}" for p in PODS}
    assert not any(c.startswith("hashkv") for c in cluster.calls[scale:])
    assert {pod: s["revision"] for pod, s in result["statuses"].items()} == REVISIONS
    measured = {"hash": 77, "compact_revision": -1, "current_revision": 200}
    assert result["hashkv"] == dict.fromkeys(PODS, measured)


def test_verify_judges_with_the_hashkv_measured_while_the_api_servers_were_stopped() -> None:
    cluster = FakeCluster()
    taken = _snapshot(cluster)  # from here on the common revision is compacted
    cluster.calls.clear()
    verify = _operator(VerifySnapshotsOperator, cluster, snapshot=taken, samples_per_resource=0)
    out = verify.execute({})
    assert not any(c.startswith("hashkv") for c in cluster.calls), cluster.calls
    assert out["canonical"] == "etcd-2"


def test_a_disagreement_measured_in_the_window_fails_verify() -> None:
    cluster = FakeCluster(hashes={"etcd-0": 77, "etcd-1": 77, "etcd-2": 78})
    taken = _snapshot(cluster)
    verify = _operator(VerifySnapshotsOperator, cluster, snapshot=taken)
    with pytest.raises(etcd.MembersDisagreeError, match="etcd-2"):
        verify.execute({})


def test_a_snapshot_file_changed_after_the_snapshot_task_fails_verify() -> None:
    cluster = FakeCluster()
    taken = _snapshot(cluster)
    taken["statuses"]["etcd-1"]["hash"] += 1
    verify = _operator(VerifySnapshotsOperator, cluster, snapshot=taken)
    with pytest.raises(etcd.SnapshotStatusError, match="etcd-1 changed after the snapshot task"):
        verify.execute({})


def test_online_snapshots_measure_no_hashkv() -> None:
    cluster = FakeCluster()
    op = _operator(SnapshotMembersOperator, cluster)
    result = op.execute({})
    assert result["hashkv"] is None and not any(c.startswith(("hashkv", "scale")) for c in cluster.calls)
