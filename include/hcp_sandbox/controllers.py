"""The operators of the sandbox: what HyperShift, the kube controllers and the kubelet would do.

One asyncio loop in the serve process, driven by store events and a short tick:

- provision a hosted cluster when its HostedCluster appears (control-plane namespace,
  HostedControlPlane, etcd StatefulSet and pods backed by real etcd members, API server
  Deployments), restoring etcd first when ``restoreSnapshotURL`` is set (HyperShift's etcd-init);
- tear it down when the HostedCluster goes (namespace, objects, etcd processes, volumes);
- HyperShift's pause semantics (``hypershift.process_paused_until``: ``strconv.ParseBool``, then
  RFC3339): while paused only status is written (``ReconciliationActive=False``); otherwise the API
  server Deployments are put back to their default replicas. "Future" is judged by HyperShift's
  clock, which the ``clock`` fault can run ahead (to pass a deadline of minutes in seconds);
- Deployment -> Pod (ready / gone after a delay), pod status as a kubelet reports it;
- conditions from reality (ready etcd replicas, ready kube-apiserver pods), written where and when
  HyperShift writes them (``hypershift.py``);
- a writer per hosted cluster that puts leases and events into etcd while kube-apiserver has ready
  replicas, as an API server does (Events bound to etcd leases of ``--event-ttl``), and compacts
  etcd periodically as kube-apiserver's compactor does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hcp_sandbox import etcd, hypershift, pki
from hcp_sandbox.hypershift import is_paused
from hcp_sandbox.layout import SandboxPaths, free_port
from hcp_sandbox.podexec import PodTarget
from hcp_sandbox.store import ApiError, Store

log = logging.getLogger(__name__)

API_DEPLOYMENTS = ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver")
ETCD_CONTAINERS = ("etcd", "etcd-metrics", "healthz", "etcd-defrag")
HA = "HighlyAvailable"
SINGLE = "SingleReplica"
RELEASE_IMAGE = "quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64"
ETCD_IMAGE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "e" * 64
HYPERSHIFT = "hypershift.openshift.io/v1beta1"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def control_plane_namespace(namespace: str, name: str) -> str:
    """HyperShift's control-plane namespace: ``<hc namespace>-<hc name with . -> ->``."""
    return f"{namespace}-{name.replace('.', '-')}"


def member_count(hc: dict[str, Any]) -> int:
    """3 etcd members (and API server replicas) for HighlyAvailable, 1 for SingleReplica.

    A missing policy is HighlyAvailable: the CRD's default (``hostedcluster_types.go``).
    """
    return 1 if hc.get("spec", {}).get("controllerAvailabilityPolicy", HA) == SINGLE else 3


