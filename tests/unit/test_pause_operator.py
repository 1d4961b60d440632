"""PauseReconciliationOperator's confirmation, with the Kubernetes hook faked (one class under test)."""

from __future__ import annotations

from typing import Any

import pytest

from hcp_etcd.operators.backup import PauseReconciliationOperator


def _with(active: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "ReconciliationActive", "status": active, "reason": "r"}]}}


class FakeHook:
    """The HostedCluster says paused at once; its HostedControlPlane after ``hcp_after`` reads."""

    def __init__(self, hcp_after: int | None) -> None:
        self.hcp_after = hcp_after
        self.hcp_reads: list[str] = []
        self.patches: list[dict[str, Any]] = []

    def get_hosted_cluster(self, ref: Any) -> dict[str, Any]:
        return _with("False")

    def get_hosted_control_plane(self, namespace: str, name: str) -> dict[str, Any]:
        self.hcp_reads.append(f"{namespace}/{name}")
        paused = self.hcp_after is not None and len(self.hcp_reads) > self.hcp_after
        return _with("False" if paused else "True")

    def patch_hosted_cluster(self, ref: Any, patch: dict[str, Any]) -> None:
        self.patches.append(patch)


def _operator(hook: FakeHook, monkeypatch: pytest.MonkeyPatch, timeout: float) -> PauseReconciliationOperator:
    op = PauseReconciliationOperator(task_id="pause", hosted_cluster="clusters/ha", confirm_timeout=timeout)
    op.__dict__["k8s"] = hook
    monkeypatch.setattr("time.sleep", lambda _s: None)
    return op


def test_pause_waits_for_the_hosted_control_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(hcp_after=2)
    op = _operator(hook, monkeypatch, timeout=60)
    op._confirm_paused(op.ref)
    assert hook.hcp_reads == ["clusters-ha/ha"] * 3


def test_pause_not_seen_on_the_hosted_control_plane_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = FakeHook(hcp_after=None)
    op = _operator(hook, monkeypatch, timeout=0)
    with pytest.raises(RuntimeError, match="HostedControlPlane ReconciliationActive=True"):
        op._confirm_paused(op.ref)
