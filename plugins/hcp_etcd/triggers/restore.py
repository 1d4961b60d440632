"""Deferrable waits of a restore: restored, and (a drill's teardown) deleted. Triggers only wait:
they change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as async_client
from kubernetes_asyncio.client.rest import ApiException

from hcp_etcd.conditions import condition, unmet_conditions
from hcp_etcd.errors import redact
from hcp_etcd.naming import control_plane_namespace
from hcp_etcd.triggers.base import HostedClusterTrigger, State

RESTORED = "EtcdSnapshotRestored"
ETCD_INIT = "etcd-init"
# Failed runs of etcd-init before the restore is called failed: the kubelet restarts it after 10 s,
# then 20 s, so the third failure comes about 30 s after the first. One failure could be a passing
# network error; three of the same restore are not (an expired URL, an S3 error document, a corrupt
# snapshot fail every time).
ETCD_INIT_FAILURES = 3
ETCD_INIT_LOG_LINES = 20


def etcd_init_failure(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The first etcd pod whose ``etcd-init`` failed ``ETCD_INIT_FAILURES`` times, and how.

    HyperShift writes ``EtcdSnapshotRestored`` only once every etcd replica is Ready
    (``hostedcontrolplane_controller.go: etcdRestoredCondition``): a failing etcd-init keeps its pod
    un-Ready, so the condition never appears and only the pods tell.

    :param pods: the etcd pods, as dicts (``status.initContainerStatuses``).
    :return: ``(pod name, "exit 1 (Error), 3 runs, CrashLoopBackOff")`` or None.
    """
    for pod in pods:
        for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if status.get("name") != ETCD_INIT:
                continue
            state, last = status.get("state") or {}, status.get("lastState") or {}
            terminated = state.get("terminated") or last.get("terminated") or {}
            if not terminated or terminated.get("exitCode") in (0, None):
                continue
            # Runs that failed: every restart followed a failure, plus the current one unless it runs.
            failures = int(status.get("restartCount") or 0) + (0 if "running" in state else 1)
            if failures < ETCD_INIT_FAILURES:
                continue
            waiting = (state.get("waiting") or {}).get("reason")
            how = f"exit {terminated.get('exitCode')} ({terminated.get('reason', '')}), {failures} runs"
            return pod["metadata"]["name"], how + (f", {waiting}" if waiting else "")
    return None


def restore_state(
    hc: dict[str, Any],
    hcp: dict[str, Any] | None,
    init_failure: tuple[str, str] | None = None,
    init_log: str = "",
) -> tuple[State, str]:
    """``("done" | "failed" | "waiting", message)`` from the HostedCluster, its HostedControlPlane
    and its etcd pods.

    ``EtcdSnapshotRestored`` is a HostedControlPlane condition only (upstream does not copy it to the
    HostedCluster) and has no message; False there, or an etcd-init that keeps failing, is final
    for this cluster (restore happens only at creation), so the wait ends at once.

    :param hc: the HostedCluster.
    :param hcp: its HostedControlPlane (None while not created yet).
    :param init_failure: ``etcd_init_failure`` of its etcd pods.
    :param init_log: the last lines etcd-init printed in that pod (presigned signatures removed here).
    """
    restored = hcp and condition(hcp, RESTORED)
    if init_failure is not None:
        pod, how = init_failure
        said = redact(init_log.strip(), limit=1500) or "(no output)"
        return "failed", f"{ETCD_INIT} of pod {pod} failed: {how}; its last lines: {said}"
    if restored is not None and str(restored.get("status")) == "False":
        return "failed", f"{RESTORED}=False ({restored.get('reason')}): {restored.get('message')}"
    missing = unmet_conditions(hc, {"Available": "True"})
    if restored is None:
        missing.append(f"{RESTORED} missing")
    elif str(restored.get("status")) != "True":
        missing.append(f"{RESTORED}={restored.get('status')}")
    return ("waiting", "; ".join(missing)) if missing else ("done", "")


class RestoredClusterTrigger(HostedClusterTrigger):
    """Poll until a restored HostedCluster is Available with ``EtcdSnapshotRestored=True``.

    Yields one event: ``success`` (with ``available_at``), ``failed`` (etcd-init's message) or
    ``timeout`` (with what was still missing).

    :param namespace: HostedCluster namespace.
    :param name: HostedCluster name.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def __init__(self, namespace: str, name: str, timeout: float = 1800, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(namespace, name, timeout=timeout, **kwargs)

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"the restore of {self.namespace}/{self.name}"

    def success_details(self) -> dict[str, Any]:
        """When the restored cluster was seen Available (recovery time ends there)."""
        return {"available_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """The restore state from the HostedCluster, its HostedControlPlane and its etcd pods."""
        objects = async_client.CustomObjectsApi(api)
        cp_namespace = control_plane_namespace(self.namespace, self.name)
        hc = await objects.get_namespaced_custom_object(
            "hypershift.openshift.io", "v1beta1", self.namespace, "hostedclusters", self.name
        )
        try:
            hcp = await objects.get_namespaced_custom_object(
                "hypershift.openshift.io", "v1beta1", cp_namespace, "hostedcontrolplanes", self.name
            )
        except ApiException as err:
            if err.status != 404:
                raise
            hcp = None
        core = async_client.CoreV1Api(api)
        pods = await core.list_namespaced_pod(cp_namespace, label_selector="app=etcd")
        failure = etcd_init_failure([api.sanitize_for_serialization(p) for p in pods.items])
        log = ""
        if failure is not None:
            try:
                log = await core.read_namespaced_pod_log(
                    failure[0], cp_namespace, container=ETCD_INIT, tail_lines=ETCD_INIT_LOG_LINES
                )
            except ApiException as err:
                log = f"(its log is unreadable: {err.status} {err.reason})"
        return restore_state(hc, hcp, failure, log)


class HostedClusterDeletedTrigger(HostedClusterTrigger):
    """Poll until a HostedCluster and its control-plane namespace are gone (a drill's teardown).

    :param namespace: the HostedCluster's namespace.
    :param name: its name.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"the deletion of {self.namespace}/{self.name}"

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """Done when neither the HostedCluster nor its control-plane namespace exists."""
        cp_namespace = control_plane_namespace(self.namespace, self.name)
        left = []
        try:
            await async_client.CustomObjectsApi(api).get_namespaced_custom_object(
                "hypershift.openshift.io", "v1beta1", self.namespace, "hostedclusters", self.name
            )
            left.append(f"HostedCluster {self.namespace}/{self.name} still exists")
        except ApiException as err:
            if err.status != 404:
                raise
        try:
            await async_client.CoreV1Api(api).read_namespace(cp_namespace)
            left.append(f"its namespace {cp_namespace} still exists")
        except ApiException as err:
            if err.status != 404:
                raise
        return ("waiting", "; ".join(left)) if left else ("done", "")
