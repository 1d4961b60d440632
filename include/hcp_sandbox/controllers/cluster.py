"""What every controller room shares: one hosted cluster's runtime state, the timings, the context
(store, files, CA, faults, the two signals) and the small helpers of HyperShift's naming and
conditions."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hcp_sandbox import etcd
from hcp_sandbox.errors import ApiError
from hcp_sandbox.faults import RuntimeFaults
from hcp_sandbox.layout import SandboxPaths
from hcp_sandbox.store import Store, now_rfc3339

HA = "HighlyAvailable"
SINGLE = "SingleReplica"
RELEASE_IMAGE = "quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64"
ETCD_IMAGE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "e" * 64


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


def condition(ctype: str, status: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    """A HyperShift condition (``lastTransitionTime`` is added by :func:`merge_conditions`)."""
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def rs_hash(name: str) -> str:
    """A stable pod-template-hash look-alike."""
    return format(abs(hash(("rs", name))) % 16**10, "010x")[:10]


@dataclass
class Options:
    """Timings of the simulated kubelet and API server."""

    pod_ready_delay: float = 1.0
    pod_termination_delay: float = 1.0
    # What a running kube-apiserver writes into its etcd by itself (`up --writes-per-second`): its
    # identity and leader-election leases, renewed every few seconds, and Events. The sandbox's own
    # estimate for an idle hosted cluster, not a constant of HyperShift or Kubernetes.
    writes_per_second: float = 5.0
    etcd_start_timeout: float = 60.0
    # kube-apiserver's --etcd-compaction-interval (default 5m, which HyperShift keeps;
    # k8s.io/apiserver/pkg/storage/storagebackend/config.go: DefaultCompactInterval).
    compaction_interval: float = 300.0
    # kube-apiserver's --event-ttl: HyperShift sets 3h (control-plane-operator/controllers/
    # hostedcontrolplane/v2/kas/config.go).
    event_ttl: float = 10800.0
    # Which etcd-init restores (``up --etcd-init``): ``fixed`` (PR 9048: one cluster) or ``legacy``
    # (released HyperShift: one one-member cluster per member). See layout.ETCD_INIT_VARIANTS.
    etcd_init: str = "fixed"


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
    etcd_init: str = "fixed"  # the etcd-init variant of its restore (ETCD_INIT_VARIANTS)
    init_failed_at: float | None = None  # monotonic time etcd-init first failed (the kubelet's back-off)
    health: list[bool] = field(default_factory=list)
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


@dataclass
class Context:
    """What the rooms share, made once by :class:`~hcp_sandbox.controllers.manager.ControlPlane`.

    :param kick: reconcile now (instead of at the next tick).
    :param on_change: ``sandbox.json`` must be rewritten (processes came or went).
    """

    store: Store
    paths: SandboxPaths
    ca_cert: bytes
    ca_key: bytes
    options: Options
    faults: RuntimeFaults
    kick: Callable[[], None]
    on_change: Callable[[], None]
    session: aiohttp.ClientSession | None = None

    def now(self) -> datetime.datetime:
        """HyperShift's "now": real time plus the ``clock`` fault's offset."""
        return self.faults.hypershift_now()

    def ensure(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``, or get it when it exists (a controller's create-or-get)."""
        try:
            return self.store.create(plural, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise
            return self.store.get(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])
