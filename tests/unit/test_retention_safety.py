"""Retention never loses a backup (issue 12): it deletes only what it understands.

Against moto's in-process S3 (the ``s3hook`` fixture: bucket ``bkt``): unreadable manifests are kept and
reported, key garbage collection reads every backup location of the key store, Object Lock is
respected, and a missing bucket fails at once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from airflow.sdk.exceptions import AirflowFailException

from hcp_etcd import metrics
from hcp_etcd.manifest import build_manifest
from hcp_etcd.naming import ClusterRef, encryption_key_key, format_backup_ts, manifest_key, snapshot_key
from hcp_etcd.operators.fleet import BackupRetentionOperator

REF = ClusterRef("clusters", "prod1")
BUCKET, PREFIX, KEY_PREFIX = "bkt", "hcp-etcd/backups", "hcp-etcd/keys"
NOW = datetime.now(UTC)


def ts(days_ago: float) -> str:
    return format_backup_ts(NOW - timedelta(days=days_ago))


def key_location(fingerprint: str, bucket: str = BUCKET) -> str:
    return f"s3://{bucket}/{encryption_key_key(KEY_PREFIX, REF, fingerprint)}"


def put_key(hook: Any, fingerprint: str, bucket: str = BUCKET) -> str:
    hook.put_bytes(b"k" * 32, bucket, encryption_key_key(KEY_PREFIX, REF, fingerprint))
    return key_location(fingerprint, bucket)


def put_backup(
    hook: Any, stamp: str, *, prefix: str = PREFIX, fingerprint: str = "c" * 64, bucket: str = BUCKET,
    manifest: bytes | None = None, mode: str = "quiesced",
) -> str:  # fmt: skip
    """A backup directory: the snapshot and a valid manifest (or ``manifest`` as given)."""
    snap = snapshot_key(prefix, REF, stamp)
    hook.put_bytes(b"snapshot", bucket, snap)
    if manifest is None:
        manifest = json.dumps(build_manifest(
            namespace=REF.namespace, name=REF.name, created_at=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
            mode=mode, bucket=bucket, snapshot_key=snap, size_bytes=8, sha256="a" * 64,
            canonical_member="etcd-0", revision=5, etcd_hash=7, total_keys=9, total_size=20480,
            etcd_version="3.5.1", members=[{"pod": "etcd-0", "revision": 5, "hash": 7}],
            key_counts={"pods": 2}, key_location=key_location(fingerprint), key_sha256=fingerprint,
            backup_key_location=None, backup_key_sha256=None,
            api_downtime_seconds=1.0 if mode == "quiesced" else None,
            dag_id="hcp_etcd_backup", run_id=f"manual__{stamp}", sse="AES256", backup_prefix=prefix,
        )).encode()  # fmt: skip
    hook.put_bytes(manifest, bucket, manifest_key(prefix, REF, stamp))
    return stamp


def keys_under(hook: Any, prefix: str, bucket: str = BUCKET) -> set[str]:
    return {o.key for o in hook.list_objects(bucket, prefix)}


def retention(prefix: str = PREFIX, keep_last: int = 1, **kwargs: Any) -> dict[str, Any]:
    op = BackupRetentionOperator(
        task_id="retention", bucket=kwargs.pop("bucket", BUCKET), prefix=prefix, key_prefix=KEY_PREFIX,
        hosted_clusters=[str(REF)], keep_last=keep_last, incomplete_grace_minutes=0,
        **{"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, **kwargs},
    )  # fmt: skip
    return op.execute({})[str(REF)]


def test_unreadable_manifests_are_kept_reported_and_counted(s3hook, monkeypatch):
    """A manifest of ``schema_version: 2`` (the newest backup) and a truncated one, both older than the
    grace, next to valid ones: nothing of theirs is deleted, both are reported, and the metric counts
    them. Today's code deleted both directories as "incomplete"."""
    gauges: dict[str, float] = {}
    monkeypatch.setattr(metrics.stats, "gauge", lambda name, v, tags=None: gauges.__setitem__(name, v))
    s3hook.register_backup_location(BUCKET, KEY_PREFIX, BUCKET, PREFIX)
    put_key(s3hook, "c" * 64)
    old, valid = put_backup(s3hook, ts(5)), put_backup(s3hook, ts(3))
    v2 = s3hook.get_json(BUCKET, manifest_key(PREFIX, REF, valid))
    v2["schema_version"] = 2
    newer = put_backup(s3hook, ts(1), manifest=json.dumps(v2).encode())
    truncated = put_backup(s3hook, ts(4), manifest=b'{"schema_version": 1, "hosted_clus')
    failed = ts(6)
    s3hook.put_bytes(b"partial", BUCKET, snapshot_key(PREFIX, REF, failed))  # no manifest at all

    result = retention()

    left = keys_under(s3hook, PREFIX)
    for stamp in (newer, truncated, valid):
        assert manifest_key(PREFIX, REF, stamp) in left and snapshot_key(PREFIX, REF, stamp) in left, stamp
    assert not any(f"/{old}/" in k or f"/{failed}/" in k for k in left), left
    assert result["kept"] == [valid], result  # the newest *valid* backup, whatever the policy
    assert result["deleted"] == [old] and result["incomplete_deleted"] == [failed], result
    assert set(result["unreadable"]) == {newer, truncated}, result
    assert "schema_version 2" in result["unreadable"][newer]
    assert gauges[metrics.UNREADABLE_BACKUPS] == 2.0 and gauges[metrics.LOCKED_BACKUPS] == 0.0
    # The keys those manifests need are unknown: no key is collected while they are unreadable.
    assert result["keys_gc"].startswith("skipped") and result["keys_deleted"] == []


