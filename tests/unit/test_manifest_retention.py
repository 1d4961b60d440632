import copy
from datetime import UTC, datetime, timedelta

import pytest

from hcp_etcd.manifest import ManifestError, build_manifest, referenced_key_objects, validate_manifest
from hcp_etcd.retention import (
    Backup,
    RetentionPolicy,
    group_backup_dirs,
    plan_retention,
    stale_incomplete,
    unreferenced_keys,
)

ARGS = dict(
    namespace="clusters", name="a", created_at="2025-01-01T02:00:00Z", mode="quiesced", bucket="b",
    snapshot_key="p/clusters/a/20250101T020000Z/snapshot.db", size_bytes=10, sha256="a" * 64,
    canonical_member="etcd-0", revision=5, etcd_hash=7, total_keys=9, total_size=20480, etcd_version="3.5.1",
    members=[{"pod": "etcd-0", "revision": 5, "hash": 7}], key_counts={"pods": 2},
    key_location="s3://b/k/clusters/a/" + "c" * 64 + ".key", key_sha256="c" * 64,
    backup_key_location=None, backup_key_sha256=None, api_downtime_seconds=12.5,
    dag_id="hcp_etcd_backup", run_id="manual__1", sse="AES256",
)  # fmt: skip


def test_manifest_has_issue4_fields():
    m = build_manifest(**ARGS)
    for path in ["schema_version", "created_at", "mode", "api_downtime_seconds"]:
        assert path in m
    assert m["hosted_cluster"] == {"namespace": "clusters", "name": "a"}
    assert m["etcd"]["members"][0] == {"pod": "etcd-0", "revision": 5, "hash": 7}
    assert m["encryption_key"] == {"location": ARGS["key_location"], "sha256": "c" * 64}
    assert m["airflow"] == {"dag_id": "hcp_etcd_backup", "run_id": "manual__1"}
    assert referenced_key_objects(m) == {ARGS["key_location"]}


def test_manifest_validation_rejects():
    m = build_manifest(**ARGS)
    for mutate in [
        lambda d: d.update(schema_version=2),
        lambda d: d["etcd"].pop("revision"),
        lambda d: d["snapshot"].update(sha256="xyz"),
        lambda d: d.update(mode="hot"),
        lambda d: d["snapshot"].update(size_bytes=True),
        lambda d: d["etcd"].update(members=[{"pod": "x"}]),
        lambda d: d["snapshot"].update(key="p/other.tar"),
    ]:
        bad = copy.deepcopy(m)
        mutate(bad)
        with pytest.raises(ManifestError):
            validate_manifest(bad)
    with pytest.raises(ManifestError):
        validate_manifest([])


def _b(day, hour=2):
    d = datetime(2025, 1, 1, hour, tzinfo=UTC) + timedelta(days=day)
    return Backup(d, d.strftime("%Y%m%dT%H%M%SZ"))


def test_gfs_keeps_newest_and_buckets():
    backups = [_b(d) for d in range(60)] + [_b(59, hour=3)]
    plan = plan_retention(backups, RetentionPolicy(keep_last=2, keep_daily=3, keep_weekly=2, keep_monthly=2))
    newest = _b(59, hour=3).ts
    assert "newest" in plan.keep[newest]
    kept = set(plan.keep)
    assert _b(59).ts in kept  # keep_last=2
    assert _b(58).ts in kept and _b(57).ts in kept  # daily: 3 distinct days, newest of each
    assert all(ts not in kept for ts in plan.delete)
    assert len(plan.keep) + len(plan.delete) == len(backups)
    # the last day is March 1: monthly=2 keeps March's and February's newest, not January's
    assert "20250228T020000Z" in kept
    assert "20250131T020000Z" in plan.delete


def test_gfs_never_deletes_newest_even_with_zero_policy():
    plan = plan_retention([_b(1), _b(2)], RetentionPolicy(0, 0, 0, 0))
    assert list(plan.keep) == [_b(2).ts] and plan.delete == [_b(1).ts]
    assert plan_retention([], RetentionPolicy()).delete == []
    with pytest.raises(ValueError):
        RetentionPolicy(keep_last=-1)


def test_incomplete_and_keys():
    now = datetime(2025, 1, 2, tzinfo=UTC)
    grace = timedelta(hours=1)
    assert stale_incomplete([("old", now - timedelta(hours=2)), ("new", now)], now, grace) == ["old"]
    keys = [("s3://b/k/1.key", now - timedelta(days=1)), ("s3://b/k/2.key", now - timedelta(days=1)),
            ("s3://b/k/3.key", now)]  # fmt: skip
    assert unreferenced_keys(keys, {"s3://b/k/1.key"}, now, grace) == ["s3://b/k/2.key"]


def test_group_backup_dirs():
    t = datetime(2025, 1, 1, tzinfo=UTC)
    objs = [
        ("p/c/a/20250101T000000Z/snapshot.db", t),
        ("p/c/a/20250101T000000Z/manifest.json", t + timedelta(seconds=5)),
        ("p/c/a/20250102T000000Z/snapshot.db", t),
        ("p/c/a/notats/x", t),
        ("p/c/ab/20250101T000000Z/snapshot.db", t),
    ]
    dirs = group_backup_dirs(objs, "p/c/a")
    assert sorted(dirs) == ["20250101T000000Z", "20250102T000000Z"]
    assert dirs["20250101T000000Z"].has_manifest and not dirs["20250102T000000Z"].has_manifest
    assert dirs["20250101T000000Z"].last_modified == t + timedelta(seconds=5)


def test_manifest_records_what_a_restore_verifies_and_old_ones_still_validate():
    samples = [{"key": "/kubernetes.io/configmaps/a/x", "sha256": "a" * 64, "mod_revision": 5}]
    m = build_manifest(**ARGS, leased_key_counts={"events": 2}, samples=samples, listed_at_revision=12)
    assert m["schema_version"] == 1
    assert m["etcd"]["samples"] == samples and m["etcd"]["leased_key_counts"] == {"events": 2}
    assert m["etcd"]["listed_at_revision"] == 12
    old = build_manifest(**ARGS)
    assert "samples" not in old["etcd"] and validate_manifest(old) is old
    for bad in (
        {"samples": [{"key": "k"}]},
        {"leased_key_counts": {"events": "2"}},
        {"listed_at_revision": "1"},
    ):
        broken = copy.deepcopy(m)
        broken["etcd"].update(bad)
        with pytest.raises(ManifestError):
            validate_manifest(broken)
