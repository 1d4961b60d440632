"""hcp_etcd_restore_drill: restore each cluster's backup into a scratch cluster, verify, delete, report.

Thin on purpose: wiring, schedule, Params and docs. The logic is in ``plugins/hcp_etcd``.
Read at parse: environment variables only (no Variable or Connection lookups).
"""

from __future__ import annotations

from airflow.sdk import TriggerRule, WeightRule, chain, dag, task_group

from hcp_etcd import params
from hcp_etcd.naming import DNS1123_LABEL_RE
from hcp_etcd.operators.drill import DeleteRestoredClusterOperator, DrillReportOperator, DrillVerdictOperator
from hcp_etcd.operators.fleet import ResolveHostedClustersOperator
from hcp_etcd.operators.restore import (
    CheckKeyOperator,
    CheckSnapshotOperator,
    CreateRestoredClusterOperator,
    PresignSnapshotOperator,
    ResolveBackupOperator,
    VerifyRestoreOperator,
    WaitRestoredOperator,
)
from hcp_etcd.params import SOURCE_STORE, STORE
from hcp_etcd.params import ref as P
from hcp_etcd.restore.plan import DRILL_LABEL
from hcp_etcd.restore.presign import MAX_URL_EXPIRY_HOURS

# Which copy the backup is read from, and the replica to name when the primary cannot be read.
SOURCE = {"source_bucket": P("source_bucket"), "replica_bucket": P("replica_bucket")}

SCHEDULE, _ = params.env_schedule(*params.DRILL_SCHEDULE)  # never raises: see params
# Every drill is a whole control plane on the management cluster (and, on AWS, its volumes and load
# balancers): a pool of N slots, with deferred tasks counted (`--include-deferred`), keeps about N
# drills in flight. Drills that started finish before new ones start (WeightRule.ABSOLUTE: the
# weights below, not inherited ones). docs/RESTORE.md, "What a drill costs on AWS".
POOL = params.env_text("HCP_ETCD_DRILL_POOL", "default_pool")
STARTING = {"priority_weight": 10}
FINISHING = {"priority_weight": 50}

DOC = """
### Restore drill: prove every backup brings a cluster back

Weekly (env `HCP_ETCD_DRILL_SCHEDULE`, default Sundays 04:00 UTC), `catchup=False`; past dates can be
drilled with `airflow backfill create --dag-id hcp_etcd_restore_drill --from-date … --to-date …`.

Per hosted cluster (mapped): the newest complete backup at or before the run's data interval end
(now for a manual run without a logical date) → the same checks as `hcp_etcd_restore` → create
`<name>-drill-<YYYYMMDD>` in `drill_namespace`, cloned from the live cluster's spec (control plane
only: no NodePool) with `restoreSnapshotURL` and the escrowed key → wait Available +
`EtcdSnapshotRestored` → verify (members/split brain, revision, key counts, key, a Secret decrypts,
the service-account signing key: a new one by default, the escrowed one with
`service_account_key=escrowed`) →
report `s3://{bucket}/{prefix}/_drills/{ns}/{name}/{YYYYmmdd}.json` + an Asset event → **always**
delete the drill cluster (teardown). The run fails when any check fails.

Docs: `docs/RESTORE.md`.
"""

PARAMS = {
    "hosted_clusters": params.hosted_clusters(
        "Clusters to drill (namespace/name). Empty: every HostedCluster matching label_selector."
    ),
    "label_selector": params.label_selector(
        f"!{DRILL_LABEL}",
        "Label selector when hosted_clusters is empty (default: every cluster that is not a drill).",
    ),
    "drill_namespace": params.param(
        "hcp-etcd-drills",
        type="string",
        pattern=DNS1123_LABEL_RE.pattern,
        maxLength=40,
        description="Namespace of the scratch clusters (kept; created if missing when the identity may "
        "create namespaces: include/rbac creates hcp-etcd-drills and binds the restore role in it).",
    ),
    "service_account_key": params.param(
        "new",
        type="string",
        enum=["new", "escrowed"],
        description="The drill cluster's service-account signing key: new (HyperShift generates one, so "
        "the drill never signs tokens its source's clients accept) or escrowed (the backup's, to prove "
        "it restores; the drill then signs tokens valid for the source: run it where nothing trusts it).",
    ),
    **params.storage("Prefix of the escrowed encryption keys, as in hcp_etcd_backup."),
    **params.restore_limits(MAX_URL_EXPIRY_HOURS, "a drill cluster"),
    **params.source_bucket(),
    **params.replica(kms=False),
    **params.connections(),
    **params.presign_connection(),
}


