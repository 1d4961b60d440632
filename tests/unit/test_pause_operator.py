"""PauseReconciliationOperator's confirmation (ReconciliationPausedTrigger), with the Kubernetes
clients faked (one class under test each)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from hcp_etcd.naming import LOCK_ANNOTATION, PREVIOUS_PAUSE_ANNOTATION
from hcp_etcd.operators.backup import PauseNotSeen, PauseReconciliationOperator
from hcp_etcd.triggers import base, wait
from hcp_etcd.triggers.wait import ReconciliationPausedTrigger


def _with(active: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "ha", "namespace": "clusters", "resourceVersion": "7", "annotations": {}},
        "spec": {},
        "status": {"conditions": [{"type": "ReconciliationActive", "status": active, "reason": "r"}]},
    }


class FakeObjects:
    """The HostedCluster says paused at once; its HostedControlPlane after ``hcp_after`` reads."""

    hcp_after: int | None = None
    hcp_reads: list[str] = []

    def __init__(self, api: Any) -> None:
        pass

    async def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str):
        if plural == "hostedclusters":
            return _with("False")
        FakeObjects.hcp_reads.append(f"{ns}/{name}")
        after = FakeObjects.hcp_after
        return _with("False" if after is not None and len(FakeObjects.hcp_reads) > after else "True")


class FakeAsyncHook:
    def __init__(self, conn_id: str) -> None:
        pass

    @contextlib.asynccontextmanager
    async def get_conn(self):
        yield object()


class FakeHook:
    """The synchronous hook of the operator: reads the HostedCluster, records patches."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def get_hosted_cluster(self, ref: Any) -> dict[str, Any]:
        return _with("True")

    def patch_hosted_cluster_if_unchanged(self, ref: Any, patch: dict[str, Any], version: str) -> None:
        self.patches.append(patch)

    def patch_hosted_cluster(self, ref: Any, patch: dict[str, Any], patch_type: str = "merge") -> None:
        self.patches.append(patch)


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "AsyncKubernetesHook", FakeAsyncHook)
    monkeypatch.setattr(wait.async_client, "CustomObjectsApi", FakeObjects)
    FakeObjects.hcp_reads = []


def _event(hcp_after: int | None, timeout: float) -> dict[str, Any]:
    FakeObjects.hcp_after = hcp_after
    trigger = ReconciliationPausedTrigger(namespace="clusters", name="ha", timeout=timeout, poll_interval=0)

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(first())


def test_pause_waits_for_the_hosted_control_plane() -> None:
    assert _event(hcp_after=2, timeout=60)["status"] == "success"
    assert FakeObjects.hcp_reads == ["clusters-ha/ha"] * 3


def test_pause_not_seen_on_the_hosted_control_plane_fails_and_is_undone() -> None:
    event = _event(hcp_after=None, timeout=0)
    op = PauseReconciliationOperator(task_id="pause", hosted_cluster="clusters/ha")
    hook = FakeHook()
    op.__dict__["k8s"] = hook
    result = {"previous_paused_until": None, "paused_until": "x", "lock_expires_at": "x"}
    with pytest.raises(PauseNotSeen, match="HostedControlPlane ReconciliationActive=True"):
        op.execute_complete({"run_id": "r"}, event=event, result=result)
    assert hook.patches == [
        {
            "spec": {"pausedUntil": None},
            "metadata": {"annotations": {LOCK_ANNOTATION: None, PREVIOUS_PAUSE_ANNOTATION: None}},
        }
    ]


def test_pause_not_seen_at_once_defers_instead_of_sleeping() -> None:
    FakeObjects.hcp_after = None
    op = PauseReconciliationOperator(task_id="pause", hosted_cluster="clusters/ha", confirm_timeout=120)
    op.inline_wait_seconds = 0.2
    hook = FakeHook()
    op.__dict__["k8s"] = hook
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"run_id": "r"})
    assert isinstance(deferred.value.trigger, ReconciliationPausedTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs["result"]["previous_paused_until"] is None
    assert len(hook.patches) == 1, "the pause patch only: nothing undone when deferring"
