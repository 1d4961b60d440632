"""The FastAPI app behind the page: ``GET /`` (HTML), ``GET /api/status`` (JSON), ``GET /healthz``.

Mounted by the api-server under ``/hcp-etcd`` (``plugins/hcp_etcd_ui_plugin.py``). Reads through
the project's hooks with the same connection ids and bucket settings as the DAGs (environment:
``HCP_ETCD_BUCKET``, ``HCP_ETCD_PREFIX``, ``HCP_ETCD_KUBERNETES_CONN_ID``, ``HCP_ETCD_AWS_CONN_ID``,
``HCP_ETCD_LABEL_SELECTOR``, ``HCP_ETCD_STALE_HOURS``). Results are cached for
``HCP_ETCD_UI_CACHE_SECONDS`` (default 30) so many open tabs do not mean many S3 listings.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from hcp_etcd.params import BUCKET_ENV, DEFAULT_PREFIX, REPLICA_AWS_CONN_ID_ENV, REPLICA_BUCKET_ENV
from hcp_etcd.status import ClusterStatus, add_replica, collect_status, stale_threshold, summary
from hcp_etcd.ui.page import render_page

log = logging.getLogger(__name__)

URL_PREFIX = "/hcp-etcd"
BACKUP_DAG_ID = "hcp_etcd_backup"
ONLINE_BACKUP_DAG_ID = "hcp_etcd_backup_online"


@dataclass
class Snapshot:
    """One collection of the rows.

    :param rows: the rows, worst first.
    :param now: when collected.
    :param threshold: the staleness threshold used.
    :param bucket: the bucket read.
    :param prefix: the prefix read.
    :param errors: problems met (the page shows them).
    """

    rows: list[ClusterStatus]
    now: datetime
    threshold: timedelta
    bucket: str
    prefix: str
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "generated_at": self.now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bucket": self.bucket,
            "prefix": self.prefix,
            "stale_after_hours": self.threshold.total_seconds() / 3600,
            "summary": summary(self.rows),
            "errors": self.errors,
            "clusters": [r.as_dict() for r in self.rows],
        }


class _Clusters:
    """The management cluster, or None-like when it cannot be reached (the page still shows S3)."""

    def __init__(self, conn_id: str, errors: list[str]) -> None:
        self.conn_id = conn_id
        self.errors = errors

    def list_hosted_clusters(self, label_selector: str = "", namespace: str | None = None) -> list[dict]:
        from hcp_etcd.hooks.hosted_cluster import HostedClusterHook

        try:
            hook = HostedClusterHook(kubernetes_conn_id=self.conn_id)
            return hook.list_hosted_clusters(label_selector, namespace)
        except Exception as err:  # shown on the page: S3 still tells what is backed up
            log.warning("listing HostedClusters failed", exc_info=True)
            problem = f"management cluster (connection {self.conn_id}): {type(err).__name__}: {err}"
            self.errors.append(problem[:300])
            return []


def next_backup_at(dag_id: str = BACKUP_DAG_ID) -> datetime | None:
    """When the scheduler will next create a run of the backup DAG (None when paused or unknown).

    :param dag_id: the DAG.
    """
    try:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        with create_session() as session:
            model = session.get(DagModel, dag_id)
            if model is None or model.is_paused:
                return None
            return model.next_dagrun_create_after
    except Exception:  # no metadata DB (tests, a bare uvicorn): the column says "—"
        log.debug("next run of %s unknown", dag_id, exc_info=True)
        return None


def next_backup_of_either_kind() -> datetime | None:
    """The sooner of the next quiesced and the next online backup run (None when neither is due)."""
    due = [d for d in (next_backup_at(BACKUP_DAG_ID), next_backup_at(ONLINE_BACKUP_DAG_ID)) if d]
    return min(due, default=None)


def collect_from_environment() -> Snapshot:
    """Collect the rows with the DAGs' settings, through the project's hooks."""
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    now = datetime.now(UTC)
    threshold = stale_threshold()
    bucket = os.environ.get(BUCKET_ENV, "")
    prefix = os.environ.get("HCP_ETCD_PREFIX", DEFAULT_PREFIX)
    errors: list[str] = []
    if not bucket:
        errors.append(f"{BUCKET_ENV} is not set: the api-server needs the same environment as the DAGs")
        return Snapshot([], now, threshold, bucket, prefix, errors)
    clusters = _Clusters(os.environ.get("HCP_ETCD_KUBERNETES_CONN_ID", "kubernetes_default"), errors)
    store = SnapshotStoreHook(aws_conn_id=os.environ.get("HCP_ETCD_AWS_CONN_ID", "aws_default"))
    replica = os.environ.get(REPLICA_BUCKET_ENV, "").strip()
    replica_store = None
    if replica:
        conn_id = os.environ.get(REPLICA_AWS_CONN_ID_ENV, "").strip()
        replica_store = SnapshotStoreHook(aws_conn_id=conn_id or store.aws_conn_id)

    def rows_of(source: Any, source_bucket: str) -> list[ClusterStatus]:
        return collect_status(
            clusters=clusters,
            store=source,
            bucket=source_bucket,
            prefix=prefix,
            now=now,
            threshold=threshold,
            next_backup_at=next_backup_of_either_kind(),
            label_selector=os.environ.get("HCP_ETCD_LABEL_SELECTOR", ""),
        )

    primary_failed = False
    try:
        rows = rows_of(store, bucket)
    except Exception as err:
        log.warning("reading s3://%s/%s failed", bucket, prefix, exc_info=True)
        errors.append(f"S3 (s3://{bucket}/{prefix}): {type(err).__name__}: {err}"[:300])
        rows, primary_failed = [], True
    if replica_store is not None:
        try:
            if primary_failed:
                # The primary's region is down: the page the on-call engineer opens shows the replica.
                rows = rows_of(replica_store, replica)
                errors.append(
                    f"the primary bucket cannot be read: the rows show the replica s3://{replica}/{prefix} "
                    "(restore with source_bucket=replica)"
                )
            add_replica(rows, replica_store, replica, prefix, now)
        except Exception as err:  # the replica's region may be down: the primary's rows still show
            log.warning("reading the replica s3://%s/%s failed", replica, prefix, exc_info=True)
            errors.append(f"replica S3 (s3://{replica}/{prefix}): {type(err).__name__}: {err}"[:300])
    return Snapshot(rows, now, threshold, bucket, prefix, errors)


def _require_dag_read() -> list[Any]:
    """The api-server's own check: who may read the backup DAG may read this page."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return [Depends(requires_access_dag("GET", param_dag_id=BACKUP_DAG_ID))]


