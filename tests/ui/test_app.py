"""The FastAPI app: with a fake fleet (TestClient), against the sandbox, and inside the real api-server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ui_fixtures import BUCKET, NOW, PREFIX, MemoryStore, airflow_env, make_manifest, migrate

from hcp_etcd.naming import ClusterRef, format_backup_ts, manifest_key, snapshot_key
from hcp_etcd.status import collect_status
from hcp_etcd.ui.app import Snapshot, collect_from_environment, create_app

REPO = Path(__file__).resolve().parents[2]


def fleet_collector(clusters, store, threshold=timedelta(hours=26)):
    def collect() -> Snapshot:
        rows = collect_status(clusters=clusters, store=store, bucket=BUCKET, prefix=PREFIX, now=NOW,
                              threshold=threshold)  # fmt: skip
        return Snapshot(rows, NOW, threshold, BUCKET, PREFIX)

    return collect


def test_page_json_and_health(fleet):
    client = TestClient(create_app(fleet_collector(*fleet), require_auth=False, cache_seconds=0))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'data-cluster="clusters/stale" data-state="stale"' in html
    assert 'data-cluster="clusters/drilled" data-state="drill-failed"' in html
    assert 'data-cluster="clusters/never" data-state="no-backup"' in html and "no backup" in html
    assert "not on the management cluster" in html and "25.0 MiB" in html and "12.5 s" in html
    assert html.index("clusters/stale") < html.index("clusters/fresh"), "worst rows first"
    data = client.get("/api/status").json()
    assert data["summary"]["stale"] == 1 and data["stale_after_hours"] == 26
    fresh = next(c for c in data["clusters"] if c["ref"] == "clusters/fresh")
    assert fresh["last_backup_at"] == "2026-03-10T10:00:00Z" and fresh["attention"] is False
    assert client.get("/healthz").json()["ok"] is False


def test_page_shows_each_clusters_rpo_and_its_kind(fleet):
    html = TestClient(create_app(fleet_collector(*fleet), require_auth=False, cache_seconds=0)).get("/").text
    assert "<th" in html and ">RPO</th>" in html

    def row(ref):
        return html.split(f'data-cluster="{ref}"', 1)[1].split("</tr>", 1)[0]

    # drilled: an online backup 1 h ago; fresh: a quiesced one 2 h ago; never: none.
    assert (
        '<td class="rpo" data-rpo-kind="online">1 h 0 min<div class="note kind-online">online</div>'
        in row("clusters/drilled")
    )
    assert 'data-rpo-kind="quiesced">2 h 0 min<div class="note kind-quiesced">quiesced' in row(
        "clusters/fresh"
    )
    assert '<td class="rpo">—</td>' in row("clusters/never")


def test_next_backup_is_the_sooner_of_either_kind(monkeypatch):
    from hcp_etcd.ui import app

    due = {"hcp_etcd_backup": NOW + timedelta(hours=14), "hcp_etcd_backup_online": NOW + timedelta(hours=2)}
    monkeypatch.setattr(app, "next_backup_at", due.get)
    assert app.next_backup_of_either_kind() == NOW + timedelta(hours=2)
    due["hcp_etcd_backup_online"] = None  # online schedule off, or the DAG paused
    assert app.next_backup_of_either_kind() == NOW + timedelta(hours=14)


def test_page_without_any_backup(fleet):
    clusters, _ = fleet
    client = TestClient(create_app(fleet_collector(clusters, MemoryStore()), require_auth=False))
    html = client.get("/").text
    assert html.count('data-state="no-backup"') == 4 and "Traceback" not in html


def test_collection_is_cached(fleet):
    calls = []

    def collect() -> Snapshot:
        calls.append(1)
        return fleet_collector(*fleet)()

    client = TestClient(create_app(collect, require_auth=False, cache_seconds=60))
    client.get("/")
    client.get("/api/status")
    assert len(calls) == 1


def test_missing_bucket_is_said_on_the_page(monkeypatch):
    monkeypatch.delenv("HCP_ETCD_BUCKET", raising=False)
    html = TestClient(create_app(require_auth=False, cache_seconds=0)).get("/").text
    assert "HCP_ETCD_BUCKET is not set" in html


@pytest.mark.integration
def test_against_the_sandbox(sandbox, monkeypatch):
    """Real hooks: HostedClusters from the sandbox's API, a manifest written to its S3."""
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    prefix = f"ui-test-{uuid.uuid4().hex[:8]}/backups"  # our own prefix: other tests' backups stay out
    monkeypatch.setenv("HCP_ETCD_PREFIX", prefix)
    store = SnapshotStoreHook()
    before = collect_from_environment()
    assert not before.errors, before.errors
    states = {r.ref: r.state for r in before.rows}
    assert states == {"clusters/ha-one": "no-backup", "clusters/single-one": "no-backup"}
    ref = ClusterRef("clusters", "ha-one")
    created = datetime.now(UTC) - timedelta(hours=30)
    ts = format_backup_ts(created)
    manifest = make_manifest(ref, created, bucket=sandbox.bucket, snapshot_key=snapshot_key(prefix, ref, ts))
    store.put_bytes(b"snapshot", sandbox.bucket, snapshot_key(prefix, ref, ts))
    store.put_json(manifest, sandbox.bucket, manifest_key(prefix, ref, ts))
    try:
        client = TestClient(create_app(require_auth=False, cache_seconds=0))
        data = client.get("/api/status").json()
        rows = {c["ref"]: c for c in data["clusters"]}
        ha = rows["clusters/ha-one"]
        assert ha["state"] == "stale" and ha["on_management_cluster"]
        assert ha["available"] is True
        assert rows["clusters/single-one"]["state"] == "no-backup" and not data["errors"]
    finally:
        store.delete_objects(
            sandbox.bucket, [o.key for o in store.list_objects(sandbox.bucket, prefix + "/")]
        )


API_SERVER_PROBE = r"""
import json, sys
from airflow.api_fastapi.app import create_app
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi.testclient import TestClient
client = TestClient(create_app())
out = {"anonymous": client.get("/hcp-etcd/").status_code}
token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
page = client.get("/hcp-etcd/", headers={"Authorization": f"Bearer {token}"})
out["admin"] = page.status_code
out["page_ok"] = "etcd backups of hosted clusters" in page.text and "HCP_ETCD_BUCKET is not set" in page.text
plugins = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}).json()["plugins"]
out["views"] = [v for p in plugins if p["name"] == "hcp_etcd_ui" for v in p["external_views"]]
out["apps"] = [a["url_prefix"] for p in plugins if p["name"] == "hcp_etcd_ui" for a in p["fastapi_apps"]]
print("@@" + json.dumps(out))
"""


def test_plugin_in_the_real_api_server(tmp_path, metadata_db):
    """The plugin as Airflow loads it: at /hcp-etcd, behind Airflow's auth, listed with its nav view."""
    env = airflow_env(tmp_path)
    migrate(env, metadata_db)
    proc = subprocess.run([sys.executable, "-c", API_SERVER_PROBE], capture_output=True, text=True, env=env,
                          timeout=180, check=False)  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[-1][2:])
    assert out["anonymous"] == 401, "the page is behind Airflow's authentication"
    assert out["admin"] == 200 and out["page_ok"]
    assert out["apps"] == ["/hcp-etcd"]
    assert out["views"][0]["href"] == "/hcp-etcd/" and out["views"][0]["destination"] == "nav"
