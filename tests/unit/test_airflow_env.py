"""tests.support.airflow.AirflowEnv.on: one home and fork server, runs on another sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.airflow import AirflowEnv


def test_a_run_on_another_sandbox_gets_all_of_its_settings_and_shares_the_home(tmp_path: Path) -> None:
    base = AirflowEnv(tmp_path, {"AIRFLOW_HOME": str(tmp_path), "HCP_ETCD_BUCKET": "a"}, [],
                      sandbox={"HCP_ETCD_BUCKET": "a"})  # fmt: skip
    other = base.on({"HCP_ETCD_BUCKET": "b", "AIRFLOW_CONN_AWS_REPLICA": "{}"})
    assert other.sandbox == {"HCP_ETCD_BUCKET": "b", "AIRFLOW_CONN_AWS_REPLICA": "{}"}
    assert other.env == base.env  # the fork server's environment is the base's
    assert other.home == base.home and other.logs is base.logs  # one DB and one log list to search
    assert other.on({"HCP_ETCD_BUCKET": "c"})._base is base
    # A setting of this sandbox that the other does not override would leak into its runs.
    with pytest.raises(AssertionError, match="HCP_ETCD_BUCKET"):
        base.on({"AIRFLOW_CONN_AWS_REPLICA": "{}"})
