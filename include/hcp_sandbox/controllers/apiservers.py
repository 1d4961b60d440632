"""The API-server Deployments of a hosted control plane, and what their pods do to etcd.

- The Deployments ``kube-apiserver``, ``openshift-apiserver`` and ``openshift-oauth-apiserver``, as
  the control-plane operator creates them (``control-plane-operator/controllers/hostedcontrolplane/v2/
  kas``, ``oapi``, ``oauth``) and owns their replicas: outside a pause, they go back to the default.
- The ReplicaSet controller for them (kube-controller-manager): missing pods are created, the newest
  go on scale-down, each after the kubelet's delay; Deployment status counted as the API does.
- What a running kube-apiserver writes into its etcd: leases and Events (bound to etcd leases of
  ``--event-ttl``), and the periodic compaction.

It may touch the Deployments and their pods (through :class:`~hcp_sandbox.controllers.kubelet.Kubelet`
for pod status) and write into the hosted cluster's etcd; nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import aiohttp

from hcp_sandbox.controllers.cluster import RELEASE_IMAGE, ClusterRuntime, Context, merge_conditions, rs_hash
from hcp_sandbox.controllers.kubelet import Kubelet
from hcp_sandbox.errors import ApiError
from hcp_sandbox.store import now_rfc3339

log = logging.getLogger(__name__)

API_DEPLOYMENTS = ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver")


class ApiServers:
    """The API-server Deployments of every hosted cluster, their pods and their writes into etcd."""

    def __init__(self, ctx: Context, kubelet: Kubelet) -> None:
        self.ctx = ctx
        self.kubelet = kubelet

    def ensure(self, rt: ClusterRuntime) -> None:
        """Create the Deployments (default replicas: one per etcd member) if they do not exist."""
        for name in API_DEPLOYMENTS:
            self.ctx.ensure("deployments", api_deployment(rt.cp_namespace, name, rt.members))

    def reconcile(self, rt: ClusterRuntime, paused: bool) -> None:
        """Replicas (outside a pause), pods and status of each Deployment; ``rt.kas_ready`` updated.

        :param paused: the HostedCluster is paused: the replicas are left as they are.
        """
        ns = rt.cp_namespace
        for name in API_DEPLOYMENTS:
            dep = self.ctx.store.find("deployments", ns, name)
            if dep is None:
                continue
            if not paused and dep["spec"].get("replicas") != rt.members:
                # The control-plane operator owns the replicas: an unpause puts them back.
                dep["spec"]["replicas"] = rt.members
                dep["metadata"].pop("resourceVersion", None)
                dep = self.ctx.store.replace("deployments", dep)
            ready = self._reconcile_deployment(rt, dep)
            if name == "kube-apiserver":
                rt.kas_ready = ready

    def _reconcile_deployment(self, rt: ClusterRuntime, dep: dict[str, Any]) -> int:
        """The ReplicaSet controller and kubelet for one Deployment; returns its ready replicas."""
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        desired = int(dep["spec"].get("replicas") or 0)
        now = time.monotonic()
        pods = self.ctx.store.list("pods", ns, label_selector=f"app={name}")
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        for _ in range(desired - len(active)):
            pod = self.ctx.store.create("pods", self._api_pod(rt, dep))
            rt.timers[pod["metadata"]["name"]] = now + self.ctx.options.pod_ready_delay
            self.kubelet.write_pod_status(rt, pod, ready=False)
            active.append(pod)
        if len(active) > desired:
            # Newest first, like the ReplicaSet controller's preference for young pods.
            doomed = sorted(active, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
            for pod in doomed[: len(active) - desired]:
                pod["metadata"]["deletionTimestamp"] = now_rfc3339()
                pod["metadata"].pop("resourceVersion", None)
                pod = self.ctx.store.replace("pods", pod)
                rt.timers[pod["metadata"]["name"]] = now + self.ctx.options.pod_termination_delay
                self.kubelet.write_pod_status(rt, pod, ready=False)
                active.remove(next(p for p in active if p["metadata"]["name"] == pod["metadata"]["name"]))
        ready = 0
        for pod in self.ctx.store.list("pods", ns, label_selector=f"app={name}"):
            pname = pod["metadata"]["name"]
            due = rt.timers.get(pname, 0) <= now
            if pod["metadata"].get("deletionTimestamp"):
                if due:
                    with contextlib.suppress(ApiError):
                        self.ctx.store.delete("pods", ns, pname)
                    rt.timers.pop(pname, None)
                    rt.pod_state.pop(pname, None)
                continue
            # kube-apiserver cannot become ready without its etcd.
            can_serve = name != "kube-apiserver" or rt.etcd_available
            is_ready = due and can_serve
            self.kubelet.write_pod_status(rt, pod, ready=is_ready)
            ready += is_ready
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(active),
            "updatedReplicas": len(active),
            "conditions": merge_conditions(
                dep.get("status", {}).get("conditions"),
                [
                    {
                        "type": "Available",
                        "status": "True" if ready >= desired else "False",
                        "reason": "MinimumReplicasAvailable"
                        if ready >= desired
                        else "MinimumReplicasUnavailable",
                        "message": "Deployment has minimum availability."
                        if ready >= desired
                        else "Deployment does not have minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable",
                        "message": f'ReplicaSet "{name}-{rs_hash(name)}" has successfully progressed.',
                    },
                ],
            ),
        }
        # Like the real API, zero counts are omitted (omitempty).
        if ready:
            status["readyReplicas"] = status["availableReplicas"] = ready
        else:
            status["unavailableReplicas"] = max(desired, len(active))
        if not status["replicas"]:
            del status["replicas"], status["updatedReplicas"]
        if status != dep.get("status"):
            self.ctx.store.update_status("deployments", ns, name, status)
        return ready

    def _api_pod(self, rt: ClusterRuntime, dep: dict[str, Any]) -> dict[str, Any]:
        name = dep["metadata"]["name"]
        template = dep["spec"]["template"]
        return {
            "metadata": {
                "name": f"{name}-{rs_hash(name)}-{secrets.token_hex(3)[:5]}",
                "namespace": rt.cp_namespace,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{name}-{rs_hash(name)}",
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": "ip-10-0-1-10.ec2.internal"},
        }

    async def compactor(self, rt: ClusterRuntime) -> None:
        """kube-apiserver's compactor, while it has ready replicas.

        k8s.io/apiserver/pkg/storage/etcd3/compact.go (vendored by HyperShift): every interval one
        transaction on ``compact_rev_key`` (if its version is the one last seen, put the revision
        seen then; else read it), and on success compact to the revision seen one interval earlier.
        A freshly started API server only records on its first success: history survives at least
        one interval, two after a restart.
        """
        assert rt.etcd is not None and rt.client is not None
        key = _b64_text(b"compact_rev_key")
        version, rev = 0, 0
        while True:
            await asyncio.sleep(self.ctx.options.compaction_interval)
            urls = [m.client_url for m, ok in zip(rt.etcd.members, rt.health, strict=False) if ok]
            if rt.kas_ready <= 0:
                version, rev = 0, 0  # every API server stopped: the next one starts afresh
                continue
            if not urls:
                continue
            body = {
                "compare": [{"key": key, "target": "VERSION", "result": "EQUAL", "version": str(version)}],
                "success": [{"request_put": {"key": key, "value": _b64_text(str(rev).encode())}}],
                "failure": [{"request_range": {"key": key}}],
            }
            try:
                answer = await rt.client.txn(urls[0], body)
                current = int(answer["header"]["revision"])
                if not answer.get("succeeded"):
                    kvs = answer["responses"][0]["response_range"].get("kvs") or [{}]
                    version, rev = int(kvs[0].get("version", 0)), current
                    continue
                version += 1
                if rev:
                    await rt.client.compact(urls[0], rev)
                    rt.compactions += 1
                    log.info("%s: compacted etcd at revision %s", rt.name, rev)
                rev = current
            except (RuntimeError, KeyError, ValueError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("%s: compaction failed: %s", rt.name, exc)

    async def _event_lease(self, rt: ClusterRuntime, url: str, leases: dict[str, Any]) -> int:
        """The etcd lease for an Event, reused as kube-apiserver's lease manager reuses one.

        k8s.io/apiserver/pkg/storage/etcd3/lease_manager.go: GetLease reuses the previous lease while
        it outlives the TTL by at most the reuse duration (5% of the TTL, at most 60 s), else grants
        TTL + reuse duration.
        """
        ttl = max(int(self.ctx.options.event_ttl), 1)
        reuse = min(int(0.05 * ttl), 60)
        now = time.monotonic()
        expires = leases.get("expires", 0.0)
        if now + ttl < expires and now + ttl + reuse > expires:
            return int(leases["id"])
        lease = await rt.client.grant(url, ttl + reuse)
        leases.update(id=lease, expires=now + ttl + reuse)
        return lease

    async def writer(self, rt: ClusterRuntime) -> None:
        """Leases and events, as kube-apiserver writes them, while it has ready replicas."""
        assert rt.etcd is not None and rt.client is not None
        interval = 1.0 / self.ctx.options.writes_per_second
        leases: dict[str, Any] = {}  # the lease manager's last lease: id, expires
        while True:
            await asyncio.sleep(interval)
            if rt.kas_ready <= 0:
                continue
            urls = [m.client_url for m, ok in zip(rt.etcd.members, rt.health, strict=False) if ok]
            if not urls:
                continue
            n = rt.writes
            if n % 2:
                key = f"/kubernetes.io/leases/kube-system/kube-apiserver-{n % 3}"
                value = {
                    "kind": "Lease",
                    "apiVersion": "coordination.k8s.io/v1",
                    "spec": {"holderIdentity": f"kube-apiserver-{n % 3}", "renewTime": now_rfc3339()},
                }
            else:
                # A bounded set of event names: steady writes without unbounded growth.
                key = f"/kubernetes.io/events/openshift-kube-apiserver/kube-apiserver.{n % 500:05x}"
                value = {
                    "kind": "Event",
                    "apiVersion": "v1",
                    "reason": "LeaderElection",
                    "message": f"heartbeat {n}",
                    "lastTimestamp": now_rfc3339(),
                }
            url = urls[n % len(urls)]
            try:
                if value["kind"] == "Event":
                    # Events carry an etcd lease of --event-ttl: the etcd leader revokes it when it
                    # expires, API servers running or not, and each revocation is a new revision.
                    lease = await self._event_lease(rt, url, leases)
                    await rt.client.put_with_lease(url, key, json.dumps(value).encode(), lease, timeout=2.0)
                else:
                    await rt.client.put(url, key, json.dumps(value).encode(), timeout=2.0)
                rt.writes += 1
            except (RuntimeError, aiohttp.ClientError, TimeoutError, OSError):
                await asyncio.sleep(0.5)


def _b64_text(data: bytes) -> str:
    return base64.b64encode(data).decode()


def api_deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """One API server Deployment of the control-plane namespace."""
    labels = {"app": name, "hypershift.openshift.io/control-plane-component": name}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": RELEASE_IMAGE,
                            "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
                        }
                    ]
                },
            },
        },
    }
