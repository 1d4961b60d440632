"""The shared polling loop of the triggers, with the Kubernetes connection faked (one class under test)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from hcp_etcd.triggers import base
from hcp_etcd.triggers.restore import HostedClusterDeletedTrigger, RestoredClusterTrigger
from hcp_etcd.triggers.wait import (
    DeploymentsReadyTrigger,
    HostedClusterAvailableTrigger,
    PodsGoneTrigger,
    ReconciliationPausedTrigger,
)


class FakeHook:
    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    @contextlib.asynccontextmanager
    async def get_conn(self):
        yield object()


class Scripted(base.KubernetesPollingTrigger):
    """Answers its probes from a script: a state tuple, or an exception to raise."""

    def __init__(self, script: list[Any], **kwargs: Any) -> None:
        super().__init__(poll_interval=0, **kwargs)
        self.script = script

    def probe_kwargs(self) -> dict[str, Any]:
        return {"script": self.script}

    async def probe(self, api: Any) -> tuple[base.State, str]:
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture(autouse=True)
def fake_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "AsyncKubernetesHook", FakeHook)


def events(trigger: base.KubernetesPollingTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_waits_through_api_errors_until_done() -> None:
    trigger = Scripted([("waiting", "pods left"), ConnectionError("reset"), ("done", "")])
    [event] = events(trigger)
    assert event["status"] == "success" and trigger.script == []


def test_a_failed_probe_ends_the_wait_with_its_message() -> None:
    [event] = events(Scripted([("waiting", "x"), ("failed", "etcd-init: <?xml NoSuchKey")]))
    assert event == {"status": "failed", "elapsed": event["elapsed"], "message": "etcd-init: <?xml NoSuchKey"}


def test_timeout_says_what_was_missing_and_the_last_error() -> None:
    trigger = Scripted([("waiting", "kube-apiserver ready 0/3"), RuntimeError("boom")], timeout=0)
    [event] = events(trigger)
    assert event["status"] == "timeout"
    assert "kube-apiserver ready 0/3" in event["message"]
    trigger = Scripted([RuntimeError("boom")], timeout=0)
    assert "last error: RuntimeError: boom" in events(trigger)[0]["message"]


@pytest.mark.parametrize(
    "trigger",
    [
        PodsGoneTrigger(namespace="clusters-a", label_selectors=["app=kas"], poll_interval=1),
        DeploymentsReadyTrigger(namespace="clusters-a", deployments=["kube-apiserver"], timeout=900),
        HostedClusterAvailableTrigger(namespace="clusters", name="a", reconciling=True),
        ReconciliationPausedTrigger(namespace="clusters", name="a", timeout=120, poll_interval=2),
        RestoredClusterTrigger(namespace="clusters", name="a-restored", timeout=60),
        HostedClusterDeletedTrigger(namespace="hcp-etcd-drills", name="a-drill-20250101", timeout=900),
    ],
    ids=["pods-gone", "deployments-ready", "available", "paused", "restored", "deleted"],
)
def test_serialize_round_trips(trigger: base.KubernetesPollingTrigger) -> None:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    import importlib

    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["started_at"] == trigger.started_at  # the deadline survives a triggerer restart


class Clocked(base.KubernetesPollingTrigger):
    """Done after ``polls`` probes; records the poll interval each probe ran with."""

    seen: list[float] = []

    def __init__(self, polls: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.polls = polls

    def probe_kwargs(self) -> dict[str, Any]:
        return {"polls": self.polls}

    async def probe(self, api: Any) -> tuple[base.State, str]:
        Clocked.seen.append(self.poll_interval)
        return ("done", "") if len(Clocked.seen) >= self.polls else ("waiting", "not yet")


def test_inline_wait_polls_fast_then_defers_with_the_triggers_own_interval() -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from hcp_etcd.operators.base import HostedClusterOperator

    class Waiter(HostedClusterOperator):
        def done(self, context: Any, event: dict[str, Any]) -> str:
            return event["status"]

    op = Waiter(task_id="w", hosted_cluster="clusters/a")
    # Done on the third look: found inline, at the fast interval, with no deferral.
    Clocked.seen = []
    result = op.wait(Clocked(3, poll_interval=5), "done", {}, inline_seconds=5, inline_poll_interval=0.01)
    assert result == "success" and Clocked.seen == [0.01, 0.01, 0.01]
    # Not done within the inline time: deferred with the trigger as given (its 5 s interval).
    Clocked.seen = []
    with pytest.raises(TaskDeferred) as deferred:
        op.wait(Clocked(10**6, poll_interval=5), "done", {}, inline_seconds=0.1, inline_poll_interval=0.01)
    assert deferred.value.trigger.poll_interval == 5 and set(Clocked.seen) == {0.01}


def _etcd_pod(name: str, init: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"initContainerStatuses": [{"name": "etcd-init", **init}]}}


FAILED_RUN = {"terminated": {"exitCode": 1, "reason": "Error"}}


def test_etcd_init_failure_counts_failed_runs() -> None:
    from hcp_etcd.triggers.restore import etcd_init_failure

    backing_off = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": FAILED_RUN}
    assert etcd_init_failure([_etcd_pod("etcd-0", {**backing_off, "restartCount": 1})]) is None
    assert etcd_init_failure([_etcd_pod("etcd-0", {"state": {"running": {}}, "restartCount": 2})]) is None
    done = {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "restartCount": 5, "ready": True}
    assert etcd_init_failure([_etcd_pod("etcd-0", done)]) is None
    pods = [_etcd_pod("etcd-0", done), _etcd_pod("etcd-1", {**backing_off, "restartCount": 2})]
    assert etcd_init_failure(pods) == ("etcd-1", "exit 1 (Error), 3 runs, CrashLoopBackOff")


def test_restore_fails_with_what_etcd_init_said_without_the_signature() -> None:
    from hcp_etcd.triggers.restore import restore_state

    hc = {"status": {"conditions": [{"type": "Available", "status": "False"}]}}
    log = (
        "<?xml version='1.0'?><Error><Code>SignatureDoesNotMatch</Code><SignatureProvided>abc123"
        "</SignatureProvided><CanonicalRequest>GET /b/k X-Amz-Credential=AKIAEXAMPLE%2F2026"
        "</CanonicalRequest></Error> curl https://b.s3/k?X-Amz-Signature=deadbeef&X-Amz-Date=1"
    )
    state, message = restore_state(hc, None, ("etcd-0", "exit 1 (Error), 3 runs"), log)
    assert state == "failed" and "etcd-0" in message and "SignatureDoesNotMatch" in message
    for secret in ("abc123", "AKIAEXAMPLE", "deadbeef"):
        assert secret not in message
    # Without a failure and without the HostedControlPlane's condition, the wait goes on.
    assert restore_state(hc, {"status": {"conditions": []}})[0] == "waiting"
