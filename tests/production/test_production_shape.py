"""The production shape, run for real (issue 17): the Airflow of docker-compose.yaml on Postgres and
Redis, CeleryExecutor with two workers, a triggerer, a dag-processor and an api-server, each a
process tree of its own (``tests/support/production.py``), on a sandbox of four hosted clusters
under include/rbac.

The tests run in file order and build on each other: the fleet backup's backups feed the restore
and the drills; the secret search runs last, over everything the session's runs left in Postgres
and in every log.
"""

from __future__ import annotations

import json
import stat
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from hcp_etcd.naming import API_SERVER_DEPLOYMENTS, ClusterRef, asset_name
from hcp_etcd.restore.report import drill_asset_name
from tests.support.harness import Harness
from tests.support.production import FLEET as CLUSTERS
from tests.support.production import SHELL, Component, Production, missing_packages
from tests.support.sandbox import Sandbox
from tests.support.sandbox_objects import HS, copy_backup, delete_cluster, drill_report, kube, render
from tests.support.waits import wait_until

# Without Postgres or Redis every test here is skipped, naming the packages to install.
# The fleet's fixture (the sandbox, the whole Airflow's start and the faulted fleet run) takes about
# 5 minutes on 2 cores; pytest-timeout's 600 s (pyproject.toml) counts it in the first test's time.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(missing_packages()), reason=missing_packages() or ""),
    pytest.mark.timeout(1800),
]

BACKUP, RESTORE, DRILL = "hcp_etcd_backup", "hcp_etcd_restore", "hcp_etcd_restore_drill"
DEFERRED = "Pausing task as DEFERRED"
RESUMED = "::group::Pre Execute"  # each start of an attempt's code: the first, and each resume


def _backup(clusters: list[str]) -> dict[str, Any]:
    return {"hosted_clusters": [f"clusters/{c}" for c in clusters], "mode": "quiesced"}


def _given_back(harness: Harness, cluster: str, before: dict[str, tuple[int, str]]) -> None:
    """Unpaused, API servers at their original replicas, Available, one new manifest that matches its
    snapshot, earlier objects untouched (the harness's invariants)."""
    harness.assert_invariants(cluster, before, None, succeeded=True, replicas=CLUSTERS[cluster])


# The fleet run's map indexes: ResolveHostedClustersOperator sorts the clusters.
ORDER = sorted(CLUSTERS)
KILLED, HELD = "prod-a", "prod-c"  # whose snapshot's worker is killed; whose last wait outlives a triggerer


@dataclass
class FleetRun:
    """The fleet backup and what was done to Airflow while it ran."""

    run_id: str
    result: dict[str, Any]
    before: dict[str, dict[str, tuple[int, str]]]
    killed_worker: str = ""
    killed_at: float = 0.0
    replicas_at_kill: set[int] = field(default_factory=set)
    held_by: dict[str, int] = field(default_factory=dict)
    taken_over_by: dict[str, int] = field(default_factory=dict)
    state_after_restart: str | None = None

    def ti(self, task_id: str, cluster: str) -> dict[str, Any]:
        return dict(self.result["tasks"][f"{task_id}[{ORDER.index(cluster)}]"])


