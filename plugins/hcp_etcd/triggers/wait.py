"""Deferrable waits on the management cluster. Triggers only wait: they change nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from kubernetes_asyncio import client as async_client

from hcp_etcd.conditions import unmet_conditions

CHECKS = ("hosted_cluster_conditions", "pods_gone", "deployments_ready")


class HostedClusterWaitTrigger(BaseTrigger):
    """Poll until a HostedCluster-related state is reached, or time out.

    :param check: ``hosted_cluster_conditions`` (``conditions`` on the HostedCluster
        ``namespace/name``), ``pods_gone`` (no pod matches ``label_selectors`` in ``namespace``) or
        ``deployments_ready`` (each of ``deployments`` in ``namespace`` has readyReplicas >= replicas > 0).
    :param namespace: namespace of the objects.
    :param name: the HostedCluster (for ``hosted_cluster_conditions``).
    :param conditions: condition type -> wanted status.
    :param label_selectors: pod selectors (for ``pods_gone``).
    :param deployments: Deployment names (for ``deployments_ready``).
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    """

    def __init__(
        self,
        check: str,
        namespace: str,
        name: str = "",
        conditions: dict[str, str] | None = None,
        label_selectors: list[str] | None = None,
        deployments: list[str] | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        timeout: float = 1200,
        poll_interval: float = 5,
        started_at: float | None = None,
    ) -> None:
        """Create the trigger (arguments as in the class docstring).

        :param started_at: wall-clock start (kept across triggerer restarts).
        """
        super().__init__()
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; one of {CHECKS}")
        self.check = check
        self.namespace = namespace
        self.name = name
        self.conditions = conditions or {}
        self.label_selectors = label_selectors or []
        self.deployments = deployments or []
        self.kubernetes_conn_id = kubernetes_conn_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.started_at = started_at if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "check": self.check,
                "namespace": self.namespace,
                "name": self.name,
                "conditions": self.conditions,
                "label_selectors": self.label_selectors,
                "deployments": self.deployments,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "timeout": self.timeout,
                "poll_interval": self.poll_interval,
                "started_at": self.started_at,
            },
        )

    async def _probe(self, api: async_client.ApiClient) -> list[str]:
        """What is still missing (empty = done)."""
        if self.check == "hosted_cluster_conditions":
            obj = await async_client.CustomObjectsApi(api).get_namespaced_custom_object(
                "hypershift.openshift.io", "v1beta1", self.namespace, "hostedclusters", self.name
            )
            return unmet_conditions(obj, self.conditions)
        if self.check == "pods_gone":
            left: list[str] = []
            for selector in self.label_selectors:
                pods = await async_client.CoreV1Api(api).list_namespaced_pod(
                    self.namespace, label_selector=selector
                )
                left += [p.metadata.name for p in pods.items]
            return [f"pods still present: {', '.join(sorted(left))}"] if left else []
        waiting = []
        for dep in self.deployments:
            obj = await async_client.AppsV1Api(api).read_namespaced_deployment(dep, self.namespace)
            want = int(obj.spec.replicas or 0)
            ready = int((obj.status and obj.status.ready_replicas) or 0)
            if want == 0 or ready < want:
                waiting.append(f"{dep} ready {ready}/{want}")
        return waiting

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll; yield one event: ``success``, ``timeout`` (with what was still missing)."""
        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        missing: list[str] = ["not checked yet"]
        last_error = ""
        while True:
            try:
                async with hook.get_conn() as api:
                    missing = await self._probe(api)
                last_error = ""
            except Exception as err:
                # API hiccups are expected while control planes restart: keep waiting until the timeout.
                last_error = f"{type(err).__name__}: {str(err)[:300]}"
                self.log.warning("probe failed, will retry: %s", last_error)
            if not missing and not last_error:
                yield TriggerEvent({"status": "success", "elapsed": time.time() - self.started_at})
                return
            if time.time() - self.started_at > self.timeout:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "elapsed": time.time() - self.started_at,
                        "message": "; ".join(missing) + (f"; last error: {last_error}" if last_error else ""),
                    }
                )
                return
            self.log.info("waiting (%s): %s", self.check, "; ".join(missing) or last_error)
            await asyncio.sleep(self.poll_interval)
