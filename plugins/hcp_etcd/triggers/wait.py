"""Deferrable waits of a backup on the management cluster, one class per wait. Triggers only wait:
they change nothing."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client as async_client
from kubernetes_asyncio.client.rest import ApiException

from hcp_etcd.conditions import unmet_conditions
from hcp_etcd.naming import control_plane_namespace
from hcp_etcd.triggers.base import HostedClusterTrigger, KubernetesPollingTrigger, State

HYPERSHIFT = ("hypershift.openshift.io", "v1beta1")
PAUSED = {"ReconciliationActive": "False"}


def _state(missing: list[str]) -> tuple[State, str]:
    return ("waiting", "; ".join(missing)) if missing else ("done", "")


async def _hosted_cluster(api: async_client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await async_client.CustomObjectsApi(api).get_namespaced_custom_object(
        *HYPERSHIFT, namespace, "hostedclusters", name
    )


def paused_state(hc: dict[str, Any], hcp: dict[str, Any] | None, where: str) -> tuple[State, str]:
    """``done`` once the HostedCluster and its HostedControlPlane both report the pause.

    The HostedCluster controller writes ``ReconciliationActive=False`` on the HostedCluster and copies
    ``pausedUntil`` to the HostedControlPlane, where the control-plane operator (the one that would
    scale the API servers back) writes its own (hostedcluster_controller.go: pauseHostedControlPlane;
    hostedcontrolplane_controller.go: Reconcile).

    :param hc: the HostedCluster.
    :param hcp: its HostedControlPlane, None when not found.
    :param where: ``namespace/name`` of the HostedControlPlane, for the message.
    """
    missing = unmet_conditions(hc, PAUSED)
    if hcp is None:
        missing.append(f"HostedControlPlane {where} not found")
    else:
        missing += [f"HostedControlPlane {u}" for u in unmet_conditions(hcp, PAUSED)]
    return _state(missing)


class PodsGoneTrigger(KubernetesPollingTrigger):
    """Poll until no pod matches any of the label selectors in a namespace (a quiesce).

    :param namespace: the namespace.
    :param label_selectors: pod selectors, e.g. the API-server Deployments' ``matchLabels``.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def __init__(self, namespace: str, label_selectors: list[str], **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.namespace = namespace
        self.label_selectors = list(label_selectors)

    def probe_kwargs(self) -> dict[str, Any]:
        """This trigger's own arguments."""
        return {"namespace": self.namespace, "label_selectors": self.label_selectors}

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"pods {self.label_selectors} gone from {self.namespace}"

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """Done when no pod is left."""
        left: list[str] = []
        for selector in self.label_selectors:
            pods = await async_client.CoreV1Api(api).list_namespaced_pod(
                self.namespace, label_selector=selector
            )
            left += [p.metadata.name for p in pods.items]
        return _state([f"pods still present: {', '.join(sorted(left))}"] if left else [])


class DeploymentsReadyTrigger(KubernetesPollingTrigger):
    """Poll until each Deployment has ``readyReplicas >= replicas > 0`` (a resume).

    :param namespace: the namespace.
    :param deployments: the Deployments' names.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def __init__(self, namespace: str, deployments: list[str], **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.namespace = namespace
        self.deployments = list(deployments)

    def probe_kwargs(self) -> dict[str, Any]:
        """This trigger's own arguments."""
        return {"namespace": self.namespace, "deployments": self.deployments}

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"Deployments {self.deployments} ready in {self.namespace}"

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """Done when every Deployment is ready."""
        waiting = []
        for dep in self.deployments:
            obj = await async_client.AppsV1Api(api).read_namespaced_deployment(dep, self.namespace)
            want = int(obj.spec.replicas or 0)
            ready = int((obj.status and obj.status.ready_replicas) or 0)
            if want == 0 or ready < want:
                waiting.append(f"{dep} ready {ready}/{want}")
        return _state(waiting)


class HostedClusterAvailableTrigger(HostedClusterTrigger):
    """Poll until a HostedCluster is ``Available`` (and, after a pause, reconciling again).

    :param namespace: the HostedCluster's namespace.
    :param name: its name.
    :param reconciling: also wait for ``ReconciliationActive=True``.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def __init__(self, namespace: str, name: str, reconciling: bool = False, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(namespace, name, **kwargs)
        self.reconciling = reconciling

    def probe_kwargs(self) -> dict[str, Any]:
        """This trigger's own arguments."""
        return {**super().probe_kwargs(), "reconciling": self.reconciling}

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"HostedCluster {self.namespace}/{self.name} Available"

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """Done when the conditions hold."""
        wanted = {"Available": "True", **({"ReconciliationActive": "True"} if self.reconciling else {})}
        return _state(unmet_conditions(await _hosted_cluster(api, self.namespace, self.name), wanted))


class ReconciliationPausedTrigger(HostedClusterTrigger):
    """Poll until HyperShift reports a pause on the HostedCluster and on its HostedControlPlane.

    :param namespace: the HostedCluster's namespace.
    :param name: its name.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param timeout: seconds before a ``timeout`` event.
    :param poll_interval: seconds between polls.
    :param started_at: wall-clock start (kept across triggerer restarts).
    """

    def describe(self) -> str:
        """What is awaited, for the log."""
        return f"the pause of {self.namespace}/{self.name}"

    async def probe(self, api: async_client.ApiClient) -> tuple[State, str]:
        """Done when both objects say ``ReconciliationActive=False``."""
        hc = await _hosted_cluster(api, self.namespace, self.name)
        cp_namespace = control_plane_namespace(self.namespace, self.name)
        try:
            hcp = await async_client.CustomObjectsApi(api).get_namespaced_custom_object(
                *HYPERSHIFT, cp_namespace, "hostedcontrolplanes", self.name
            )
        except ApiException as err:
            if err.status != 404:
                raise
            hcp = None
        return paused_state(hc, hcp, f"{cp_namespace}/{self.name}")
