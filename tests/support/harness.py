"""The reliability harness: the real operators run the way Airflow runs them (one fresh operator
per try, the DAG's retries, setups/teardowns with the DAG's trigger rules), faults injected, and the
safety invariants checked afterwards. A backup walks the real DAG object of
``dags/hcp_etcd_backup.py`` (its order, trigger rules and operators, see ``Harness.backup``):
rewiring the DAG changes what the fault matrix runs.

Why operators and not ``dag.test()`` for the matrix: a ``dag.test()`` costs many seconds, a chain of
operators on a 1-member cluster a few, and the operators are exactly what the DAG wires. The
harness runs in the pytest process (connections from ``AIRFLOW_CONN_*``, as a worker reads them);
``deferrable=False`` runs each trigger inline, as ``dag.test()`` does. One whole-DAG run
(``tests/reliability/test_security.py``) checks the wiring under the same faults and RBAC.

Every Kubernetes call of the harness (and of the operators) goes through the sandbox token, so the
RBAC of ``include/rbac`` is enforced on all of it: a missing rule fails the scenario with a 403.

Workers that a test kills: :func:`start_task_process` (a fresh process) and :class:`TaskServer`
(forked from a process that imported the operators once); both run
``tests.support.operator_worker``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG, TriggerRule
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook
from hcp_etcd.naming import API_SERVER_DEPLOYMENTS, ClusterRef
from hcp_etcd.operators import backup as ops
from hcp_etcd.operators import restore as rops
from hcp_etcd.operators.drill import DeleteRestoredClusterOperator, DrillReportOperator, DrillVerdictOperator
from hcp_etcd.operators.fleet import BackupRetentionOperator
from hcp_sandbox.faults import clear_s3_faults
from tests.support import operator_worker
from tests.support.fork_server import ForkServer, process_state
from tests.support.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "include" / "rbac"
BACKUP_DAG = REPO / "dags" / "hcp_etcd_backup.py"
BACKUP_GROUP = "backup"  # the DAG's task group, mapped over the clusters
HA, ONE = "rel-ha", "rel-one"
REPLICAS = {HA: 3, ONE: 1}
PREFIX, KEY_PREFIX = "hcp-etcd/backups", "hcp-etcd/keys"
OURS = "hcp-etcd.openshift.io/"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
TRIES = 3  # the DAGs' retries=2
DRILL_NAMESPACE = "hcp-etcd-drills"  # the drill DAG's default


@dataclass
class Figures:
    """What docs/RELIABILITY.md reports; filled by the tests, printed at the end of the session."""

    scenarios_run: int = 0
    scenarios_passed: int = 0
    bad_inputs: int = 0
    writes_by_bad_inputs: int = 0
    secret_hits: int | None = None
    secret_needles: int = 0
    secret_haystacks: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)


FIGURES_KEY = pytest.StashKey[Figures]()


def figures_of(config: pytest.Config) -> Figures:
    """The figures of this pytest session (kept in the config's stash: one object per session)."""
    return config.stash.setdefault(FIGURES_KEY, Figures())


class OutletEvents(defaultdict):
    """``context["outlet_events"]``: accepts ``[alias].add(asset, extra=...)`` and keeps the events."""

    def __init__(self) -> None:
        super().__init__(list)

    def __missing__(self, key: Any) -> Any:
        events: list[Any] = []

        class _Accessor:
            def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
                events.append((asset, extra))

        self[key] = _Accessor()
        return self[key]


class TaskInstanceStub:
    """The part of ``context["ti"]`` the restore and drill steps use: ``xcom_push`` (an error
    message) and ``xcom_pull`` of another task's XCom in the same run (the drill's report and
    teardown read the create, wait and verify results that way).

    :param store: the run's XComs, ``{(task_id, key): value}`` (shared by the run's tasks).
    :param task_id: this task.
    """

    map_index = -1

    def __init__(
        self, store: dict[tuple[str, str], Any] | None = None, task_id: str = "task", try_number: int = 1
    ) -> None:
        self.xcom: dict[str, Any] = {}
        self._store = store if store is not None else {}
        self._task_id = task_id
        self.try_number = try_number

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value
        self._store[(self._task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self._store.get((task_ids, key))

    def get_relevant_upstream_map_indexes(self, *_: Any, **__: Any) -> None:
        """One cluster per run here: the upstream XCom of the same mapped group, unindexed."""
        return None


@dataclass
class Outcome:
    """One task after its tries."""

    ok: bool
    seconds: float = 0.0
    tries: int = 0
    result: Any = None
    errors: list[str] = field(default_factory=list)
    skipped: bool = False  # it raised AirflowSkipException (ok, but its all_success downstream does not run)


@dataclass
class Trace:
    """One emulated backup run: what each task did."""

    run_id: str
    tasks: dict[str, Outcome] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return all(o.ok for o in self.tasks.values()) and "wait_available" in self.tasks

    def errors(self) -> str:
        return "; ".join(f"{t}: {e}" for t, o in self.tasks.items() for e in o.errors)


@functools.cache
def backup_dag() -> DAG:
    """The backup DAG as the DAG processor parses it from ``dags/hcp_etcd_backup.py``."""
    bag = DagBag(dag_folder=str(BACKUP_DAG))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["hcp_etcd_backup"]


class _StopRun(Exception):
    """Ends an emulated run before a task (``Harness.backup(stop_before=...)``)."""


class Harness:
    """The operators against the reliability sandbox, and the checks of the invariants."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.bucket = box.bucket
        self.k8s = HostedClusterHook()
        self.s3 = SnapshotStoreHook()
        self.exec_commands: list[list[str]] = []
        self.logs: list[str] = []
        self._runs = 0
        self.xcoms: dict[str, dict[tuple[str, str], Any]] = {}
        self.drill_run_id = ""
        self.pod_cmdlines: set[str] = set()
        self._sampling = threading.Event()

    # ---- command lines of the processes the sandbox runs "in" pods ---------------------------------

    def _sample_cmdlines(self) -> None:
        pods = str(self.box.dir / "pods")
        while not self._sampling.wait(0.1):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                except OSError:
                    continue
                if pods in cmdline:
                    self.pod_cmdlines.add(cmdline)

    def start_sampler(self) -> threading.Thread:
        """Sample ``/proc/*/cmdline`` of processes that run in a pod of this sandbox (10 Hz)."""
        thread = threading.Thread(target=self._sample_cmdlines, name="cmdline-sampler", daemon=True)
        thread.start()
        return thread

    def stop_sampler(self, thread: threading.Thread) -> None:
        """Stop the sampler thread."""
        self._sampling.set()
        thread.join(timeout=10)

    # ---- the sandbox's request log ----------------------------------------------------------------

    def requests_since(self, seq: int) -> tuple[list[dict[str, Any]], int]:
        """Entries of the API request log after ``seq``, and the latest seq."""
        return self.box.api.requests_since(seq)

    def clear_faults(self) -> dict[str, Any]:
        """Drop the API and exec faults not consumed yet (``DELETE /sandbox/v1/faults``)."""
        return self.box.api.clear_faults()

    def post_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Inject a fault straight through ``POST /sandbox/v1/faults`` (what ``fault`` does, faster)."""
        return self.box.api.post_fault(spec)

    def clear_s3_faults(self) -> None:
        """Drop the S3 faults not consumed yet (the queue file, under the sandbox's own lock)."""
        clear_s3_faults(self.box.dir / "s3-faults.json")

    def seq(self) -> int:
        """The latest request seq."""
        return self.box.api.seq()

    def writes_since(self, seq: int) -> list[str]:
        """Every write to the cluster after ``seq`` (exec included: it is a create on pods/exec)."""
        items, _ = self.requests_since(seq)
        return [
            f"{i['method']} {i['plural']}{'/' + i['subresource'] if i.get('subresource') else ''} "
            f"{i.get('namespace')}/{i.get('name')} -> {i['code']}"
            for i in items
            if i["method"] in ("POST", "PUT", "PATCH", "DELETE") or i.get("verb") in WRITE_VERBS
        ]

    # ---- running tasks as Airflow does ---------------------------------------------------------------

    def new_run_id(self, label: str) -> str:
        self._runs += 1
        return f"reliability__{label}__{self._runs}__{time.time_ns()}"

    def context(self, run_id: str, task_id: str = "task", try_number: int = 1) -> dict[str, Any]:
        """The task context: run id, a ``ti`` that shares the run's XComs, outlet events."""
        store = self.xcoms.setdefault(run_id, {})
        ti = TaskInstanceStub(store, task_id, try_number)
        dag = operator_worker.BACKUP_DAG  # the backup lock's owner, with the run id
        return {"run_id": run_id, "dag": dag, "ti": ti, "outlet_events": OutletEvents()}

    def attempt(
        self, task_id: str, make: Callable[[], Any], run_id: str, tries: int = TRIES, first_try: int = 1
    ) -> Outcome:
        """Execute a fresh operator up to ``tries`` times (Airflow's retries), like a new worker each try
        (``first_try``: the try number of the first, 2 for the retry of a killed try)."""
        outcome = Outcome(ok=False)
        started = time.monotonic()
        for _ in range(tries):
            outcome.tries += 1
            op = make()
            # Airflow clears a task's XComs when a try starts: only the last try's remain.
            store = self.xcoms.setdefault(run_id, {})
            for k in [k for k in store if k[0] == task_id]:
                del store[k]
            try:
                outcome.result = op.execute(self.context(run_id, task_id, first_try + outcome.tries - 1))
            except AirflowSkipException:  # skipped, as Airflow marks it: not a failure, not retried
                outcome.ok = outcome.skipped = True
                break
            except AirflowFailException as err:  # Airflow does not retry these
                outcome.errors.append(f"{type(err).__name__}: {str(err)[:300]}")
                break
            except Exception as err:  # a failed try: Airflow retries it
                outcome.errors.append(f"{type(err).__name__}: {str(err)[:300]}")
                continue
            store[(task_id, "return_value")] = outcome.result
            outcome.ok = True
            break
        outcome.seconds = round(time.monotonic() - started, 2)
        return outcome

    def common(self, cluster: str, task_id: str) -> dict[str, Any]:
        return {"task_id": task_id, "hosted_cluster": f"clusters/{cluster}", "deferrable": False}

    def store(self, cluster: str, task_id: str) -> dict[str, Any]:
        return {**self.common(cluster, task_id), "bucket": self.bucket, "prefix": PREFIX}

    def backup(
        self,
        cluster: str,
        inject: dict[str, Callable[[], Any]] | None = None,
        run_id: str | None = None,
        mode: str = "quiesced",
        pause_deadline_minutes: float = 30,
        upload_method: str | None = None,
        stop_before: str | None = None,
        done: dict[str, Any] | None = None,
        retried: str | None = None,
        dag: DAG | None = None,
    ) -> Trace:
        """One backup of ``cluster`` as the backup DAG wires it; ``inject[task]()`` runs right before
        that task (tasks are named without their group: ``pause``, ``upload``...).

        The tasks, their order, trigger rules, setups and teardowns, retries and arguments are read
        from the real DAG object (``dags/hcp_etcd_backup.py``, or ``dag``), not repeated here: see
        :meth:`_backup_tasks`. The run's Params are the DAG's defaults with ``mode``,
        ``pause_deadline_minutes``, ``upload_method`` (None: the DAG's default) and this sandbox's
        bucket and prefixes.

        For a task killed in a worker: ``stop_before`` ends the run right before that task (its
        inputs are in the trace); the continued run passes the same ``run_id``, the results of the
        tasks that succeeded as ``done`` (Airflow does not run them again) and the killed task as
        ``retried`` (its retry has the tries left after the killed one).
        """
        inject = inject or {}
        done = done or {}
        dag = dag or backup_dag()
        trace = Trace(run_id or self.new_run_id(cluster))
        rid = trace.run_id
        params = {key: dag.params[key] for key in dag.params}
        params.update(mode=mode, pause_deadline_minutes=pause_deadline_minutes, bucket=self.bucket,
                      prefix=PREFIX, key_prefix=KEY_PREFIX)  # fmt: skip
        if upload_method:
            params["upload_method"] = upload_method

        def run(task: Any) -> bool:
            name = task.task_id.removeprefix(f"{BACKUP_GROUP}.")
            if name == stop_before:
                raise _StopRun
            if name in done:
                trace.tasks[name] = Outcome(ok=True, tries=1, result=done[name])
                self.xcoms.setdefault(rid, {})[(task.task_id, "return_value")] = done[name]
                return True
            if name in inject:
                inject[name]()
            tries = task.retries + 1 - (name == retried)
            make = functools.partial(self._operator, task, cluster, params, rid)
            first_try = 2 if name == retried else 1
            trace.tasks[name] = self.attempt(task.task_id, make, rid, tries=tries, first_try=first_try)
            return trace.tasks[name].ok and not trace.tasks[name].skipped

        with contextlib.suppress(_StopRun):
            self._backup_tasks(dag, run)
        return trace

    @staticmethod
    def _backup_tasks(dag: DAG, run: Callable[[Any], bool]) -> None:
        """The tasks of the DAG's per-cluster group in topological order, each run (``run(task)``:
        True when it succeeded, False when it failed or was skipped) or not as its trigger rule
        decides, the way the scheduler does for one cluster: ``all_success`` runs when every upstream
        task succeeded (after a skipped one it is skipped: not run); a teardown
        (``all_done_setup_success``) when its upstream tasks are done and one of its setups
        succeeded. Anything else is refused, so a new rule in the DAG cannot pass unnoticed."""
        succeeded: dict[str, bool] = {}
        for task in dag.topological_sort():
            if not task.task_id.startswith(f"{BACKUP_GROUP}."):
                continue
            upstream = [u for u in task.upstream_list if u.task_id in succeeded]
            if task.trigger_rule == TriggerRule.ALL_SUCCESS:
                ready = all(succeeded[u.task_id] for u in upstream)
            elif task.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS:
                setups = [succeeded[u.task_id] for u in upstream if u.is_setup]
                ready = not setups or any(setups)
            else:
                raise NotImplementedError(f"{task.task_id}: trigger rule {task.trigger_rule} not emulated")
            succeeded[task.task_id] = ready and run(task)

    def _operator(self, task: Any, cluster: str, params: dict[str, Any], run_id: str) -> Any:
        """A fresh copy of the DAG's operator for one try, as a worker gets it: mapped over
        ``clusters/<cluster>``, templates rendered with the run's Params and XComs (native objects,
        as the DAG renders them), triggers run inline (``deferrable=False``, as ``dag.test()``)."""
        op = copy.deepcopy(task)
        op.hosted_cluster = f"clusters/{cluster}"
        op.deferrable = False
        context = {**self.context(run_id, task.task_id), "params": params}
        context["task_instance"] = context["ti"]
        op.render_template_fields(context, task.dag.get_template_env())
        return op

    def retention(self, clusters: list[str], inject: Callable[[], Any] | None = None) -> Outcome:
        """The fleet's retention task (keep_last=2 so it has something to delete)."""
        if inject:
            inject()
        return self.attempt(
            "retention",
            lambda: BackupRetentionOperator(
                task_id="retention",
                bucket=self.bucket,
                prefix=PREFIX,
                key_prefix=KEY_PREFIX,
                hosted_clusters=[f"clusters/{c}" for c in clusters],
                keep_last=2,
                keep_daily=0,
                keep_weekly=0,
                keep_monthly=0,
            ),
            self.new_run_id("retention"),
        )

    def wait_available(self, cluster: str, timeout: float = 180) -> Outcome:
        """Wait (bounded) until the cluster is Available and reconciling, as ``wait_available`` does."""
        return self.attempt(
            "wait_available",
            lambda: ops.WaitHostedClusterAvailableOperator(
                **self.common(cluster, "wait_available"), timeout=timeout
            ),
            self.new_run_id("wait"),
            tries=1,
        )

    # ---- restore and drill ---------------------------------------------------------------------------

    def restore_store(self, task_id: str) -> dict[str, Any]:
        return {"task_id": task_id, "bucket": self.bucket, "prefix": PREFIX, "deferrable": False}

    def prepare_restore(self, source: str, target_name: str, rendered: Path) -> tuple[str, dict[str, Any]]:
        """resolve -> check_snapshot -> check_key -> presign of ``source``'s newest backup into
        ``clusters/target_name``, with manifests rendered by the sandbox into ``rendered``; the run id
        and the resolved backup (the create task's input)."""
        if not self.manifests(source):
            assert self.backup(source).succeeded
        uri = f"s3://{self.bucket}/{self.manifests(source)[-1]}"
        out = self.box.cli("render", "--dir", str(self.box.dir), "--name", target_name, "--members", "1")
        assert out.returncode == 0, out.stderr
        rendered.write_text(out.stdout)
        rid = self.new_run_id("restore")
        resolved = self.attempt(
            "resolve",
            lambda: rops.ResolveBackupOperator(
                **self.restore_store("resolve"),
                source=uri,
                target_namespace="clusters",
                target_name=target_name,
            ),
            rid,
        )
        assert resolved.ok, resolved.errors
        for cls in (rops.CheckSnapshotOperator, rops.CheckKeyOperator, rops.PresignSnapshotOperator):
            step = self.attempt(
                cls.__name__,
                lambda cls=cls: cls(**self.restore_store(cls.__name__), backup=resolved.result),
                rid,
            )
            assert step.ok, step.errors
        return rid, resolved.result

    def drill(
        self, cluster: str, inject: dict[str, Callable[[], Any]] | None = None
    ) -> tuple[Trace, dict[str, Any] | None]:
        """One drill of ``cluster`` with the drill DAG's wiring; ``inject[task]()`` runs right before it.

        As ``dags/hcp_etcd_restore_drill.py``: the steps in a chain (each runs only when the one
        before succeeded; ``wait_restored`` and ``verdict`` without retries), ``report`` whatever
        happened (``all_done``), ``delete_drill_cluster`` the teardown of ``create`` (runs when
        create succeeded, after the report). Returns the trace and the report written (None if none).
        """
        inject = inject or {}
        trace = Trace(self.new_run_id(f"drill-{cluster}"))
        rid, store = trace.run_id, self.restore_store
        self.drill_run_id = rid  # for faults that target the drill cluster

        def run(task_id: str, make: Callable[[], Any], tries: int = TRIES) -> Outcome:
            if task_id in inject:
                inject[task_id]()
            trace.tasks[task_id] = self.attempt(task_id, make, rid, tries=tries)
            return trace.tasks[task_id]

        def xcom(task_id: str) -> Any:
            # Read when the task starts, as Airflow renders a templated XComArg.
            return self.xcoms.setdefault(rid, {}).get((task_id, "return_value"))

        src, made = f"clusters/{cluster}", "resolve_backup"
        steps: list[tuple[str, Callable[[], Any], int]] = [
            ("resolve_backup", lambda: rops.ResolveBackupOperator(
                **store("resolve_backup"), source=src, target_namespace=DRILL_NAMESPACE), TRIES),
            ("check_snapshot", lambda: rops.CheckSnapshotOperator(
                **store("check_snapshot"), backup=xcom(made)), TRIES),
            ("check_key", lambda: rops.CheckKeyOperator(
                **store("check_key"), backup=xcom(made), key_prefix=KEY_PREFIX), TRIES),
            ("presign", lambda: rops.PresignSnapshotOperator(**store("presign"), backup=xcom(made)), TRIES),
            ("create", lambda: rops.CreateRestoredClusterOperator(
                **store("create"), backup=xcom(made), clone=True), TRIES),
            ("wait_restored", lambda: rops.WaitRestoredOperator(
                **store("wait_restored"), backup=xcom(made), created=xcom("create"), timeout=180,
                poll_interval=0.5), 1),
            ("verify", lambda: rops.VerifyRestoreOperator(
                **store("verify"), backup=xcom(made), fail_on_check_failure=False), TRIES),
        ]  # fmt: skip
        for task_id, make, tries in steps:
            if not run(task_id, make, tries).ok:
                break
        roles = ("backup", "snapshot", "key", "presign", "create", "wait", "verify")
        report = run(
            "report",
            lambda: DrillReportOperator(
                **store("report"), hosted_cluster=src,
                steps={r: xcom(t) for r, (t, _, _) in zip(roles, steps, strict=True) if r != "create"},
                created=xcom("create"),
            ),
        )  # fmt: skip
        if trace.tasks.get("create") and trace.tasks["create"].ok:
            run("delete_drill_cluster", lambda: DeleteRestoredClusterOperator(
                **store("delete_drill_cluster"), created=xcom("create"), timeout=120))  # fmt: skip
        written = None
        if report.ok:
            run("verdict", lambda: DrillVerdictOperator(
                **store("verdict"), hosted_cluster=src, report=xcom("report")), 1)  # fmt: skip
            written = self.s3.get_json(self.bucket, report.result["report"].split("/", 3)[3])
        return trace, written

    # ---- S3 ------------------------------------------------------------------------------------------

    def objects(self, cluster: str) -> dict[str, tuple[int, str]]:
        """Every object of the cluster (backups and keys): key -> (size, sha256)."""
        found = {}
        for prefix in (f"{PREFIX}/clusters/{cluster}/", f"{KEY_PREFIX}/clusters/{cluster}/"):
            for obj in self.s3.list_objects(self.bucket, prefix):
                body = self.s3.client.get_object(Bucket=self.bucket, Key=obj.key)["Body"].read()
                found[obj.key] = (len(body), hashlib.sha256(body).hexdigest())
        return found

    def manifests(self, cluster: str) -> list[str]:
        return sorted(k for k in self.objects(cluster) if k.endswith("/manifest.json"))

    # ---- the invariants -----------------------------------------------------------------------------

    def etcd_pods(self, cluster: str) -> list[str]:
        return self.k8s.list_etcd_pods(ClusterRef("clusters", cluster).control_plane_namespace)

    def snapshot_files(self, cluster: str) -> dict[str, str]:
        """``ls /var/lib/data`` of each etcd pod that shows a snapshot file."""
        ns = ClusterRef("clusters", cluster).control_plane_namespace
        left = {}
        for pod in self.etcd_pods(cluster):
            out = self.k8s.exec_command(ns, pod, ["ls", "-a", "/var/lib/data"], timeout=60).stdout
            if "snapshot" in out:
                left[pod] = out
        return left

    def assert_invariants(
        self,
        cluster: str,
        before: dict[str, tuple[int, str]],
        trace: Trace | None,
        succeeded: bool | None = None,
        replicas: int | None = None,
    ) -> None:
        """The four invariants of issue 6 after a run, whatever happened in it.

        1. unpaused, none of our annotations left, API servers at their original replicas, Available;
        2. every manifest describes the object next to it (size, SHA-256): no manifest for a snapshot
           whose checks did not pass, and a manifest was added only when the run succeeded;
        3. no snapshot file in any etcd pod;
        4. every earlier object is still there, byte for byte.

        ``replicas``: the API servers' original replica count (default: this sandbox's, :data:`REPLICAS`).
        """
        ref = ClusterRef("clusters", cluster)
        hc = self.k8s.get_hosted_cluster(ref)
        assert hc["spec"].get("pausedUntil") in (None, "false"), hc["spec"].get("pausedUntil")
        leftover = [k for k in (hc["metadata"].get("annotations") or {}) if k.startswith(OURS)]
        assert not leftover, f"annotations left on {ref}: {leftover}"
        for dep in API_SERVER_DEPLOYMENTS:
            want, _ = self.k8s.get_deployment_replicas(ref.control_plane_namespace, dep)
            original = REPLICAS[cluster] if replicas is None else replicas
            assert want == original, f"{dep} at {want}, originally {original}"
        assert self.wait_available(cluster).ok, f"{ref} not Available again"
        after = self.objects(cluster)
        changed = {k: v for k, v in before.items() if after.get(k) != v}
        assert not changed, f"earlier backups changed or deleted: {sorted(changed)}"
        new_manifests = sorted(k for k in after if k.endswith("/manifest.json") and k not in before)
        if succeeded is None:
            succeeded = trace is not None and trace.succeeded
        expected = 1 if succeeded else 0
        assert len(new_manifests) == expected, (new_manifests, trace.errors() if trace else None)
        for key in new_manifests:
            manifest = self.s3.get_json(self.bucket, key)
            snap = manifest["snapshot"]
            assert after[snap["key"]] == (snap["size_bytes"], snap["sha256"]), (
                f"{key} does not match its object"
            )
            members = {(x["revision"], x["hash"]) for x in manifest["etcd"]["members"]}
            # Quiesced members may differ in revision (etcd revokes expired Events leases with every
            # API server stopped), never in data at one revision; the newest snapshot is uploaded.
            hashes_by_revision = {r: {h for rr, h in members if rr == r} for r, _ in members}
            assert manifest["mode"] != "quiesced" or all(len(h) == 1 for h in hashes_by_revision.values()), (
                f"{key}: members disagree {members}"
            )
            assert manifest["etcd"]["revision"] == max(r for r, _ in members), f"{key}: not the newest"
        assert not self.snapshot_files(cluster), f"snapshot files left: {self.snapshot_files(cluster)}"

    # ---- secrets ------------------------------------------------------------------------------------

    def key_needles(self) -> dict[str, bytes]:
        """The encryption keys of every HostedCluster (raw, base64, urlsafe base64, hex) and the S3
        secret key: what must appear nowhere."""
        needles: dict[str, bytes] = {}
        for hc in self.k8s.list_hosted_clusters():
            ns, name = hc["metadata"]["namespace"], hc["metadata"]["name"]
            secret = hc["spec"]["secretEncryption"]["aescbc"]["activeKey"]["name"]
            b64 = self.k8s.read_secret_data(ns, secret)["key"]
            raw = base64.b64decode(b64)
            needles[f"{name} key raw"] = raw
            needles[f"{name} key base64"] = b64.encode()
            needles[f"{name} key urlsafe-base64"] = base64.urlsafe_b64encode(raw)
            needles[f"{name} key hex"] = raw.hex().encode()
        password = json.loads(self.box.env["AIRFLOW_CONN_AWS_DEFAULT"]).get("password")
        if password:
            needles["S3 secret access key"] = password.encode()
        needles["presigned URL signature"] = b"X-Amz-Signature="
        return needles

    def sa_key_needles(self) -> dict[str, bytes]:
        """Every control plane's service-account signing key (escrowed by the backups since issue 16): the
        PEM, its base64, and a line from the middle of its body (the private exponent's region)."""
        needles: dict[str, bytes] = {}
        for hc in self.k8s.list_hosted_clusters():
            ns, name = hc["metadata"]["namespace"], hc["metadata"]["name"]
            b64 = self.k8s.read_secret_data(f"{ns}-{name}", "sa-signing-key")["service-account.key"]
            pem = base64.b64decode(b64)
            lines = pem.splitlines()
            needles[f"{name} SA key PEM"] = pem
            needles[f"{name} SA key base64"] = b64.encode()
            needles[f"{name} SA key body line"] = lines[len(lines) // 2]
        return needles


def record_exec(harness: Harness, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``HostedClusterHook._connect_exec`` to keep every argv sent into a pod."""
    names = list(inspect.signature(original).parameters)

    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = dict(zip(names[1:], args, strict=False)) | kwargs
        harness.exec_commands.append([str(a) for a in bound["command"]])
        return original(self, *args, **kwargs)

    return connect


def start_task_process(
    box: Sandbox, run_id: str, steps: list[tuple[str, dict[str, Any]]], hang: bool
) -> subprocess.Popen[str]:
    """Run backup operators in a process of their own (a worker that can be killed with SIGKILL)."""
    spec = {"run_id": run_id, "steps": steps, "hang": hang}
    return subprocess.Popen(
        [sys.executable, "-m", operator_worker.__name__, json.dumps(spec)], env=operator_worker.env(box),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def sigkill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the task process (and anything it started); return its output."""
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return out


@dataclass
class ForkedTask:
    """A worker forked by the ``TaskServer``, running task operators."""

    server: TaskServer
    pid: int
    log: Path
    code: int | None = None

    def state(self) -> str:
        """The process state from ``/proc`` (``T`` stopped, ``Z`` ended, not reaped yet)."""
        return process_state(self.pid)

    def output(self) -> str:
        """What the worker printed (its log included)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def results(self) -> dict[str, Any]:
        """The result of each operator that completed, by class name."""
        out = {}
        for line in self.output().splitlines():
            if line.startswith("@@DONE@@ "):
                _, name, value = line.split(" ", 2)
                out[name] = json.loads(value)
        return out

    def wait_kill_point(self, timeout: float = 180) -> None:
        """Wait until the worker stopped at its kill point; fail with its output if it ended instead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state == "T":
                return
            if state in ("Z", "gone"):
                raise AssertionError(f"the worker ended before its kill point:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"the worker never reached its kill point:\n{self.output()[-3000:]}")

    def sigkill(self) -> int:
        """SIGKILL the worker's process group; its exit code (-9)."""
        os.killpg(self.pid, signal.SIGKILL)
        self.code = self.server.reap(self.pid)
        self.server.sink.append(self.output())  # searched for secrets with the other task logs
        return self.code


class TaskServer:
    """The fork server of killable workers: ``start(...)`` forks a worker that runs operators with a
    kill point armed (``tests.support.operator_worker.run_steps``).

    :param box: the sandbox whose connections the workers use.
    :param logs: where the workers' logs go.
    :param sink: the task logs searched for secrets; a killed worker's output joins them.
    """

    def __init__(self, box: Sandbox, logs: Path, sink: list[str]) -> None:
        self.logs, self.sink = logs, sink
        self.server = ForkServer(operator_worker.env(box), operator_worker.PRELOAD)

    @property
    def started(self) -> list[int]:
        return self.server.started

    def start(
        self,
        run_id: str,
        steps: list[tuple[str, str, dict[str, Any]]],
        kill_point: tuple[str, int] | None = None,
    ) -> ForkedTask:
        """Fork a worker running ``steps`` (``(module, class, kwargs)``), stopping itself right after
        the ``kill_point`` (``("module:attr.path", nth call)``) returns."""
        log = self.logs / f"worker-{len(self.started)}-{time.time_ns()}.log"
        point = {"target": kill_point[0], "nth": kill_point[1]} if kill_point else None
        kwargs = {"run_id": run_id, "steps": steps, "kill_point": point}
        return ForkedTask(self, self.server.fork(f"{operator_worker.__name__}:run_steps", kwargs, log), log)

    def reap(self, pid: int) -> int:
        """The exit code of an ended worker (negative: the signal)."""
        return self.server.reap(pid)

    def close(self) -> None:
        """Kill what is left of the workers, then the server."""
        self.server.close()