@pytest.fixture(scope="module")
def fleet(prod: Production, harness: Harness, box: Sandbox) -> FleetRun:
    """One quiesced backup of the four clusters, pool of 2, during which (1) the worker running
    ``prod-a``'s snapshot, API servers down, is SIGKILLed whole (its Celery pool, the task's supervisor
    and process, and whatever else it ran), and started again once the retry runs elsewhere, as
    ``restart: always`` would; (2) ``prod-c``'s last wait (Available and reconciling again), once
    deferred and taken by the triggerer, is held open by pausing the cluster as its admin, the
    triggerer is restarted, and the pause lifted once the new triggerer holds the wait."""
    run = FleetRun(f"prod__fleet__{time.time_ns()}", {}, {c: harness.objects(c) for c in CLUSTERS})
    co, _ = kube(box)
    killed, held = ORDER.index(KILLED), ORDER.index(HELD)
    ns = ClusterRef("clusters", KILLED).control_plane_namespace

    def set_paused(value: str | None) -> None:
        patch = {"spec": {"pausedUntil": value}}
        co.patch_namespaced_custom_object(*HS, "clusters", "hostedclusters", HELD, patch)

    prod.trigger(BACKUP, _backup(list(CLUSTERS)), run.run_id)
    dead: Component | None = None
    paused = restarted = False
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            states = prod.task_states(BACKUP, run.run_id)
            if prod.run_state(BACKUP, run.run_id) in ("success", "failed"):
                break
            if (
                dead is None
                and not run.killed_worker
                and states.get(f"backup.snapshot[{killed}]") == "running"
            ):
                name = next(
                    (
                        w
                        for w, done in prod.executed(run.run_id).items()
                        if ("backup.snapshot", killed, 1) in done
                    ),
                    None,
                )
                if name:
                    dead = next(w for w in prod.workers() if w.name == name)
                    dead.server.kill()
                    run.killed_worker, run.killed_at = name, time.time()
                    run.replicas_at_kill = {
                        harness.k8s.get_deployment_replicas(ns, d)[0] for d in API_SERVER_DEPLOYMENTS
                    }
            if dead is not None and any(
                ("backup.snapshot", killed, 2) in d for d in prod.executed(run.run_id).values()
            ):
                prod.start_again(dead)
                dead = None
            if not paused and states.get(f"backup.unpause[{held}]") == "success":
                set_paused("true")
                paused = True
            if (
                paused
                and not restarted
                and (holder := prod.trigger_of(run.run_id, "backup.wait_available", held))
            ):
                run.held_by = holder
                prod.restart(prod.component("airflow-triggerer"))
                restarted = True
            if restarted and not run.taken_over_by:
                holder = prod.trigger_of(run.run_id, "backup.wait_available", held)
                if holder and holder["triggerer_id"] != run.held_by["triggerer_id"]:
                    run.taken_over_by = holder
                    run.state_after_restart = prod.task_states(BACKUP, run.run_id).get(
                        f"backup.wait_available[{held}]"
                    )
                    set_paused(None)
            time.sleep(0.05)
    finally:
        if paused and not run.taken_over_by:
            set_paused(None)
        if dead is not None:
            prod.start_again(dead)
    run.result = prod.wait(BACKUP, run.run_id, timeout=max(10.0, deadline - time.monotonic()))
    return run


def test_fleet_backup_runs_on_both_workers_with_deferred_waits_resumed(
    prod: Production, harness: Harness, fleet: FleetRun
) -> None:
    """Four clusters (HA and single-replica), pool of 2 set by airflow-init from airflow.env: the run
    succeeds in spite of what was done to it; every task ran on one of the two Celery workers, both
    took part, every deferred wait came back through the triggerer, and every cluster is given back
    with one verified backup."""
    pool = prod._api("GET", "/api/v2/pools/hcp_etcd_backup")
    assert pool["slots"] == 2, pool
    assert fleet.result["state"] == "success", fleet.result["tasks"]
    executed = prod.executed(fleet.run_id)
    print({w: len(tasks) for w, tasks in executed.items()})
    assert len(executed) == 2 and all(executed.values()), f"a worker ran nothing: {executed}"
    ran = set().union(*executed.values())
    tis = {(k.rsplit("[", 1)[0], int(k.rsplit("[", 1)[1][:-1])): t for k, t in fleet.result["tasks"].items()}
    # An EmptyOperator (the run's verdict) is marked done by the scheduler: no worker runs it.
    empty = {
        r[0]
        for r in prod._query(
            "SELECT task_id FROM task_instance WHERE run_id = ? AND operator = ?",
            fleet.run_id,
            "EmptyOperator",
        )
    }
    not_on_a_worker = [
        k
        for k, t in tis.items()
        if t["state"] == "success" and k[0] not in empty and (*k, t["tries"]) not in ran
    ]
    assert not not_on_a_worker, f"tasks no worker's log shows: {not_on_a_worker}"
    pools = dict(
        prod._query(
            "SELECT task_id, pool FROM task_instance WHERE run_id = ? AND map_index = 0", fleet.run_id
        )
    )
    assert pools["backup.upload"] == "hcp_etcd_backup" and pools["backup.snapshot"] == "default_pool", pools

    deferred = {}
    for (task_id, map_index), ti in tis.items():
        text = prod.task_log(BACKUP, fleet.run_id, task_id, map_index, ti["tries"])
        if DEFERRED in text:
            deferred[(task_id, map_index)] = text
    assert {m for t, m in deferred if t == "backup.wait_available"} == set(range(len(CLUSTERS))), sorted(
        deferred
    )
    for (task_id, map_index), text in deferred.items():
        assert tis[(task_id, map_index)]["state"] == "success"
        assert RESUMED in text.split(DEFERRED, 1)[1], f"{task_id}[{map_index}] never resumed:\n{text[-2000:]}"
    resumed_elsewhere = [
        k for k in deferred if sum((*k, tis[k]["tries"]) in tasks for tasks in executed.values()) == 2
    ]
    print(f"deferred: {sorted(deferred)}; resumed on the other worker: {sorted(resumed_elsewhere)}")
    for cluster in CLUSTERS:
        _given_back(harness, cluster, fleet.before[cluster])


