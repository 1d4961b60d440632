"""status.py, metrics.py and notifications.py: pure logic over an in-memory store."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from ui_fixtures import BUCKET, NOW, PREFIX, MemoryStore, add_backup

from hcp_etcd import metrics, status
from hcp_etcd.naming import ClusterRef, format_backup_ts, manifest_key
from hcp_etcd.notifications import HcpEtcdFailureNotifier, failure_message, redact

DAY = timedelta(hours=26)


def collect(clusters, store, threshold=DAY):
    return status.collect_status(clusters=clusters, store=store, bucket=BUCKET, prefix=PREFIX, now=NOW,
                                 threshold=threshold, next_backup_at=NOW + timedelta(hours=14))  # fmt: skip


def test_rows_states_and_order(fleet):
    rows = {r.ref: r for r in collect(*fleet)}
    # The drill's scratch cluster is not a row; the lost cluster (backups, no HostedCluster) is.
    assert set(rows) == {f"clusters/{n}" for n in ("fresh", "stale", "drilled", "never", "lost")}
    fresh = rows["clusters/fresh"]
    assert fresh.state == "ok" and not fresh.reasons and fresh.backups == 2
    assert fresh.backup_age_seconds == 2 * 3600 and fresh.revision == 4242
    assert fresh.size_bytes == 25 * 1024**2
    assert fresh.api_downtime_seconds == 12.5 and fresh.last_drill_passed is True
    assert fresh.drill_recovery_seconds == 95.0 and fresh.available is True and not fresh.paused
    assert fresh.manifest_uri.startswith(f"s3://{BUCKET}/{PREFIX}/clusters/fresh/") and fresh.next_backup_at
    assert rows["clusters/stale"].state == "stale" and "older than 26 h" in rows["clusters/stale"].reasons[0]
    drilled = rows["clusters/drilled"]
    assert drilled.state == "drill-failed" and drilled.paused and drilled.api_downtime_seconds is None
    assert drilled.drill_failures == ["key_counts"], "the newest report wins, and names the failed check"
    never = rows["clusters/never"]
    assert never.state == "no-backup" and never.last_backup_at is None and never.available is False
    lost = rows["clusters/lost"]
    assert lost.state == "ok" and not lost.on_management_cluster and "RUNBOOK" in lost.reasons[-1]
    ordered = [r.state for r in collect(*fleet)]
    assert ordered == sorted(ordered, key=["stale", "drill-failed", "no-backup", "ok"].index)
    counts = status.summary(list(rows.values()))
    assert counts == {"stale": 1, "drill-failed": 1, "no-backup": 1, "ok": 2, "total": 5}


def test_rpo_is_the_age_of_the_newest_verified_backup_of_either_kind():
    """Online backups between the nightly quiesced ones: the RPO is the newest of either, and says which."""
    store = MemoryStore()
    between, nightly = ClusterRef("clusters", "between"), ClusterRef("clusters", "nightly")
    add_backup(store, between, NOW - timedelta(hours=20))
    add_backup(store, between, NOW - timedelta(hours=2), mode="online", api_downtime_seconds=None)
    # A newer online backup without a valid manifest is no backup: it does not shorten the RPO.
    store.put(
        manifest_key(PREFIX, between, format_backup_ts(NOW - timedelta(minutes=30))), {"schema_version": 1}
    )
    add_backup(store, nightly, NOW - timedelta(hours=3), mode="online", api_downtime_seconds=None)
    add_backup(store, nightly, NOW - timedelta(hours=1))
    rows = {r.ref: r.as_dict() for r in collect(None, store)}
    assert (rows["clusters/between"]["rpo_seconds"], rows["clusters/between"]["rpo_kind"]) == (
        2 * 3600,
        "online",
    )
    assert (rows["clusters/nightly"]["rpo_seconds"], rows["clusters/nightly"]["rpo_kind"]) == (
        3600,
        "quiesced",
    )
    assert rows["clusters/between"]["api_downtime_seconds"] is None, "the figures are the newest backup's"


def test_threshold_from_environment():
    assert status.stale_threshold({}) == timedelta(hours=26)
    assert status.stale_threshold({"HCP_ETCD_STALE_HOURS": "1.5"}) == timedelta(hours=1.5)
    with pytest.raises(ValueError):
        status.stale_threshold({"HCP_ETCD_STALE_HOURS": "0"})


def test_stale_and_failed_drill_together_is_stale_with_both_reasons(fleet):
    clusters, store = fleet
    rows = {r.ref: r for r in collect(clusters, store, threshold=timedelta(minutes=30))}
    assert rows["clusters/drilled"].state == "stale"
    assert any("drill failed" in r for r in rows["clusters/drilled"].reasons)


def test_invalid_newest_manifest_is_skipped_and_foreign_one_ignored():
    store = MemoryStore()
    ref = ClusterRef("clusters", "a")
    good = add_backup(store, ref, NOW - timedelta(hours=5))
    store.put(manifest_key(PREFIX, ref, format_backup_ts(NOW - timedelta(hours=1))), {"schema_version": 1})
    # a manifest of another cluster copied under a's prefix does not count as a's backup
    other = status.newest_manifest
    (row,) = collect(None, store)
    assert row.manifest_uri == good and row.backup_age_seconds == 5 * 3600
    assert other is status.newest_manifest
    # a snapshot without a manifest (an unfinished backup) does not exist
    store2 = MemoryStore()
    store2.put(f"{PREFIX}/clusters/b/{format_backup_ts(NOW)}/snapshot.db", b"x")
    assert collect(None, store2) == []


def test_unreadable_newer_backups_are_shown_on_the_row():
    """A newer backup whose manifest is of another schema (kept by retention) is named on the page."""
    store = MemoryStore()
    ref = ClusterRef("clusters", "a")
    good = add_backup(store, ref, NOW - timedelta(hours=5))
    newer = format_backup_ts(NOW - timedelta(hours=1))
    store.put(manifest_key(PREFIX, ref, newer), {"schema_version": 2})
    (row,) = collect(None, store)
    assert row.manifest_uri == good and row.unreadable_backups == [newer]
    assert any("unreadable manifest" in r and newer in r for r in row.reasons), row.reasons
    assert row.as_dict()["unreadable_backups"] == [newer]


def test_no_backups_at_all_still_lists_clusters(fleet):
    clusters, _ = fleet
    rows = collect(clusters, MemoryStore())
    assert {r.state for r in rows} == {"no-backup"} and len(rows) == 4


def test_metrics_names_and_values(monkeypatch, fleet):
    sent = []
    monkeypatch.setattr(metrics.stats, "gauge", lambda name, v, tags=None: sent.append(("g", name, v, tags)))
    monkeypatch.setattr(metrics.stats, "timing", lambda name, v, tags=None: sent.append(("t", name, v, tags)))
    _, store = fleet
    newest = sorted(k for k in store.objects if "fresh" in k and "manifest" in k)[-1]
    manifest = store.get_json(BUCKET, newest)
    metrics.emit_backup(manifest, NOW)
    names = {(kind, name) for kind, name, _, _ in sent}
    assert ("t", "hcp_etcd.backup.duration") in names
    assert ("g", "hcp_etcd.backup.snapshot_bytes.clusters.fresh") in names
    by_name = {name: value for _, name, value, tags in sent if tags}
    assert by_name["hcp_etcd.backup.duration"] == timedelta(hours=2)
    assert by_name["hcp_etcd.backup.api_downtime_seconds"] == 12.5
    assert by_name["hcp_etcd.backup.newest_timestamp"] == (NOW - timedelta(hours=2)).timestamp()
    assert all(tags == {"namespace": "clusters", "hosted_cluster": "fresh"} for *_, tags in sent if tags)
    sent.clear()
    metrics.emit_drill({"hosted_cluster": {"namespace": "clusters", "name": "a.b"}, "passed": False,
                        "recovery_seconds": 80})  # fmt: skip
    assert ("g", "hcp_etcd.drill.result.clusters.a__b", 0.0, None) in sent
    tags = {"namespace": "clusters", "hosted_cluster": "a.b"}
    assert ("g", "hcp_etcd.drill.recovery_seconds", 80.0, tags) in sent
    metrics.emit_drill({"nonsense": True})  # never raises


def test_metrics_reach_a_statsd_server(monkeypatch):
    """Through Airflow's own StatsD logger, to a UDP socket: the names a dashboard will see."""
    import socket

    pytest.importorskip("statsd", reason="the 'statsd' package (Airflow's [statsd] extra) is not installed")
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability.metrics import stats_utils

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(sock.getsockname()[1]))
    from airflow.sdk.configuration import conf

    monkeypatch.setattr(conf, "getboolean", lambda s, k, **kw: (s, k) == ("metrics", "statsd_on") or False)
    try:
        metrics.stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    except Exception as err:  # pragma: no cover - a config layout we did not expect
        pytest.skip(f"cannot initialise Airflow's StatsD logger here: {err}")
    try:
        metrics.emit_drill({"hosted_cluster": {"namespace": "clusters", "name": "x"}, "passed": True,
                            "recovery_seconds": 12})  # fmt: skip
        got = set()
        while len(got) < 4:
            got.add(sock.recv(4096).decode())
    finally:
        metrics.stats.initialize(factory=NoStatsLogger, export_legacy_names=False)
        sock.close()
    # StatsD gauges arrive as "<name>:<value>|g"; the client may print 1 as 1 or 1.0.
    assert any(re.search(r"hcp_etcd\.drill\.result\.clusters\.x:1(\.0)?\|g$", line) for line in got), got
    assert any(re.search(r"hcp_etcd\.drill\.recovery_seconds:12(\.0)?\|g$", line) for line in got), got


