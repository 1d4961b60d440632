"""The drill's own steps: delete the scratch cluster (teardown), write the report, judge the run."""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import Asset, AssetAlias, Context

from hcp_etcd import metrics
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.base import StoreOperator, utcnow
from hcp_etcd.operators.restore import ERROR_XCOM_KEY, drill_moment
from hcp_etcd.restore.plan import HYPERSHIFT_API
from hcp_etcd.restore.report import build_drill_report, drill_asset_name, drill_report_key

DRILL_ASSET_ALIAS = "hcp-etcd-drills"


def _pull(context: Context, task_id: str, key: str = "return_value") -> Any:
    """XCom of ``task_id`` at this task's map index (None when that task pushed nothing)."""
    ti = context["ti"]
    return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=ti.map_index)


class DeleteRestoredClusterOperator(StoreOperator):
    """Delete the drill cluster and what the create task made, and wait until it is gone (teardown).

    :param create_task_id: the create task (its XCom lists the objects it made).
    :param timeout: seconds to wait for the HostedCluster and its control-plane namespace to go.
    """

    def __init__(self, *, create_task_id: str, timeout: float = 900, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.create_task_id = create_task_id
        self.timeout = timeout

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Delete, then poll until gone."""
        created = _pull(context, self.create_task_id)
        if not created:
            self.log.info("the create task made nothing (it undoes its own partial work): nothing to delete")
            return None
        target = ClusterRef.parse(created["target"])
        objects = list(created["created"])
        hc = {
            "apiVersion": HYPERSHIFT_API,
            "kind": "HostedCluster",
            "namespace": target.namespace,
            "name": target.name,
        }
        # The HostedCluster first (delete_objects goes in reverse: HyperShift tears its control plane
        # down), then the Secrets and NodePools this run made.
        keep = ("HostedCluster", "Namespace")  # the namespace may hold other drills: it stays
        left = self.k8s.delete_objects([o for o in objects if o["kind"] not in keep] + [hc])
        deadline = time.monotonic() + self.timeout
        cp_ns = target.control_plane_namespace
        while self.k8s.hosted_cluster_exists(target) or self.k8s.object_exists(
            "v1", "Namespace", None, cp_ns
        ):
            if time.monotonic() > deadline:
                left.append(f"{target} or its namespace {cp_ns} still exists after {self.timeout:.0f}s")
                break
            time.sleep(2)
        if left:
            raise RuntimeError(
                f"drill cluster {target} not fully deleted (remove by hand): {'; '.join(left)}"
            )
        self.log.info("drill cluster %s deleted", target)
        return {"deleted": str(target)}


class DrillReportOperator(StoreOperator):
    """Write ``{prefix}/_drills/{ns}/{name}/{YYYYmmdd}.json`` and emit the cluster's drill Asset event.

    Runs whatever happened before (trigger rule ``all_done``): a drill that could not even start is
    reported as failed, with the error of the step that stopped it.

    :param task_ids: role (``backup``, ``snapshot``, ``key``, ``presign``, ``create``, ``wait``,
        ``verify``) -> task id.
    :return: ``{"passed", "report"}``.
    """

    def __init__(self, *, task_ids: dict[str, str], **kwargs: Any) -> None:
        """See the class docstring.

        :param kwargs: StoreOperator arguments (``hosted_cluster`` is the drilled cluster).
        """
        super().__init__(outlets=[AssetAlias(DRILL_ASSET_ALIAS)], **kwargs)
        self.task_ids = task_ids

    def execute(self, context: Context) -> dict[str, Any]:
        """Collect, write, announce."""
        ref = self.ref
        as_of = drill_moment(context)
        results = {role: _pull(context, tid) for role, tid in self.task_ids.items()}
        errors = [e for tid in self.task_ids.values() if (e := _pull(context, tid, ERROR_XCOM_KEY))]
        for role in ("backup", "create", "wait", "verify"):
            if results.get(role) is None and not errors:
                errors.append(f"{self.task_ids[role]} did not complete (see its log)")
        backup = results.get("backup")
        target = (backup or {}).get("target") or f"(not resolved for {ref})"
        report = build_drill_report(
            ref=ref,
            target=target,
            as_of=as_of,
            ran_at=utcnow(),
            backup=backup,
            created=results.get("create"),
            restored=results.get("wait"),
            checks=list((results.get("verify") or {}).get("checks") or []),
            errors=errors,
            run_id=str(context["run_id"]),
        )
        bucket, prefix = self.store.bucket, self.store.prefix
        key = drill_report_key(prefix, ref, as_of)
        self.s3.put_json(report, bucket, key, self.kms)
        metrics.emit_drill(report)  # never raises
        uri = f"s3://{bucket}/{key}"
        self.log.info("drill of %s %s; report %s", ref, "PASSED" if report["passed"] else "FAILED", uri)
        for check in report["checks"]:
            self.log.info(
                "  %-20s %s  %s", check["name"], "PASS" if check["passed"] else "FAIL", check["detail"]
            )
        for error in report["errors"]:
            self.log.info("  error: %s", error)
        asset = Asset(name=drill_asset_name(ref), uri=uri.rsplit("/", 1)[0])
        context["outlet_events"][AssetAlias(DRILL_ASSET_ALIAS)].add(
            asset,
            extra={
                "report": uri,
                "passed": report["passed"],
                "manifest": report["snapshot"]["manifest"],
                "recovery_seconds": report["recovery_seconds"],
                "snapshot_age_seconds": report["snapshot_age_seconds"],
            },
        )
        return {"passed": report["passed"], "report": uri}


class DrillVerdictOperator(StoreOperator):
    """Fail the run when the drill of this cluster did not pass (the report says why).

    :param report_task_id: the report task.
    """

    def __init__(self, *, report_task_id: str, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Context) -> None:
        """Judge."""
        result = _pull(context, self.report_task_id) or {}
        if not result.get("passed"):
            raise RuntimeError(
                f"restore drill of {self.ref} failed: see {result.get('report', 'the report task')}"
            )
        self.log.info("restore drill of %s passed (%s)", self.ref, result["report"])
