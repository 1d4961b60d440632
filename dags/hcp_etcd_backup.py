"""hcp_etcd_backup and hcp_etcd_backup_online: back up the etcd of HyperShift hosted clusters to S3.

One definition, two DAGs: ``hcp_etcd_backup`` (nightly, ``mode=quiesced``) and
``hcp_etcd_backup_online`` (every few hours, ``mode=online``: no API downtime), for a smaller RPO.
Both come from this file, so they share the wiring and the imports (one parse gives both).

Thin on purpose: wiring, schedule, Params and docs. The logic is in ``plugins/hcp_etcd``.
Read at parse: environment variables only (no Variable or Connection lookups).
"""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TriggerRule, WeightRule, chain, dag, task_group

from hcp_etcd import params
from hcp_etcd.operators import transfer
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
from hcp_etcd.operators.replicate import ReplicateBackupOperator
from hcp_etcd.operators.transfer import SnapshotToS3Operator
from hcp_etcd.params import KUBERNETES as K8S
from hcp_etcd.params import ref as P

POOL = params.env_text("HCP_ETCD_POOL", "hcp_etcd_backup")

DOC = """
### Back up the etcd of hosted clusters

Per hosted cluster (mapped, at most 4 clusters' tasks at once through the pool `hcp_etcd_backup`):
preflight → pause (setup) → quiesce (setup) → snapshot every member → resume (teardown) and verify →
upload → escrow key → manifest (last) + Asset event → cleanup (teardown) → unpause (teardown) →
wait Available; and, with a `replica_bucket`, the copy to the replica (snapshot, keys, manifest
last, each checked against the manifest's SHA-256). Then retention over the fleet (both copies).

* `mode=quiesced` is the documented procedure (API down during the snapshot only);
  `mode=online` does not pause or stop anything (etcd snapshots are consistent anyway; members
  differ slightly in revision, and in-flight API writes land after the snapshot).
* `hcp_etcd_backup` runs nightly with `mode=quiesced`; `hcp_etcd_backup_online` (same tasks) runs
  every few hours with `mode=online`. Both take the cluster's backup lock: they never overlap on one
  cluster (an online run skips a cluster another backup is taking).
* `dry_run` runs the preflight only (retention lists what it would delete).
* The encryption key is escrowed under `key_prefix`; it never goes through XCom or logs. A cluster
  encrypted with AWS KMS has none: the manifest records its key ARNs, and `verify` decrypts a Secret
  of the snapshot through KMS.

Docs: `docs/BACKUP.md`.
"""

ONLINE_DOC = (
    """
### Online backups of the etcd of hosted clusters, between the nightly quiesced ones

The tasks of `hcp_etcd_backup` with `mode=online` by default: no pause, no API downtime. Every 4 hours
by default (env `HCP_ETCD_ONLINE_SCHEDULE`; empty: no schedule, manual runs only). It takes the same
per-cluster backup lock, and skips a cluster whose backup another run is taking. Retention runs with the
same policy; `keep_hourly` keeps their fine-grained history.
"""
    + DOC
)


