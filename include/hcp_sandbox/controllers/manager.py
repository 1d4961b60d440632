"""The sandbox's controllers, wired together: one asyncio loop in the serve process, driven by store
events, pod timers and an idle tick, and the queries the serve process, the exec handler and the tests use.

The rooms (one actor each, named after HyperShift's own; see the package's ``__init__``) share a
:class:`~hcp_sandbox.controllers.cluster.Context`; the fault kinds they obey are in
:mod:`hcp_sandbox.faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from hcp_sandbox import etcd
from hcp_sandbox.controllers.apiservers import ApiServers
from hcp_sandbox.controllers.cluster import HA, SINGLE, ClusterRuntime, Context, Options
from hcp_sandbox.controllers.etcd import EtcdComponent
from hcp_sandbox.controllers.hostedcluster import HostedClusterController
from hcp_sandbox.controllers.hostedcontrolplane import HostedControlPlaneController
from hcp_sandbox.controllers.kubelet import Kubelet
from hcp_sandbox.controllers.reencryption import KeyRotation
from hcp_sandbox.faults import RuntimeFaults
from hcp_sandbox.layout import SandboxPaths
from hcp_sandbox.podexec import PodTarget
from hcp_sandbox.store import Store

log = logging.getLogger(__name__)

# The longest the controllers sleep with no event and no pod timer due (seconds).
IDLE_TICK = 1.0


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
        self.options = options or Options()
        self.on_change = on_change or (lambda: None)
        self.clusters: dict[tuple[str, str], ClusterRuntime] = {}
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self.faults = RuntimeFaults(
            paths.s3_faults, self._find_member, self._changed, paths.s3_replica_faults
        )
        ca_cert, ca_key = ca
        self.ctx = Context(
            store, paths, ca_cert, ca_key, self.options, self.faults, self._kick.set, self.on_change
        )
        self.kubelet = Kubelet(store)
        self.etcd = EtcdComponent(self.ctx, self.kubelet)
        self.apiservers = ApiServers(self.ctx, self.kubelet)
        self.hostedcontrolplanes = HostedControlPlaneController(self.ctx)
        self.hostedclusters = HostedClusterController(
            self.ctx, self.clusters, self.etcd, self.apiservers, self.hostedcontrolplanes
        )
        self.rotation = KeyRotation(self.ctx, self.clusters)

    def _changed(self) -> None:
        """A fault changed the runtime: ``sandbox.json`` again, and reconcile now."""
        self.on_change()
        self._kick.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.ctx.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.store.subscribe(self._on_event)
        self._main = asyncio.create_task(self._run(), name="controllers")

    async def close(self) -> None:
        """Stop every controller and every etcd member."""
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        await asyncio.gather(*(self.hostedclusters.stop_runtime(rt) for rt in self.clusters.values()))
        if self.ctx.session is not None:
            await self.ctx.session.close()

    def _on_event(self, event: str, plural: str, obj: dict[str, Any]) -> None:
        # Called synchronously by the store, possibly from another thread.
        if self._loop is not None and plural in ("hostedclusters", "deployments", "pods"):
            self._loop.call_soon_threadsafe(self._kick.set)

    def next_wake(self, now: float) -> float:
        """Seconds until the loop must reconcile unasked: the earliest pod timer (a pod's readiness or
        removal delay), else :data:`IDLE_TICK`. Everything else that changes the world kicks the loop
        (store events, etcd health, faults); what changes with time alone (``pausedUntil`` passing,
        etcd-init's back-off) is seconds-grained, which the tick covers. A fixed short tick cost each
        idle sandbox a few percent of a core in deep copies of the store.

        Upstream, a HostedCluster paused until a time requeues itself for that moment
        (hypershift-operator/controllers/hostedcluster/hostedcluster_controller.go:
        ``ctrl.Result{RequeueAfter: duration}``, the duration from support/util/pausereconcile.go's
        ``ProcessPausedUntilField``); here it is reconciled at most :data:`IDLE_TICK` after it. The pod
        delays are the kubelet's and the ReplicaSet controller's, not HyperShift's code.
        """
        # A timer stays behind once it fired (a Ready pod keeps its ready-at): only later ones count.
        due = [at for rt in self.clusters.values() for at in rt.timers.values() if at > now]
        return min([*due, now + IDLE_TICK]) - now

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self.next_wake(time.monotonic()))
            self._kick.clear()
            try:
                self.reconcile_all()
            except Exception:
                log.exception("reconcile failed")

    def reconcile_all(self) -> None:
        """One pass of every controller (the loop calls it on each store event and tick)."""
        self.hostedclusters.reconcile()

    # -- queries used by the serve process, exec and tests ------------------------------------

    def runtime_for_namespace(self, cp_namespace: str) -> ClusterRuntime | None:
        return next((rt for rt in self.clusters.values() if rt.cp_namespace == cp_namespace), None)

    def _find_member(self, namespace: str, pod: str) -> tuple[etcd.EtcdCluster, etcd.Member] | None:
        """The etcd cluster and member behind an etcd pod (:data:`hcp_sandbox.faults.MemberLookup`)."""
        rt = self.runtime_for_namespace(namespace)
        if rt is None or rt.etcd is None:
            return None
        member = next((m for m in rt.etcd.members if m.name == pod), None)
        return None if member is None else (rt.etcd, member)

    def resolve_pod(self, namespace: str, pod: str) -> PodTarget | None:
        """Where an exec into ``namespace/pod`` runs (the :class:`PodExecHandler` resolver)."""
        root = self.paths.pod_root(namespace, pod)
        rt = self.runtime_for_namespace(namespace)
        if rt is not None and rt.etcd is not None:
            for member in rt.etcd.members:
                if member.name == pod:
                    return PodTarget(root, member.client_port, self.faults.volume_free_bytes(namespace, pod))
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
        return self.ctx.now()

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

    async def handle_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The API server's fault handler: every kind but ``api`` and ``exec-drop``
        (:meth:`hcp_sandbox.faults.RuntimeFaults.inject`; ``key-rotation``:
        :meth:`hcp_sandbox.controllers.reencryption.KeyRotation.inject`, it needs the runtime)."""
        if spec.get("kind") == "key-rotation":
            result = await self.rotation.inject(spec)
            self._changed()
            return result
        return await self.faults.inject(spec)
