"""The second copy: a replica bucket (another region, connection and KMS key) gets every published
backup, each object checked against the manifest's SHA-256, the manifest last; retention applies to it.

Against moto's in-process S3: the primary bucket ``bkt`` (us-east-2, ``aws_default``) and the replica
``bkt-replica`` (eu-west-1, connection ``aws_replica``).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from airflow.sdk.exceptions import AirflowSkipException
from botocore.exceptions import ClientError

from hcp_etcd import metrics
from hcp_etcd.errors import ConfigurationError
from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook
from hcp_etcd.manifest import backup_objects, build_manifest
from hcp_etcd.naming import (
    ClusterRef,
    encryption_key_key,
    format_backup_ts,
    manifest_key,
    service_account_key_key,
    snapshot_key,
)
from hcp_etcd.operators.fleet import BackupRetentionOperator
from hcp_etcd.operators.replicate import ReplicateBackupOperator
from hcp_etcd.params import ReplicaSettings, StoreSettings

REF = ClusterRef("clusters", "prod1")
BUCKET, REPLICA, PREFIX, KEY_PREFIX = "bkt", "bkt-replica", "hcp-etcd/backups", "hcp-etcd/keys"
NOW = datetime.now(UTC)
REPO = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def replica_hook(s3hook: SnapshotStoreHook, monkeypatch: pytest.MonkeyPatch) -> SnapshotStoreHook:
    """The replica bucket in another region, behind its own connection."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_REPLICA", json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}})
    )
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=REPLICA, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return SnapshotStoreHook(aws_conn_id="aws_replica", part_size_mib=5)


def put_backup(hook: SnapshotStoreHook, days_ago: float, snapshot: bytes = b"snapshot-bytes") -> str:
    """A published backup in the primary: snapshot, AES key, service-account key, manifest."""
    stamp = format_backup_ts(NOW - timedelta(days=days_ago))
    aes, sa_key = b"k" * 32, b"-----BEGIN PRIVATE KEY-----sa-----END PRIVATE KEY-----\n"
    snap = snapshot_key(PREFIX, REF, stamp)
    hook.put_bytes(snapshot, BUCKET, snap)
    aes_key = encryption_key_key(KEY_PREFIX, REF, sha(aes))
    hook.put_bytes(aes, BUCKET, aes_key)
    sa_object = service_account_key_key(KEY_PREFIX, REF, sha(sa_key))
    hook.put_bytes(sa_key, BUCKET, sa_object)
    manifest = build_manifest(
        namespace=REF.namespace, name=REF.name, created_at=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        mode="quiesced", bucket=BUCKET, snapshot_key=snap, size_bytes=len(snapshot),
        sha256=sha(b"snapshot-bytes"), canonical_member="etcd-0", revision=5, etcd_hash=7, total_keys=9,
        total_size=20480, etcd_version="3.5.1", members=[{"pod": "etcd-0", "revision": 5, "hash": 7}],
        key_counts={"pods": 2}, key_location=f"s3://{BUCKET}/{aes_key}", key_sha256=sha(aes),
        backup_key_location=None, backup_key_sha256=None, api_downtime_seconds=1.0,
        dag_id="hcp_etcd_backup", run_id=f"manual__{stamp}", sse="AES256", backup_prefix=PREFIX,
        service_account_key={"location": f"s3://{BUCKET}/{sa_object}", "sha256": sha(sa_key),
                             "public_key_sha256": "b" * 64, "secret": "sa-signing-key"},
    )  # fmt: skip
    hook.put_json(manifest, BUCKET, manifest_key(PREFIX, REF, stamp))
    return stamp


def replicate(**kwargs: Any) -> dict[str, Any]:
    op = ReplicateBackupOperator(
        task_id="replicate", hosted_cluster=str(REF), bucket=BUCKET, prefix=PREFIX, key_prefix=KEY_PREFIX,
        replica_bucket=kwargs.pop("replica_bucket", REPLICA), replica_aws_conn_id="aws_replica", **kwargs,
    )  # fmt: skip
    return op.execute({})


def test_every_object_then_the_manifest_is_copied_and_the_copy_stands_alone(s3hook, replica_hook):
    """Snapshot, AES key and service-account key land in the replica at the same keys with the manifest's
    SHA-256; the replica's manifest names the replica's objects (a restore or retention reads it as a
    location of its own) and the primary's manifest it was copied from."""
    stamp = put_backup(s3hook, 0)

    result = replicate(published={"ts": stamp})

    mkey = manifest_key(PREFIX, REF, stamp)
    assert result["copied"] == [f"s3://{REPLICA}/{mkey}"]
    primary = s3hook.get_json(BUCKET, mkey)
    for _, key, digest in backup_objects(primary):
        assert replica_hook.sha256_object(REPLICA, key)[1] == digest, key
    copy = replica_hook.get_json(REPLICA, mkey)
    assert copy["replica_of"] == f"s3://{BUCKET}/{mkey}"
    assert copy["snapshot"]["bucket"] == REPLICA
    assert {b for b, _, _ in backup_objects(copy)} == {REPLICA}
    assert copy["etcd"] == primary["etcd"] and copy["snapshot"]["sha256"] == primary["snapshot"]["sha256"]
    # The replica's key store lists its own backup location (its key GC reads it).
    assert replica_hook.backup_locations(REPLICA, KEY_PREFIX)[0] == [(REPLICA, PREFIX)]


