"""The status page shows both copies of each cluster's backups: the primary's and the replica's."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from ui_fixtures import BUCKET, NOW, PREFIX, FakeClusters, MemoryStore, add_backup

from hcp_etcd import status
from hcp_etcd.naming import ClusterRef
from hcp_etcd.ui.app import Snapshot, create_app

DAY = timedelta(hours=26)


def test_each_row_shows_the_replicas_newest_copy_and_a_replica_behind_is_a_reason(fleet):
    clusters, primary = fleet
    replica = MemoryStore()  # another bucket behind another connection (the same name does not matter here)
    fresh, stale = ClusterRef("clusters", "fresh"), ClusterRef("clusters", "stale")
    add_backup(replica, fresh, NOW - timedelta(hours=2))  # the newest: copied
    add_backup(replica, stale, NOW - timedelta(days=5))  # behind the primary's newest (30 h)
    rows = status.collect_status(clusters=clusters, store=primary, bucket=BUCKET, prefix=PREFIX, now=NOW,
                                 threshold=DAY)  # fmt: skip

    status.add_replica(rows, replica, BUCKET, PREFIX, NOW)

    by_ref = {r.ref: r for r in rows}
    assert by_ref["clusters/fresh"].replica_age_seconds == 2 * 3600
    assert by_ref["clusters/fresh"].replica_manifest_uri.endswith("/manifest.json")
    assert not any("replica" in reason for reason in by_ref["clusters/fresh"].reasons)
    assert by_ref["clusters/stale"].replica_age_seconds == 5 * 24 * 3600
    assert any("replica" in r and "lacks the newest backup" in r for r in by_ref["clusters/stale"].reasons)
    assert by_ref["clusters/drilled"].replica_last_backup_at is None
    assert any("lacks the newest backup" in r for r in by_ref["clusters/drilled"].reasons)
    assert by_ref["clusters/never"].replica_last_backup_at is None
    assert not any("replica" in r for r in by_ref["clusters/never"].reasons)  # nothing to copy yet

    client = TestClient(
        create_app(lambda: Snapshot(rows, NOW, DAY, BUCKET, PREFIX), require_auth=False, cache_seconds=0)
    )
    html = client.get("/").text
    fresh_row = html[html.index('data-cluster="clusters/fresh"') :].split("</tr>")[0]
    assert "replica: " in fresh_row and "(2 h 0 min ago)" in fresh_row.split("replica: ")[1]
    drilled_row = html[html.index('data-cluster="clusters/drilled"') :].split("</tr>")[0]
    assert "replica: none" in drilled_row
    data = client.get("/api/status").json()
    fresh_json = next(c for c in data["clusters"] if c["ref"] == "clusters/fresh")
    assert fresh_json["replica_age_seconds"] == 7200 and fresh_json["replica_bucket"] == BUCKET


def test_without_a_replica_the_page_says_nothing_of_one(fleet):
    rows = status.collect_status(clusters=fleet[0], store=fleet[1], bucket=BUCKET, prefix=PREFIX, now=NOW,
                                 threshold=DAY)  # fmt: skip
    client = TestClient(
        create_app(lambda: Snapshot(rows, NOW, DAY, BUCKET, PREFIX), require_auth=False, cache_seconds=0)
    )
    assert "replica" not in client.get("/").text


class _Unreachable:
    """The primary's S3 while its region is down."""

    def list_objects(self, bucket: str, prefix: str) -> list:
        raise ConnectionError("Could not connect to the endpoint URL")


def test_when_the_primary_cannot_be_read_the_page_shows_the_replica(monkeypatch):
    """The page an on-call engineer opens while the primary's region is down: an error line for the
    primary, and each cluster's backups as the replica has them, with the way to restore from it."""
    from hcp_etcd.hooks import hosted_cluster, snapshot_store
    from hcp_etcd.ui import app

    replica = MemoryStore()
    add_backup(replica, ClusterRef("clusters", "prod1"), NOW - timedelta(hours=3))
    stores = {"aws_default": _Unreachable(), "aws_replica": replica}
    monkeypatch.setattr(snapshot_store, "SnapshotStoreHook", lambda aws_conn_id: stores[aws_conn_id])
    monkeypatch.setattr(hosted_cluster, "HostedClusterHook", lambda **kw: FakeClusters([]))
    monkeypatch.setattr(app, "next_backup_of_either_kind", lambda: None)
    monkeypatch.setenv("HCP_ETCD_BUCKET", "primary-bkt")
    monkeypatch.setenv("HCP_ETCD_REPLICA_BUCKET", BUCKET)
    monkeypatch.setenv("HCP_ETCD_REPLICA_AWS_CONN_ID", "aws_replica")

    snap = app.collect_from_environment()

    assert [r.ref for r in snap.rows] == ["clusters/prod1"]
    assert snap.rows[0].replica_manifest_uri == snap.rows[0].manifest_uri
    assert any("S3 (s3://primary-bkt/" in e and "Could not connect" in e for e in snap.errors), snap.errors
    assert any(
        f"the rows show the replica s3://{BUCKET}/" in e and "source_bucket=replica" in e for e in snap.errors
    )
