"""The control-plane operator's HostedControlPlane controller: the HostedControlPlane's status.

``control-plane-operator/controllers/hostedcontrolplane/hostedcontrolplane_controller.go`` (read at
commit 3ee9615567): its own ``ReconciliationActive`` from its own ``pausedUntil`` (``Reconcile``),
``EtcdAvailable`` from the etcd StatefulSet (``etcdStatefulSetCondition``), ``KubeAPIServerAvailable``,
``EtcdSnapshotRestored`` once and only there (``etcdRestoredCondition``), and ``Available`` from
those (``reconcileAvailabilityStatus``). The upstream decisions are the pure functions at the top.

It may touch the HostedControlPlane's status only; it reads the etcd StatefulSet, its pods and the
kube-apiserver Deployment.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

from hcp_sandbox.controllers.cluster import ClusterRuntime, Context, condition, merge_conditions
from hcp_sandbox.controllers.pausereconcile import reconciliation_active
from hcp_sandbox.errors import ApiError


def etcd_statefulset_condition(sts: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    """``EtcdAvailable`` from the etcd StatefulSet: ready replicas >= quorum (replicas / 2 + 1).

    :param sts: the StatefulSet ``etcd`` (None: not found).
    :param generation: the HostedControlPlane's generation.
    """
    if sts is None:
        return condition("EtcdAvailable", "False", "StatefulSetNotFound", "", generation)
    replicas = int((sts.get("spec") or {}).get("replicas") or 0)
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    if ready >= replicas // 2 + 1:
        return condition("EtcdAvailable", "True", "QuorumAvailable", "", generation)
    # Upstream puts a pending PVC's events into the message; the sandbox's claims are always bound.
    return condition(
        "EtcdAvailable", "False", "EtcdWaitingForQuorum", "Waiting for etcd to reach quorum", generation
    )


def etcd_restored_condition(
    sts: dict[str, Any], pods: list[dict[str, Any]], generation: int
) -> dict[str, Any] | None:
    """``EtcdSnapshotRestored``, or None while it cannot be told (the caller sets it only while absent).

    Only once every replica is Ready; True when every pod's ``etcd-init`` is Ready (it completed),
    False with the last termination's reason when one exited non-zero; never a message.

    :param sts: the StatefulSet ``etcd``.
    :param pods: the pods labelled ``app=etcd``.
    :param generation: the HostedControlPlane's generation.
    """
    replicas = int((sts.get("spec") or {}).get("replicas") or 0)
    if int((sts.get("status") or {}).get("readyReplicas") or 0) != replicas:
        return None
    done = 0
    for pod in pods:
        for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if status.get("name") != "etcd-init":
                continue
            terminated = (status.get("lastState") or {}).get("terminated")
            if status.get("ready"):
                done += 1
            elif terminated and terminated.get("exitCode") != 0:
                reason = terminated.get("reason", "")
                return condition("EtcdSnapshotRestored", "False", reason, "", generation)
    if done == replicas:
        return condition("EtcdSnapshotRestored", "True", "AsExpected", "", generation)
    return None


def hcp_available(conditions: list[dict[str, Any]], generation: int) -> dict[str, Any]:
    """The HostedControlPlane's ``Available``: the first unmet prerequisite's reason and message.

    (The sandbox has no infrastructure, kubeconfig, load-balancer or component checks: those cases of
    upstream's switch never apply.)

    :param conditions: the HostedControlPlane's conditions computed so far.
    :param generation: its generation.
    """
    by_type = {c["type"]: c for c in conditions}
    for ctype in ("EtcdAvailable", "KubeAPIServerAvailable"):
        cond = by_type.get(ctype)
        if cond is not None and cond["status"] == "False":
            return condition("Available", "False", cond["reason"], cond["message"], generation)
    if not any(t in by_type for t in ("EtcdAvailable", "KubeAPIServerAvailable")):
        return condition("Available", "False", "StatusUnknown", "", generation)
    return condition("Available", "True", "AsExpected", "", generation)


class HostedControlPlaneController:
    """The status of every HostedControlPlane, from reality (ready etcd replicas, ready API servers)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def reconcile_status(
        self, rt: ClusterRuntime, hcp: dict[str, Any], now: datetime.datetime
    ) -> dict[str, Any]:
        """The control-plane operator's status of one HostedControlPlane; returns the stored object."""
        gen = hcp["metadata"].get("generation", 1)
        spec = hcp.get("spec") or {}
        old = (hcp.get("status") or {}).get("conditions") or []
        sts = self.ctx.store.find("statefulsets", rt.cp_namespace, "etcd")
        kas = self.ctx.store.find("deployments", rt.cp_namespace, "kube-apiserver")
        kas_ok = kas is not None and rt.kas_ready > 0
        conditions = [
            etcd_statefulset_condition(sts, gen),
            condition(
                "KubeAPIServerAvailable",
                "True" if kas_ok else "False",
                "AsExpected" if kas_ok else "NotFound" if kas is None else "WaitingForAvailable",
                "Kube APIServer deployment is available"
                if kas_ok
                else "Waiting for Kube APIServer deployment to become available",
                gen,
            ),
        ]
        urls = ((spec.get("etcd") or {}).get("managed") or {}).get("storage", {}).get("restoreSnapshotURL")
        restored = next((c for c in old if c["type"] == "EtcdSnapshotRestored"), None)
        if restored is None and urls and sts is not None:
            pods = self.ctx.store.list("pods", rt.cp_namespace, label_selector="app=etcd")
            restored = etcd_restored_condition(sts, pods, gen)
        if restored is not None:
            conditions.append(restored)
        conditions.insert(0, hcp_available(conditions, gen))
        conditions.append(reconciliation_active(spec.get("pausedUntil"), gen, now))
        hcp_status = dict(hcp.get("status") or {})
        hcp_status["conditions"] = merge_conditions(old, conditions)
        hcp_status["ready"] = hcp_status["conditions"][0]["status"] == "True"
        hcp_status["initialized"] = rt.phase == "running"
        if hcp_status != hcp.get("status"):
            with contextlib.suppress(ApiError):
                return self.ctx.store.update_status(
                    "hostedcontrolplanes", rt.cp_namespace, rt.name, hcp_status
                )
        return hcp
