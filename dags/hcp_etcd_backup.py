"""hcp_etcd_backup: back up the etcd of HyperShift hosted clusters to S3 (nightly and on demand).

Thin on purpose: wiring, schedule, Params and docs. The logic is in ``plugins/hcp_etcd``.
Read at parse: environment variables only (no Variable or Connection lookups).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, TriggerRule, WeightRule, chain, dag, task_group

from hcp_etcd.naming import CLUSTER_REF_PATTERN, S3_PREFIX_PATTERN
from hcp_etcd.notifications import failure_callbacks
from hcp_etcd.operators.backup import (
    BackupPreflightOperator,
    CleanupSnapshotsOperator,
    EscrowEncryptionKeyOperator,
    PauseReconciliationOperator,
    QuiesceApiServersOperator,
    ResumeApiServersOperator,
    SnapshotMembersOperator,
    UnpauseReconciliationOperator,
    VerifySnapshotsOperator,
    WaitHostedClusterAvailableOperator,
)
from hcp_etcd.operators.fleet import BackupRetentionOperator, ResolveHostedClustersOperator
from hcp_etcd.operators.publish import PublishManifestOperator
from hcp_etcd.operators.transfer import SnapshotToS3Operator

SCHEDULE = os.environ.get("HCP_ETCD_BACKUP_SCHEDULE", "0 2 * * *")
BUCKET = os.environ.get("HCP_ETCD_BUCKET", "")
K8S_CONN = os.environ.get("HCP_ETCD_KUBERNETES_CONN_ID", "kubernetes_default")
AWS_CONN = os.environ.get("HCP_ETCD_AWS_CONN_ID", "aws_default")
POOL = os.environ.get("HCP_ETCD_POOL", "hcp_etcd_backup")
RETRY_DELAY = timedelta(seconds=float(os.environ.get("HCP_ETCD_RETRY_DELAY_SECONDS", "30")))

DOC = """
### Back up the etcd of hosted clusters

