"""Failures that are fast and clean (issue 12): configuration errors are not retried, what is stored
is redacted, a bad setting never breaks a DAG file, and the preflight probes as the run will write."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
from botocore.exceptions import ClientError
from kubernetes.client.rest import ApiException

from hcp_etcd import params
from hcp_etcd.errors import (
    ConfigurationError,
    configuration_problem,
    describe,
    fail_fast_on_configuration_errors,
    redact,
)
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.restore import ERROR_XCOM_KEY, RestoreStepOperator
from tests.support.stubs import RecordingTi

REPO = Path(__file__).resolve().parents[2]
SECRET = base64.b64encode(bytes(range(32))).decode()  # what an AES key looks like in a Secret
URL = (
    "https://b.s3.us-east-2.amazonaws.com/k/snapshot.db?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261201%2Fus-east-2%2Fs3%2Faws4_request&X-Amz-Expires=3600"
    "&X-Amz-Signature=" + "f" * 64
)


def s3_error(code: str, status: int = 400) -> ClientError:
    response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


CONFIGURATION = {
    "missing bucket": s3_error("NoSuchBucket", 404),
    "unwritable bucket": s3_error("AccessDenied", 403),
    "unknown KMS key": s3_error("KMS.NotFoundException"),
    "unknown connection": AirflowNotFoundException("The conn_id `nope` isn't defined"),
    "RBAC refuses": ApiException(status=403, reason="Forbidden"),
    "not DNS-1123": ValueError("placeholder"),  # replaced below by the real error
}
TRANSIENT = {
    "S3 throttling": s3_error("SlowDown", 503),
    "S3 internal error": s3_error("InternalError", 500),
    "API 500": ApiException(status=500, reason="Internal Server Error"),
    "API 429": ApiException(status=429, reason="Too Many Requests"),
    "connection reset": ConnectionResetError("reset by peer"),
    "API 404 (a pod its StatefulSet is recreating)": ApiException(status=404, reason="Not Found"),
}


def _name_error() -> Exception:
    try:
        ClusterRef.parse("clusters/Not_A_Name")
    except ValueError as err:
        return err
    raise AssertionError("ClusterRef accepted a bad name")


CONFIGURATION["not DNS-1123"] = _name_error()


class Step:
    """The smallest operator-like object the decorator wraps."""

    def __init__(self, err: Exception) -> None:
        self.err = err

    @fail_fast_on_configuration_errors
    def execute(self, context: Any) -> None:
        raise self.err


@pytest.mark.parametrize("case", list(CONFIGURATION))
def test_configuration_errors_fail_without_retries(case: str) -> None:
    with pytest.raises(AirflowFailException) as err:
        Step(CONFIGURATION[case]).execute({})
    assert "not retried" in str(err.value)


@pytest.mark.parametrize("case", list(TRANSIENT))
def test_transient_errors_keep_their_retries(case: str) -> None:
    with pytest.raises(type(TRANSIENT[case])) as err:
        Step(TRANSIENT[case]).execute({})
    assert not isinstance(err.value, AirflowFailException)


def test_our_clear_message_wins_over_the_clients() -> None:
    """A RuntimeError raised ``from`` a NoSuchBucket keeps its wording, and fails fast."""
    try:
        try:
            raise s3_error("NoSuchBucket", 404)
        except ClientError as inner:
            raise RuntimeError("bucket 'x' is not writable by this connection: check its name") from inner
    except RuntimeError as outer:
        assert configuration_problem(outer) == "bucket 'x' is not writable by this connection: check its name"
    assert configuration_problem(RuntimeError("plain")) is None


def test_redact_strips_signatures_and_secret_data_not_names() -> None:
    text = redact(f"PUT {URL} failed; data.key={SECRET}; object hcp-etcd/backups/clusters/prod1/"
                  f"20261201T020000Z/snapshot.db; key sha256 {'ab' * 32}")  # fmt: skip
    assert "f" * 64 not in text and "AKIAEXAMPLE" not in text and SECRET not in text
    assert "hcp-etcd/backups/clusters/prod1/20261201T020000Z/snapshot.db" in text and "ab" * 32 in text


def test_yaml_errors_keep_the_position_not_the_line() -> None:
    with pytest.raises(yaml.YAMLError) as err:
        yaml.safe_load(f"kind: Secret\ndata:\n  key: {SECRET}\n  : [\n")
    assert SECRET[:20] in str(err.value)  # yaml itself quotes the line
    described = describe(err.value)
    assert SECRET[:20] not in described and "line 4, column 3" in described, described


class _Failing(RestoreStepOperator):
    def run(self, context: Any) -> Any:
        why = f"HostedCluster is invalid: restoreSnapshotURL {URL!r} with {SECRET}"
        raise ApiException(status=422, reason=why)


def test_restore_step_error_xcom_is_redacted() -> None:
    """The drill report reads this XCom; XCom is clear text in the metadata DB."""
    ti = RecordingTi()
    with pytest.raises(ApiException):  # a 422 is not a configuration error: the step may retry
        _Failing(task_id="create", bucket="b").execute({"ti": ti})
    stored = ti.xcom[ERROR_XCOM_KEY]
    assert stored.startswith("create: ApiException") and "422" in stored
    assert "f" * 64 not in stored and SECRET not in stored, stored


def test_bad_settings_never_break_the_dag_file(monkeypatch, tmp_path) -> None:
    """HCP_ETCD_BUCKET=b once made the backup DAG fail to import ("not allowed to define a Schedule")."""
    monkeypatch.setenv("AIRFLOW_HOME", os.environ.get("AIRFLOW_HOME") or str(tmp_path))
    monkeypatch.setenv("HCP_ETCD_BUCKET", "b")
    monkeypatch.setenv("HCP_ETCD_BACKUP_SCHEDULE", "every night at two")
    monkeypatch.setenv("HCP_ETCD_RETRY_DELAY_SECONDS", "half a minute")
    monkeypatch.setenv("HCP_ETCD_AWS_CONN_ID", "")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags["hcp_etcd_backup"]
    assert dag.params["bucket"] == "" and "HCP_ETCD_BUCKET='b'" in dag.params.get_param("bucket").description
    assert dag.params["aws_conn_id"] == "aws_default"
    # The run says what is wrong, at its first task, without retries.
    with pytest.raises(ConfigurationError) as err:
        params.check_settings(params.BACKUP_SCHEDULE)
    assert "HCP_ETCD_BACKUP_SCHEDULE='every night at two'" in str(err.value)
    assert "HCP_ETCD_RETRY_DELAY_SECONDS='half a minute'" in str(err.value)
    with pytest.raises(ConfigurationError, match="HCP_ETCD_BUCKET='b' is not a valid S3 bucket name"):
        params.require_bucket("")
    assert params.require_bucket("my-backups") == "my-backups"  # a bucket Param does not need the env


def test_probe_writes_with_the_runs_encryption(s3hook) -> None:
    """A bucket whose policy requires SSE-KMS refuses an SSE-S3 probe (the old probe), and takes the
    run's own SSE-KMS probe. The policy is enforced here by a botocore handler, as S3 would."""

    def require_kms(params: dict[str, Any], **_: Any) -> None:
        if params.get("ServerSideEncryption") != "aws:kms":
            raise s3_error("AccessDenied", 403)

    s3hook.client.meta.events.register("provide-client-params.s3.PutObject", require_kms)
    with pytest.raises(RuntimeError, match="SSE-S3") as err:
        s3hook.check_writable("bkt", "p/.probe/x")
    assert configuration_problem(err.value)
    s3hook.check_writable("bkt", "p/.probe/x", kms_key_id="alias/backups")


def test_a_named_aws_connection_that_does_not_exist_fails(s3hook) -> None:
    """The provider would fall back to the worker's own credentials; only ``aws_default`` may."""
    from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook

    with pytest.raises(AirflowNotFoundException):
        _ = SnapshotStoreHook(aws_conn_id="prod-backups-typo").client
    assert SnapshotStoreHook(aws_conn_id="aws_default").client is not None


def test_preflight_of_a_hosted_cluster_that_does_not_exist_fails_at_once() -> None:
    """The preflight says which cluster is missing, without retries (a bare 404 elsewhere is retried)."""
    from hcp_etcd.operators.backup import BackupPreflightOperator

    class NoCluster:
        def get_hosted_cluster(self, ref: Any) -> Any:
            raise ApiException(status=404, reason="Not Found")

    op = BackupPreflightOperator(task_id="preflight", hosted_cluster="clusters/gone", bucket="my-backups")
    op.__dict__["k8s"] = NoCluster()  # the cached hook
    with pytest.raises(AirflowFailException, match="HostedCluster clusters/gone does not exist"):
        op.execute({"run_id": "manual__1"})