def backup_params(mode: str) -> dict[str, Param]:
    """The form of a backup DAG (new Param objects per DAG).

    :param mode: the default of ``mode``.
    """
    return {
        "hosted_clusters": params.hosted_clusters(
            "HostedClusters as namespace/name (e.g. clusters/prod1). Empty: every HostedCluster matching "
            "label_selector."
        ),
        "label_selector": params.label_selector(
            "", "Label selector for HostedClusters when hosted_clusters is empty (empty: all)."
        ),
        "mode": params.param(
            mode,
            type="string",
            enum=["quiesced", "online"],
            description="quiesced: pause and stop the API servers while snapshotting (the documented "
            "procedure). online: no pause, no downtime.",
        ),
        **params.storage("Key prefix of the escrowed etcd encryption keys (give it its own permissions)."),
        "key_bucket": params.param(
            None,
            type=["null", "string"],
            description="Separate bucket for encryption keys (empty: the backup bucket).",
        ),
        "kms_key_id": params.param(
            None,
            type=["null", "string"],
            maxLength=2048,
            description="KMS key for SSE-KMS; empty uses SSE-S3 (AES256).",
        ),
        "upload_method": params.param(
            transfer.DEFAULT_METHOD,
            type="string",
            enum=list(transfer.METHODS),
            description="presigned-curl: the etcd pod PUTs the snapshot to a presigned SigV4 URL (fastest; "
            "falls back to stream when the pod has no curl or no egress to S3, or over 5 GiB). stream: the "
            "snapshot flows pod -> worker -> S3 through the exec stream (no URL in the pod).",
        ),
        "pause_deadline_minutes": params.param(
            60,
            type="integer",
            minimum=10,
            maximum=720,
            description="Dead-man's switch: pausedUntil = now + this; HyperShift resumes by itself then. "
            "Also the expiry of the backup lock.",
        ),
        "keep_last": params.param(
            7, type="integer", minimum=1, maximum=1000, description="Keep the newest N backups."
        ),
        "keep_hourly": params.param(
            24,
            type="integer",
            minimum=0,
            maximum=8760,
            description="Keep the newest backup of each hour of the N hours up to the newest backup "
            "(the online backups' fine-grained history), on top of the daily, weekly and monthly ones.",
        ),
        "keep_daily": params.param(
            7, type="integer", minimum=0, maximum=1000, description="Keep one per day, N days."
        ),
        "keep_weekly": params.param(
            4, type="integer", minimum=0, maximum=520, description="Keep one per ISO week, N weeks."
        ),
        "keep_monthly": params.param(
            6, type="integer", minimum=0, maximum=240, description="Keep one per month, N months."
        ),
        "dry_run": params.param(
            False, type="boolean", description="Preflight only; retention lists, deletes nothing."
        ),
        "bypass_governance_retention": params.param(
            False,
            type="boolean",
            description="Retention may delete backups under S3 Object Lock in GOVERNANCE mode (needs "
            "s3:BypassGovernanceRetention). Off: locked backups are kept and reported as locked until their "
            "retention date. COMPLIANCE mode and legal holds are never bypassed.",
        ),
        **params.replica(),
        **params.connections(),
    }


S3 = {**params.STORE, "kms_key_id": P("kms_key_id")}
REPLICA = {name: P(name) for name in ("replica_bucket", "replica_aws_conn_id", "replica_kms_key_id")}
MODE = {"mode": P("mode")}
# Scheduling order across the fleet (WeightRule.ABSOLUTE: each task weighs what it says here, never
# what it inherits from its upstream by accident). Once a cluster's API servers are down, its
# snapshot, resume, cleanup and unpause come first, and they skip the pool, because a priority only
# orders queued tasks: a slot held by another cluster's multi-minute upload is not given back. Then
# the work of clusters in flight; a new cluster's preflight, pause and quiesce last.
# tests/unit/test_dag.py computes the scheduler's weights from the parsed DAG and checks this order.
DOWNTIME_WINDOW = {"pool": "default_pool", "priority_weight": 100}
IN_FLIGHT = {"priority_weight": 50}
STARTING = {"priority_weight": 10}