@dag(
    dag_id="hcp_etcd_restore_drill",
    # No start_date: unpausing waits for the next slot (see params.cron_schedule).
    schedule=SCHEDULE,
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    render_template_as_native_obj=True,
    doc_md=DOC,
    tags=["hcp", "etcd", "restore", "drill"],
    default_args=params.default_args(pool=POOL, weight_rule=WeightRule.ABSOLUTE, **STARTING),
)
def hcp_etcd_restore_drill() -> None:
    """The drill DAG."""
    clusters = ResolveHostedClustersOperator(
        task_id="resolve_clusters",
        hosted_clusters=P("hosted_clusters"),
        label_selector=P("label_selector"),
        kubernetes_conn_id=P("kubernetes_conn_id"),
        schedule_setting=params.DRILL_SCHEDULE,
    )

    @task_group(group_id="drill")
    def drill_cluster(hosted_cluster: str) -> None:
        # The steps that read the backup read the copy source_bucket names; the report goes to the primary.
        resolve = ResolveBackupOperator(
            task_id="resolve_backup",
            source=hosted_cluster,
            target_namespace=P("drill_namespace"),
            **SOURCE,
            **SOURCE_STORE,
        )
        backup = {"backup": resolve.output, "presign_aws_conn_id": P("presign_aws_conn_id"), **SOURCE_STORE}
        snapshot = CheckSnapshotOperator(task_id="check_snapshot", **backup)
        key = CheckKeyOperator(task_id="check_key", key_prefix=P("key_prefix"), **backup)
        presign = PresignSnapshotOperator(task_id="presign", url_expiry_hours=P("url_expiry_hours"), **backup)
        create = CreateRestoredClusterOperator(
            task_id="create",
            clone=True,
            url_expiry_hours=P("url_expiry_hours"),
            service_account_key=P("service_account_key"),
            **backup,
        )
        wait = WaitRestoredOperator(
            task_id="wait_restored",
            created=create.output,
            timeout="{{ params.wait_timeout_minutes * 60 }}",
            retries=0,
            **backup,
            **FINISHING,
        )
        verify = VerifyRestoreOperator(
            task_id="verify",
            fail_on_check_failure=False,
            service_account_key=P("service_account_key"),
            **backup,
            **FINISHING,
        )
        report = DrillReportOperator(
            task_id="report",
            hosted_cluster=hosted_cluster,
            # Each step's outcome: its result, {"error": ...} when it failed, None when it did not run.
            steps={
                "backup": resolve.output,
                "snapshot": snapshot.output,
                "key": key.output,
                "presign": presign.output,
                "wait": wait.output,
                "verify": verify.output,
            },
            created=create.output,  # resolved at run time: create is a setup (see DrillReportOperator)
            trigger_rule=TriggerRule.ALL_DONE,
            **STORE,
            **FINISHING,
        )
        delete = DeleteRestoredClusterOperator(
            task_id="delete_drill_cluster", created=create.output, **STORE, **FINISHING
        )
        verdict = DrillVerdictOperator(
            task_id="verdict",
            hosted_cluster=hosted_cluster,
            report=report.output,
            retries=0,
            **STORE,
            **FINISHING,
        )
        chain(resolve, snapshot, key, presign, create.as_setup(), wait, verify, report, verdict)
        report >> delete.as_teardown(setups=create, on_failure_fail_dagrun=True)

    drill_cluster.expand(hosted_cluster=clusters.output)


hcp_etcd_restore_drill()
