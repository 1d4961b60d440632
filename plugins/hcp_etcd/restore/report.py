"""The drill report: where it is written and what it says (no secrets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hcp_etcd.naming import ClusterRef, parse_rfc3339, validate_prefix
from hcp_etcd.restore.verify import failed

# Drill reports sit beside the backups, under a folder no namespace can be called (DNS-1123 labels
# have no "_"): a HostedCluster namespace named "drills" must not mix its backups with drill reports.
DRILL_REPORTS_DIR = "_drills"


def drill_report_key(prefix: str, ref: ClusterRef, moment: datetime) -> str:
    """``{prefix}/_drills/{ns}/{name}/{YYYYmmdd}.json``.

    :param prefix: the backup prefix.
    :param ref: the drilled cluster.
    :param moment: the drill date.
    """
    parts = (validate_prefix(prefix).strip("/"), DRILL_REPORTS_DIR, ref.namespace, ref.name)
    return "/".join(p for p in parts if p) + f"/{moment.astimezone(UTC).strftime('%Y%m%d')}.json"


def drill_asset_name(ref: ClusterRef) -> str:
    """Asset name of a cluster's drills.

    :param ref: the drilled cluster.
    """
    return f"hcp-etcd-drill/{ref.namespace}/{ref.name}"


def build_drill_report(
    *,
    ref: ClusterRef,
    target: str,
    as_of: datetime,
    ran_at: datetime,
    backup: dict[str, Any] | None,
    created: dict[str, Any] | None,
    restored: dict[str, Any] | None,
    checks: list[dict[str, Any]],
    errors: list[str],
    run_id: str,
) -> dict[str, Any]:
    """The drill report (no secrets: locations, fingerprints, times, checks).

    :param ref: the drilled cluster.
    :param target: ``namespace/name`` of the scratch cluster.
    :param as_of: the run's data interval end (the backup cutoff).
    :param ran_at: when the report was written.
    :param backup: result of the resolve task (manifest URI and manifest) or None.
    :param created: result of the create task or None.
    :param restored: result of the wait task (recovery time) or None.
    :param checks: the verification checks.
    :param errors: failures of tasks before the checks (bad input, timeouts).
    :param run_id: Airflow run id.
    """
    manifest = (backup or {}).get("manifest") or {}
    created_at = manifest.get("created_at")
    age = None if not created_at else (as_of - parse_rfc3339(created_at)).total_seconds()
    age_now = None if not created_at else (ran_at - parse_rfc3339(created_at)).total_seconds()
    all_checks = list(checks)
    if not all_checks and not errors:
        errors = ["no verification ran"]
    passed = not errors and not failed(all_checks)
    return {
        "schema_version": 1,
        "kind": "hcp-etcd-drill",
        "hosted_cluster": {"namespace": ref.namespace, "name": ref.name},
        "drill_cluster": target,
        "as_of": as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ran_at": ran_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "passed": passed,
        "snapshot": {
            "manifest": (backup or {}).get("manifest_uri"),
            "key": (manifest.get("snapshot") or {}).get("key"),
            "sha256": (manifest.get("snapshot") or {}).get("sha256"),
            "created_at": created_at,
            "revision": (manifest.get("etcd") or {}).get("revision"),
        },
        "snapshot_age_seconds": age,
        "snapshot_age_at_run_seconds": age_now,
        "recovery_seconds": (restored or {}).get("recovery_seconds"),
        "created_at": (created or {}).get("created_at"),
        "available_at": (restored or {}).get("available_at"),
        "checks": all_checks,
        "errors": errors,
        "airflow": {"run_id": run_id},
    }