def test_a_second_run_copies_nothing_again(s3hook, replica_hook, monkeypatch):
    """Idempotent: objects the replica holds with the right SHA-256 are not uploaded again, even when
    their manifest is missing there (a run that failed between the objects and the manifest)."""
    stamp = put_backup(s3hook, 0)
    replicate(published={"ts": stamp})
    replica_hook.delete_objects(REPLICA, [manifest_key(PREFIX, REF, stamp)])
    uploads: list[str] = []
    original = SnapshotStoreHook.upload_stream
    monkeypatch.setattr(
        SnapshotStoreHook, "upload_stream", lambda self, src, b, k, *a, **kw: uploads.append(k) or original(
            self, src, b, k, *a, **kw)
    )  # fmt: skip

    again = replicate(published={"ts": stamp})

    assert uploads == [] and len(again["copied"]) == 1  # the manifest only
    assert replicate(published={"ts": stamp}) == {
        "replica": f"s3://{REPLICA}/{PREFIX}/{REF.namespace}/{REF.name}", "copied": [], "present": [stamp]
    }  # fmt: skip


def test_bytes_that_differ_from_the_manifest_are_not_kept_and_fail_the_task(s3hook, replica_hook):
    """A snapshot whose bytes are not the manifest's SHA-256: the copy is deleted, no replica manifest is
    written, the task fails naming the replica, and the primary's backup is untouched."""
    stamp = put_backup(s3hook, 0, snapshot=b"damaged-bytes")

    with pytest.raises(RuntimeError, match=f"not copied to the replica s3://{REPLICA}.*SHA-256"):
        replicate(published={"ts": stamp})

    assert replica_hook.object_size(REPLICA, snapshot_key(PREFIX, REF, stamp)) is None
    assert replica_hook.object_size(REPLICA, manifest_key(PREFIX, REF, stamp)) is None
    assert s3hook.object_size(BUCKET, manifest_key(PREFIX, REF, stamp)) is not None


def test_a_failed_copy_fails_the_run_and_the_next_run_catches_up(s3hook, replica_hook, monkeypatch):
    """The replica refuses writes for one run: that run fails, the primary keeps its backup; the next run
    copies both the backup it missed and its own, newest first, within ``catch_up``."""
    first = put_backup(s3hook, 2)
    original = SnapshotStoreHook.upload_stream

    def refuse(self: SnapshotStoreHook, *args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "region down"}}, "PutObject")

    monkeypatch.setattr(SnapshotStoreHook, "upload_stream", refuse)
    with pytest.raises(RuntimeError, match="primary backups are valid; the next run copies"):
        replicate(published={"ts": first})
    assert s3hook.object_size(BUCKET, manifest_key(PREFIX, REF, first)) is not None
    monkeypatch.setattr(SnapshotStoreHook, "upload_stream", original)
    oldest = put_backup(s3hook, 3)  # older than catch_up reaches
    second = put_backup(s3hook, 1)

    result = replicate(published={"ts": second}, catch_up=2)

    assert [u.rsplit("/", 2)[-2] for u in result["copied"]] == [second, first]
    assert replica_hook.object_size(REPLICA, manifest_key(PREFIX, REF, oldest)) is None


def test_a_manifest_this_release_cannot_read_is_reported_not_copied_and_fails_nothing(s3hook, replica_hook):
    """The newest manifest is of another schema (a newer release wrote it): retention keeps such a
    backup, and replication neither copies it nor fails every run on it; the older backup is copied."""
    older, newer = put_backup(s3hook, 1), put_backup(s3hook, 0)
    manifest = s3hook.get_json(BUCKET, manifest_key(PREFIX, REF, newer))
    s3hook.put_json({**manifest, "schema_version": 2}, BUCKET, manifest_key(PREFIX, REF, newer))

    result = replicate(published={"ts": older})

    assert result["copied"] == [f"s3://{REPLICA}/{manifest_key(PREFIX, REF, older)}"]
    assert "schema_version 2" in result["unreadable"][newer]
    assert replica_hook.object_size(REPLICA, manifest_key(PREFIX, REF, newer)) is None