def test_worker_killed_during_snapshot_is_retried_on_the_other_worker(
    prod: Production, fleet: FleetRun
) -> None:
    """The whole worker running prod-a's snapshot was SIGKILLed with the API servers down: the scheduler
    found the task without heartbeat, the retry ran on the other worker, the cluster was given back
    (previous test), and its one manifest was written after the kill."""
    assert fleet.killed_worker, "the snapshot was never seen running on a worker"
    print(f"killed {fleet.killed_worker} during the snapshot; API servers at {fleet.replicas_at_kill}")
    assert fleet.replicas_at_kill == {0}, "the kill landed outside the downtime window"
    snapshot = fleet.ti("backup.snapshot", KILLED)
    assert snapshot["state"] == "success" and snapshot["tries"] == 2, snapshot
    other = next(w for w in prod.executed(fleet.run_id) if w != fleet.killed_worker)
    assert ("backup.snapshot", ORDER.index(KILLED), 2) in prod.executed(fleet.run_id)[other]
    publish = fleet.ti("backup.publish_manifest", KILLED)
    assert publish["start"].replace(tzinfo=UTC).timestamp() > fleet.killed_at, (publish, fleet.killed_at)


def test_triggerer_restarted_during_a_wait_resumes_it(fleet: FleetRun) -> None:
    """prod-c's last wait was deferred and held by the triggerer; the triggerer was restarted (TERM, as
    `docker compose restart`); the new one took the same trigger over, and the task resumed from it:
    one try, success."""
    assert fleet.held_by, "the wait was never held by a triggerer"
    assert fleet.taken_over_by, "no new triggerer took the wait over"
    assert fleet.taken_over_by["trigger_id"] == fleet.held_by["trigger_id"], (
        fleet.held_by,
        fleet.taken_over_by,
    )
    assert fleet.state_after_restart == "deferred"
    wait = fleet.ti("backup.wait_available", HELD)
    assert wait["state"] == "success" and wait["tries"] == 1, wait


def test_restore_and_a_drill_backfill_over_three_past_weeks(
    prod: Production, harness: Harness, box: Sandbox, tmp_path: Path
) -> None:
    """Side by side, as a platform team runs them: the HA cluster's newest backup restored into a new
    three-member cluster (every check passes), and ``airflow backfill create`` of the drill over three
    past weeks, run by the scheduler and the workers: one report per date, each restoring the backup
    that was newest at that date."""
    rendered = render(box, tmp_path / "restored.yaml", "prod-restored", 3)
    restore = {
        "source": "clusters/prod-ha",
        "target_namespace": "clusters",
        "target_name": "prod-restored",
        "rendered_manifests": str(rendered),
    }
    restore_run = f"prod__restore__{time.time_ns()}"
    manifest = harness.s3.get_json(box.bucket, harness.manifests("prod-a")[-1])
    # Each Sunday's drill (04:00 UTC) takes the Saturday's backup; the Sunday 05:00 one is too new for it.
    weeks = {"20251116": "20251115T020000Z", "20251123": "20251122T020000Z", "20251130": "20251129T020000Z"}
    expected = {day: copy_backup(box, manifest, ts) for day, ts in weeks.items()}
    copy_backup(box, manifest, "20251116T050000Z")
    conf = json.dumps({"hosted_clusters": ["clusters/prod-a"]})
    try:
        prod.trigger(RESTORE, restore, restore_run)
        dates = ("--from-date", "2025-11-10", "--to-date", "2025-12-01")
        prod.cli("backfill", "create", "--dag-id", DRILL, *dates, "--dag-run-conf", conf)
        restored = prod.wait(RESTORE, restore_run, timeout=600)
        assert restored["state"] == "success", restored["tasks"]
        assert restored["tasks"]["verify[-1]"]["state"] == "success"
    finally:
        delete_cluster(box, "clusters", "prod-restored")

    def finished() -> list[tuple[Any, ...]]:
        rows = prod._query(
            "SELECT run_id, run_type, state, logical_date FROM dag_run WHERE dag_id = ?", DRILL
        )
        done = all(r[2] in ("success", "failed") for r in rows)
        return rows if done and len([r for r in rows if r[1] == "backfill"]) == 3 else []

    runs = wait_until("three backfilled drills", finished, 900, every=1)
    backfilled = sorted(r for r in runs if r[1] == "backfill")
    assert [r[2] for r in backfilled] == ["success"] * 3, backfilled
    for day, uri in expected.items():
        report = drill_report(box, "prod-a", day)
        assert report["passed"], report
        assert report["snapshot"]["manifest"] == uri, (day, report["snapshot"])
    # What docs/RESTORE.md warns of: Airflow takes a backfill's runs for the DAG's latest runs, so the
    # scheduler (catchup=False) then runs the latest past Sunday at once, for every cluster.
    scheduled = [r for r in runs if r[1] == "scheduled"]
    assert len(scheduled) == 1 and scheduled[0][0].startswith("scheduled__"), runs
    print(f"the scheduled drill the backfill brought: {scheduled}")


