"""The HyperShift operator's HostedCluster controller: provisioning, pause, status, teardown.

``hypershift-operator/controllers/hostedcluster/hostedcluster_controller.go`` (read at commit
3ee9615567), for each HostedCluster ``NAME`` in ``clusters``:

- provisioning: the control-plane namespace ``clusters-NAME`` and the HostedControlPlane, then the
  components the control-plane operator makes upstream (etcd, restored first when
  ``restoreSnapshotURL`` is set, then the API servers), in that order. A HostedCluster created
  paused is not provisioned until unpaused.
- pause: ``pausedUntil`` copied to the HostedControlPlane (``pauseHostedControlPlane``); outside a
  pause, the API server Deployments get their default replicas back. "Future" is judged by
  HyperShift's clock, which the ``clock`` fault can run ahead.
- status: its own ``ReconciliationActive``, ``HCP_CONDITIONS`` copied from the HostedControlPlane,
  ``Available`` from the HostedControlPlane's (``computeHostedClusterAvailability``), and its
  ``status.secretEncryption`` (key rotation state); written while paused too.
- teardown: when the HostedCluster goes, its members stop and the control-plane namespace (and
  everything in it) and the pod roots (the volumes) are deleted.

It may touch the HostedCluster's status, the control-plane namespace, the HostedControlPlane's spec,
and (through the other rooms) everything in the control-plane namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from typing import Any

from hcp_sandbox.controllers.apiservers import ApiServers
from hcp_sandbox.controllers.cluster import (
    RELEASE_IMAGE,
    ClusterRuntime,
    Context,
    condition,
    member_count,
    merge_conditions,
)
from hcp_sandbox.controllers.etcd import EtcdComponent
from hcp_sandbox.controllers.hostedcontrolplane import HostedControlPlaneController
from hcp_sandbox.controllers.pausereconcile import is_paused, reconciliation_active
from hcp_sandbox.errors import ApiError

log = logging.getLogger(__name__)

# The conditions the HostedCluster controller copies from the HostedControlPlane (among them, the
# ones the sandbox writes). EtcdSnapshotRestored and ReconciliationActive are NOT copied.
HCP_CONDITIONS = ("EtcdAvailable", "KubeAPIServerAvailable")


def hosted_cluster_available(hcp: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    """The HostedCluster's ``Available``, from its HostedControlPlane's.

    :param hcp: the HostedControlPlane (None while it does not exist).
    :param generation: the HostedCluster's generation.
    """
    cond = None
    if hcp is not None:
        cond = next(
            (c for c in (hcp.get("status") or {}).get("conditions") or [] if c["type"] == "Available"), None
        )
    if cond is None:
        return condition(
            "Available",
            "False",
            "WaitingForAvailable",
            "Waiting for hosted control plane to be healthy",
            generation,
        )
    if cond["status"] == "True":
        message = "The hosted control plane is available"
        return condition("Available", "True", "AsExpected", message, generation)
    return condition("Available", cond["status"], cond.get("reason", ""), cond.get("message", ""), generation)


class HostedClusterController:
    """Every HostedCluster of the store, and the runtime of each (``clusters``, shared with the manager)."""

    def __init__(
        self,
        ctx: Context,
        clusters: dict[tuple[str, str], ClusterRuntime],
        etcd: EtcdComponent,
        apiservers: ApiServers,
        hostedcontrolplane: HostedControlPlaneController,
    ) -> None:
        self.ctx = ctx
        self.clusters = clusters
        self.etcd = etcd
        self.apiservers = apiservers
        self.hostedcontrolplane = hostedcontrolplane

    def reconcile(self) -> None:
        """One pass over every HostedCluster: provision the new, reconcile the running, tear down the gone."""
        seen = set()
        for hc in self.ctx.store.list("hostedclusters"):
            key = (hc["metadata"]["namespace"], hc["metadata"]["name"])
            seen.add(key)
            rt = self.clusters.get(key)
            paused = is_paused(hc.get("spec", {}).get("pausedUntil"), self.ctx.now())
            if rt is None:
                rt = self.clusters[key] = ClusterRuntime(key[0], key[1], member_count(hc))
            if rt.phase == "pending" and not paused:
                # A paused HostedCluster is not reconciled at all, its creation included.
                rt.phase = "provisioning"
                rt.tasks.append(asyncio.create_task(self._provision(rt, hc), name=f"provision-{key[1]}"))
            if rt.phase in ("running", "failed"):
                self._reconcile_workloads(rt, hc, paused)
            self._reconcile_status(rt, hc, paused)
        for key in list(self.clusters):
            if key not in seen:
                rt = self.clusters.pop(key)
                self.ctx.faults.forget_namespace(rt.cp_namespace)
                asyncio.create_task(self._teardown(rt), name=f"teardown-{key[1]}")  # noqa: RUF006

    def _reconcile_workloads(self, rt: ClusterRuntime, hc: dict[str, Any], paused: bool) -> None:
        ns = rt.cp_namespace
        self.apiservers.reconcile(rt, paused)
        self.etcd.reconcile_status(rt)
        hcp = self.ctx.store.find("hostedcontrolplanes", ns, rt.name)
        if hcp is not None and hcp["spec"].get("pausedUntil") != hc.get("spec", {}).get("pausedUntil"):
            hcp["spec"]["pausedUntil"] = hc.get("spec", {}).get("pausedUntil")
            hcp["metadata"].pop("resourceVersion", None)
            self.ctx.store.replace("hostedcontrolplanes", hcp)

    def _reconcile_status(self, rt: ClusterRuntime, hc: dict[str, Any], paused: bool) -> None:
        """HostedControlPlane conditions from reality, then the HostedCluster's from those.

        As upstream: the control-plane operator writes the HostedControlPlane's (its own
        ``ReconciliationActive`` from its own ``pausedUntil``, ``EtcdAvailable`` from the StatefulSet,
        ``EtcdSnapshotRestored`` once and only there, ``Available``); the HostedCluster controller
        writes the HostedCluster's ``ReconciliationActive`` and copies ``HCP_CONDITIONS`` and
        ``Available`` from the HostedControlPlane (the functions above). Written while paused too.
        """
        now = self.ctx.now()
        hcp = self.ctx.store.find("hostedcontrolplanes", rt.cp_namespace, rt.name)
        if hcp is not None:
            hcp = self.hostedcontrolplane.reconcile_status(rt, hcp, now)
        gen = hc["metadata"].get("generation", 1)
        conditions = [reconciliation_active(hc.get("spec", {}).get("pausedUntil"), gen, now)]
        hcp_conditions = {c["type"]: c for c in ((hcp or {}).get("status") or {}).get("conditions") or []}
        for ctype in HCP_CONDITIONS:
            copied = hcp_conditions.get(ctype) or {
                "type": ctype,
                "status": "Unknown",
                "reason": "StatusUnknown",
                "message": "Condition not found in the HCP"
                if hcp
                else "The hosted control plane is not found",
            }
            conditions.append({**copied, "observedGeneration": gen})
        conditions.insert(0, hosted_cluster_available(hcp, gen))
        status = dict(hc.get("status") or {})
        status["conditions"] = merge_conditions(status.get("conditions"), conditions)
        # hostedcluster_controller.go copies the HostedControlPlane's key rotation state.
        encryption = ((hcp or {}).get("status") or {}).get("secretEncryption")
        if encryption:
            status["secretEncryption"] = encryption
        status.setdefault("version", {"desired": {"image": RELEASE_IMAGE}, "history": []})
        if status != hc.get("status"):
            with contextlib.suppress(ApiError):
                self.ctx.store.update_status("hostedclusters", rt.namespace, rt.name, status)

    async def _provision(self, rt: ClusterRuntime, hc: dict[str, Any]) -> None:
        try:
            await self._provision_inner(rt, hc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("provisioning %s failed", rt.name)
            rt.phase = "failed"
            rt.restore = rt.restore or (False, "ProvisioningFailed", str(exc))
        finally:
            self.ctx.on_change()
            self.ctx.kick()

    async def _provision_inner(self, rt: ClusterRuntime, hc: dict[str, Any]) -> None:
        ns = rt.cp_namespace
        labels = {"hypershift.openshift.io/hosted-control-plane": ns}
        self.ctx.ensure("namespaces", {"metadata": {"name": ns, "labels": labels}})
        spec = hc.get("spec", {})
        self.ctx.ensure(
            "hostedcontrolplanes",
            {
                "metadata": {
                    "name": rt.name,
                    "namespace": ns,
                    "annotations": {"hypershift.openshift.io/cluster": f"{rt.namespace}/{rt.name}"},
                },
                "spec": {
                    k: spec[k]
                    for k in (
                        "pausedUntil",
                        "etcd",
                        "secretEncryption",
                        "controllerAvailabilityPolicy",
                        "releaseImage",
                        "platform",
                        "networking",
                    )
                    if k in spec
                },
            },
        )
        urls = spec.get("etcd", {}).get("managed", {}).get("storage", {}).get("restoreSnapshotURL") or []
        self.etcd.create(rt, urls)
        if urls and not await self.etcd.restore(rt, urls[0]):
            return
        self.etcd.start(rt)
        rt.tasks.append(asyncio.create_task(self.apiservers.writer(rt), name=f"writer-{rt.name}"))
        await self.etcd.wait_available(rt, restored=bool(urls))
        rt.tasks.append(asyncio.create_task(self.apiservers.compactor(rt), name=f"compactor-{rt.name}"))
        self.apiservers.ensure(rt)
        rt.phase = "running"

    async def stop_runtime(self, rt: ClusterRuntime) -> None:
        """Cancel the cluster's loops and stop its etcd members."""
        for task in rt.tasks:
            task.cancel()
        for task in rt.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if rt.etcd is not None:
            await asyncio.to_thread(rt.etcd.stop)

    async def _teardown(self, rt: ClusterRuntime) -> None:
        """The HostedCluster is gone: its namespace, etcd processes and volumes go too."""
        await self.stop_runtime(rt)
        with contextlib.suppress(ApiError):
            self.ctx.store.delete("namespaces", None, rt.cp_namespace)
        await asyncio.to_thread(shutil.rmtree, self.ctx.paths.namespace_pods(rt.cp_namespace), True)
        self.ctx.on_change()