def test_a_kms_clusters_backup_is_copied_with_its_service_account_key_only(s3hook, replica_hook):
    """A type kms cluster's backup holds no AES key (its KMS key stays in KMS): the snapshot and the
    service-account key are copied, and the replica's manifest is a valid kms manifest."""
    stamp = put_backup(s3hook, 0)
    mkey = manifest_key(PREFIX, REF, stamp)
    manifest = s3hook.get_json(BUCKET, mkey)
    del manifest["encryption_key"]
    manifest["encryption"] = {"type": "kms", "provider": "AWS", "region": "us-east-2",
                              "kms_key_arns": ["arn:aws:kms:us-east-2:111122223333:key/k1"]}  # fmt: skip
    s3hook.put_json(manifest, BUCKET, mkey)

    replicate(published={"ts": stamp})

    copy = replica_hook.get_json(REPLICA, mkey)
    assert copy["encryption"] == manifest["encryption"] and "encryption_key" not in copy
    assert [k for _, k, _ in backup_objects(copy)] == [
        manifest["snapshot"]["key"],
        copy["service_account_key"]["location"].split("/", 3)[3],
    ]
    assert replica_hook.object_size(REPLICA, encryption_key_key(KEY_PREFIX, REF, sha(b"k" * 32))) is None


def test_an_unreachable_replica_fails_naming_it(s3hook, monkeypatch):
    """The replica bucket does not exist (or its region is down): the error says the primary backup is
    valid and names the replica and its connection."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_REPLICA", json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}})
    )
    stamp = put_backup(s3hook, 0)

    with pytest.raises(Exception, match=r"replica s3://nowhere-replica \(connection aws_replica\)") as err:
        replicate(published={"ts": stamp}, replica_bucket="nowhere-replica")
    assert "primary backup is valid" in str(err.value)


def test_no_replica_is_a_skip(s3hook):
    with pytest.raises(AirflowSkipException, match="no replica_bucket"):
        replicate(replica_bucket=None)


def test_replica_settings_are_checked_once_with_a_clear_error():
    store = StoreSettings.validate(bucket="bkt", prefix=PREFIX, key_bucket="bkt-keys")
    for same in ("bkt", "bkt-keys"):
        with pytest.raises(ConfigurationError, match="a replica is a second bucket"):
            ReplicaSettings.validate(
                store=store, bucket=same, aws_conn_id=None, kms_key_id=None, default_conn_id="a"
            )
    with pytest.raises(ConfigurationError, match="not a valid S3 bucket name"):
        ReplicaSettings.validate(
            store=store, bucket="Bad_Name", aws_conn_id=None, kms_key_id=None, default_conn_id="a"
        )
    assert (
        ReplicaSettings.validate(store=store, bucket="", aws_conn_id="x", kms_key_id="k", default_conn_id="a")
        is None
    )
    assert ReplicaSettings.validate(
        store=store, bucket="dr-copies", aws_conn_id=None, kms_key_id="alias/dr", default_conn_id="aws"
    ) == ReplicaSettings("dr-copies", "aws", "alias/dr")  # fmt: skip


def test_retention_applies_the_same_policy_to_the_replica(s3hook, replica_hook):
    """Two backups in both copies, keep_last=1: the older goes from the primary and from the replica."""
    old, new = put_backup(s3hook, 2), put_backup(s3hook, 1)
    replicate(published={"ts": new})
    assert replica_hook.object_size(REPLICA, manifest_key(PREFIX, REF, old)) is not None

    op = BackupRetentionOperator(
        task_id="retention", bucket=BUCKET, prefix=PREFIX, key_prefix=KEY_PREFIX, hosted_clusters=[str(REF)],
        keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, incomplete_grace_minutes=0,
        replica_bucket=REPLICA, replica_aws_conn_id="aws_replica",
    )  # fmt: skip
    result = op.execute({})[str(REF)]

    assert result["deleted"] == [old] and result["replica"]["deleted"] == [old], result
    for hook, bucket in ((s3hook, BUCKET), (replica_hook, REPLICA)):
        assert hook.object_size(bucket, manifest_key(PREFIX, REF, old)) is None
        assert hook.object_size(bucket, snapshot_key(PREFIX, REF, old)) is None
        assert hook.object_size(bucket, manifest_key(PREFIX, REF, new)) is not None


def test_replica_metrics_report_its_age_and_lag(s3hook, replica_hook, monkeypatch):
    gauges: dict[str, float] = {}
    monkeypatch.setattr(metrics.stats, "gauge", lambda name, v, tags=None: gauges.__setitem__(name, v))
    stamp = put_backup(s3hook, 0)
    replicate(published={"ts": stamp})
    assert gauges[metrics.REPLICA_LAG_SECONDS] == 0.0
    assert abs(gauges[metrics.REPLICA_NEWEST_TIMESTAMP] - NOW.timestamp()) < 2
    assert metrics.replica_figures(NOW, NOW - timedelta(hours=1))[metrics.REPLICA_LAG_SECONDS] == 3600.0
    assert metrics.replica_figures(NOW, None) == {}


def test_the_backup_dag_copies_after_the_manifest_and_a_skip_is_no_failure(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "hcp_etcd_backup.py"))
    assert bag.import_errors == {}
    # Both backup DAGs (quiesced and online) copy every backup they publish.
    assert all("backup.replicate" in d.task_dict for d in bag.dags.values()) and len(bag.dags) == 2
    dag = bag.dags["hcp_etcd_backup"]
    task = dag.task_dict["backup.replicate"]
    assert "backup.publish_manifest" in task.upstream_task_ids
    assert task.replica_bucket == "{{ params.replica_bucket }}"
    assert dag.task_dict["retention"].replica_bucket == "{{ params.replica_bucket }}"
    assert dag.params["replica_bucket"] is None  # off by default
    assert dag.task_dict["all_backups_succeeded"].trigger_rule == "none_failed"


class _NoCluster:
    """The management cluster as the resolve step asks it: no HostedCluster of the target's name."""

    def hosted_cluster_exists(self, ref: ClusterRef) -> bool:
        return False


