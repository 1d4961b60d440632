"""HyperShift's pause: ``spec.pausedUntil`` read as upstream reads it (pure functions, no I/O).

openshift/hypershift ``support/util/pausereconcile.go`` (read at commit 3ee9615567):
``ProcessPausedUntilField``, ``IsReconciliationPaused``, ``GenerateReconciliationActiveCondition``.
Both the HostedCluster controller and the HostedControlPlane controller use them, as upstream's
two operators share ``support/util``.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from hcp_sandbox.controllers.cluster import condition

# strconv.ParseBool (Go's strconv/atob.go).
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
# time.Parse(time.RFC3339, v): upper-case T and Z, an optional fraction after "." or ",".
_GO_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))$"
)


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
        return condition("ReconciliationActive", "False", "ReconciliationPaused", message, generation)
    if error:
        return condition(
            "ReconciliationActive",
            "True",
            "InvalidPausedUntilValue",
            "Invalid value provided for PausedUntil field",
            generation,
        )
    return condition(
        "ReconciliationActive", "True", "AsExpected", "Reconciliation active on resource", generation
    )
