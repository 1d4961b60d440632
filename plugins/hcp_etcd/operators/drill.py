"""The drill's own steps: delete the scratch cluster (teardown), write the report, judge the run."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias, Context

from hcp_etcd import metrics
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.base import StoreOperator, utcnow
from hcp_etcd.operators.restore import drill_moment, step_error
from hcp_etcd.restore.plan import HYPERSHIFT_API
from hcp_etcd.restore.report import build_drill_report, drill_asset_name, drill_report_key

DRILL_ASSET_ALIAS = "hcp-etcd-drills"


class DeleteRestoredClusterOperator(StoreOperator):
    """Delete the drill cluster and what the create task made, and wait until it is gone (teardown).

    Polls in the worker for a few seconds, then defers (``HostedClusterDeletedTrigger``): HyperShift
    tears a control plane down in minutes on a real management cluster.

    :param created: the create task's result, which lists the objects it made (templated: its
        XComArg; None when it made nothing).
    :param timeout: seconds to wait for the HostedCluster and its control-plane namespace to go.
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "created")
    inline_wait_seconds = 10
    inline_poll_interval = 0.5

    def __init__(self, *, created: Any, timeout: float = 900, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.created = created
        self.timeout = timeout

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Delete, then wait until gone."""
        from hcp_etcd.triggers.restore import HostedClusterDeletedTrigger

        created = self.created
        if not created or step_error(created):
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
        trigger = HostedClusterDeletedTrigger(
            namespace=target.namespace,
            name=target.name,
            kubernetes_conn_id=self.kubernetes_conn_id,
            timeout=self.timeout,
            poll_interval=2,
        )
        return self.wait(trigger, "execute_complete", context, target=str(target), left=left)

    def execute_complete(
        self, context: Context, event: dict[str, Any], target: str, left: list[str]
    ) -> dict[str, Any]:
        """Fail with what is left, if anything.

        :param context: task context.
        :param event: the trigger's payload.
        :param target: the drill cluster.
        :param left: what could not be deleted.
        """
        if event.get("status") != "success":
            left = [*left, f"{event.get('message')} after {self.timeout:.0f}s"]
        if left:
            raise RuntimeError(
                f"drill cluster {target} not fully deleted (remove by hand): {'; '.join(left)}"
            )
        self.log.info("drill cluster %s deleted", target)
        return {"deleted": target}


class DrillReportOperator(StoreOperator):
    """Write ``{prefix}/_drills/{ns}/{name}/{YYYYmmdd}.json`` and emit the cluster's drill Asset event.

    Runs whatever happened before (trigger rule ``all_done``): a drill that could not even start is
    reported as failed, with the error of the step that stopped it.

    :param steps: role (``backup``, ``snapshot``, ``key``, ``presign``, ``wait``, ``verify``) -> that
        step's outcome (templated: its XComArg): its result, ``{"error": ...}`` when it failed
        (``hcp_etcd.operators.restore.step_error``), None when it did not run.
    :param created: the outcome of the create step, likewise, as its XComArg. Resolved when the report
        runs, not templated: a templated XComArg makes its task a direct upstream, and Airflow refuses
        a task other than ALL_SUCCESS right after a setup task (``DAG.validate_setup_teardown``).
    :return: ``{"passed", "report"}``.
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "steps")

    def __init__(self, *, steps: dict[str, Any], created: Any, **kwargs: Any) -> None:
        """See the class docstring.

        :param kwargs: StoreOperator arguments (``hosted_cluster`` is the drilled cluster).
        """
        super().__init__(outlets=[AssetAlias(DRILL_ASSET_ALIAS)], **kwargs)
        self.steps = steps
        self.created = created

    def execute(self, context: Context) -> dict[str, Any]:
        """Collect, write, announce."""
        from airflow.sdk import XComArg

        ref = self.ref
        as_of = drill_moment(context)
        created = self.created.resolve(context) if isinstance(self.created, XComArg) else self.created
        outcomes = {**self.steps, "create": created}
        errors = [e for outcome in outcomes.values() if (e := step_error(outcome))]
        results = {role: None if step_error(o) else o for role, o in outcomes.items()}
        for role in ("backup", "create", "wait", "verify"):
            if results.get(role) is None and not errors:
                errors.append(f"the {role} step did not complete (see its log)")
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

    :param report: the report task's result (templated: its XComArg).
    """

    template_fields: tuple[str, ...] = (*StoreOperator.template_fields, "report")

    def __init__(self, *, report: Any, **kwargs: Any) -> None:
        """See the class docstring."""
        super().__init__(**kwargs)
        self.report = report

    def execute(self, context: Context) -> None:
        """Judge."""
        result = self.report or {}
        if not result.get("passed"):
            raise RuntimeError(
                f"restore drill of {self.ref} failed: see {result.get('report', 'the report task')}"
            )
        self.log.info("restore drill of %s passed (%s)", self.ref, result["report"])