def backup_tasks(schedule_setting: tuple[str, str]) -> None:
    """The tasks of a backup DAG, the same for both (see :func:`backup_dag`).

    :param schedule_setting: ``(environment variable, default)`` of the DAG's schedule.
    """
    resolve = ResolveHostedClustersOperator(
        task_id="resolve_clusters",
        hosted_clusters=P("hosted_clusters"),
        label_selector=P("label_selector"),
        schedule_setting=schedule_setting,
        **K8S,
    )

    @task_group(group_id="backup")
    def backup_cluster(hosted_cluster: str) -> None:
        hc = {"hosted_cluster": hosted_cluster}
        keys = {"key_prefix": P("key_prefix"), "key_bucket": P("key_bucket")}
        preflight = BackupPreflightOperator(
            task_id="preflight", dry_run=P("dry_run"), **keys, **hc, **S3, **MODE, **STARTING
        )
        pause = PauseReconciliationOperator(
            task_id="pause",
            pause_deadline_minutes=P("pause_deadline_minutes"),
            **hc,
            **K8S,
            **MODE,
            **STARTING,
        )
        quiesce = QuiesceApiServersOperator(task_id="quiesce", **hc, **K8S, **MODE, **STARTING)
        snapshot = SnapshotMembersOperator(
            task_id="snapshot", quiesce=quiesce.output, **hc, **K8S, **DOWNTIME_WINDOW
        )
        verify = VerifySnapshotsOperator(
            task_id="verify",
            snapshot=snapshot.output,
            aws_conn_id=S3["aws_conn_id"],
            **hc,
            **K8S,
            **MODE,
            **IN_FLIGHT,
        )
        resume = ResumeApiServersOperator(
            task_id="resume", snapshot=snapshot.output, **hc, **K8S, **MODE, **DOWNTIME_WINDOW
        )
        upload = SnapshotToS3Operator(
            task_id="upload",
            snapshot=snapshot.output,
            verify=verify.output,
            method=P("upload_method"),
            **hc,
            **S3,
            **IN_FLIGHT,
        )
        escrow = EscrowEncryptionKeyOperator(task_id="escrow_key", **keys, **hc, **S3, **IN_FLIGHT)
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
            **IN_FLIGHT,
        )
        replicate = ReplicateBackupOperator(
            task_id="replicate", published=publish.output, **keys, **REPLICA, **hc, **S3, **IN_FLIGHT
        )
        cleanup = CleanupSnapshotsOperator(task_id="cleanup", **hc, **K8S, **DOWNTIME_WINDOW)
        unpause = UnpauseReconciliationOperator(task_id="unpause", **hc, **K8S, **MODE, **DOWNTIME_WINDOW)
        wait = WaitHostedClusterAvailableOperator(task_id="wait_available", **hc, **K8S, **MODE, **IN_FLIGHT)

        chain(preflight, pause.as_setup(), quiesce.as_setup(), snapshot, verify)
        # The snapshot task scales the API servers back as soon as the snapshot files exist; resume (the
        # teardown) waits until they are ready, and scales back whatever a failed snapshot left at 0.
        # Verify reads only the files (and etcd's current revision): it runs after the downtime.
        snapshot >> resume.as_teardown(setups=quiesce, on_failure_fail_dagrun=True)
        chain([resume, verify], upload)
        chain(upload, escrow, publish, cleanup.as_teardown(setups=pause))
        cleanup >> unpause.as_teardown(setups=pause, on_failure_fail_dagrun=True) >> wait
        # A failed backup must fail the run, not only its (ignored) teardowns.
        publish >> wait
        # The copy runs beside the teardowns (the API is back already) and fails the run on its own.
        publish >> replicate

    clusters = backup_cluster.expand(hosted_cluster=resolve.output)
    retention = BackupRetentionOperator(
        task_id="retention",
        hosted_clusters=resolve.output,
        key_prefix=P("key_prefix"),
        key_bucket=P("key_bucket"),
        keep_last=P("keep_last"),
        keep_hourly=P("keep_hourly"),
        keep_daily=P("keep_daily"),
        keep_weekly=P("keep_weekly"),
        keep_monthly=P("keep_monthly"),
        dry_run=P("dry_run"),
        bypass_governance_retention=P("bypass_governance_retention"),
        **REPLICA,
        # Retention reads only manifests (verified backups), so a failed cluster cannot mislead it.
        trigger_rule=TriggerRule.ALL_DONE,
        **S3,
    )
    # Retention runs whatever happened (ALL_DONE), so it cannot carry the verdict: this leaf does,
    # failing the run when any cluster's backup failed.
    # NONE_FAILED: a skipped replicate (no replica set) or a dry run is not a failed backup.
    verdict = EmptyOperator(
        task_id="all_backups_succeeded", pool="default_pool", trigger_rule=TriggerRule.NONE_FAILED
    )
    clusters >> [retention, verdict]


def backup_dag(dag_id: str, mode: str, schedule_setting: tuple[str, str], doc: str, tags: list[str]) -> DAG:
    """A backup DAG: :func:`backup_tasks` with its mode's default, schedule and docs.

    :param dag_id: the DAG id.
    :param mode: the default of the ``mode`` Param.
    :param schedule_setting: ``(environment variable, default)`` of its schedule (None when it is off).
    :param doc: its ``doc_md``.
    :param tags: its tags.
    """
    schedule, _ = params.env_schedule(*schedule_setting)  # never raises: see params

    @dag(
        dag_id=dag_id,
        # No start_date: unpausing waits for the next slot (see params.cron_schedule).
        schedule=schedule,
        catchup=False,
        # Per DAG: the two DAGs' runs may overlap in time; the backup lock keeps them apart per cluster.
        max_active_runs=1,
        params=backup_params(mode),
        render_template_as_native_obj=True,
        doc_md=doc,
        tags=tags,
        default_args=params.default_args(pool=POOL, weight_rule=WeightRule.ABSOLUTE),
    )
    def backup() -> None:
        backup_tasks(schedule_setting)

    return backup()


hcp_etcd_backup = backup_dag(
    "hcp_etcd_backup", "quiesced", params.BACKUP_SCHEDULE, DOC, ["hcp", "etcd", "backup"]
)
# Empty HCP_ETCD_ONLINE_SCHEDULE: the DAG stays, for manual runs, with no schedule (its runs and the
# backups it made stay in view; a DAG that vanished from the folder would hide them).
hcp_etcd_backup_online = backup_dag(
    "hcp_etcd_backup_online",
    "online",
    params.ONLINE_SCHEDULE,
    ONLINE_DOC,
    ["hcp", "etcd", "backup", "online"],
)
