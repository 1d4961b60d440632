"""The nightly quiesced DAG and the online DAG share one backup lock per cluster: a run of one never
backs up a cluster that a live run of the other holds, even when both runs have the same run id (two
DAGs scheduled at the same minute both run ``scheduled__<that minute>``). The operators take the lock
as in a run, with the Kubernetes hook faked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowSkipException

from hcp_etcd.naming import LOCK_ANNOTATION
from hcp_etcd.operators.backup import (
    BackupPreflightOperator,
    PauseReconciliationOperator,
    UnpauseReconciliationOperator,
)
from hcp_etcd.state import BackupLock, LockHeldError

QUIESCED_DAG, ONLINE_DAG = "hcp_etcd_backup", "hcp_etcd_backup_online"
SAME_MINUTE = "scheduled__2026-03-12T04:00:00+00:00"


class FakeHook:
    """A HostedCluster with a lock annotation; records patches (nothing else may be called first)."""

    def __init__(self, lock: BackupLock | None) -> None:
        annotations = {LOCK_ANNOTATION: lock.to_annotation()} if lock else {}
        self.hc = {
            "metadata": {
                "name": "ha",
                "namespace": "clusters",
                "resourceVersion": "7",
                "annotations": annotations,
            },
            "spec": {},
        }
        self.patches: list[dict[str, Any]] = []

    def get_hosted_cluster(self, ref: Any) -> dict[str, Any]:
        return self.hc

    def patch_hosted_cluster_if_unchanged(self, ref: Any, patch: dict[str, Any], version: str) -> None:
        self.patches.append(patch)

    def patch_hosted_cluster(self, ref: Any, patch: dict[str, Any], patch_type: str = "merge") -> None:
        self.patches.append(patch)


def held_by(dag_id: str, run_id: str = SAME_MINUTE) -> BackupLock:
    return BackupLock(run_id, dag_id, datetime.now(UTC) + timedelta(minutes=30))


def task(cls: type, dag_id: str, mode: str, hook: FakeHook, **kwargs: Any) -> Any:
    with DAG(dag_id, schedule=None):
        op = cls(task_id=cls.__name__, hosted_cluster="clusters/ha", mode=mode, **kwargs)
    op.__dict__["k8s"] = hook
    return op


def preflight(dag_id: str, mode: str, hook: FakeHook) -> BackupPreflightOperator:
    return task(BackupPreflightOperator, dag_id, mode, hook, bucket="bkt", prefix="p")


def test_a_lock_held_by_an_online_run_refuses_a_quiesced_run():
    hook = FakeHook(held_by(ONLINE_DAG))
    with pytest.raises(LockHeldError, match=ONLINE_DAG):
        preflight(QUIESCED_DAG, "quiesced", hook).execute({"run_id": SAME_MINUTE})
    # The step that takes the lock (and pauses) refuses too: nothing is patched, nothing paused.
    with pytest.raises(LockHeldError, match=ONLINE_DAG):
        task(PauseReconciliationOperator, QUIESCED_DAG, "quiesced", hook).execute({"run_id": SAME_MINUTE})
    assert hook.patches == []


def test_a_lock_held_by_a_quiesced_run_makes_an_online_run_skip_the_cluster():
    hook = FakeHook(held_by(QUIESCED_DAG))
    with pytest.raises(AirflowSkipException, match=f"{QUIESCED_DAG}.*Online backup of clusters/ha skipped"):
        preflight(ONLINE_DAG, "online", hook).execute({"run_id": SAME_MINUTE})
    with pytest.raises(LockHeldError, match=QUIESCED_DAG):
        task(PauseReconciliationOperator, ONLINE_DAG, "online", hook).execute({"run_id": SAME_MINUTE})
    # Nor does the online run's unpause (a teardown, run whatever happened) release the other's lock.
    assert (
        task(UnpauseReconciliationOperator, ONLINE_DAG, "online", hook).execute({"run_id": SAME_MINUTE})
        is None
    )
    assert hook.patches == []


def test_a_run_takes_the_free_lock_in_its_own_dags_name_and_a_retry_finds_it_its_own():
    hook = FakeHook(None)
    pause = task(PauseReconciliationOperator, ONLINE_DAG, "online", hook)
    pause.execute({"run_id": SAME_MINUTE})
    written = BackupLock.from_annotations(hook.patches[0]["metadata"]["annotations"])
    assert written is not None and (written.dag_id, written.run_id) == (ONLINE_DAG, SAME_MINUTE)
    assert "spec" not in hook.patches[0], "online takes the lock only, no pause"
    hook.hc["metadata"]["annotations"][LOCK_ANNOTATION] = written.to_annotation()
    pause.execute({"run_id": SAME_MINUTE})  # a retry of the same run: its own lock
    with pytest.raises(LockHeldError):
        task(PauseReconciliationOperator, QUIESCED_DAG, "quiesced", hook).execute({"run_id": SAME_MINUTE})
