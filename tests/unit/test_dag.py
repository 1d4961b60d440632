import itertools
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def parse_backup_dags():
    """The DAGs of ``dags/hcp_etcd_backup.py`` as the DAG processor parses them, with the environment now."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "hcp_etcd_backup.py"))
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture(scope="module")
def dags(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    os.environ["HCP_ETCD_BUCKET"] = "my-backups"
    return parse_backup_dags()


@pytest.fixture(scope="module")
def dag(dags):
    return dags["hcp_etcd_backup"]


@pytest.fixture(scope="module")
def online(dags):
    return dags["hcp_etcd_backup_online"]


def test_schedule_and_params(dag):
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.params["bucket"] == "my-backups"
    assert dag.params["mode"] == "quiesced"
    assert dag.params["upload_method"] == "presigned-curl"
    # The upload task takes its method from the form.
    assert dag.task_dict["backup.upload"].method == "{{ params.upload_method }}"
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dag.params)
    params["hosted_clusters"] = ["clusters/ok-1"]
    params.validate()
    for key, bad in [("hosted_clusters", ["../etc"]), ("mode", "hot"), ("pause_deadline_minutes", 5),
                     ("prefix", "a/../b"), ("keep_last", 0), ("upload_method", "scp")]:  # fmt: skip
        p = ParamsDict(dag.params)
        with pytest.raises(Exception):  # noqa: B017 - ParamValidationError
            p[key] = bad


def test_graph_order_and_setup_teardown(dag):
    t = dag.task_dict
    g = "backup."
    assert t[g + "pause"].is_setup and t[g + "quiesce"].is_setup
    assert t[g + "resume"].is_teardown and t[g + "cleanup"].is_teardown and t[g + "unpause"].is_teardown
    chain = ["preflight", "pause", "quiesce", "snapshot", "resume", "upload", "escrow_key",
             "publish_manifest", "cleanup", "unpause", "wait_available"]  # fmt: skip
    for a, b in itertools.pairwise(chain):
        assert g + a in t[g + b].upstream_task_ids, (a, b)
    # verify runs after the snapshot, outside the API downtime (resume does not wait for it).
    assert g + "snapshot" in t[g + "verify"].upstream_task_ids
    assert g + "verify" in t[g + "upload"].upstream_task_ids
    assert g + "verify" not in t[g + "resume"].upstream_task_ids
    assert g + "publish_manifest" in t[g + "wait_available"].upstream_task_ids
    assert t["retention"].trigger_rule == "all_done"
    # The downtime window skips the pool (issue 15: no slot held by another cluster's upload);
    # everything else of a cluster's backup takes a slot of it.
    for name in ("snapshot", "resume", "cleanup", "unpause"):
        assert t[g + name].pool == "default_pool"
    for name in ("preflight", "pause", "quiesce", "verify", "upload", "escrow_key", "publish_manifest"):
        assert t[g + name].pool == "hcp_etcd_backup", name


def test_dag_file_does_no_io_at_import():
    text = (REPO / "dags" / "hcp_etcd_backup.py").read_text()
    assert "Variable.get" not in text and "get_connection" not in text and "Hook(" not in text


def _weights(dag):
    """Each task's weight as the scheduler computes it (its weight rule over the parsed DAG)."""
    from types import SimpleNamespace

    from airflow.task.priority_strategy import validate_and_load_priority_weight_strategy

    strategy = validate_and_load_priority_weight_strategy
    return {t.task_id: strategy(t.weight_rule).get_weight(SimpleNamespace(task=t)) for t in dag.tasks}


def test_a_quiesced_cluster_never_waits_behind_another_clusters_work(dag):
    """Issue 15: once a cluster's API servers are down, its snapshot, resume, cleanup and unpause
    outrank every other cluster's upload (and everything else) and a new cluster's quiesce, and they
    need no slot of the pool that uploads hold. Under the old UPSTREAM rule another cluster's upload
    weighed 107 against this cluster's snapshot's 5."""
    weights = _weights(dag)
    window = {f"backup.{t}" for t in ("snapshot", "resume", "cleanup", "unpause")}
    others = set(weights) - window
    assert min(weights[t] for t in window) > max(weights[t] for t in others), weights
    pool = dag.task_dict["backup.upload"].pool
    assert all(dag.task_dict[t].pool != pool for t in window), {t: dag.task_dict[t].pool for t in window}
    # Clusters in flight finish before new ones start.
    in_flight = {f"backup.{t}" for t in ("verify", "upload", "escrow_key", "publish_manifest")}
    in_flight.add("backup.wait_available")
    starting = {f"backup.{t}" for t in ("preflight", "pause", "quiesce")}
    assert min(weights[t] for t in in_flight) > max(weights[t] for t in starting), weights


# The kind of each step of the backup DAG (docs/ARCHITECTURE.md, "How a backup flows").
BACKUP_STEP_KINDS = {
    "preflight": ("KubernetesExecOperator", "StoreOperator"),
    "pause": ("HostedClusterPatchOperator",),
    "quiesce": ("HostedClusterPatchOperator",),
    "snapshot": ("KubernetesExecOperator",),
    "resume": ("HostedClusterPatchOperator",),
    "verify": ("KubernetesExecOperator",),
    "upload": ("StoreOperator", "KubernetesExecOperator"),
    "escrow_key": ("StoreOperator",),
    "publish_manifest": ("StoreOperator",),
    "cleanup": ("KubernetesExecOperator",),
    "unpause": ("HostedClusterPatchOperator",),
}


