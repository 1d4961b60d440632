"""State kept ON the HostedCluster (annotations), so retries and other runs see it (pure logic).

Three annotations, each JSON:

* ``backup-lock``: ``{"run_id", "dag_id", "expires_at"}`` — one backup per cluster at a time, whichever
  backup DAG runs it (the nightly quiesced one and the online one take the same lock); a lock whose
  ``expires_at`` passed (its run died) is taken over.
* ``previous-paused-until``: ``{"run_id", "value"}`` — what ``spec.pausedUntil`` was before we paused.
* ``original-replicas``: ``{"run_id", "replicas": {deployment: n}, "scaled_down_at"}`` — written
  before the first scale-down, so a retry never records 0 as the original count.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hcp_etcd.naming import (
    LOCK_ANNOTATION,
    ORIGINAL_REPLICAS_ANNOTATION,
    PREVIOUS_PAUSE_ANNOTATION,
    parse_rfc3339,
    rfc3339,
)


class LockHeldError(RuntimeError):
    """Another run holds the backup lock of a cluster."""


@dataclass(frozen=True)
class BackupLock:
    """The backup lock of a cluster.

    :param run_id: the Airflow run holding it.
    :param dag_id: the DAG of that run.
    :param expires_at: when it may be taken over.
    """

    run_id: str
    dag_id: str
    expires_at: datetime

    def held_by(self, run_id: str, dag_id: str) -> bool:
        """Whether this lock is that run's. Run ids are unique per DAG only: two DAGs scheduled at the
        same minute both have ``scheduled__<that minute>``, so the DAG must match too (a lock written
        without a DAG id matches on the run id).

        :param run_id: the run.
        :param dag_id: its DAG.
        """
        return self.run_id == run_id and (not self.dag_id or not dag_id or self.dag_id == dag_id)

    def to_annotation(self) -> str:
        """The annotation value."""
        return json.dumps(
            {"run_id": self.run_id, "dag_id": self.dag_id, "expires_at": rfc3339(self.expires_at)},
            sort_keys=True,
        )

    @classmethod
    def from_annotations(cls, annotations: dict[str, str] | None) -> BackupLock | None:
        """Read the lock from an object's annotations (``None`` if absent or unreadable).

        :param annotations: ``metadata.annotations``.
        """
        raw = (annotations or {}).get(LOCK_ANNOTATION)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(str(data["run_id"]), str(data.get("dag_id", "")), parse_rfc3339(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            # An unreadable lock cannot be honoured: treat it as expired (logged by the caller).
            return None


def check_lock(
    annotations: dict[str, str] | None, run_id: str, now: datetime, cluster: str, dag_id: str = ""
) -> str:
    """Decide whether ``run_id`` may take the lock; raise ``LockHeldError`` if another live run holds it.

    :param annotations: the HostedCluster's annotations.
    :param run_id: this run.
    :param now: the current time.
    :param cluster: ``namespace/name`` for the message.
    :param dag_id: this run's DAG (see :meth:`BackupLock.held_by`).
    :return: ``"free"``, ``"ours"`` (a retry of this run) or ``"expired"`` (taken over).
    """
    lock = BackupLock.from_annotations(annotations)
    if lock is None:
        return "free"
    if lock.held_by(run_id, dag_id):
        return "ours"
    if lock.expires_at <= now:
        return "expired"
    raise LockHeldError(
        f"HostedCluster {cluster} is being backed up by run {lock.run_id!r} of DAG {lock.dag_id!r} "
        f"(lock annotation {LOCK_ANNOTATION} expires at {rfc3339(lock.expires_at)}). "
        "Wait for that run to finish, or remove the annotation if you are sure it is dead."
    )


def previous_pause_annotation(run_id: str, value: str | None) -> str:
    """The annotation recording ``spec.pausedUntil`` before this run paused.

    :param run_id: this run.
    :param value: the previous ``pausedUntil``.
    """
    return json.dumps({"run_id": run_id, "value": value}, sort_keys=True)


def read_previous_pause(annotations: dict[str, str] | None, run_id: str) -> tuple[bool, str | None]:
    """What ``pausedUntil`` was before ``run_id`` paused.

    :param annotations: the HostedCluster's annotations.
    :param run_id: this run.
    :return: ``(recorded, value)``; ``recorded`` is False if this run recorded nothing.
    """
    raw = (annotations or {}).get(PREVIOUS_PAUSE_ANNOTATION)
    if not raw:
        return False, None
    try:
        data = json.loads(raw)
    except ValueError:
        return False, None
    if data.get("run_id") != run_id:
        return False, None
    return True, data.get("value")


@dataclass(frozen=True)
class OriginalReplicas:
    """API-server replicas found before the scale-down.

    :param run_id: the run that recorded them.
    :param replicas: deployment name -> replicas.
    :param scaled_down_at: when the scale-down started (start of the API downtime).
    """

    run_id: str
    replicas: dict[str, int]
    scaled_down_at: datetime

    def to_annotation(self) -> str:
        """The annotation value."""
        return json.dumps(
            {
                "run_id": self.run_id,
                "replicas": self.replicas,
                "scaled_down_at": rfc3339(self.scaled_down_at, milliseconds=True),
            },
            sort_keys=True,
        )

    @classmethod
    def from_annotations(cls, annotations: dict[str, str] | None, run_id: str) -> OriginalReplicas | None:
        """The record of ``run_id`` (a record of another run is ignored: it is stale).

        :param annotations: the HostedCluster's annotations.
        :param run_id: this run.
        """
        raw = (annotations or {}).get(ORIGINAL_REPLICAS_ANNOTATION)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            record = cls(
                str(data["run_id"]),
                {str(k): int(v) for k, v in data["replicas"].items()},
                parse_rfc3339(data["scaled_down_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return record if record.run_id == run_id else None


def paused_by_someone_else(
    spec: dict[str, Any], annotations: dict[str, str] | None, run_id: str, now: datetime | None = None
) -> bool:
    """Whether the cluster is paused and not by this run.

    A ``pausedUntil`` deadline that has passed is no pause (HyperShift reconciles again): it is what
    a run that died leaves behind, and must not block every later backup.

    :param spec: the HostedCluster's spec.
    :param annotations: its annotations.
    :param run_id: this run.
    :param now: the current time (default: now, UTC).
    """
    value = spec.get("pausedUntil")
    if not is_paused(value, now or datetime.now(UTC)):
        return False
    recorded, _ = read_previous_pause(annotations, run_id)
    return not recorded


# strconv.ParseBool's spellings (Go's strconv/atob.go).
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
# What Go's time.Parse(time.RFC3339, v) takes: upper-case T and Z, optional fraction ("." or ",").
_GO_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))$"
)


def parse_go_rfc3339(value: str) -> datetime:
    """Parse a time as Go's ``time.Parse(time.RFC3339, value)`` does; raise ``ValueError`` otherwise.

    :param value: the time string.
    """
    match = _GO_RFC3339.match(value)
    if not match:
        raise ValueError(f"{value!r} is not an RFC3339 time")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if int(off_h or 0) > 23 or int(off_m or 0) > 59:
        raise ValueError(f"{value!r} has a time zone offset out of range")
    offset = timedelta(0)
    if not zulu:
        offset = (1 if sign == "+" else -1) * timedelta(hours=int(off_h), minutes=int(off_m))
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    # datetime() checks the ranges Go checks (month, day of month, hour < 24, minute and second < 60).
    parsed = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=timezone(offset)
    )
    return parsed.astimezone(UTC)


def parse_paused_until(paused_until: str | None, now: datetime) -> tuple[bool, bool]:
    """HyperShift's reading of ``spec.pausedUntil``: ``(paused, valid)``.

    As upstream's ``ProcessPausedUntilField`` (openshift/hypershift ``support/util/pausereconcile.go``):
    absent is not paused; ``strconv.ParseBool`` first (``"True"``, ``"1"``, ``"t"``... pause until the
    field is removed), then an RFC3339 time (paused while it is in the future); anything else is an
    invalid value, which HyperShift treats as not paused (``ReconciliationActive=True``, reason
    ``InvalidPausedUntilValue``).

    :param paused_until: the field's value.
    :param now: the current time.
    """
    if paused_until is None:
        return False, True
    if paused_until in _GO_TRUE:
        return True, True
    if paused_until in _GO_FALSE:
        return False, True
    try:
        return parse_go_rfc3339(paused_until) > now, True
    except ValueError:
        return False, False


def is_paused(paused_until: str | None, now: datetime) -> bool:
    """Whether HyperShift holds reconciliation for this ``spec.pausedUntil`` (see ``parse_paused_until``).

    :param paused_until: the field's value.
    :param now: the current time.
    """
    return parse_paused_until(paused_until, now)[0]
