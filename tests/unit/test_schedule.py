"""The scheduled DAGs' first run: unpausing waits for the next slot instead of running a past one.

What the scheduler asks the timetable, on the DAGs as serialized (what the scheduler reads), with
the clock set to 14:00 UTC: the nightly backup must not start at 14:00.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AT_14H = datetime(2026, 3, 11, 14, 0, tzinfo=UTC)  # a Wednesday


@pytest.fixture(scope="module")
def serialized(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return {
        dag_id: DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
        for dag_id in ("hcp_etcd_backup", "hcp_etcd_backup_online", "hcp_etcd_restore_drill")
    }


@pytest.fixture
def clock(monkeypatch):
    import airflow.timetables.trigger as trigger

    monkeypatch.setattr(trigger, "utcnow", lambda: AT_14H)


def _next(dag, last=None):
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup)
    return dag.timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)


@pytest.mark.parametrize(
    ("dag_id", "first"),
    [
        ("hcp_etcd_backup", datetime(2026, 3, 12, 2, 0, tzinfo=UTC)),  # tomorrow 02:00, not today's
        ("hcp_etcd_backup_online", datetime(2026, 3, 11, 16, 0, tzinfo=UTC)),  # 16:00, not 12:00
        ("hcp_etcd_restore_drill", datetime(2026, 3, 15, 4, 0, tzinfo=UTC)),  # next Sunday, not last
    ],
)
def test_unpausing_waits_for_the_next_slot(serialized, clock, dag_id, first):
    dag = serialized[dag_id]
    assert dag.catchup is False
    assert _next(dag).run_after == first


def test_a_slot_missed_after_a_run_runs_once(serialized, clock):
    """Missed slots (scheduler down, or DAG paused, after a first run): the latest runs, once."""
    from airflow.timetables.base import DataInterval

    last = datetime(2026, 3, 8, 2, 0, tzinfo=UTC)
    info = _next(serialized["hcp_etcd_backup"], DataInterval(last, last))
    assert info.run_after == datetime(2026, 3, 11, 2, 0, tzinfo=UTC)