def test_each_backup_step_is_of_its_kind(dag) -> None:
    """Each step specialises the operator of its kind, so the one exec, patch and S3 path serve it."""
    from airflow.sdk import BaseOperator

    from hcp_etcd.operators.base import StoreOperator
    from hcp_etcd.operators.kubernetes import KubernetesExecOperator
    from hcp_etcd.operators.patch import HostedClusterPatchOperator

    kinds: dict[str, type[BaseOperator]] = {
        k.__name__: k for k in (KubernetesExecOperator, HostedClusterPatchOperator, StoreOperator)
    }
    seen = {}
    for task in dag.tasks:
        step = task.task_id.rsplit(".", 1)[-1]
        if step in BACKUP_STEP_KINDS:
            seen[step] = sorted(name for name, kind in kinds.items() if isinstance(task, kind))
    assert seen == {step: sorted(names) for step, names in BACKUP_STEP_KINDS.items()}


def _shape(dag):
    """Everything of a DAG's tasks but their mode: kinds, edges, setups and teardowns, pools, weights."""
    return {
        t.task_id: (type(t).__name__, sorted(t.upstream_task_ids), t.trigger_rule, t.pool, t.priority_weight,
                    t.weight_rule, t.is_setup, t.is_teardown, t.retries)
        for t in dag.tasks
    }  # fmt: skip


def _form(dag):
    return {key: dag.params.get_param(key).dump() for key in dag.params}


def test_the_online_dag_is_the_backup_dag_with_mode_online(dags):
    """One definition, two DAGs: the same tasks and wiring, the same form but for mode's default."""
    # A fresh parse: a test above sets a value through ParamsDict, which writes into the Param itself
    # (which is also why each DAG gets Param objects of its own).
    dag, online = (parse_backup_dags()[d] for d in ("hcp_etcd_backup", "hcp_etcd_backup_online"))
    assert _shape(online) == _shape(dag) and len(online.tasks) == len(dag.tasks)
    assert online.params["mode"] == "online" and dag.params["mode"] == "quiesced"
    form, online_form = _form(dag), _form(online)
    assert form.pop("mode")["value"] == "quiesced" and online_form.pop("mode")["value"] == "online"
    assert online_form == form
    assert online.max_active_runs == 1 and online.catchup is False
    assert "online" in online.tags and "online" not in dag.tags
    assert online.fileloc == dag.fileloc, "both DAGs come from one file (one parse, shared imports)"
    # Retention runs in both, with the same policy Params, keep_hourly included.
    for d in (dag, online):
        assert d.params["keep_hourly"] == 24
        assert d.task_dict["retention"].keep_hourly == "{{ params.keep_hourly }}"
    from hcp_etcd import params

    assert online.task_dict["resolve_clusters"].schedule_setting == params.ONLINE_SCHEDULE
    assert dag.task_dict["resolve_clusters"].schedule_setting == params.BACKUP_SCHEDULE


def _cron(dag):
    return dag.timetable.expression if dag.timetable.can_be_scheduled else None


def test_online_schedule_from_the_environment(dags, monkeypatch):
    from hcp_etcd import params

    assert (_cron(dags["hcp_etcd_backup_online"]), _cron(dags["hcp_etcd_backup"])) == (
        "0 */4 * * *",
        "0 2 * * *",
    )
    monkeypatch.setenv("HCP_ETCD_ONLINE_SCHEDULE", "30 */2 * * *")
    assert _cron(parse_backup_dags()["hcp_etcd_backup_online"]) == "30 */2 * * *"
    # Empty turns the online schedule off; the DAG stays for manual runs. A blank nightly schedule
    # is still the default: the quiesced backups cannot be turned off by a blank line.
    monkeypatch.setenv("HCP_ETCD_ONLINE_SCHEDULE", " ")
    monkeypatch.setenv("HCP_ETCD_BACKUP_SCHEDULE", "")
    parsed = parse_backup_dags()
    assert _cron(parsed["hcp_etcd_backup_online"]) is None and _cron(parsed["hcp_etcd_backup"]) == "0 2 * * *"
    assert params.setting_problems(params.ONLINE_SCHEDULE) == []
    # An invalid value parses with the default, and the first task of the online DAG says why.
    monkeypatch.setenv("HCP_ETCD_ONLINE_SCHEDULE", "every four hours")
    assert _cron(parse_backup_dags()["hcp_etcd_backup_online"]) == "0 */4 * * *"
    (problem,) = params.setting_problems(params.ONLINE_SCHEDULE)
    assert "HCP_ETCD_ONLINE_SCHEDULE='every four hours'" in problem


def test_every_param_of_every_dag_has_the_cheap_dialect_and_refuses_a_wrong_type(dags):
    """A Param made without ``params.param`` would be checked against 2020-12's metaschema, five times
    the cost, at every resolve of every serialization (see ``hcp_etcd.params.SCHEMA_DIALECT``)."""
    from airflow.dag_processing.dagbag import DagBag

    from hcp_etcd.params import SCHEMA_DIALECT

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert {"hcp_etcd_backup", "hcp_etcd_backup_online", "hcp_etcd_restore", "hcp_etcd_restore_drill"} <= set(
        bag.dags
    )
    for dag_id, parsed in bag.dags.items():
        others = {k: p.schema for k, p in parsed.params.items() if p.schema.get("$schema") != SCHEMA_DIALECT}
        assert not others, (dag_id, others)
    # The dialect still refuses bad input, in every Param of every DAG: a value of the wrong type is
    # refused before any task runs (as a trigger's conf is validated against these Params).
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    for parsed in bag.dags.values():
        for key, p in parsed.params.items():
            types = p.schema.get("type")
            types = types if isinstance(types, list) else [types]
            wrong = "not an object" if "object" in types else {"not": "a " + "/".join(map(str, types))}
            form = ParamsDict(parsed.params)
            with pytest.raises(ParamValidationError):
                form[key] = wrong
