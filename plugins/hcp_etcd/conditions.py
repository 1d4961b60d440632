"""Reading HostedCluster status conditions (pure)."""

from __future__ import annotations

from typing import Any


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` of an object's ``status.conditions``, or None.

    :param obj: a Kubernetes object as a dict.
    :param kind: the condition type, e.g. ``Available``.
    """
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def unmet_conditions(obj: dict[str, Any], wanted: dict[str, str]) -> list[str]:
    """Conditions not in their wanted status, described for a log line (empty when all are met).

    :param obj: a Kubernetes object as a dict.
    :param wanted: condition type -> ``"True"``/``"False"``.
    """
    unmet = []
    for kind, status in wanted.items():
        cond = condition(obj, kind)
        if cond is None:
            unmet.append(f"{kind} missing")
        elif str(cond.get("status")) != status:
            reason = cond.get("reason") or ""
            message = (cond.get("message") or "")[:200]
            unmet.append(f"{kind}={cond.get('status')} ({reason}: {message})")
    return unmet
