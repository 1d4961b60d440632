"""The second copy: every published backup copied to a replica bucket (another region and connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from hcp_etcd import metrics
from hcp_etcd.errors import describe, fail_fast_on_configuration_errors
from hcp_etcd.manifest import ManifestError, backup_objects, replica_manifest, validate_manifest
from hcp_etcd.naming import ClusterRef, cluster_prefix, manifest_key, parse_backup_ts
from hcp_etcd.operators.base import StoreOperator, utcnow
from hcp_etcd.params import DEFAULT_KEY_PREFIX, ReplicaSettings
from hcp_etcd.restore.backups import backup_candidates

if TYPE_CHECKING:
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

# How many of a cluster's newest backups each run makes sure the replica has: a run whose copy
# failed is caught up by the next ones, and a replica added later gets the recent backups, not all.
CATCH_UP_BACKUPS = 3


def _copy_errors() -> tuple[type[Exception], ...]:
    # botocore is imported when a task runs, not when a DAG file imports this module (parse time).
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError, ValueError, OSError


class ReplicateBackupOperator(StoreOperator):
    """Copy a cluster's newest published backups that the replica lacks: snapshot, escrowed keys (AES
    keys and the service-account signing key), then the manifest, last.

    Each object keeps its key in the replica bucket and is streamed through this task (the two buckets
    have their own connections), hashed on the way: a copy whose bytes differ from the manifest's
    SHA-256 is deleted and fails the task. An object the replica already holds with that SHA-256 is not
    copied again (keys are content-addressed: unchanged keys are copied once). The replica's manifest
    names the replica's objects, so the replica is a backup location of its own (restore, retention and
    key GC read it as they read the primary), and ``replica_of`` names the primary's manifest.

    A failed copy fails this task and so the run; the primary backup stays valid, and the next run
    copies what the replica lacks of the newest ``catch_up`` backups. Skipped when no replica is set.

    :param published: result of the publish task (the backup that must be in the replica). (templated)
    :param replica_bucket: the replica bucket; empty: no replica (skipped). (templated)
    :param replica_aws_conn_id: its AWS connection; empty: ``aws_conn_id``. (templated)
    :param replica_kms_key_id: its SSE-KMS key; empty: SSE-S3. (templated)
    :param key_prefix: prefix of the escrowed keys (the same in the replica). (templated)
    :param key_bucket: bucket of the escrowed keys (default ``bucket``). (templated)
    :param catch_up: how many of the newest backups to check.
    :return: ``{"replica", "copied": [manifest URIs], "present": [...]}``.
    """

    template_fields: tuple[str, ...] = (
        *StoreOperator.template_fields,
        "published",
        "replica_bucket",
        "replica_aws_conn_id",
        "replica_kms_key_id",
        "key_prefix",
        "key_bucket",
    )

    def __init__(
        self,
        *,
        published: Any = None,
        replica_bucket: str | None = None,
        replica_aws_conn_id: str | None = None,
        replica_kms_key_id: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        key_bucket: str | None = None,
        catch_up: int = CATCH_UP_BACKUPS,
        **kwargs: Any,
    ) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.published = published
        self.replica_bucket = replica_bucket
        self.replica_aws_conn_id = replica_aws_conn_id
        self.replica_kms_key_id = replica_kms_key_id
        self.key_prefix = key_prefix
        self.key_bucket = key_bucket
        self.catch_up = catch_up

    def _manifest_dirs(self, hook: SnapshotStoreHook, bucket: str, base: str) -> list[str]:
        """The backup directories under ``{base}/`` that have a manifest, newest first."""
        return backup_candidates(hook.list_backup_objects(bucket, base), base, utcnow())

    @fail_fast_on_configuration_errors
    def execute(self, context: Context) -> dict[str, Any]:
        """Copy what the replica lacks of the newest backups; fail when any copy fails."""
        replica = self.replica
        if replica is None:
            raise AirflowSkipException("no replica_bucket set: backups are kept in the primary bucket only")
        ref, store = self.ref, self.store
        base = cluster_prefix(store.prefix, ref)
        where = f"s3://{replica.bucket} (connection {replica.aws_conn_id})"
        newest = self._manifest_dirs(self.s3, store.bucket, base)[: max(1, int(self.catch_up))]
        published = (self.published or {}).get("ts")
        if published and published not in newest:
            newest.insert(0, published)
        try:
            present = set(self._manifest_dirs(self.replica_s3, replica.bucket, base))
            # Before any key: the replica's key GC reads the manifests of every registered location.
            self.replica_s3.register_backup_location(
                replica.bucket, store.key_prefix, replica.bucket, store.prefix, replica.kms_key_id
            )
        except _copy_errors() as err:
            raise RuntimeError(
                f"the replica {where} cannot be read or written ({describe(err, 300)}): the primary backup "
                "is valid; check the replica bucket, its policy and the connection's credentials and "
                "region, and the next run copies what the replica lacks"
            ) from err
        copied, failed, unreadable = [], {}, {}
        for ts in sorted(set(newest) - present, reverse=True):
            try:
                copied.append(self._copy(ref, ts, replica))
            except ManifestError as err:
                # Not a backup this release can read (retention keeps and reports it): nothing to copy.
                unreadable[ts] = describe(err, 300)
                self.log.warning(
                    "%s: backup %s/%s not copied, its manifest is unreadable: %s", ref, base, ts, err
                )
            except _copy_errors() as err:
                failed[ts] = describe(err, 300)
                self.log.error(
                    "%s: backup %s/%s not copied to the replica %s: %s", ref, base, ts, where, failed[ts]
                )
        replica_newest = max([*present, *(u.rsplit("/", 2)[-2] for u in copied)], default=None)
        metrics.emit_replica(
            ref.namespace,
            ref.name,
            parse_backup_ts(newest[0]) if newest else None,
            parse_backup_ts(replica_newest) if replica_newest else None,
        )
        if failed:
            raise RuntimeError(
                f"{len(failed)} backup(s) of {ref} not copied to the replica {where}: "
                + "; ".join(f"{ts}: {why}" for ts, why in sorted(failed.items()))
                + ". The primary backups are valid; the next run copies what the replica lacks"
            )
        kept = sorted(set(newest) & present)
        self.log.info("%s: replica %s has the newest backups (%d copied now)", ref, where, len(copied))
        result = {"replica": f"s3://{replica.bucket}/{base}", "copied": copied, "present": kept}
        return {**result, "unreadable": unreadable} if unreadable else result

    def _copy(self, ref: ClusterRef, ts: str, replica: ReplicaSettings) -> str:
        """Copy one backup's objects, then its manifest; returns the replica manifest's URI."""
        bucket, key = self.store.bucket, manifest_key(self.store.prefix, ref, ts)
        try:
            manifest = validate_manifest(self.s3.get_json(bucket, key))
        except ValueError as err:  # not JSON (a truncated write), or not a manifest of this schema
            raise ManifestError(f"s3://{bucket}/{key}: {err}") from None
        if manifest["hosted_cluster"] != {"namespace": ref.namespace, "name": ref.name}:
            raise ManifestError(f"s3://{bucket}/{key} is a manifest of another cluster")
        fresh = 0
        for source_bucket, object_key, sha256 in backup_objects(manifest):
            if self.replica_s3.copy_verified(
                self.s3, source_bucket, object_key, replica.bucket, sha256, replica.kms_key_id
            ):
                fresh += 1
        self.replica_s3.put_json(
            replica_manifest(manifest, replica.bucket, f"s3://{bucket}/{key}"),
            replica.bucket,
            key,
            replica.kms_key_id,
        )
        self.log.info(
            "%s: copied s3://%s/%s to s3://%s/%s (%d object(s) copied, the others were there)",
            ref, bucket, key, replica.bucket, key, fresh,
        )  # fmt: skip
        return f"s3://{replica.bucket}/{key}"