Per hosted cluster (mapped, at most 4 clusters' tasks at once through the pool `hcp_etcd_backup`):
preflight → pause (setup) → quiesce (setup) → snapshot every member → resume (teardown) and verify →
upload → escrow key → manifest (last) + Asset event → cleanup (teardown) → unpause (teardown) →
wait Available. Then retention over the fleet.

* `mode=quiesced` is the documented procedure (API down during the snapshot only);
  `mode=online` does not pause or stop anything (etcd snapshots are consistent anyway; members
  differ slightly in revision, and in-flight API writes land after the snapshot).
* `dry_run` runs the preflight only (retention lists what it would delete).
* The encryption key is escrowed under `key_prefix`; it never goes through XCom or logs.

Docs: `docs/BACKUP.md`.
"""

PARAMS = {
    "hosted_clusters": Param(
        [],
        type="array",
        items={"type": "string", "pattern": CLUSTER_REF_PATTERN, "maxLength": 317},
        uniqueItems=True,
        description="HostedClusters as namespace/name (e.g. clusters/prod1). Empty: every HostedCluster "
        "matching label_selector.",
    ),
    "label_selector": Param(
        "",
        type="string",
        maxLength=1024,
        description="Label selector for HostedClusters when hosted_clusters is empty (empty: all).",
    ),
    "mode": Param(
        "quiesced",
        type="string",
        enum=["quiesced", "online"],
        description="quiesced: pause and stop the API servers while snapshotting (the documented "
        "procedure). online: no pause, no downtime.",
    ),
    "bucket": Param(
        BUCKET,
        type="string",
        maxLength=63,
        # Empty is allowed only so the scheduled DAG parses without HCP_ETCD_BUCKET; preflight refuses it.
        pattern=r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket for snapshots and manifests (default: env HCP_ETCD_BUCKET; required).",
    ),
    "prefix": Param(
        "hcp-etcd/backups",
        type="string",
        pattern=S3_PREFIX_PATTERN,
        maxLength=512,
        description="Key prefix: {prefix}/{ns}/{name}/{YYYYmmddTHHMMSSZ}/snapshot.db and manifest.json.",
    ),
    "key_prefix": Param(
        "hcp-etcd/keys",
        type="string",
        pattern=S3_PREFIX_PATTERN,
        maxLength=512,
        description="Key prefix of the escrowed etcd encryption keys (give it its own permissions).",
    ),
    "key_bucket": Param(
        None,
        type=["null", "string"],
        description="Separate bucket for encryption keys (empty: the backup bucket).",
    ),
    "kms_key_id": Param(
        None,
        type=["null", "string"],
        maxLength=2048,
        description="KMS key for SSE-KMS; empty uses SSE-S3 (AES256).",
    ),
    "pause_deadline_minutes": Param(
        60,
        type="integer",
        minimum=10,
        maximum=720,
        description="Dead-man's switch: pausedUntil = now + this; HyperShift resumes by itself then. "
        "Also the expiry of the backup lock.",
    ),
    "keep_last": Param(7, type="integer", minimum=1, maximum=1000, description="Keep the newest N backups."),
    "keep_daily": Param(7, type="integer", minimum=0, maximum=1000, description="Keep one per day, N days."),
    "keep_weekly": Param(
        4, type="integer", minimum=0, maximum=520, description="Keep one per ISO week, N weeks."
    ),
    "keep_monthly": Param(
        6, type="integer", minimum=0, maximum=240, description="Keep one per month, N months."
    ),
    "dry_run": Param(False, type="boolean", description="Preflight only; retention lists, deletes nothing."),
    "kubernetes_conn_id": Param(
        K8S_CONN, type="string", minLength=1, description="Kubernetes connection id."
    ),
    "aws_conn_id": Param(AWS_CONN, type="string", minLength=1, description="AWS connection id."),
}

P = "{{ params.%s }}"
K8S = {"kubernetes_conn_id": P % "kubernetes_conn_id"}
S3 = {
    **K8S,
    "aws_conn_id": P % "aws_conn_id",
    "bucket": P % "bucket",
    "prefix": P % "prefix",
    "kms_key_id": P % "kms_key_id",
}
MODE = {"mode": P % "mode"}
# Restoring the cluster must never queue behind other clusters' work: those tasks skip the pool.
RESTORE = {"pool": "default_pool", "priority_weight": 100}


@dag(
    dag_id="hcp_etcd_backup",
    schedule=SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    render_template_as_native_obj=True,
    doc_md=DOC,
    tags=["hcp", "etcd", "backup"],
    default_args={
        "retries": 2,
        "retry_delay": RETRY_DELAY,
        "pool": POOL,
        # Finish clusters in flight before starting new ones: deeper tasks weigh more.
        "weight_rule": WeightRule.UPSTREAM,
        # Alert when a task fails for good (log line by default; connection hcp_etcd_alerts).
        "on_failure_callback": failure_callbacks(),
    },
)
def hcp_etcd_backup() -> None:
    """The backup DAG."""
    resolve = ResolveHostedClustersOperator(
        task_id="resolve_clusters",
        hosted_clusters=P % "hosted_clusters",
        label_selector=P % "label_selector",
        **K8S,
    )

    @task_group(group_id="backup")
    def backup_cluster(hosted_cluster: str) -> None:
        hc = {"hosted_cluster": hosted_cluster}
        preflight = BackupPreflightOperator(task_id="preflight", dry_run=P % "dry_run", **hc, **S3, **MODE)
        pause = PauseReconciliationOperator(
            task_id="pause", pause_deadline_minutes=P % "pause_deadline_minutes", **hc, **K8S, **MODE
        )
        quiesce = QuiesceApiServersOperator(task_id="quiesce", **hc, **K8S, **MODE)
        snapshot = SnapshotMembersOperator(task_id="snapshot", **hc, **K8S)
        verify = VerifySnapshotsOperator(task_id="verify", **hc, **K8S, **MODE)
        resume = ResumeApiServersOperator(task_id="resume", **hc, **K8S, **MODE, **RESTORE)
        upload = SnapshotToS3Operator(
            task_id="upload", snapshot=snapshot.output, verify=verify.output, **hc, **S3
        )
        escrow = EscrowEncryptionKeyOperator(
            task_id="escrow_key", key_prefix=P % "key_prefix", key_bucket=P % "key_bucket", **hc, **S3
        )
        publish = PublishManifestOperator(
            task_id="publish_manifest",
            snapshot=snapshot.output,
            verify=verify.output,
            upload=upload.output,
            escrow=escrow.output,
            resume=resume.output,
            **hc,
            **S3,
            **MODE,
        )
        cleanup = CleanupSnapshotsOperator(task_id="cleanup", **hc, **K8S, **RESTORE)
        unpause = UnpauseReconciliationOperator(task_id="unpause", **hc, **K8S, **MODE, **RESTORE)
        wait = WaitHostedClusterAvailableOperator(task_id="wait_available", **hc, **K8S, **MODE)

        chain(preflight, pause.as_setup(), quiesce.as_setup(), snapshot, verify)
        # The API servers come back as soon as the snapshot files exist: verify reads only those files
        # (and etcd at the snapshot's revision), so it runs after the downtime, not inside it.
        snapshot >> resume.as_teardown(setups=quiesce, on_failure_fail_dagrun=True)
        chain([resume, verify], upload)
        chain(upload, escrow, publish, cleanup.as_teardown(setups=pause))
        cleanup >> unpause.as_teardown(setups=pause, on_failure_fail_dagrun=True) >> wait
        # A failed backup must fail the run, not only its (ignored) teardowns.
        publish >> wait

    clusters = backup_cluster.expand(hosted_cluster=resolve.output)
    retention = BackupRetentionOperator(
        task_id="retention",
        hosted_clusters=resolve.output,
        key_prefix=P % "key_prefix",
        key_bucket=P % "key_bucket",
        keep_last=P % "keep_last",
        keep_daily=P % "keep_daily",
        keep_weekly=P % "keep_weekly",
        keep_monthly=P % "keep_monthly",
        dry_run=P % "dry_run",
        # Retention reads only manifests (verified backups), so a failed cluster cannot mislead it.
        trigger_rule=TriggerRule.ALL_DONE,
        **S3,
    )
    # Retention runs whatever happened (ALL_DONE), so it cannot carry the verdict: this leaf does,
    # failing the run when any cluster's backup failed.
    verdict = EmptyOperator(task_id="all_backups_succeeded", pool="default_pool")
    clusters >> [retention, verdict]


hcp_etcd_backup()
