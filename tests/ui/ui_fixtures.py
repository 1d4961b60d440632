"""Helpers of the UI tests: an in-memory object store with real manifests and drill reports.

A module of its own (not ``conftest``: ``tests/conftest.py`` owns that name on ``sys.path``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hcp_etcd.manifest import build_manifest
from hcp_etcd.naming import ClusterRef, format_backup_ts, manifest_key, rfc3339, snapshot_key
from hcp_etcd.restore.report import build_drill_report, drill_report_key

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
BUCKET = "backups"
PREFIX = "hcp-etcd/backups"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Obj:
    key: str
    size: int
    last_modified: datetime


class MemoryStore:
    """The two reads of SnapshotStoreHook that status.py uses, over a dict; writes with the same layout."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.reads: list[str] = []

    def put(self, key: str, data: Any, when: datetime = NOW) -> None:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.objects[key] = (body, when)

    def list_objects(self, bucket: str, prefix: str) -> list[Obj]:
        assert bucket == BUCKET
        return [Obj(k, len(v), t) for k, (v, t) in sorted(self.objects.items()) if k.startswith(prefix)]

    def get_json(self, bucket: str, key: str) -> Any:
        self.reads.append(key)
        return json.loads(self.objects[key][0])


def make_manifest(ref: ClusterRef, created: datetime, **over: Any) -> dict[str, Any]:
    ts = format_backup_ts(created)
    args: dict[str, Any] = dict(
        namespace=ref.namespace, name=ref.name, created_at=rfc3339(created), mode="quiesced",
        bucket=BUCKET, snapshot_key=snapshot_key(PREFIX, ref, ts), size_bytes=25 * 1024 * 1024,
        sha256="a" * 64, canonical_member="etcd-0", revision=4242, etcd_hash=99, total_keys=1200,
        total_size=30 * 1024 * 1024, etcd_version="3.5.21",
        members=[{"pod": "etcd-0", "revision": 4242, "hash": 99}], key_counts={"secrets": 10},
        key_location=f"s3://{BUCKET}/hcp-etcd/keys/{ref.namespace}/{ref.name}/{'b' * 64}.key",
        key_sha256="b" * 64, backup_key_location=None, backup_key_sha256=None, api_downtime_seconds=12.5,
        dag_id="hcp_etcd_backup", run_id="manual__1", sse="AES256",
    )  # fmt: skip
    args.update(over)
    return build_manifest(**args)


def add_backup(store: MemoryStore, ref: ClusterRef, created: datetime, **over: Any) -> str:
    ts = format_backup_ts(created)
    store.put(snapshot_key(PREFIX, ref, ts), b"snapshot", created)
    key = manifest_key(PREFIX, ref, ts)
    store.put(key, make_manifest(ref, created, **over), created)
    return f"s3://{BUCKET}/{key}"


def add_drill(store: MemoryStore, ref: ClusterRef, ran_at: datetime, passed: bool,
              recovery: float = 95.0) -> str:  # fmt: skip
    checks = [{"name": "member_count", "passed": True, "detail": "3 members"},
              {"name": "key_counts", "passed": passed, "detail": "x"}]  # fmt: skip
    report = build_drill_report(
        ref=ref, target=f"drills/{ref.name}-drill", as_of=ran_at, ran_at=ran_at,
        backup={"manifest_uri": "s3://x/m/manifest.json",
                "manifest": {"created_at": rfc3339(ran_at - timedelta(hours=5))}},
        created={"created_at": rfc3339(ran_at)}, restored={"recovery_seconds": recovery},
        checks=checks, errors=[], run_id="scheduled__1",
    )  # fmt: skip
    key = drill_report_key(PREFIX, ref, ran_at)
    store.put(key, report, ran_at)
    return key


def hosted_cluster(namespace: str, name: str, available: bool = True, paused: str | None = None,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
        "spec": {"pausedUntil": paused} if paused else {},
        "status": {"conditions": [{"type": "Available", "status": "True" if available else "False"}]},
    }


class FakeClusters:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def list_hosted_clusters(self, label_selector: str = "", namespace: str | None = None) -> list[dict]:
        return self.items


@pytest.fixture
def fleet() -> tuple[FakeClusters, MemoryStore]:
    """Four clusters: fresh + passing drill, stale, drill failed, never backed up; and a lost one."""
    store = MemoryStore()
    fresh, stale, drilled = (ClusterRef("clusters", n) for n in ("fresh", "stale", "drilled"))
    add_backup(store, fresh, NOW - timedelta(days=3))
    add_backup(store, fresh, NOW - timedelta(hours=2))
    add_drill(store, fresh, NOW - timedelta(days=1), passed=True)
    add_backup(store, stale, NOW - timedelta(hours=30))
    add_backup(store, drilled, NOW - timedelta(hours=1), mode="online", api_downtime_seconds=None)
    add_drill(store, drilled, NOW - timedelta(days=8), passed=True)
    add_drill(store, drilled, NOW - timedelta(days=1), passed=False)
    add_backup(store, ClusterRef("clusters", "lost"), NOW - timedelta(hours=3))
    clusters = FakeClusters([
        hosted_cluster("clusters", "fresh"), hosted_cluster("clusters", "stale"),
        hosted_cluster("clusters", "drilled", paused="true"),
        hosted_cluster("clusters", "never", available=False),
        hosted_cluster("drills", "fresh-drill-20260309", labels={"hcp-etcd.openshift.io/drill": "true"}),
    ])  # fmt: skip
    return clusters, store


def airflow_env(home: Path, **overrides: str) -> dict[str, str]:
    """The environment of an Airflow of its own in ``home``: the project's plugins, no DAGs, no examples.

    Nothing of the caller's Airflow or hcp-etcd settings leaks in; ``overrides`` are added last.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HCP_ETCD"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
    )
    env.update(overrides)
    return env


def migrate(env: dict[str, str]) -> None:
    """``airflow db migrate`` in that environment; fails the test with its output when it fails."""
    cmd = [sys.executable, "-m", "airflow", "db", "migrate"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
