"""hcp_etcd_restore: restore an etcd backup into a NEW HostedCluster (manual runs only).

Thin on purpose: wiring, Params and docs. The logic is in ``plugins/hcp_etcd``.
Read at parse: environment variables only (no Variable or Connection lookups).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import chain, dag

from hcp_etcd import params
from hcp_etcd.naming import DNS1123_LABEL_RE, DNS1123_SUBDOMAIN_RE
from hcp_etcd.operators.membership import CheckEtcdClusterOperator
from hcp_etcd.operators.restore import (
    CheckKeyOperator,
    CheckSnapshotOperator,
    CreateRestoredClusterOperator,
    PresignSnapshotOperator,
    ResolveBackupOperator,
    VerifyRestoreOperator,
    WaitRestoredOperator,
)
from hcp_etcd.params import SOURCE_STORE
from hcp_etcd.params import ref as P
from hcp_etcd.restore.backups import SOURCE_PATTERN
from hcp_etcd.restore.presign import MAX_URL_EXPIRY_HOURS

# Which copy the backup is read from, and the replica to name when the primary cannot be read.
SOURCE = {"source_bucket": P("source_bucket"), "replica_bucket": P("replica_bucket")}

DOC = """
### Restore an etcd backup into a new hosted cluster

A restore only happens when a HostedCluster is **created** (HyperShift's `etcd-init` restores
`spec.etcd.managed.storage.restoreSnapshotURL` into empty members). Steps:

1. `resolve_backup` — the manifest (`source` = its `s3://…/manifest.json`, or `namespace/name` = the
   newest complete backup, at or before `at_or_before`); refuses a foreign/incomplete manifest and an
   existing target.
2. `check_snapshot` — the object exists and its SHA-256 (streamed) equals the manifest's.
3. `check_key` — the escrowed key objects (AES keys, service-account signing key) exist and their
   SHA-256 equal the manifest's fingerprints.
