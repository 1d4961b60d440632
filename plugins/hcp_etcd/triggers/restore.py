"""Deferrable wait for a restored hosted cluster. Triggers only wait: they change nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as async_client
from kubernetes_asyncio.client.rest import ApiException

from hcp_etcd.conditions import condition, unmet_conditions
from hcp_etcd.naming import control_plane_namespace
from hcp_etcd.triggers.base import KubernetesPollingTrigger, State

RESTORED = "EtcdSnapshotRestored"


def restore_state(hc: dict[str, Any], hcp: dict[str, Any] | None) -> tuple[State, str]:
    """``("done" | "failed" | "waiting", message)`` from the HostedCluster and its HostedControlPlane.

    ``EtcdSnapshotRestored`` is a HostedControlPlane condition (HyperShift may mirror it on the
    HostedCluster): False there is etcd-init's failure, final for this cluster (restore happens only
    at creation), so the wait ends at once with its message.

    :param hc: the HostedCluster.
    :param hcp: its HostedControlPlane (None while not created yet).
    """
    restored = (hcp and condition(hcp, RESTORED)) or condition(hc, RESTORED)
    if restored is not None and str(restored.get("status")) == "False":
        return "failed", f"{RESTORED}=False ({restored.get('reason')}): {restored.get('message')}"
    missing = unmet_conditions(hc, {"Available": "True"})
    if restored is None:
        missing.append(f"{RESTORED} missing")
    elif str(restored.get("status")) != "True":
        missing.append(f"{RESTORED}={restored.get('status')}")
    return ("waiting", "; ".join(missing)) if missing else ("done", "")


class RestoredClusterTrigger(KubernetesPollingTrigger):
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

    def __init__(
        self,
        namespace: str,
        name: str,
        kubernetes_conn_id: str = "kubernetes_default",
        timeout: float = 1800,
        poll_interval: float = 5,
        started_at: float | None = None,
    ) -> None:
        """See the class docstring."""
        super().__init__(kubernetes_conn_id, timeout, poll_interval, started_at)
        self.namespace = namespace
        self.name = name

    def probe_kwargs(self) -> dict[str, Any]:
        """This trigger's own arguments."""
        return {"namespace": self.namespace, "name": self.name}

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"the restore of {self.namespace}/{self.name}"

    def success_details(self) -> dict[str, Any]:
        """When the restored cluster was seen Available (recovery time ends there)."""
        return {"available_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """The restore state from the HostedCluster and its HostedControlPlane."""
        objects = async_client.CustomObjectsApi(api)
        hc = await objects.get_namespaced_custom_object(
            "hypershift.openshift.io", "v1beta1", self.namespace, "hostedclusters", self.name
        )
        try:
            hcp = await objects.get_namespaced_custom_object(
                "hypershift.openshift.io",
                "v1beta1",
                control_plane_namespace(self.namespace, self.name),
                "hostedcontrolplanes",
                self.name,
            )
        except ApiException as err:
            if err.status != 404:
                raise
            hcp = None
        return restore_state(hc, hcp)
