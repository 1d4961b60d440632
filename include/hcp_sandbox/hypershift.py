"""HyperShift's own decisions, as its Go code makes them (pure functions, no I/O).

Each function follows one upstream function (openshift/hypershift, read at commit 3ee9615567):

- ``process_paused_until`` / ``reconciliation_active`` — ``support/util/pausereconcile.go``
  (``ProcessPausedUntilField``, ``GenerateReconciliationActiveCondition``);
- ``etcd_statefulset_condition`` — ``hostedcontrolplane_controller.go: etcdStatefulSetCondition``;
- ``etcd_restored_condition`` — ``hostedcontrolplane_controller.go: etcdRestoredCondition``;
- ``hcp_available`` — ``hostedcontrolplane_controller.go: reconcileAvailabilityStatus``;
- ``hosted_cluster_available`` — ``hostedcluster_controller.go: computeHostedClusterAvailability``;
- ``HCP_CONDITIONS`` — the ``hcpConditions`` the HostedCluster controller copies from the
  HostedControlPlane (``hostedcluster_controller.go``).

(``hostedcontrolplane_controller.go`` is ``control-plane-operator/controllers/hostedcontrolplane/``,
``hostedcluster_controller.go`` is ``hypershift-operator/controllers/hostedcluster/``.)
"""

from __future__ import annotations

import datetime
import re
from typing import Any

# strconv.ParseBool (Go's strconv/atob.go).
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
# time.Parse(time.RFC3339, v): upper-case T and Z, an optional fraction after "." or ",".
_GO_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))$"
)

# The conditions the HostedCluster controller copies from the HostedControlPlane (among them, the
# ones the sandbox writes). EtcdSnapshotRestored and ReconciliationActive are NOT copied.
HCP_CONDITIONS = ("EtcdAvailable", "KubeAPIServerAvailable")


def parse_go_rfc3339(value: str) -> datetime.datetime:
    """``time.Parse(time.RFC3339, value)``; ``ValueError`` where Go returns an error."""
    match = _GO_RFC3339.match(value)
    if not match:
        raise ValueError(f"parsing time {value!r} as RFC3339")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if int(off_h or 0) > 23 or int(off_m or 0) > 59:
        raise ValueError(f"time zone offset out of range in {value!r}")
    offset = datetime.timedelta(0)
    if not zulu:
        offset = (1 if sign == "+" else -1) * datetime.timedelta(hours=int(off_h), minutes=int(off_m))
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    return datetime.datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        micro,
        tzinfo=datetime.timezone(offset),
    )


def process_paused_until(value: str | None, now: datetime.datetime) -> tuple[bool, str | None]:
    """``ProcessPausedUntilField``: ``(paused, error)``; an invalid value is not paused.

    :param value: ``spec.pausedUntil``.
    :param now: HyperShift's clock.
    """
    if value is None:
        return False, None
    if value in GO_TRUE:
        return True, None
    if value in GO_FALSE:
        return False, None
    try:
        return now < parse_go_rfc3339(value), None
    except ValueError:
        return False, (
            f"invalid value specified in pausedUntil field: {value!r}. Considering the resource as not paused"
        )


def is_paused(value: str | None, now: datetime.datetime | None = None) -> bool:
    """``IsReconciliationPaused`` (errors are logged upstream and mean not paused)."""
    return process_paused_until(value, now or datetime.datetime.now(datetime.UTC))[0]


def reconciliation_active(value: str | None, generation: int, now: datetime.datetime) -> dict[str, Any]:
    """``GenerateReconciliationActiveCondition``: the ``ReconciliationActive`` condition.

    :param value: the object's ``spec.pausedUntil``.
    :param generation: its ``metadata.generation``.
    :param now: HyperShift's clock.
    """
    paused, error = process_paused_until(value, now)
    if paused:
        message = (
            "Reconciliation paused until field removed"
            if value in GO_TRUE
            else f"Reconciliation paused until: {value}"
        )
        return _cond("ReconciliationActive", "False", "ReconciliationPaused", message, generation)
    if error:
        return _cond(
            "ReconciliationActive",
            "True",
            "InvalidPausedUntilValue",
            "Invalid value provided for PausedUntil field",
            generation,
        )
    return _cond(
        "ReconciliationActive", "True", "AsExpected", "Reconciliation active on resource", generation
    )


def etcd_statefulset_condition(sts: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    """``EtcdAvailable`` from the etcd StatefulSet: ready replicas >= quorum (replicas / 2 + 1).

    :param sts: the StatefulSet ``etcd`` (None: not found).
    :param generation: the HostedControlPlane's generation.
    """
    if sts is None:
        return _cond("EtcdAvailable", "False", "StatefulSetNotFound", "", generation)
    replicas = int((sts.get("spec") or {}).get("replicas") or 0)
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    if ready >= replicas // 2 + 1:
        return _cond("EtcdAvailable", "True", "QuorumAvailable", "", generation)
    # Upstream puts a pending PVC's events into the message; the sandbox's claims are always bound.
    return _cond(
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
                return _cond("EtcdSnapshotRestored", "False", terminated.get("reason", ""), "", generation)
    if done == replicas:
        return _cond("EtcdSnapshotRestored", "True", "AsExpected", "", generation)
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
            return _cond("Available", "False", cond["reason"], cond["message"], generation)
    if not any(t in by_type for t in ("EtcdAvailable", "KubeAPIServerAvailable")):
        return _cond("Available", "False", "StatusUnknown", "", generation)
    return _cond("Available", "True", "AsExpected", "", generation)


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
        return _cond(
            "Available",
            "False",
            "WaitingForAvailable",
            "Waiting for hosted control plane to be healthy",
            generation,
        )
    if cond["status"] == "True":
        return _cond("Available", "True", "AsExpected", "The hosted control plane is available", generation)
    return _cond("Available", cond["status"], cond.get("reason", ""), cond.get("message", ""), generation)


def _cond(ctype: str, status: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }
