"""The operator's view: one status row per hosted cluster, from manifests, drill reports and HostedClusters.

Read-only. S3 is read through :class:`SnapshotStoreHook` and the layout of ``naming`` /
``restore`` (backups: ``{prefix}/{ns}/{name}/{ts}/manifest.json``; drills:
``{prefix}/_drills/{ns}/{name}/{YYYYmmdd}.json``); a backup counts only when its manifest is valid
(``manifest.validate_manifest``), as everywhere else in the project.

A cluster appears when it exists on the management cluster (drill clusters excepted) *or* has
backups: a cluster that was lost but still has backups is exactly the one to restore.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from hcp_etcd.conditions import condition
from hcp_etcd.manifest import ManifestError, validate_manifest
from hcp_etcd.naming import BACKUP_TS_RE, ClusterRef, InvalidNameError, cluster_prefix, parse_rfc3339
from hcp_etcd.restore.backups import backup_candidates
from hcp_etcd.restore.plan import DRILL_LABEL
from hcp_etcd.restore.report import drill_report_key
from hcp_etcd.state import is_paused

STALE_HOURS_ENV = "HCP_ETCD_STALE_HOURS"
DEFAULT_STALE_HOURS = 26.0
# Invalid manifests tried per cluster before giving up (a backup without a valid manifest does not
# exist, so the next older one is the newest backup; bounded so one bad prefix cannot stall the page).
MAX_MANIFEST_TRIES = 5

# Row states, worst first: the page sorts and colours by them.
STATE_STALE = "stale"
STATE_DRILL_FAILED = "drill-failed"
STATE_NO_BACKUP = "no-backup"
STATE_OK = "ok"
_STATE_ORDER = {STATE_STALE: 0, STATE_DRILL_FAILED: 1, STATE_NO_BACKUP: 2, STATE_OK: 3}


class ObjectStore(Protocol):
    """The part of ``SnapshotStoreHook`` this module reads through (a seam for tests)."""

    def list_objects(self, bucket: str, prefix: str) -> list[Any]:
        """Objects under a prefix (``.key``, ``.last_modified``)."""
        ...

    def get_json(self, bucket: str, key: str) -> Any:
        """A JSON document."""
        ...


class ClusterSource(Protocol):
    """The part of ``HostedClusterHook`` this module reads through."""

    def list_hosted_clusters(self, label_selector: str = "", namespace: str | None = None) -> list[dict]:
        """HostedClusters as dicts."""
        ...


def stale_threshold(env: dict[str, str] | None = None) -> timedelta:
    """The age past which a newest backup is stale: ``HCP_ETCD_STALE_HOURS`` (default 26 h).

    26 h = a nightly schedule plus two hours of slack, so one late run does not page anyone.

    :param env: the environment (``os.environ`` when None).
    """
    raw = (env if env is not None else os.environ).get(STALE_HOURS_ENV, "")
    if not raw.strip():
        return timedelta(hours=DEFAULT_STALE_HOURS)
    hours = float(raw)
    if not hours > 0:
        raise ValueError(f"{STALE_HOURS_ENV} must be a positive number of hours, got {raw!r}")
    return timedelta(hours=hours)


@dataclass
class ClusterStatus:
    """One row of the page (and the source of the gauges).

    :param namespace: HostedCluster namespace.
    :param name: HostedCluster name.
    :param on_management_cluster: whether the HostedCluster exists now.
    :param available: its ``Available`` condition (None when unknown or absent).
    :param paused: whether reconciliation is paused now (a backup in progress, or someone else).
    :param last_backup_at: ``created_at`` of the newest valid manifest, of either kind (the nightly
        quiesced backups and the online ones in between).
    :param backup_age_seconds: now - ``last_backup_at``: the cluster's RPO, the data a restore now
        would lose (``rpo_seconds`` in :meth:`as_dict`, with ``rpo_kind``: that backup's ``mode``).
    :param size_bytes: snapshot size of that backup.
    :param revision: etcd revision of that backup.
    :param api_downtime_seconds: API downtime of that backup (None in online mode).
    :param mode: ``quiesced`` or ``online``.
    :param release_image: the OpenShift release the cluster ran at that backup (recorded since the
        backups carry the cluster's spec; None for older ones).
    :param manifest_uri: ``s3://`` URI of that manifest (what a restore takes as ``source``).
    :param backups: number of complete backups.
    :param last_drill_at: ``ran_at`` of the newest drill report.
    :param last_drill_passed: its verdict.
    :param drill_recovery_seconds: its recovery time (create -> Available).
    :param drill_report_uri: ``s3://`` URI of that report.
    :param drill_failures: names of its failed checks and its errors.
    :param unreadable_backups: backups newer than the newest valid one whose manifest is unreadable
        (another schema, a truncated write): retention keeps them; someone must look.
    :param next_backup_at: next scheduled backup run (None when paused or unknown).
    :param replica_bucket: the replica bucket read (None: no replica set).
    :param replica_last_backup_at: ``created_at`` of the replica's newest valid manifest.
    :param replica_age_seconds: now - ``replica_last_backup_at``.
    :param replica_manifest_uri: its ``s3://`` URI (``source`` of a restore with ``source_bucket=replica``).
    :param state: ``stale``, ``drill-failed``, ``no-backup`` or ``ok``.
    :param reasons: why the row stands out (empty when ``ok``).
    """

    namespace: str
    name: str
    on_management_cluster: bool = False
    available: bool | None = None
    paused: bool = False
    last_backup_at: datetime | None = None
    backup_age_seconds: float | None = None
    size_bytes: int | None = None
    revision: int | None = None
    api_downtime_seconds: float | None = None
    mode: str | None = None
    release_image: str | None = None
    manifest_uri: str | None = None
    backups: int = 0
    last_drill_at: datetime | None = None
    last_drill_passed: bool | None = None
    drill_recovery_seconds: float | None = None
    drill_report_uri: str | None = None
    drill_failures: list[str] = field(default_factory=list)
    unreadable_backups: list[str] = field(default_factory=list)
    next_backup_at: datetime | None = None
    replica_bucket: str | None = None
    replica_last_backup_at: datetime | None = None
    replica_age_seconds: float | None = None
    replica_manifest_uri: str | None = None
    state: str = STATE_OK
    reasons: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def attention(self) -> bool:
        """Whether the row must stand out."""
        return self.state != STATE_OK

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as RFC3339)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out["ref"] = self.ref
        out["attention"] = self.attention
        # Named for the question an on-call engineer asks: how much would a restore now lose.
        out["rpo_seconds"] = self.backup_age_seconds
        out["rpo_kind"] = self.mode
        return out


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def classify(row: ClusterStatus, now: datetime, threshold: timedelta) -> ClusterStatus:
    """Set ``backup_age_seconds``, ``state`` and ``reasons`` of a row (pure).

    :param row: the row with its backup and drill facts filled in.
    :param now: the current time.
    :param threshold: age past which the newest backup is stale.
    """
    reasons: list[str] = []
    state = STATE_OK
    if row.last_backup_at is None:
        state = STATE_NO_BACKUP
        reasons.append("no backup")
    else:
        age = now - row.last_backup_at
        row.backup_age_seconds = max(0.0, age.total_seconds())
        if age > threshold:
            state = STATE_STALE
            reasons.append(f"newest backup older than {threshold.total_seconds() / 3600:g} h")
    if row.last_drill_passed is False:
        if state == STATE_OK:
            state = STATE_DRILL_FAILED
        failures = ", ".join(row.drill_failures[:3])
        reasons.append("last drill failed" + (f" ({failures})" if failures else ""))
    if row.unreadable_backups:
        reasons.append(
            f"{len(row.unreadable_backups)} newer backup(s) with an unreadable manifest "
            f"({', '.join(row.unreadable_backups[:3])}): kept by retention, see docs/BACKUP.md"
        )
    if not row.on_management_cluster and row.last_backup_at is not None:
        # Not an alarm by itself (a cluster may be retired) but the first thing an incident needs.
        reasons.append("HostedCluster not found on the management cluster: see docs/RUNBOOK.md")
    row.state, row.reasons = state, reasons
    return row


def discover_backed_up(keys: Iterable[str], prefix: str) -> set[ClusterRef]:
    """Clusters that have at least one ``manifest.json`` under ``{prefix}/{ns}/{name}/{ts}/``.

    :param keys: object keys listed under the prefix.
    :param prefix: the backup prefix.
    """
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    found: set[ClusterRef] = set()
    for key in keys:
        if not key.startswith(base):
            continue
        parts = key[len(base) :].split("/")
        if len(parts) == 4 and parts[3] == "manifest.json" and BACKUP_TS_RE.match(parts[2]):
            try:
                found.add(ClusterRef(parts[0], parts[1]))
            except InvalidNameError:
                continue  # not written by us
    return found


def newest_manifest(
    store: ObjectStore, bucket: str, prefix: str, ref: ClusterRef, objects: list[tuple[str, datetime]],
    now: datetime,
) -> tuple[tuple[str, dict[str, Any], int] | None, list[str]]:  # fmt: skip
    """The newest valid manifest of a cluster: ``(uri, manifest, number of backups)`` or None; and the
    backups newer than it whose manifest is unreadable (retention keeps those: the page shows them).

    :param store: the S3 reader.
    :param bucket: the bucket.
    :param prefix: the backup prefix.
    :param ref: the cluster.
    :param objects: ``(key, last modified)`` listed under the prefix.
    :param now: the cutoff (backups stamped later are ignored).
    """
    base = cluster_prefix(prefix, ref)
    candidates = backup_candidates(objects, base, now)
    unreadable: list[str] = []
    for ts in candidates[:MAX_MANIFEST_TRIES]:
        key = f"{base}/{ts}/manifest.json"
        try:
            manifest = validate_manifest(store.get_json(bucket, key))
        except (ManifestError, ValueError):
            unreadable.append(ts)
            continue
        hc = manifest["hosted_cluster"]
        if (hc["namespace"], hc["name"]) != (ref.namespace, ref.name):
            unreadable.append(ts)  # copied from elsewhere: not this cluster's backup
            continue
        return (f"s3://{bucket}/{key}", manifest, len(candidates)), unreadable
    return None, unreadable


def latest_drill(
    store: ObjectStore, bucket: str, prefix: str, ref: ClusterRef, keys: Iterable[str], now: datetime
) -> tuple[str, dict[str, Any]] | None:
    """The newest drill report of a cluster (by its date-named key), or None.

    :param store: the S3 reader.
    :param bucket: the bucket.
    :param prefix: the backup prefix.
    :param ref: the drilled cluster.
    :param keys: object keys listed under the prefix.
    :param now: any moment (only the directory of ``drill_report_key`` is used).
    """
    drill_dir = drill_report_key(prefix, ref, now).rsplit("/", 1)[0] + "/"
    reports = sorted(k for k in keys if k.startswith(drill_dir) and k.endswith(".json"))
    for key in reversed(reports):
        try:
            report = store.get_json(bucket, key)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get("kind") == "hcp-etcd-drill":
            return f"s3://{bucket}/{key}", report
    return None


def _hosted_cluster_facts(hc: dict[str, Any], now: datetime) -> tuple[bool | None, bool]:
    available = condition(hc, "Available")
    avail = None if available is None else str(available.get("status")) == "True"
    return avail, is_paused((hc.get("spec") or {}).get("pausedUntil"), now)


def collect_status(
    *,
    clusters: ClusterSource | None,
    store: ObjectStore,
    bucket: str,
    prefix: str,
    now: datetime,
    threshold: timedelta,
    next_backup_at: datetime | None = None,
    label_selector: str = "",
) -> list[ClusterStatus]:
    """Every hosted cluster's row, worst first.

    :param clusters: the management cluster (None: S3 only, e.g. when the API is unreachable).
    :param store: the S3 reader (a ``SnapshotStoreHook``).
    :param bucket: the backup bucket.
    :param prefix: the backup prefix.
    :param now: the current time.
    :param threshold: staleness threshold (``stale_threshold()``).
    :param next_backup_at: next scheduled run of the backup DAG.
    :param label_selector: HostedClusters to list (as the backup DAG's ``label_selector``).
    """
    live: dict[ClusterRef, dict[str, Any]] = {}
    for hc in clusters.list_hosted_clusters(label_selector) if clusters is not None else []:
        meta = hc.get("metadata") or {}
        if (meta.get("labels") or {}).get(DRILL_LABEL) == "true":
            continue  # scratch clusters of drills come and go
        try:
            live[ClusterRef(meta.get("namespace", ""), meta.get("name", ""))] = hc
        except InvalidNameError:
            continue
    listing = store.list_objects(bucket, prefix.strip("/") + "/" if prefix.strip("/") else "")
    objects = [(o.key, o.last_modified) for o in listing]
    keys = [k for k, _ in objects]
    rows = []
    for ref in sorted(set(live) | discover_backed_up(keys, prefix)):
        row = ClusterStatus(ref.namespace, ref.name, next_backup_at=next_backup_at)
        if ref in live:
            row.on_management_cluster = True
            row.available, row.paused = _hosted_cluster_facts(live[ref], now)
        found, row.unreadable_backups = newest_manifest(store, bucket, prefix, ref, objects, now)
        if found:
            row.manifest_uri, manifest, row.backups = found
            row.last_backup_at = _time(manifest["created_at"])
            row.size_bytes = manifest["snapshot"]["size_bytes"]
            row.revision = manifest["etcd"]["revision"]
            row.api_downtime_seconds = manifest["api_downtime_seconds"]
            row.mode = manifest["mode"]
            row.release_image = (manifest.get("source") or {}).get("release_image")
        drill = latest_drill(store, bucket, prefix, ref, keys, now)
        if drill:
            row.drill_report_uri, report = drill
            row.last_drill_at = _time(report.get("ran_at"))
            row.last_drill_passed = bool(report.get("passed"))
            recovery = report.get("recovery_seconds")
            row.drill_recovery_seconds = float(recovery) if isinstance(recovery, int | float) else None
            checks = [c for c in report.get("checks") or [] if isinstance(c, dict)]
            row.drill_failures = [str(c.get("name")) for c in checks if not c.get("passed")]
            row.drill_failures += [str(e)[:120] for e in report.get("errors") or []]
        rows.append(classify(row, now, threshold))
    rows.sort(key=lambda r: (_STATE_ORDER[r.state], r.ref))
    return rows


def add_replica(
    rows: list[ClusterStatus], store: ObjectStore, bucket: str, prefix: str, now: datetime
) -> None:
    """Fill in each row's copy in the replica bucket; a replica without the newest backup is a reason.

    :param rows: the rows of :func:`collect_status` (their state is the primary's).
    :param store: the S3 reader of the replica's connection.
    :param bucket: the replica bucket.
    :param prefix: the backup prefix (the same in both copies).
    :param now: the current time.
    """
    listing = store.list_objects(bucket, prefix.strip("/") + "/" if prefix.strip("/") else "")
    objects = [(o.key, o.last_modified) for o in listing]
    for row in rows:
        row.replica_bucket = bucket
        found, _ = newest_manifest(store, bucket, prefix, ClusterRef(row.namespace, row.name), objects, now)
        if found:
            row.replica_manifest_uri, manifest, _ = found
            row.replica_last_backup_at = _time(manifest["created_at"])
        if row.replica_last_backup_at is not None:
            row.replica_age_seconds = max(0.0, (now - row.replica_last_backup_at).total_seconds())
        if row.last_backup_at is not None and (
            row.replica_last_backup_at is None or row.replica_last_backup_at < row.last_backup_at
        ):
            row.reasons.append(
                f"the replica s3://{bucket} lacks the newest backup: the next backup run copies it "
                "(see the replicate task's log)"
            )


def summary(rows: list[ClusterStatus]) -> dict[str, int]:
    """Counts per state, for the page header and a health check.

    :param rows: the rows.
    """
    out = dict.fromkeys(_STATE_ORDER, 0)
    for row in rows:
        out[row.state] += 1
    out["total"] = len(rows)
    return out