def merge_conditions(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New conditions, keeping ``lastTransitionTime`` where the status did not change."""
    previous = {c["type"]: c for c in old or []}
    now = now_rfc3339()
    merged = []
    for cond in new:
        prev = previous.pop(cond["type"], None)
        same = prev is not None and prev.get("status") == cond["status"]
        merged.append({**cond, "lastTransitionTime": prev["lastTransitionTime"] if same else now})
    return merged + list(previous.values())


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


@dataclass
class Options:
    """Timings of the simulated kubelet and API server."""

    pod_ready_delay: float = 1.0
    pod_termination_delay: float = 1.0
    writes_per_second: float = 5.0
    etcd_start_timeout: float = 60.0
    # kube-apiserver's --etcd-compaction-interval (default 5m, which HyperShift keeps;
    # k8s.io/apiserver/pkg/storage/storagebackend/config.go: DefaultCompactInterval).
    compaction_interval: float = 300.0
    # kube-apiserver's --event-ttl: HyperShift sets 3h (control-plane-operator/controllers/
    # hostedcontrolplane/v2/kas/config.go).
    event_ttl: float = 10800.0


@dataclass
class ClusterRuntime:
    """What the sandbox holds for one hosted cluster beyond its API objects."""

    namespace: str
    name: str
    members: int
    etcd: etcd.EtcdCluster | None = None
    client: etcd.EtcdClient | None = None
    phase: str = "pending"  # pending -> provisioning -> running | failed
    restore: tuple[bool, str, str] | None = None  # etcd-init's outcome (ok, reason, its log)
    init_failed_at: float | None = None  # monotonic time etcd-init first failed (the kubelet's back-off)
    health: list[bool] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)  # members stopped by the etcd-stop fault
    volume_free: dict[str, int] = field(default_factory=dict)
    pod_state: dict[str, Any] = field(default_factory=dict)  # last written state per pod
    timers: dict[str, float] = field(default_factory=dict)  # pod -> ready-at / remove-at
    kas_ready: int = 0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    writes: int = 0
    compactions: int = 0

    @property
    def cp_namespace(self) -> str:
        return control_plane_namespace(self.namespace, self.name)

    @property
    def etcd_available(self) -> bool:
        """Quorum: what HyperShift's EtcdAvailable and a kube-apiserver need."""
        return bool(self.health) and sum(self.health) >= len(self.health) // 2 + 1

    def init_restarts(self, now: float) -> int:
        """Restarts of a failing etcd-init so far, on the kubelet's back-off (10 s doubling, 5 min cap).

        The sandbox does not run it again: it would fail the same way (the same URL, the same file).
        """
        if self.init_failed_at is None:
            return 0
        elapsed, restarts, delay, at = now - self.init_failed_at, 0, 10.0, 10.0
        while at <= elapsed:
            restarts += 1
            delay = min(delay * 2, 300.0)
            at += delay
        return restarts


class ControlPlane:
    """All controllers of the sandbox, for every hosted cluster in the store."""

    def __init__(
        self,
        store: Store,
        paths: SandboxPaths,
        ca: tuple[bytes, bytes],
        options: Options | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.paths = paths
        self.ca_cert, self.ca_key = ca
        self.options = options or Options()
        self.on_change = on_change or (lambda: None)
        self.clusters: dict[tuple[str, str], ClusterRuntime] = {}
        self.split_brain_restores = 0
        # The `clock` fault: how far HyperShift's "now" runs ahead of real time (pause check only).
        self.clock_ahead_seconds = 0.0
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.store.subscribe(self._on_event)
        self._main = asyncio.create_task(self._run(), name="controllers")

    async def close(self) -> None:
        """Stop every controller and every etcd member."""
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        await asyncio.gather(*(self._stop_runtime(rt) for rt in self.clusters.values()))
        if self._session is not None:
            await self._session.close()

    def _on_event(self, event: str, plural: str, obj: dict[str, Any]) -> None:
        # Called synchronously by the store, possibly from another thread.
        if self._loop is not None and plural in ("hostedclusters", "deployments", "pods"):
            self._loop.call_soon_threadsafe(self._kick.set)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=0.25)
            self._kick.clear()
            try:
                self.reconcile_all()
            except Exception:
                log.exception("reconcile failed")

    # -- queries used by the serve process, exec and tests ------------------------------------

    def runtime_for_namespace(self, cp_namespace: str) -> ClusterRuntime | None:
        return next((rt for rt in self.clusters.values() if rt.cp_namespace == cp_namespace), None)

    def resolve_pod(self, namespace: str, pod: str) -> PodTarget | None:
        """Where an exec into ``namespace/pod`` runs (the :class:`PodExecHandler` resolver)."""
        root = self.paths.pod_root(namespace, pod)
        rt = self.runtime_for_namespace(namespace)
        if rt is not None and rt.etcd is not None:
            for member in rt.etcd.members:
                if member.name == pod:
                    return PodTarget(root, member.client_port, rt.volume_free.get(pod))
        return PodTarget(root)

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """What a container printed: etcd-init's output for the etcd pods of a restore, else nothing."""
        rt = self.runtime_for_namespace(namespace)
        if rt is None or container != "etcd-init" or rt.restore is None:
            return ""
        return rt.restore[2] if rt.restore[2].endswith("\n") else rt.restore[2] + "\n"

    def describe(self) -> dict[str, Any]:
        """The hosted clusters part of ``sandbox.json``."""
        out: dict[str, Any] = {}
        for rt in self.clusters.values():
            members = rt.etcd.members if rt.etcd else []
            out[rt.name] = {
                "namespace": rt.namespace,
                "control_plane_namespace": rt.cp_namespace,
                "members": rt.members,
                "availability": HA if rt.members == 3 else SINGLE,
                "phase": rt.phase,
                "etcd": [
                    {
                        "pod": m.name,
                        "client_url": m.client_url,
                        "client_port": m.client_port,
                        "peer_port": m.peer_port,
                        "pid": m.pid,
                        "pod_root": str(m.pod_root),
                        "data_dir": str(m.data_dir),
                    }
                    for m in members
                ],
            }
        return out

    def now(self) -> datetime.datetime:
        """HyperShift's "now": real time plus the ``clock`` fault's offset."""
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.clock_ahead_seconds)

    def etcd_pids(self) -> list[int]:
        return [pid for rt in self.clusters.values() if rt.etcd for pid in rt.etcd.pids]

    async def wait_running(self, names: list[tuple[str, str]], timeout: float) -> None:
        """Wait until the given hosted clusters are provisioned and Available."""
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for key in names:
                rt = self.clusters.get(key)
                if rt is not None and rt.phase == "failed":
                    raise RuntimeError(f"hosted cluster {key[1]} failed to provision")
                hc = self.store.find("hostedclusters", *key)
                available = hc is not None and any(
                    c["type"] == "Available" and c["status"] == "True"
                    for c in hc.get("status", {}).get("conditions", [])
                )
                if not available:
                    pending.append(key[1])
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"hosted clusters not Available after {timeout:.0f}s: {', '.join(pending)}"
                )
            await asyncio.sleep(0.2)

    # -- faults ------------------------------------------------------------------------------

    async def handle_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The fault kinds owned by the controllers: etcd-stop/start, restore-split-brain, volume, clock."""
        kind = spec.get("kind")
        if kind == "clock":
            return self._set_clock(spec.get("ahead_seconds"))
        if kind == "restore-split-brain":
            self.split_brain_restores += int(spec.get("count", 1))
            return {"kind": kind, "pending": self.split_brain_restores}
        namespace, pod = spec.get("namespace", ""), spec.get("pod", "")
        rt = self.runtime_for_namespace(namespace)
        if rt is None or rt.etcd is None or pod not in {m.name for m in rt.etcd.members}:
            raise ApiError(404, "NotFound", f"no etcd pod {namespace}/{pod}")
        member = next(m for m in rt.etcd.members if m.name == pod)
        if kind == "etcd-stop":
            rt.stopped.add(member.index)
            await asyncio.to_thread(etcd.EtcdCluster.stop_member, member)
        elif kind == "etcd-start":
            rt.stopped.discard(member.index)
            rt.etcd.start_member(member)
        elif kind == "volume":
            free = spec.get("free_bytes")
            if free is None or int(free) < 0:
                rt.volume_free.pop(pod, None)
            else:
                rt.volume_free[pod] = int(free)
        else:
            raise ApiError(400, "BadRequest", f"unknown fault kind {kind!r}")
        self.on_change()
        self._kick.set()
        return {"kind": kind, "namespace": namespace, "pod": pod}

    def _set_clock(self, ahead: Any) -> dict[str, Any]:
        """Run HyperShift's clock ``ahead`` seconds ahead of real time (0: real time again)."""
        if isinstance(ahead, bool) or not isinstance(ahead, int | float) or not 0 <= ahead <= 10**9:
            raise ApiError(400, "BadRequest", "clock fault needs 'ahead_seconds', a number >= 0")
        self.clock_ahead_seconds = float(ahead)
        self.on_change()
        # Reconcile now: a deadline passed by the jump is acted on at once, not at the next tick.
        self._kick.set()
        return {
            "kind": "clock",
            "ahead_seconds": self.clock_ahead_seconds,
            "now": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    # -- reconcile -----------------------------------------------------------------------------

    def reconcile_all(self) -> None:
        seen = set()
        for hc in self.store.list("hostedclusters"):
            key = (hc["metadata"]["namespace"], hc["metadata"]["name"])
            seen.add(key)
            rt = self.clusters.get(key)
            paused = is_paused(hc.get("spec", {}).get("pausedUntil"), self.now())
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
                asyncio.create_task(self._teardown(rt), name=f"teardown-{key[1]}")  # noqa: RUF006

    def _reconcile_workloads(self, rt: ClusterRuntime, hc: dict[str, Any], paused: bool) -> None:
        ns = rt.cp_namespace
        for name in API_DEPLOYMENTS:
            dep = self.store.find("deployments", ns, name)
            if dep is None:
                continue
            if not paused and dep["spec"].get("replicas") != rt.members:
                # The control-plane operator owns the replicas: an unpause puts them back.
                dep["spec"]["replicas"] = rt.members
                dep["metadata"].pop("resourceVersion", None)
                dep = self.store.replace("deployments", dep)
            ready = self._reconcile_deployment(rt, dep)
            if name == "kube-apiserver":
                rt.kas_ready = ready
        if rt.etcd is not None:
            for member in rt.etcd.members:
                self._write_etcd_pod_status(rt, member)
        hcp = self.store.find("hostedcontrolplanes", ns, rt.name)
        if hcp is not None and hcp["spec"].get("pausedUntil") != hc.get("spec", {}).get("pausedUntil"):
            hcp["spec"]["pausedUntil"] = hc.get("spec", {}).get("pausedUntil")
            hcp["metadata"].pop("resourceVersion", None)
            self.store.replace("hostedcontrolplanes", hcp)

    def _reconcile_deployment(self, rt: ClusterRuntime, dep: dict[str, Any]) -> int:
        """The ReplicaSet controller and kubelet for one Deployment; returns its ready replicas."""
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        desired = int(dep["spec"].get("replicas") or 0)
        now = time.monotonic()
        pods = self.store.list("pods", ns, label_selector=f"app={name}")
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        for _ in range(desired - len(active)):
            pod = self.store.create("pods", self._api_pod(rt, dep))
            rt.timers[pod["metadata"]["name"]] = now + self.options.pod_ready_delay
            self._write_pod_status(rt, pod, ready=False)
            active.append(pod)
        if len(active) > desired:
            # Newest first, like the ReplicaSet controller's preference for young pods.
            doomed = sorted(active, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
            for pod in doomed[: len(active) - desired]:
                pod["metadata"]["deletionTimestamp"] = now_rfc3339()
                pod["metadata"].pop("resourceVersion", None)
                pod = self.store.replace("pods", pod)
                rt.timers[pod["metadata"]["name"]] = now + self.options.pod_termination_delay
                self._write_pod_status(rt, pod, ready=False)
                active.remove(next(p for p in active if p["metadata"]["name"] == pod["metadata"]["name"]))
        ready = 0
        for pod in self.store.list("pods", ns, label_selector=f"app={name}"):
            pname = pod["metadata"]["name"]
            due = rt.timers.get(pname, 0) <= now
            if pod["metadata"].get("deletionTimestamp"):
                if due:
                    with contextlib.suppress(ApiError):
                        self.store.delete("pods", ns, pname)
                    rt.timers.pop(pname, None)
                    rt.pod_state.pop(pname, None)
                continue
            # kube-apiserver cannot become ready without its etcd.
            can_serve = name != "kube-apiserver" or rt.etcd_available
            is_ready = due and can_serve
            self._write_pod_status(rt, pod, ready=is_ready)
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
                        "message": f'ReplicaSet "{name}-{_rs_hash(name)}" has successfully progressed.',
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
            self.store.update_status("deployments", ns, name, status)
        return ready

    def _api_pod(self, rt: ClusterRuntime, dep: dict[str, Any]) -> dict[str, Any]:
        name = dep["metadata"]["name"]
        template = dep["spec"]["template"]
        return {
            "metadata": {
                "name": f"{name}-{_rs_hash(name)}-{secrets.token_hex(3)[:5]}",
                "namespace": rt.cp_namespace,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{name}-{_rs_hash(name)}",
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": "ip-10-0-1-10.ec2.internal"},
        }

    def _write_pod_status(
        self, rt: ClusterRuntime, pod: dict[str, Any], *, ready: bool, **kwargs: Any
    ) -> None:
        """Write a kubelet-style status when the pod's state changed since the last write."""
        pname = pod["metadata"]["name"]
        state = (ready, tuple(sorted(kwargs.items())))
        if rt.pod_state.get(pname) == state:
            return
        rt.pod_state[pname] = state
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        status = pod_status(containers, ready=ready, **kwargs)
        with contextlib.suppress(ApiError):
            self.store.update_status("pods", pod["metadata"]["namespace"], pname, status)

    def _write_etcd_pod_status(self, rt: ClusterRuntime, member: etcd.Member) -> None:
        pod = self.store.find("pods", rt.cp_namespace, member.name)
        if pod is None:
            return
        healthy = member.index < len(rt.health) and rt.health[member.index]
        # Pods of a restore have the etcd-init init container: its status is what a kubelet reports.
        init = {"init": "completed"} if rt.restore is not None else {}
        if rt.restore is not None and not rt.restore[0]:
            restarts = rt.init_restarts(time.monotonic())
            self._write_pod_status(rt, pod, ready=False, init="failed", init_restarts=restarts)
        elif rt.phase != "running" and not member.running:
            self._write_pod_status(rt, pod, ready=False, initializing=True)
        elif not member.running:
            self._write_pod_status(rt, pod, ready=False, crashed="etcd", **init)
        else:
            self._write_pod_status(rt, pod, ready=healthy, **init)
        ready_members = sum(rt.health)
        sts = self.store.find("statefulsets", rt.cp_namespace, "etcd")
        if sts is not None:
            status = {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": rt.members,
                "currentReplicas": rt.members,
                "updatedReplicas": rt.members,
                "availableReplicas": ready_members,
                "readyReplicas": ready_members,
                "currentRevision": f"etcd-{_rs_hash('etcd')}",
                "updateRevision": f"etcd-{_rs_hash('etcd')}",
                "collisionCount": 0,
            }
            if status != sts.get("status"):
                self.store.update_status("statefulsets", rt.cp_namespace, "etcd", status)

    def _reconcile_status(self, rt: ClusterRuntime, hc: dict[str, Any], paused: bool) -> None:
        """HostedControlPlane conditions from reality, then the HostedCluster's from those.

        As upstream: the control-plane operator writes the HostedControlPlane's (its own
        ``ReconciliationActive`` from its own ``pausedUntil``, ``EtcdAvailable`` from the StatefulSet,
        ``EtcdSnapshotRestored`` once and only there, ``Available``); the HostedCluster controller
        writes the HostedCluster's ``ReconciliationActive`` and copies ``HCP_CONDITIONS`` and
        ``Available`` from the HostedControlPlane (see ``hypershift.py``). Written while paused too.
        """
        now = self.now()
        hcp = self.store.find("hostedcontrolplanes", rt.cp_namespace, rt.name)
        if hcp is not None:
            hcp = self._reconcile_hcp_status(rt, hcp, now)
        gen = hc["metadata"].get("generation", 1)
        conditions = [hypershift.reconciliation_active(hc.get("spec", {}).get("pausedUntil"), gen, now)]
        hcp_conditions = {c["type"]: c for c in ((hcp or {}).get("status") or {}).get("conditions") or []}
        for ctype in hypershift.HCP_CONDITIONS:
            copied = hcp_conditions.get(ctype) or {
                "type": ctype,
                "status": "Unknown",
                "reason": "StatusUnknown",
                "message": "Condition not found in the HCP"
                if hcp
                else "The hosted control plane is not found",
            }
            conditions.append({**copied, "observedGeneration": gen})
        conditions.insert(0, hypershift.hosted_cluster_available(hcp, gen))
        status = dict(hc.get("status") or {})
        status["conditions"] = merge_conditions(status.get("conditions"), conditions)
        status.setdefault("version", {"desired": {"image": RELEASE_IMAGE}, "history": []})
        if status != hc.get("status"):
            with contextlib.suppress(ApiError):
                self.store.update_status("hostedclusters", rt.namespace, rt.name, status)

    def _reconcile_hcp_status(
        self, rt: ClusterRuntime, hcp: dict[str, Any], now: datetime.datetime
    ) -> dict[str, Any]:
        """The control-plane operator's status of one HostedControlPlane; returns the stored object."""
        gen = hcp["metadata"].get("generation", 1)
        spec = hcp.get("spec") or {}
        old = (hcp.get("status") or {}).get("conditions") or []
        sts = self.store.find("statefulsets", rt.cp_namespace, "etcd")
        kas = self.store.find("deployments", rt.cp_namespace, "kube-apiserver")
        kas_ok = kas is not None and rt.kas_ready > 0
        conditions = [
            hypershift.etcd_statefulset_condition(sts, gen),
            condition(
                "KubeAPIServerAvailable",
                kas_ok,
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
            pods = self.store.list("pods", rt.cp_namespace, label_selector="app=etcd")
            restored = hypershift.etcd_restored_condition(sts, pods, gen)
        if restored is not None:
            conditions.append(restored)
        conditions.insert(0, hypershift.hcp_available(conditions, gen))
        conditions.append(hypershift.reconciliation_active(spec.get("pausedUntil"), gen, now))
        hcp_status = dict(hcp.get("status") or {})
        hcp_status["conditions"] = merge_conditions(old, conditions)
        hcp_status["ready"] = hcp_status["conditions"][0]["status"] == "True"
        hcp_status["initialized"] = rt.phase == "running"
        if hcp_status != hcp.get("status"):
            with contextlib.suppress(ApiError):
                return self.store.update_status("hostedcontrolplanes", rt.cp_namespace, rt.name, hcp_status)
        return hcp

    # -- provisioning -------------------------------------------------------------------------

    def _ensure(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.store.create(plural, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise
            return self.store.get(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])

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
            self.on_change()
            self._kick.set()

    async def _provision_inner(self, rt: ClusterRuntime, hc: dict[str, Any]) -> None:
        ns = rt.cp_namespace
        labels = {"hypershift.openshift.io/hosted-control-plane": ns}
        self._ensure("namespaces", {"metadata": {"name": ns, "labels": labels}})
        spec = hc.get("spec", {})
        self._ensure(
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
        server = pki.issue_cert(
            self.ca_cert,
            self.ca_key,
            f"etcd-server-{ns}",
            dns_names=["localhost", f"etcd-client.{ns}.svc", f"*.etcd-discovery.{ns}.svc"],
            # etcd's JSON gateway dials the member with the server certificate.
            ip_addresses=["127.0.0.1"],
            client=True,
        )
        client = pki.issue_cert(self.ca_cert, self.ca_key, "etcd-client", client=True, server=False)
        tls = etcd.TLSMaterial(self.ca_cert, server[0], server[1], client[0], client[1])
        members = []
        for i in range(rt.members):
            root = self.paths.pod_root(ns, f"etcd-{i}")
            etcd.install_tls(root, tls)
            (root / "var" / "lib" / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
            (root / "tmp").mkdir(parents=True, exist_ok=True)
            members.append(etcd.Member(i, free_port(), free_port(), root))
        rt.etcd = etcd.EtcdCluster(ns, members, self.paths.logs)
        rt.health = [False] * rt.members
        assert self._session is not None
        rt.client = etcd.EtcdClient(self._session, etcd.client_ssl_context(members[0].tls_dir))
        self._ensure(
            "secrets",
            {
                "metadata": {"name": "etcd-client-tls", "namespace": ns},
                "type": "Opaque",
                "data": {
                    k: base64.b64encode(v).decode()
                    for k, v in {
                        "etcd-client.crt": client[0],
                        "etcd-client.key": client[1],
                        "etcd-client-ca.crt": self.ca_cert,
                    }.items()
                },
            },
        )
        urls = spec.get("etcd", {}).get("managed", {}).get("storage", {}).get("restoreSnapshotURL") or []
        self._ensure("statefulsets", etcd_statefulset(ns, rt.members, restore=bool(urls)))
        for member in members:
            pod = self._ensure("pods", etcd_pod(ns, member.name, restore=bool(urls)))
            init = {"init": "running"} if urls else {}
            self._write_pod_status(rt, pod, ready=False, initializing=True, **init)
        if urls:
            rt.etcd.split_brain = self.split_brain_restores > 0
            if rt.etcd.split_brain:
                self.split_brain_restores -= 1
            try:
                for member in members:
                    await self._etcd_init(rt.etcd, member, urls[0])
            except RestoreError as exc:
                log.warning("etcd restore of %s failed: %s", rt.name, exc)
                # What etcd-init printed; the pods' etcd-init goes into CrashLoopBackOff, so the pods
                # are never Ready and HyperShift never writes EtcdSnapshotRestored.
                rt.restore = (False, "Error", str(exc))
                rt.init_failed_at = time.monotonic()
                rt.phase = "failed"
                return
            rt.restore = (True, "Completed", "INFO: using etcdutl (etcd 3.6+)\n")
        rt.etcd.start()
        self.on_change()
        rt.tasks.append(asyncio.create_task(self._health_loop(rt), name=f"health-{rt.name}"))
        rt.tasks.append(asyncio.create_task(self._writer(rt), name=f"writer-{rt.name}"))
        deadline = time.monotonic() + self.options.etcd_start_timeout
        while not rt.etcd_available and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if urls and rt.etcd.needs_mark_compacted and rt.etcd_available:
            # etcd-init's `--mark-compacted`, emulated before any API server reads the restored etcd.
            for member in members if rt.etcd.split_brain else members[:1]:
                revision = await rt.client.mark_compacted(member.client_url)
                log.info("%s/%s: restored history compacted at revision %s", rt.name, member.name, revision)
        rt.tasks.append(asyncio.create_task(self._compactor(rt), name=f"compactor-{rt.name}"))
        for name in API_DEPLOYMENTS:
            self._ensure("deployments", api_deployment(ns, name, rt.members))
        rt.phase = "running"

    async def _etcd_init(self, cluster: etcd.EtcdCluster, member: etcd.Member, url: str) -> None:
        """HyperShift's etcd-init container: download, reject an XML error, restore; skip non-empty."""
        if member.data_dir.exists() and any(member.data_dir.iterdir()):
            log.info("%s: data dir not empty, restore skipped", member.name)
            return
        target = member.pod_root / "tmp" / "snapshot.db"
        # `curl -o` without -f: any HTTP status writes its body, the XML check catches S3 errors.
        try:
            assert self._session is not None
            async with self._session.get(url, ssl=_ca_context(self.paths.ca_crt)) as resp:
                with open(target, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        out.write(chunk)
        except (aiohttp.ClientError, OSError) as exc:
            raise RestoreError(f"downloading the snapshot failed: {exc}") from exc
        with open(target, "rb") as fh:
            head = fh.read(4096)
        if head.startswith(b"<?xml"):
            target.unlink()
            # etcd-init.sh: `head -c 5 /tmp/snapshot | grep -q '<?xml' && cat /tmp/snapshot && exit 1`
            raise RestoreError(head.decode(errors="replace"))
        try:
            await cluster.restore_member(member, target)
        except RuntimeError as exc:
            raise RestoreError(str(exc)) from exc
        finally:
            target.unlink(missing_ok=True)

    # -- background loops -----------------------------------------------------------------------

    async def _health_loop(self, rt: ClusterRuntime) -> None:
        assert rt.etcd is not None and rt.client is not None
        while True:
            health = await asyncio.gather(
                *(rt.client.healthy(m.client_url) if m.running else _false() for m in rt.etcd.members)
            )
            if list(health) != rt.health:
                rt.health = list(health)
                self._kick.set()
            await asyncio.sleep(1.0)

    async def _compactor(self, rt: ClusterRuntime) -> None:
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
            await asyncio.sleep(self.options.compaction_interval)
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
        ttl = max(int(self.options.event_ttl), 1)
        reuse = min(int(0.05 * ttl), 60)
        now = time.monotonic()
        expires = leases.get("expires", 0.0)
        if now + ttl < expires and now + ttl + reuse > expires:
            return int(leases["id"])
        lease = await rt.client.grant(url, ttl + reuse)
        leases.update(id=lease, expires=now + ttl + reuse)
        return lease

    async def _writer(self, rt: ClusterRuntime) -> None:
        """Leases and events, as kube-apiserver writes them, while it has ready replicas."""
        assert rt.etcd is not None and rt.client is not None
        interval = 1.0 / self.options.writes_per_second
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

    # -- teardown -------------------------------------------------------------------------------

    async def _stop_runtime(self, rt: ClusterRuntime) -> None:
        for task in rt.tasks:
            task.cancel()
        for task in rt.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if rt.etcd is not None:
            await asyncio.to_thread(rt.etcd.stop)

    async def _teardown(self, rt: ClusterRuntime) -> None:
        """The HostedCluster is gone: its namespace, etcd processes and volumes go too."""
        await self._stop_runtime(rt)
        with contextlib.suppress(ApiError):
            self.store.delete("namespaces", None, rt.cp_namespace)
        await asyncio.to_thread(shutil.rmtree, self.paths.namespace_pods(rt.cp_namespace), True)
        self.on_change()


def _b64_text(data: bytes) -> str:
    return base64.b64encode(data).decode()


class RestoreError(Exception):
    """etcd-init failed: the message is what the EtcdSnapshotRestored condition reports."""


async def _false() -> bool:
    return False


def _ca_context(ca: Path) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(ca))


def _rs_hash(name: str) -> str:
    """A stable pod-template-hash look-alike."""
    return format(abs(hash(("rs", name))) % 16**10, "010x")[:10]


# -- object builders ---------------------------------------------------------------------------


def pod_status(
    containers: list[str],
    *,
    ready: bool,
    initializing: bool = False,
    init: str | None = None,
    init_restarts: int = 0,
    crashed: str | None = None,
) -> dict[str, Any]:
    """A pod status as a kubelet writes it.

    :param init: the ``etcd-init`` init container (pods of a restore): ``running``, ``completed`` or
        ``failed`` (exit 1, then CrashLoopBackOff); None when the pod has none.
    :param init_restarts: its restart count when ``failed``.
    """
    now = now_rfc3339()
    init_failed = init == "failed"
    pending = initializing or init_failed

    def cstatus(name: str) -> dict[str, Any]:
        c_ready = ready and name != crashed
        if pending:
            state: dict[str, Any] = {"waiting": {"reason": "PodInitializing"}}
        elif name == crashed:
            state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={name}",
                }
            }
        else:
            state = {"running": {"startedAt": now}}
        return {
            "name": name,
            "ready": c_ready,
            "started": "running" in state,
            "restartCount": 1 if name == crashed else 0,
            "state": state,
            "image": ETCD_IMAGE,
            "imageID": ETCD_IMAGE,
            "containerID": "cri-o://" + os.urandom(32).hex(),
        }

    def cond(ctype: str, ok: bool) -> dict[str, Any]:
        return {
            "type": ctype,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }

    status: dict[str, Any] = {
        "phase": "Pending" if pending else "Running",
        "conditions": [
            cond("PodReadyToStartContainers", True),
            cond("Initialized", not pending),
            cond("Ready", ready and not pending),
            cond("ContainersReady", ready and not pending),
            cond("PodScheduled", True),
        ],
        "hostIP": "10.0.1.10",
        "hostIPs": [{"ip": "10.0.1.10"}],
        "podIP": f"10.128.{os.urandom(1)[0]}.{os.urandom(1)[0] % 250 + 2}",
        "qosClass": "Burstable",
        "startTime": now,
        "containerStatuses": [cstatus(n) for n in containers],
    }
    status["podIPs"] = [{"ip": status["podIP"]}]
    if init is not None:
        init_status: dict[str, Any] = {
            "name": "etcd-init",
            "ready": init == "completed",
            "restartCount": init_restarts if init_failed else 0,
            "started": init == "running",
            "image": ETCD_IMAGE,
            "imageID": ETCD_IMAGE,
            "containerID": "cri-o://" + os.urandom(32).hex(),
            "lastState": {},
        }
        if init == "running":
            init_status["state"] = {"running": {"startedAt": now}}
        elif init == "completed":
            init_status["state"] = {
                "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
            }
        else:
            # The kubelet's back-off after a non-zero exit: waiting, the failed run in lastState
            # (terminationMessagePolicy File and no message file: no message, the log says why).
            back_off = min(10 * 2**init_restarts, 300)
            delay = f"{back_off // 60}m{back_off % 60}s" if back_off >= 60 else f"{back_off}s"
            init_status["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay} restarting failed container=etcd-init",
                }
            }
            init_status["lastState"] = {
                "terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}
            }
        status["initContainerStatuses"] = [init_status]
    return status


def _etcd_container(name: str) -> dict[str, Any]:
    mounts = [{"name": "data", "mountPath": "/var/lib"}]
    if name == "etcd":
        mounts += [
            {"name": "client-tls", "mountPath": "/etc/etcd/tls/client"},
            {"name": "server-tls", "mountPath": "/etc/etcd/tls/server"},
            {"name": "etcd-ca", "mountPath": "/etc/etcd/tls/etcd-ca"},
        ]
    return {
        "name": name,
        "image": ETCD_IMAGE,
        "volumeMounts": mounts,
        "command": ["/usr/bin/etcd"] if name == "etcd" else ["/usr/bin/control-plane-operator", name],
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
    }


def etcd_pod(namespace: str, name: str, *, restore: bool) -> dict[str, Any]:
    index = name.rsplit("-", 1)[1]
    spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": "etcd-discovery",
        "nodeName": "ip-10-0-1-10.ec2.internal",
        "containers": [_etcd_container(c) for c in ETCD_CONTAINERS],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"data-etcd-{index}"}},
            {"name": "client-tls", "secret": {"secretName": "etcd-client-tls", "defaultMode": 416}},
            {"name": "server-tls", "secret": {"secretName": "etcd-server-tls", "defaultMode": 416}},
            {"name": "etcd-ca", "configMap": {"name": "etcd-ca", "defaultMode": 420}},
        ],
    }
    if restore:
        spec["initContainers"] = [
            {
                "name": "etcd-init",
                "image": ETCD_IMAGE,
                "command": ["/bin/sh", "-ce"],
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib"}],
            }
        ]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app": "etcd",
                "statefulset.kubernetes.io/pod-name": name,
                "hypershift.openshift.io/control-plane-component": "etcd",
            },
            "annotations": {"kubectl.kubernetes.io/default-container": "etcd"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": "etcd",
                    "uid": "",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def etcd_statefulset(namespace: str, members: int, *, restore: bool) -> dict[str, Any]:
    pod = etcd_pod(namespace, "etcd-0", restore=restore)
    template_labels = {"app": "etcd", "hypershift.openshift.io/control-plane-component": "etcd"}
    return {
        "metadata": {"name": "etcd", "namespace": namespace, "labels": {"app": "etcd"}},
        "spec": {
            "replicas": members,
            "serviceName": "etcd-discovery",
            "selector": {"matchLabels": {"app": "etcd"}},
            "podManagementPolicy": "Parallel",
            "template": {
                "metadata": {"labels": template_labels},
                "spec": {**pod["spec"], "volumes": pod["spec"]["volumes"][1:]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}}},
                }
            ],
        },
    }


def api_deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
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