def test_status_page_through_the_api_server_with_a_real_login(prod: Production) -> None:
    """Anonymous: refused. Signed in with the generated password: every hosted cluster with its backup."""
    url = f"http://127.0.0.1:{prod.port}/hcp-etcd/api/status"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(url, timeout=30)
    assert anonymous.value.code in (401, 403)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {prod.token()}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        page = json.load(resp)
    rows = {r["name"]: r for r in page["clusters"]}
    assert set(CLUSTERS) <= set(rows), sorted(rows)
    for name in CLUSTERS:
        assert rows[name]["last_backup_at"] and rows[name]["on_management_cluster"], rows[name]
    assert not page["errors"], page["errors"]


def test_asset_events_on_postgres(prod: Production) -> None:
    """Each backup and each drill of the session left its Asset event in Postgres (what downstream
    DAGs are triggered by), with its extra as JSON and no key material in it."""
    rows = prod._query(
        "SELECT a.name, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
    )
    events: dict[str, list[Any]] = {}
    for name, extra in rows:
        events.setdefault(name, []).append(extra if isinstance(extra, dict) else json.loads(extra))
    for cluster in CLUSTERS:
        assert events.get(asset_name(ClusterRef("clusters", cluster))), (cluster, sorted(events))
    drills = events.get(drill_asset_name(ClusterRef("clusters", "prod-a")), [])
    assert len(drills) >= 3, sorted(events)  # the three backfilled dates
    assert all("key" not in extra for extras in events.values() for extra in extras), events


def test_no_key_or_signature_in_postgres_or_any_log(prod: Production, harness: Harness) -> None:
    """The encryption keys (raw, base64, hex), the service-account signing keys the backups escrow, the
    S3 secret key and presigned-URL signatures appear in no table of the metadata DB and in no
    component's output or task log."""
    haystacks = {"Postgres (every table)": prod.postgres.dump(), "component and task logs": prod.log_text()}
    assert b"hcp_etcd_backup" in haystacks["Postgres (every table)"], "nothing in the DB to search"
    assert b"Executing workload in Celery" in haystacks["component and task logs"]
    needles = {**harness.key_needles(), **harness.sa_key_needles()}
    # Per cluster: the AES key in four encodings and the SA signing key in three; the S3 secret, a signature.
    assert len(needles) >= 7 * len(CLUSTERS) + 2, sorted(needles)
    hits = [f"{n} in {h}" for h, text in haystacks.items() for n, needle in needles.items() if needle in text]
    assert not hits, hits


def test_the_shared_airflow_cfg_is_the_containers_user_s_alone(prod: Production) -> None:
    """The airflow.cfg airflow-init wrote, which every component read (they shared its JWT secret:
    they ran tasks), holds that secret, belongs to the user the containers run as and is readable by
    no one else."""
    cfg = prod.home / "host" / "config" / "airflow.cfg"
    assert "jwt_secret = " in cfg.read_text(), "the shared airflow.cfg holds no generated JWT secret"
    info = cfg.stat()
    assert info.st_uid == int(SHELL["AIRFLOW_UID"]), (info.st_uid, SHELL)
    assert not stat.S_IMODE(info.st_mode) & 0o077, f"{cfg.name} is {oct(stat.S_IMODE(info.st_mode))}"
