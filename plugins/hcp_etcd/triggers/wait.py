"""Deferrable waits on the management cluster. Triggers only wait: they change nothing."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client as async_client

from hcp_etcd.conditions import unmet_conditions
from hcp_etcd.triggers.base import KubernetesPollingTrigger, State

CHECKS = ("hosted_cluster_conditions", "pods_gone", "deployments_ready")


class HostedClusterWaitTrigger(KubernetesPollingTrigger):
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
        super().__init__(kubernetes_conn_id, timeout, poll_interval, started_at)
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; one of {CHECKS}")
        self.check = check
        self.namespace = namespace
        self.name = name
        self.conditions = conditions or {}
        self.label_selectors = label_selectors or []
        self.deployments = deployments or []

    def probe_kwargs(self) -> dict[str, Any]:
        """This trigger's own arguments."""
        return {
            "check": self.check,
            "namespace": self.namespace,
            "name": self.name,
            "conditions": self.conditions,
            "label_selectors": self.label_selectors,
            "deployments": self.deployments,
        }

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"{self.check} in {self.namespace}"

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """Done when nothing is missing."""
        missing = await self._missing(api)
        return ("waiting", "; ".join(missing)) if missing else ("done", "")

    async def _missing(self, api: async_client.ApiClient) -> list[str]:
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