class _Ti:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def resolve(**kwargs: Any) -> dict[str, Any]:
    from hcp_etcd.operators.restore import ResolveBackupOperator

    op = ResolveBackupOperator(
        task_id="resolve_backup", source=str(REF), at_or_before=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        target_namespace="clusters", target_name="prod1-back", prefix=PREFIX, **kwargs,
    )  # fmt: skip
    op.__dict__["k8s"] = _NoCluster()
    return op.execute({"ti": _Ti()})


def test_a_restore_reads_the_replica_when_asked(s3hook, replica_hook):
    """source_bucket=replica: the DAG renders the replica's bucket and connection; the newest backup is
    the replica's copy, whose manifest names the replica's snapshot and keys."""
    stamp = put_backup(s3hook, 0)
    replicate(published={"ts": stamp})

    found = resolve(source_bucket="replica", bucket=REPLICA, aws_conn_id="aws_replica")

    assert found["manifest_uri"] == f"s3://{REPLICA}/{manifest_key(PREFIX, REF, stamp)}"
    assert found["manifest"]["snapshot"]["bucket"] == REPLICA


def test_when_the_primary_cannot_be_read_the_error_says_so_and_names_the_replica(s3hook, replica_hook):
    from hcp_etcd.errors import RestoreInputError

    with pytest.raises(RestoreInputError, match=r"primary bucket s3://gone-bkt cannot be read.*") as err:
        resolve(bucket="gone-bkt", replica_bucket=REPLICA)
    assert (
        f"the replica s3://{REPLICA} has copies of the backups: run again with source_bucket=replica"
        in str(err.value)
    )
    # Readable but without the backup (its copy may be in the replica): said so too.
    with pytest.raises(RestoreInputError, match=r"no complete backup of .*source_bucket=replica"):
        resolve(bucket=BUCKET, replica_bucket=REPLICA)
    with pytest.raises(RestoreInputError, match="no replica_bucket is set"):
        resolve(bucket="gone-bkt")
    with pytest.raises(RestoreInputError, match="source_bucket=replica but no replica_bucket is set"):
        resolve(source_bucket="replica", bucket=None)


@pytest.mark.parametrize("dag_file", ["hcp_etcd_restore.py", "hcp_etcd_restore_drill.py"])
def test_restore_and_drill_read_the_copy_source_bucket_names(dag_file, tmp_path_factory):
    import jinja2

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / dag_file))
    assert bag.import_errors == {}
    (dag,) = bag.dags.values()
    assert dag.params["source_bucket"] == "primary"
    reading = [
        t for t in dag.tasks if t.task_id.split(".")[-1] in ("resolve_backup", "check_snapshot", "presign")
    ]
    assert len(reading) == 3
    values = {
        "bucket": "p-bkt",
        "replica_bucket": "r-bkt",
        "aws_conn_id": "aws_default",
        "replica_aws_conn_id": None,
    }
    for task in reading:
        for which, bucket, conn in (("primary", "p-bkt", "aws_default"), ("replica", "r-bkt", "aws_default")):
            params = {**values, "source_bucket": which}
            assert jinja2.Template(task.bucket).render(params=params) == bucket
            assert jinja2.Template(task.aws_conn_id).render(params=params) == conn
    params = {**values, "source_bucket": "replica", "replica_aws_conn_id": "aws_replica"}
    assert jinja2.Template(reading[0].aws_conn_id).render(params=params) == "aws_replica"
    assert reading[0].replica_bucket == "{{ params.replica_bucket }}"
