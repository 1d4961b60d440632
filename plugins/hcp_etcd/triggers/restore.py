"""Deferrable wait for a restored hosted cluster. Triggers only wait: they change nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from kubernetes_asyncio import client as async_client
from kubernetes_asyncio.client.rest import ApiException

from hcp_etcd.conditions import condition, unmet_conditions
from hcp_etcd.naming import control_plane_namespace

RESTORED = "EtcdSnapshotRestored"


def restore_state(hc: dict[str, Any], hcp: dict[str, Any] | None) -> tuple[str, str]:
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


class RestoredClusterTrigger(BaseTrigger):
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
        super().__init__()
        self.namespace = namespace
        self.name = name
        self.kubernetes_conn_id = kubernetes_conn_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.started_at = started_at if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "namespace": self.namespace,
                "name": self.name,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "timeout": self.timeout,
                "poll_interval": self.poll_interval,
                "started_at": self.started_at,
            },
        )

    async def _probe(self, api: async_client.ApiClient) -> tuple[str, str]:
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

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll; yield one event."""
        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        message, last_error = "not checked yet", ""
        while True:
            try:
                async with hook.get_conn() as api:
                    state, message = await self._probe(api)
                last_error = ""
            except Exception as err:
                # The API answers errors while a control plane comes up: keep waiting until the timeout.
                state, last_error = "waiting", f"{type(err).__name__}: {str(err)[:300]}"
                self.log.warning("probe failed, will retry: %s", last_error)
            elapsed = time.time() - self.started_at
            if state == "done":
                yield TriggerEvent(
                    {
                        "status": "success",
                        "elapsed": elapsed,
                        "available_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )
                return
            if state == "failed":
                yield TriggerEvent({"status": "failed", "elapsed": elapsed, "message": message})
                return
            if elapsed > self.timeout:
                detail = message + (f"; last error: {last_error}" if last_error else "")
                yield TriggerEvent({"status": "timeout", "elapsed": elapsed, "message": detail})
                return
            self.log.info(
                "waiting for the restore of %s/%s: %s", self.namespace, self.name, message or last_error
            )
            await asyncio.sleep(self.poll_interval)