def test_retention_reads_each_backups_mode_and_keeps_hourly(s3hook):
    """The operator gives the plan each manifest's mode and ``keep_hourly``: the day's quiesced backup
    is its daily one although online backups came after it, and the last hours keep one each."""
    s3hook.register_backup_location(BUCKET, KEY_PREFIX, BUCKET, PREFIX)
    day = (NOW - timedelta(days=2)).replace(hour=2, minute=0, second=0, microsecond=0)
    quiesced = put_backup(s3hook, format_backup_ts(day), mode="quiesced")
    online = [put_backup(s3hook, format_backup_ts(day + timedelta(hours=h)), mode="online")
              for h in (2, 6, 10)]  # fmt: skip
    result = retention(keep_last=1, keep_daily=1, keep_hourly=5)
    # daily: the quiesced 02:00; last and hourly: 12:00; hourly: 08:00 (in the 5 hours up to 12:00).
    assert result["kept"] == sorted([quiesced, online[1], online[2]]), result
    assert result["deleted"] == [online[0]], result


def test_key_gc_reads_every_backup_location_of_the_key_store(s3hook):
    """Two prefixes share one key prefix: a key that only the other prefix's backup needs survives
    retention of this prefix, and goes once that backup is gone."""
    other = "hcp-etcd/dr-copies"
    s3hook.register_backup_location(BUCKET, KEY_PREFIX, BUCKET, other)
    s3hook.register_backup_location(BUCKET, KEY_PREFIX, BUCKET, PREFIX)
    old_key, new_key = put_key(s3hook, "1" * 64), put_key(s3hook, "2" * 64)
    put_backup(s3hook, ts(9), prefix=other, fingerprint="1" * 64)  # before a key rotation
    put_backup(s3hook, ts(2), fingerprint="2" * 64)
    put_backup(s3hook, ts(1), fingerprint="2" * 64)

    result = retention()

    keys = keys_under(s3hook, KEY_PREFIX)
    assert old_key.split("/", 3)[3] in keys, "retention of one prefix deleted a key another prefix needs"
    assert result["keys_gc"] == "done" and result["keys_deleted"] == [], result
    # The other location's backup is retired: now nothing refers to the old key.
    s3hook.delete_objects(BUCKET, sorted(keys_under(s3hook, other)))
    result = retention()
    assert result["keys_deleted"] == [old_key], result
    assert new_key.split("/", 3)[3] in keys_under(s3hook, KEY_PREFIX)