def test_redact_presigned_urls():
    url = ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101"
           "&X-Amz-Security-Token=FwoGZX&X-Amz-Signature=0123abcd&X-Amz-Expires=3600")  # fmt: skip
    out = redact(f"curl failed for {url}")
    assert "0123abcd" not in out and "AKIA" not in out and "FwoGZX" not in out
    assert "X-Amz-Signature=REDACTED" in out and "X-Amz-Expires=3600" in out
    assert len(redact("x" * 5000)) == 1000


def _context(exc: Exception) -> dict:
    ti = SimpleNamespace(dag_id="hcp_etcd_backup", run_id="manual__1", task_id="backup.upload", map_index=1,
                         try_number=3, log_url="http://airflow/log")  # fmt: skip
    return {"ti": ti, "task": SimpleNamespace(hosted_cluster="clusters/a"), "exception": exc}


def test_failure_message():
    msg = failure_message(_context(RuntimeError("S3 said 503 for ...?X-Amz-Signature=ff00")))
    assert msg["hosted_cluster"] == "clusters/a" and msg["task_id"] == "backup.upload"
    assert "ff00" not in msg["text"] and "backup.upload failed on clusters/a" in msg["text"]


def test_notifier_logs_by_default(monkeypatch, caplog):
    notifier = HcpEtcdFailureNotifier(conn_id="hcp_etcd_alerts_absent")
    monkeypatch.setattr(notifier, "_connection", lambda: None)
    with caplog.at_level(logging.ERROR, logger="hcp_etcd.alerts"):
        notifier.notify(_context(RuntimeError("boom")))
    assert "hcp_etcd_backup task backup.upload failed on clusters/a" in caplog.text


