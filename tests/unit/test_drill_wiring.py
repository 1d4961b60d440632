"""The drill passes results as XComArgs (issue 13): the DAG's wiring, and the report reading failed
steps' outcomes (S3 faked: one class under test)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hcp_etcd.operators.drill import DrillReportOperator, DrillVerdictOperator
from hcp_etcd.operators.restore import ERROR_XCOM_KEY, RestoreStepOperator, step_error
from tests.support.stubs import RecordingTi
from tests.unit.test_dag import _weights

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def drill_dag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "hcp_etcd_restore_drill.py"))
    assert bag.import_errors == {}
    return bag.dags["hcp_etcd_restore_drill"]


def test_report_verdict_and_teardown_take_xcomargs(drill_dag: Any) -> None:
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    tasks = drill_dag.task_dict
    report, verdict = tasks["drill.report"], tasks["drill.verdict"]
    delete = tasks["drill.delete_drill_cluster"]
    sources = {role: arg.operator.task_id for role, arg in report.steps.items()}
    assert all(isinstance(arg, PlainXComArg) and arg.key == "return_value" for arg in report.steps.values())
    assert sources == {
        "backup": "drill.resolve_backup",
        "snapshot": "drill.check_snapshot",
        "key": "drill.check_key",
        "presign": "drill.presign",
        "wait": "drill.wait_restored",
        "verify": "drill.verify",
    }
    # The setup's outcome is resolved when the report runs (Airflow allows only ALL_SUCCESS right
    # after a setup): not a direct upstream of the all_done report.
    assert isinstance(report.created, PlainXComArg) and report.created.operator.task_id == "drill.create"
    assert "drill.create" not in report.upstream_task_ids
    assert isinstance(verdict.report, PlainXComArg) and verdict.report.operator is report
    assert isinstance(delete.created, PlainXComArg) and delete.created.operator.task_id == "drill.create"
    # No task reads another task's XCom by its id any more.
    for task in (report, verdict, delete):
        assert not {"task_ids", "create_task_id", "report_task_id"} & set(vars(task)), task.task_id


class _Failing(RestoreStepOperator):
    def run(self, context: Any) -> Any:
        raise RuntimeError("the snapshot s3://b/k has sha256 0000, the manifest says 1111")


def test_a_failed_step_pushes_its_error_as_its_outcome() -> None:
    ti = RecordingTi()
    with pytest.raises(RuntimeError):
        _Failing(task_id="check_snapshot", bucket="b").execute({"ti": ti})
    assert ti.xcom["return_value"] == {ERROR_XCOM_KEY: ti.xcom[ERROR_XCOM_KEY]}
    assert step_error(ti.xcom["return_value"]).startswith("check_snapshot: RuntimeError")
    assert step_error({"size_bytes": 1, "sha256": "x"}) is None and step_error(None) is None


class _Outlets(dict):
    def __missing__(self, key: Any) -> Any:
        class Accessor:
            def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
                pass

        return Accessor()


class _S3:
    def __init__(self) -> None:
        self.written: dict[str, Any] = {}

    def put_json(self, body: Any, bucket: str, key: str, kms: str | None) -> None:
        self.written[key] = body


def test_report_names_the_failed_step_and_its_error() -> None:
    backup = {
        "target": "hcp-etcd-drills/one-drill-20250105",
        "manifest_uri": "s3://b/hcp-etcd/clusters/one/20250105T020000Z/manifest.json",
        "manifest": {"created_at": "2025-01-05T02:00:00Z", "snapshot": {}, "etcd": {}},
    }
    error = "drill.check_snapshot: RuntimeError: the snapshot s3://b/k has sha256 0000"
    steps = {"backup": backup, "snapshot": {ERROR_XCOM_KEY: error}, "key": None, "presign": None,
             "wait": None, "verify": None}  # fmt: skip
    op = DrillReportOperator(
        task_id="report", hosted_cluster="clusters/one", bucket="drills", steps=steps, created=None
    )
    s3 = _S3()
    op.__dict__["s3"] = s3
    context = {
        "run_id": "r",
        "data_interval_end": datetime(2025, 1, 6, tzinfo=UTC),
        "outlet_events": _Outlets(),
    }
    result = op.execute(context)
    [report] = s3.written.values()
    assert result["passed"] is False and report["passed"] is False
    assert report["errors"] == [error] and report["drill_cluster"] == backup["target"]
    verdict = DrillVerdictOperator(
        task_id="verdict", hosted_cluster="clusters/one", bucket="drills", report=result
    )
    with pytest.raises(RuntimeError, match="restore drill of clusters/one failed"):
        verdict.execute({})


def test_drills_run_in_their_pool_and_started_drills_finish_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HCP_ETCD_DRILL_POOL bounds the drills in flight; within it, a drill that has a cluster runs
    before a new one starts (absolute weights: the scheduler orders queued tasks by them)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("HCP_ETCD_DRILL_POOL", "hcp_etcd_drill")
    bag = DagBag(dag_folder=str(REPO / "dags" / "hcp_etcd_restore_drill.py"))
    assert bag.import_errors == {}
    tasks = bag.dags["hcp_etcd_restore_drill"].task_dict
    assert {t.pool for t in tasks.values()} == {"hcp_etcd_drill"}
    weight = _weights(bag.dags["hcp_etcd_restore_drill"])
    starting = ("resolve_backup", "check_snapshot", "check_key", "presign", "create")
    finishing = ("wait_restored", "verify", "report", "delete_drill_cluster", "verdict")
    assert max(weight[f"drill.{t}"] for t in starting) < min(weight[f"drill.{t}"] for t in finishing), weight


def test_drills_use_the_default_pool_unless_told(drill_dag: Any) -> None:
    assert {t.pool for t in drill_dag.task_dict.values()} == {"default_pool"}