4. `presign` — SigV4 GET URL, at most 1024 characters (STS session tokens make it longer), not expiring soon.
5. `create` — rendered manifests (`hcp create cluster aws --render --render-sensitive` output as an
   S3 URI or file, or `render_options` when `hcp` is on the worker) applied as rendered: they must be
   rendered for the target namespace/name (their infraID, issuerURL, IAM roles, instance profile and
   hostnames stay); only Managed/PersistentVolume etcd with `restoreSnapshotURL` and the escrowed key
   in the `secretEncryption.aescbc.activeKey` Secret (read and written in this task only) change,
   and the escrowed service-account signing key goes into the `spec.serviceAccountSigningKey`
   Secret (`<name>-sa-token-issuer-key` unless the spec names one): tokens of the lost cluster
   still validate. A backup of a KMS-encrypted cluster has no key to fill: the HostedCluster must
   use the backup's KMS key ARN(s), else it is refused naming both.
   Neither given: the cluster as its backup recorded it (HostedCluster and NodePools), brought back
   under its own name. Warns when the availability policy or the release differs from the backed-up
   cluster's. Refuses existing objects, except Secrets a deleted HostedCluster of the same name left
   that hold what the restore needs (the key Secret: the backup's key); refuses a spec naming a
   Secret or ConfigMap that does not exist.
6. `wait_restored` — deferrable until `Available` and `EtcdSnapshotRestored` (etcd-init's message on failure).
7. `check_etcd_cluster` — `member list` on every member: one cluster of the expected size, else it
   fails at once; a split brain (released HyperShift's etcd-init makes three one-member clusters of
   an HA restore) is named with the `docs/RUNBOOK.md` section that repairs it (Part C).
8. `verify` — `member list` on every member (split-brain guard), revision, key counts per resource,
   the key (KMS: the key ARNs), a Secret from etcd decrypts (KMS: through AWS KMS), the control
   plane's `sa-signing-key` has the backup's public key.

Nothing is created before steps 1-4 and the checks of step 5 pass. Docs: `docs/RESTORE.md`.
"""

PARAMS = {
    "source": params.param(
        "",
        type="string",
        pattern=SOURCE_PATTERN,
        maxLength=1024,
        description="What to restore: s3://BUCKET/…/manifest.json, or namespace/name for the newest complete "
        "backup of that cluster.",
    ),
    "at_or_before": params.param(
        None,
        type=["null", "string"],
        format="date-time",
        description="With source=namespace/name: take the newest backup at or before this RFC3339 time "
        "(empty: now).",
    ),
    "target_namespace": params.param(
        "clusters",
        type="string",
        pattern=DNS1123_LABEL_RE.pattern,
        maxLength=63,
        description="Namespace of the new HostedCluster.",
    ),
    "target_name": params.param(
        "",
        type="string",
        pattern=DNS1123_SUBDOMAIN_RE.pattern,
        maxLength=53,
        description="Name of the new HostedCluster (must not exist: restore happens only at creation).",
    ),
    "rendered_manifests": params.param(
        None,
        type=["null", "string"],
        maxLength=2048,
        description="S3 URI (s3://…) or worker file path of `hcp create cluster aws --render "
        "--render-sensitive` "
        "output, rendered for target_namespace/target_name (applied as rendered: only restoreSnapshotURL "
        "and the saved encryption key, in place of its new one, change).",
    ),
    "render_options": params.param(
        {},
        type="object",
        description="When rendered_manifests is empty: flags for `hcp create cluster aws --render "
        '--render-sensitive` run on the worker (needs `hcp` on PATH), e.g. {"pull-secret": "/path", '
        '"base-domain": "example.com"}. --name/--namespace come from the target. Both empty: the '
        "cluster as its backup recorded it, under its own name (a lost cluster brought back).",
    ),
    **params.restore_limits(MAX_URL_EXPIRY_HOURS, "the new cluster"),
    **params.storage(
        "Prefix of the escrowed encryption keys, as in hcp_etcd_backup (the manifest's key must be there)."
    ),
    **params.source_bucket(),
    **params.replica(kms=False),
    **params.connections(),
    **params.presign_connection(),
}


@dag(
    dag_id="hcp_etcd_restore",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    render_template_as_native_obj=True,
    doc_md=DOC,
    tags=["hcp", "etcd", "restore"],
    default_args=params.default_args(),
)
def hcp_etcd_restore() -> None:
    """The restore DAG."""
    resolve = ResolveBackupOperator(
        task_id="resolve_backup",
        source=P("source"),
        at_or_before=P("at_or_before"),
        target_namespace=P("target_namespace"),
        target_name=P("target_name"),
        **SOURCE,
        **SOURCE_STORE,
    )
    backup = {"backup": resolve.output, "presign_aws_conn_id": P("presign_aws_conn_id"), **SOURCE_STORE}
    snapshot = CheckSnapshotOperator(task_id="check_snapshot", **backup)
    key = CheckKeyOperator(task_id="check_key", key_prefix=P("key_prefix"), **backup)
    presign = PresignSnapshotOperator(task_id="presign", url_expiry_hours=P("url_expiry_hours"), **backup)
    create = CreateRestoredClusterOperator(
        task_id="create",
        rendered_manifests=P("rendered_manifests"),
        render_options=P("render_options"),
        url_expiry_hours=P("url_expiry_hours"),
        **backup,
    )
    wait = WaitRestoredOperator(
        task_id="wait_restored",
        created=create.output,
        timeout="{{ params.wait_timeout_minutes * 60 }}",
        retries=0,
        **backup,
    )
    members = CheckEtcdClusterOperator(task_id="check_etcd_cluster", **backup)
    verify = VerifyRestoreOperator(task_id="verify", **backup)
    chain(resolve, snapshot, key, presign, create, wait, members, verify)


hcp_etcd_restore()