class _Webhook:
    """A real HTTP server on a loopback port: what it received, answered with ``status``."""

    def __init__(self, status: int = 204) -> None:
        self.received: list[tuple[str, dict[str, str], dict]] = []
        received, code = self.received, status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.path, dict(self.headers), body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    servers: list[_Webhook] = []

    def start(status: int = 204) -> _Webhook:
        servers.append(_Webhook(status))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _alert_connection(monkeypatch, **conn) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HCP_ETCD_ALERTS", json.dumps({"conn_type": "http", **conn}))


def test_notifier_posts_to_a_webhook_connection(monkeypatch, webhook, caplog):
    hook = webhook()
    # The HTTP provider's conventions: a full URL in host, extra keys are headers.
    _alert_connection(monkeypatch, host=f"http://127.0.0.1:{hook.port}/hooks/alert", password="tok",
                      extra={"X-Team": "platform"})  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="hcp_etcd.alerts"):
        HcpEtcdFailureNotifier().notify(_context(RuntimeError("boom")))
    path, headers, body = hook.received[0]
    assert path == "/hooks/alert" and headers["Authorization"] == "Bearer tok"
    assert headers["X-Team"] == "platform" and headers["Content-Type"] == "application/json"
    assert body["hosted_cluster"] == "clusters/a" and body["text"].startswith("hcp-etcd: hcp_etcd_backup")
    assert body["error"] == "RuntimeError: boom" and len(hook.received) == 1
    assert "hcp_etcd.alerts" not in caplog.text, "a delivered alert is not logged as an error too"


def test_notifier_with_login_sends_basic_auth_to_host_and_port(monkeypatch, webhook):
    hook = webhook()
    _alert_connection(monkeypatch, host="127.0.0.1", port=hook.port, login="alerts", password="s3cret")
    HcpEtcdFailureNotifier().notify(_context(RuntimeError("boom")))
    path, headers, _ = hook.received[0]
    assert path == "/" and headers["Authorization"] == "Basic " + base64.b64encode(b"alerts:s3cret").decode()


def test_a_refused_post_is_logged_with_the_alert(monkeypatch, webhook, caplog):
    hook = webhook(status=500)
    _alert_connection(monkeypatch, host=f"http://127.0.0.1:{hook.port}/services/T0/B0/SECRETPATH")
    with caplog.at_level(logging.ERROR, logger="hcp_etcd.alerts"):
        HcpEtcdFailureNotifier().notify(_context(RuntimeError("boom")))
    assert len(hook.received) == 1
    alerts = [r.getMessage() for r in caplog.records if r.name == "hcp_etcd.alerts"]
    assert len(alerts) == 1 and "backup.upload failed on clusters/a" in alerts[0]
    assert "alert connection hcp_etcd_alerts failed: AirflowException: 500" in alerts[0]


def test_an_unreachable_webhook_is_logged_without_its_url(monkeypatch, webhook, caplog):
    hook = webhook()
    port = hook.port
    hook.close()  # nothing listens there any more: the connection is refused
    _alert_connection(monkeypatch, host=f"http://127.0.0.1:{port}/services/T0/B0/SECRETPATH")
    with caplog.at_level(logging.ERROR, logger="hcp_etcd.alerts"):
        HcpEtcdFailureNotifier(timeout=5).notify(_context(RuntimeError("boom")))
    alerts = [r.getMessage() for r in caplog.records if r.name == "hcp_etcd.alerts"]
    assert len(alerts) == 1 and "failed: ConnectionError" in alerts[0]
    assert "SECRETPATH" not in caplog.text
