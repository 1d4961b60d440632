"""Metrics of backups and drills, through Airflow's metrics support (StatsD, Datadog or OpenTelemetry).

Airflow sends them wherever ``[metrics]`` points (``statsd_on`` / ``otel_on``), with its
``metrics_allow_list`` and prefix applied. Each figure is emitted twice, as Airflow does for its own
metrics: once under a fixed name with tags ``namespace`` and ``hosted_cluster`` (OpenTelemetry,
Datadog, InfluxDB-style StatsD), and once with the cluster in the name
(``<name>.<namespace>.<hosted cluster>``) for plain StatsD, which drops tags.

| metric | kind | what it measures |
|---|---|---|
| ``hcp_etcd.backup.duration`` | timer | snapshot start to manifest published |
| ``hcp_etcd.backup.snapshot_bytes`` | gauge | size of the uploaded snapshot |
| ``hcp_etcd.backup.api_downtime_seconds`` | gauge | API servers down (quiesced mode only) |
| ``hcp_etcd.backup.newest_timestamp`` | gauge | newest backup of either mode, Unix time (RPO = now - it) |
| ``hcp_etcd.drill.recovery_seconds`` | gauge | drill: create to Available |
| ``hcp_etcd.drill.result`` | gauge | last drill: 1 passed, 0 failed |
| ``hcp_etcd.retention.unreadable_backups`` | gauge | kept with an unreadable manifest (alert: > 0) |
| ``hcp_etcd.retention.locked_backups`` | gauge | backups past the policy that S3 Object Lock still protects |
| ``hcp_etcd.replica.newest_timestamp`` | gauge | Unix time of the newest backup copied to the replica |
| ``hcp_etcd.replica.lag_seconds`` | gauge | newest backup minus the replica's newest (alert: > 0 twice) |

A metric never fails a backup: errors are logged and swallowed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk.observability import stats

from hcp_etcd.naming import parse_rfc3339

log = logging.getLogger(__name__)

BACKUP_DURATION = "hcp_etcd.backup.duration"
SNAPSHOT_BYTES = "hcp_etcd.backup.snapshot_bytes"
API_DOWNTIME_SECONDS = "hcp_etcd.backup.api_downtime_seconds"
NEWEST_BACKUP_TIMESTAMP = "hcp_etcd.backup.newest_timestamp"
DRILL_RECOVERY_SECONDS = "hcp_etcd.drill.recovery_seconds"
DRILL_RESULT = "hcp_etcd.drill.result"
UNREADABLE_BACKUPS = "hcp_etcd.retention.unreadable_backups"
LOCKED_BACKUPS = "hcp_etcd.retention.locked_backups"
REPLICA_NEWEST_TIMESTAMP = "hcp_etcd.replica.newest_timestamp"
REPLICA_LAG_SECONDS = "hcp_etcd.replica.lag_seconds"
ALL_METRICS = (
    BACKUP_DURATION,
    SNAPSHOT_BYTES,
    API_DOWNTIME_SECONDS,
    NEWEST_BACKUP_TIMESTAMP,
    DRILL_RECOVERY_SECONDS,
    DRILL_RESULT,
    UNREADABLE_BACKUPS,
    LOCKED_BACKUPS,
    REPLICA_NEWEST_TIMESTAMP,
    REPLICA_LAG_SECONDS,
)


def _tags(namespace: str, name: str) -> dict[str, str]:
    return {"namespace": namespace, "hosted_cluster": name}


def per_cluster_name(metric: str, namespace: str, name: str) -> str:
    """The plain-StatsD name of a metric for one cluster (``.`` in a name would add a level: ``__``).

    :param metric: the metric's base name.
    :param namespace: HostedCluster namespace.
    :param name: HostedCluster name.
    """
    return f"{metric}.{namespace}.{name.replace('.', '__')}"


def _gauge(metric: str, value: float, namespace: str, name: str) -> None:
    stats.gauge(metric, value, tags=_tags(namespace, name))
    stats.gauge(per_cluster_name(metric, namespace, name), value)


def _timing(metric: str, value: timedelta, namespace: str, name: str) -> None:
    stats.timing(metric, value, tags=_tags(namespace, name))
    stats.timing(per_cluster_name(metric, namespace, name), value)


def backup_figures(manifest: dict[str, Any], published_at: datetime) -> dict[str, float]:
    """The figures of one published backup (pure).

    :param manifest: a valid manifest.
    :param published_at: when the manifest was written.
    """
    created = parse_rfc3339(manifest["created_at"])
    figures = {
        BACKUP_DURATION: max(0.0, (published_at - created).total_seconds()),
        SNAPSHOT_BYTES: float(manifest["snapshot"]["size_bytes"]),
        NEWEST_BACKUP_TIMESTAMP: created.timestamp(),
    }
    if manifest.get("api_downtime_seconds") is not None:
        figures[API_DOWNTIME_SECONDS] = float(manifest["api_downtime_seconds"])
    return figures


def drill_figures(report: dict[str, Any]) -> dict[str, float]:
    """The figures of one drill report (pure).

    :param report: a drill report (``restore.build_drill_report``).
    """
    figures = {DRILL_RESULT: 1.0 if report.get("passed") else 0.0}
    if isinstance(report.get("recovery_seconds"), int | float):
        figures[DRILL_RECOVERY_SECONDS] = float(report["recovery_seconds"])
    return figures


def emit_backup(manifest: dict[str, Any], published_at: datetime) -> None:
    """Emit the metrics of a published backup; never raises.

    :param manifest: the manifest just written.
    :param published_at: when it was written.
    """
    try:
        hc = manifest["hosted_cluster"]
        for metric, value in backup_figures(manifest, published_at).items():
            if metric == BACKUP_DURATION:
                _timing(metric, timedelta(seconds=value), hc["namespace"], hc["name"])
            else:
                _gauge(metric, value, hc["namespace"], hc["name"])
    except Exception:  # a metric must never fail a backup
        log.warning("could not emit backup metrics", exc_info=True)


def emit_drill(report: dict[str, Any]) -> None:
    """Emit the metrics of a drill report; never raises.

    :param report: the report just written.
    """
    try:
        hc = report["hosted_cluster"]
        for metric, value in drill_figures(report).items():
            _gauge(metric, value, hc["namespace"], hc["name"])
    except Exception:  # a metric must never fail a drill
        log.warning("could not emit drill metrics", exc_info=True)


def emit_retention(namespace: str, name: str, summary: dict[str, Any]) -> None:
    """Emit the figures of one cluster's retention; never raises.

    :param namespace: HostedCluster namespace.
    :param name: HostedCluster name.
    :param summary: the cluster's entry in the retention task's result.
    """
    try:
        _gauge(UNREADABLE_BACKUPS, float(len(summary.get("unreadable") or {})), namespace, name)
        _gauge(LOCKED_BACKUPS, float(len(summary.get("locked") or {})), namespace, name)
    except Exception:  # a metric must never fail retention
        log.warning("could not emit retention metrics", exc_info=True)


def replica_figures(newest: datetime | None, replica_newest: datetime | None) -> dict[str, float]:
    """The replica's figures for one cluster (pure): its newest backup and how far it trails.

    :param newest: the primary's newest backup (None: none).
    :param replica_newest: the replica's newest backup (None: none yet).
    """
    if replica_newest is None:
        return {}
    figures = {REPLICA_NEWEST_TIMESTAMP: replica_newest.timestamp()}
    if newest is not None:
        figures[REPLICA_LAG_SECONDS] = max(0.0, (newest - replica_newest).total_seconds())
    return figures


def emit_replica(namespace: str, name: str, newest: datetime | None, replica_newest: datetime | None) -> None:
    """Emit the replica's figures for one cluster; never raises.

    :param namespace: HostedCluster namespace.
    :param name: HostedCluster name.
    :param newest: the primary's newest backup.
    :param replica_newest: the replica's newest backup.
    """
    try:
        for metric, value in replica_figures(newest, replica_newest).items():
            _gauge(metric, value, namespace, name)
    except Exception:  # a metric must never fail a backup
        log.warning("could not emit replica metrics", exc_info=True)