def create_app(
    collector: Callable[[], Snapshot] = collect_from_environment,
    require_auth: bool = True,
    cache_seconds: float | None = None,
) -> FastAPI:
    """The app.

    :param collector: produces a :class:`Snapshot` (tests pass their own).
    :param require_auth: enforce Airflow's authentication (read access to the backup DAG); only a
        test server outside the api-server turns it off.
    :param cache_seconds: reuse a collection this long (default env ``HCP_ETCD_UI_CACHE_SECONDS`` or 30).
    """
    ttl = float(os.environ.get("HCP_ETCD_UI_CACHE_SECONDS", "30")) if cache_seconds is None else cache_seconds
    lock = threading.Lock()
    cached: dict[str, Any] = {}

    def current() -> Snapshot:
        with lock:  # one collection at a time; the others wait for its result
            if cached and time.monotonic() - cached["at"] < ttl:
                return cached["snapshot"]
            snapshot = collector()
            cached.update(at=time.monotonic(), snapshot=snapshot)
            return snapshot

    app = FastAPI(
        title="hcp-etcd status",
        description="Backups and restore drills of hosted clusters' etcd",
        dependencies=_require_dag_read() if require_auth else [],
    )

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        snap = current()
        html = render_page(
            snap.rows,
            summary(snap.rows),
            now=snap.now,
            threshold=snap.threshold,
            bucket=snap.bucket,
            prefix=snap.prefix,
            errors=snap.errors,
            dag_url=f"/dags/{BACKUP_DAG_ID}",
        )
        return HTMLResponse(html)

    @app.get("/api/status")
    def status() -> JSONResponse:
        return JSONResponse(current().as_dict())

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        counts = summary(current().rows)
        return {"ok": counts["stale"] == 0 and counts["drill-failed"] == 0, "summary": counts}

    return app