def test_key_gc_spares_keys_older_than_the_location_list(s3hook):
    """A key escrowed before the key store listed its backup locations may belong to a location
    nobody registered: it is kept."""
    stray = put_key(s3hook, "3" * 64)
    time.sleep(1.1)  # S3 stamps whole seconds
    s3hook.register_backup_location(BUCKET, KEY_PREFIX, BUCKET, PREFIX)
    put_backup(s3hook, ts(1), fingerprint="4" * 64)
    put_key(s3hook, "4" * 64)
    result = retention()
    assert stray.split("/", 3)[3] in keys_under(s3hook, KEY_PREFIX)
    assert result["keys_deleted"] == []


@pytest.fixture
def locked_bucket(s3hook):
    """A bucket with Object Lock on: GOVERNANCE default retention of one day."""
    client = boto3.client("s3", region_name="us-east-2")
    client.create_bucket(
        Bucket="locked", ObjectLockEnabledForBucket=True,
        CreateBucketConfiguration={"LocationConstraint": "us-east-2"},
    )  # fmt: skip
    client.put_object_lock_configuration(
        Bucket="locked",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )  # fmt: skip
    s3hook.register_backup_location("locked", KEY_PREFIX, "locked", PREFIX)
    return client


def versions(client: Any, bucket: str = "locked") -> tuple[set[str], int]:
    listing = client.list_object_versions(Bucket=bucket, Prefix=PREFIX)
    return {v["Key"] for v in listing.get("Versions", [])}, len(listing.get("DeleteMarkers", []))


def test_object_lock_keeps_locked_backups_and_reports_until_when(s3hook, locked_bucket):
    """Retention does not fail on locked objects, reports them as locked until their date, hides
    nothing behind delete markers, and bypasses GOVERNANCE mode only when asked."""
    old = put_backup(s3hook, ts(2), bucket="locked")
    put_backup(s3hook, ts(1), bucket="locked")
    result = retention(bucket="locked")
    assert list(result["locked"]) == [old] and result["locked"][old].startswith("locked until 20"), result
    assert result["deleted"] == [], result
    present, markers = versions(locked_bucket)
    assert manifest_key(PREFIX, REF, old) in present and markers == 0
    assert manifest_key(PREFIX, REF, old) in keys_under(s3hook, PREFIX, "locked"), "hidden by a delete marker"

    result = retention(bucket="locked", bypass_governance_retention=True)
    assert result["deleted"] == [old] and result["locked"] == {}, result
    present, _ = versions(locked_bucket)
    assert not any(f"/{old}/" in k for k in present), "a version of the deleted backup is left"


def test_object_lock_compliance_mode_is_never_bypassed(s3hook, locked_bucket):
    old = put_backup(s3hook, ts(2), bucket="locked")
    put_backup(s3hook, ts(1), bucket="locked")
    until = NOW + timedelta(days=3)
    for key in (manifest_key(PREFIX, REF, old), snapshot_key(PREFIX, REF, old)):
        locked_bucket.put_object_retention(
            Bucket="locked", Key=key, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            BypassGovernanceRetention=True,
        )  # fmt: skip
    result = retention(bucket="locked", bypass_governance_retention=True)
    assert list(result["locked"]) == [old], result
    assert until.strftime("%Y-%m-%d") in result["locked"][old]


def test_missing_bucket_fails_at_once(s3hook):
    """A configuration error is not transient: AirflowFailException (no retries), a clear message."""
    with pytest.raises(AirflowFailException) as err:
        retention(bucket="no-such-bucket")
    assert "NoSuchBucket" in str(err.value) and "not retried" in str(err.value)
