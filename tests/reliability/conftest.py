"""Reliability fixtures: a sandbox that enforces ``include/rbac``, and a harness that runs the real
operators the way Airflow does (one fresh operator per try, ``retries=2``, setups/teardowns with the
backup DAG's trigger rules), injects faults, and checks the safety invariants afterwards.

Why operators and not ``dag.test()`` for the matrix: a ``dag.test()`` costs 45-90 s here, a chain of
operators on a 1-member cluster a few seconds, and the operators are exactly what the DAG wires. The
harness runs in the pytest process (connections from ``AIRFLOW_CONN_*``, as a worker reads them);
``deferrable=False`` runs each trigger inline, as ``dag.test()`` does. One whole-DAG run
(``test_security.py``) checks the wiring under the same faults and RBAC.

Every Kubernetes call of the harness (and of the operators) goes through the sandbox token, so the
RBAC of ``include/rbac`` is enforced on all of it: a missing rule fails the scenario with a 403.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import inspect
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tenacity
import yaml
from airflow.providers.cncf.kubernetes import kubernetes_helper_functions
from airflow.sdk.exceptions import AirflowFailException

from hcp_etcd.hooks.hosted_cluster import HostedClusterHook
from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook
from hcp_etcd.naming import API_SERVER_DEPLOYMENTS, ClusterRef
from hcp_etcd.operators import backup as ops
from hcp_etcd.operators import restore as rops
from hcp_etcd.operators.drill import DeleteRestoredClusterOperator, DrillReportOperator, DrillVerdictOperator
from hcp_etcd.operators.fleet import BackupRetentionOperator
from hcp_etcd.operators.publish import PublishManifestOperator
from hcp_etcd.operators.transfer import SnapshotToS3Operator
from hcp_etcd.triggers import wait
from hcp_sandbox.faults import clear_s3_faults
from tests.conftest import Sandbox, start_sandbox

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "include" / "rbac"
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


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """The session's figures, for tests that add to them."""
    return figures_of(request.config)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> None:
    """Count each reliability test as a scenario, and each ``test_bad_input`` case as a bad input."""
    if call.when != "call":
        return
    figures = figures_of(item.config)
    figures.scenarios_run += 1
    passed = call.excinfo is None
    figures.scenarios_passed += passed
    figures.bad_inputs += item.name.startswith("test_bad_input")
    figures.outcomes[item.name] = "passed" if passed else "failed"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures (the ones docs/RELIABILITY.md quotes)."""
    figures = figures_of(terminalreporter.config)
    if figures.scenarios_run:
        shown = {k: v for k, v in vars(figures).items() if k != "outcomes"}
        terminalreporter.write_line("hcp-etcd reliability figures: " + json.dumps(shown, sort_keys=True))


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

    def __init__(self, store: dict[tuple[str, str], Any] | None = None, task_id: str = "task") -> None:
        self.xcom: dict[str, Any] = {}
        self._store = store if store is not None else {}
        self._task_id = task_id

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value
        self._store[(self._task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", map_indexes: int | None = None) -> Any:
        return self._store.get((task_ids, key))


@dataclass
class Outcome:
    """One task after its tries."""

    ok: bool
    seconds: float = 0.0
    tries: int = 0
    result: Any = None
    errors: list[str] = field(default_factory=list)


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
        kubeconfig = yaml.safe_load(box.kubeconfig.read_text())
        self._server = kubeconfig["clusters"][0]["cluster"]["server"]
        self._token = kubeconfig["users"][0]["user"]["token"]
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
        req = urllib.request.Request(
            f"{self._server}/sandbox/v1/requests?since={seq}",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        ctx = ssl.create_default_context(cafile=str(self.box.ca))
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            data = json.loads(resp.read())
        return data["items"], data["latest"]

    def clear_faults(self) -> dict[str, Any]:
        """Drop the API and exec faults not consumed yet (``DELETE /sandbox/v1/faults``)."""
        req = urllib.request.Request(
            f"{self._server}/sandbox/v1/faults",
            method="DELETE",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        ctx = ssl.create_default_context(cafile=str(self.box.ca))
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return json.loads(resp.read())

    def post_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Inject a fault straight through ``POST /sandbox/v1/faults`` (what ``fault`` does, faster)."""
        req = urllib.request.Request(
            f"{self._server}/sandbox/v1/faults",
            method="POST",
            data=json.dumps(spec).encode(),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        ctx = ssl.create_default_context(cafile=str(self.box.ca))
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return json.loads(resp.read())

    def clear_s3_faults(self) -> None:
        """Drop the S3 faults not consumed yet (the queue file, under the sandbox's own lock)."""
        clear_s3_faults(self.box.dir / "s3-faults.json")

    def seq(self) -> int:
        """The latest request seq."""
        return self.requests_since(10**12)[1]

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

    def context(self, run_id: str, task_id: str = "task") -> dict[str, Any]:
        """The task context: run id, a ``ti`` that shares the run's XComs, outlet events."""
        store = self.xcoms.setdefault(run_id, {})
        return {"run_id": run_id, "ti": TaskInstanceStub(store, task_id), "outlet_events": OutletEvents()}

    def attempt(self, task_id: str, make: Callable[[], Any], run_id: str, tries: int = TRIES) -> Outcome:
        """Execute a fresh operator up to ``tries`` times (Airflow's retries), like a new worker each try."""
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
                outcome.result = op.execute(self.context(run_id, task_id))
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
    ) -> Trace:
        """One backup of ``cluster`` with the DAG's wiring; ``inject[task]()`` runs right before that task.

        Trigger rules as in ``dags/hcp_etcd_backup.py``: resume is the teardown of quiesce, cleanup
        and unpause the teardowns of pause (they run when their setup succeeded, whatever failed in
        between); upload needs verify and resume; wait needs publish and unpause.

        For a task killed in a worker: ``stop_before`` ends the run right before that task (its
        inputs are in the trace); the continued run passes the same ``run_id``, the results of the
        tasks that succeeded as ``done`` (Airflow does not run them again) and the killed task as
        ``retried`` (its retry has the tries left after the killed one).
        """
        inject = inject or {}
        done = done or {}
        trace = Trace(run_id or self.new_run_id(cluster))
        rid = trace.run_id
        m = {"mode": mode}
        method = {"method": upload_method} if upload_method else {}  # None: the operator's default

        def run(task_id: str, make: Callable[[], Any]) -> Outcome:
            if task_id == stop_before:
                raise _StopRun
            if task_id in done:
                trace.tasks[task_id] = Outcome(ok=True, tries=1, result=done[task_id])
                self.xcoms.setdefault(rid, {})[(task_id, "return_value")] = done[task_id]
                return trace.tasks[task_id]
            if task_id in inject:
                inject[task_id]()
            tries = TRIES - 1 if task_id == retried else TRIES
            trace.tasks[task_id] = self.attempt(task_id, make, rid, tries=tries)
            return trace.tasks[task_id]

        with contextlib.suppress(_StopRun):
            self._backup_tasks(cluster, run, m, method, pause_deadline_minutes)
        return trace

    def _backup_tasks(
        self,
        cluster: str,
        run: Callable[[str, Callable[[], Any]], Outcome],
        m: dict[str, str],
        method: dict[str, str],
        pause_deadline_minutes: float,
    ) -> None:
        """The backup DAG's tasks, in order, with its trigger rules (see ``backup``)."""
        if not run(
            "preflight", lambda: ops.BackupPreflightOperator(**self.store(cluster, "preflight"), **m)
        ).ok:
            return
        pause = run(
            "pause",
            lambda: ops.PauseReconciliationOperator(
                **self.common(cluster, "pause"), pause_deadline_minutes=pause_deadline_minutes, **m
            ),
        )
        quiesce = snap = verify = resume = None
        if pause.ok:
            quiesce = run(
                "quiesce", lambda: ops.QuiesceApiServersOperator(**self.common(cluster, "quiesce"), **m)
            )
        if quiesce and quiesce.ok:
            snap = run("snapshot", lambda: ops.SnapshotMembersOperator(**self.common(cluster, "snapshot")))
        if snap and snap.ok:
            verify = run("verify", lambda: ops.VerifySnapshotsOperator(**self.common(cluster, "verify"), **m))
        if quiesce and quiesce.ok:
            resume = run(
                "resume", lambda: ops.ResumeApiServersOperator(**self.common(cluster, "resume"), **m)
            )
        publish = None
        if verify and verify.ok and resume and resume.ok:
            s, v = snap.result, verify.result  # type: ignore[union-attr]
            upload = run(
                "upload",
                lambda: SnapshotToS3Operator(**self.store(cluster, "upload"), snapshot=s, verify=v, **method),
            )
            escrow = None
            if upload.ok:
                escrow = run(
                    "escrow_key",
                    lambda: ops.EscrowEncryptionKeyOperator(
                        **self.store(cluster, "escrow_key"), key_prefix=KEY_PREFIX
                    ),
                )
            if escrow and escrow.ok:
                u, e, r = upload.result, escrow.result, resume.result
                publish = run(
                    "publish_manifest",
                    lambda: PublishManifestOperator(
                        **self.store(cluster, "publish_manifest"),
                        snapshot=s, verify=v, upload=u, escrow=e, resume=r, **m,
                    ),
                )  # fmt: skip
        if pause.ok:
            run("cleanup", lambda: ops.CleanupSnapshotsOperator(**self.common(cluster, "cleanup")))
            unpause = run(
                "unpause", lambda: ops.UnpauseReconciliationOperator(**self.common(cluster, "unpause"), **m)
            )
            if unpause.ok and publish and publish.ok:
                run(
                    "wait_available",
                    lambda: ops.WaitHostedClusterAvailableOperator(
                        **self.common(cluster, "wait_available"), timeout=180, **m
                    ),
                )

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
    ) -> None:
        """The four invariants of issue 6 after a run, whatever happened in it.

        1. unpaused, none of our annotations left, API servers at their original replicas, Available;
        2. every manifest describes the object next to it (size, SHA-256): no manifest for a snapshot
           whose checks did not pass, and a manifest was added only when the run succeeded;
        3. no snapshot file in any etcd pod;
        4. every earlier object is still there, byte for byte.
        """
        ref = ClusterRef("clusters", cluster)
        hc = self.k8s.get_hosted_cluster(ref)
        assert hc["spec"].get("pausedUntil") in (None, "false"), hc["spec"].get("pausedUntil")
        leftover = [k for k in (hc["metadata"].get("annotations") or {}) if k.startswith(OURS)]
        assert not leftover, f"annotations left on {ref}: {leftover}"
        for dep in API_SERVER_DEPLOYMENTS:
            want, _ = self.k8s.get_deployment_replicas(ref.control_plane_namespace, dep)
            assert want == REPLICAS[cluster], f"{dep} at {want}, originally {REPLICAS[cluster]}"
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


def _record_exec(harness: Harness, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``HostedClusterHook._connect_exec`` to keep every argv sent into a pod."""
    names = list(inspect.signature(original).parameters)

    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = dict(zip(names[1:], args, strict=False)) | kwargs
        harness.exec_commands.append([str(a) for a in bound["command"]])
        return original(self, *args, **kwargs)

    return connect


@pytest.fixture(scope="package")
def rel_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of its own that enforces ``include/rbac`` for its token: 3 + 1 etcd members.

    kube-apiserver's clocks run fast: Events expire 2 s after they are written (their etcd leases
    are revoked while a quiesced backup runs) and etcd is compacted every 4 s (a restore is verified
    long after its revision is gone), so every scenario runs against etcd history as it moves.
    """
    box = start_sandbox(
        tmp_path_factory.mktemp("reliability-sandbox"),
        "--rbac", str(RBAC), "--cluster", f"{HA}:3", "--cluster", f"{ONE}:1", "--seed-mb", "2",
        "--event-ttl", "2", "--compaction-interval", "4",
    )  # fmt: skip
    try:
        yield box
    finally:
        box.down()


@pytest.fixture(scope="package")
def harness(rel_box: Sandbox) -> Iterator[Harness]:
    """The harness, with the sandbox's connections in the environment and short API-retry waits."""
    mp = pytest.MonkeyPatch()
    for key, value in rel_box.env.items():
        mp.setenv(key, value)
    # The provider's exponential wait (1..15 s) would make each injected 500 cost half a minute.
    mp.setattr(kubernetes_helper_functions, "_default_wait", tenacity.wait_fixed(0.05))
    # Poll the waits every 0.5 s instead of 5 s: the same checks, seconds saved per scenario.
    mp.setattr(
        wait,
        "HostedClusterAvailableTrigger",
        functools.partial(wait.HostedClusterAvailableTrigger, poll_interval=0.5),
    )
    h = Harness(rel_box)
    mp.setattr(HostedClusterHook, "_connect_exec", _record_exec(h, HostedClusterHook._connect_exec))
    sampler = h.start_sampler()
    try:
        yield h
    finally:
        h.stop_sampler(sampler)
        mp.undo()


@pytest.fixture(autouse=True)
def _keep_output(request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Keep every test's output (the in-process task logs) for the secret search."""
    yield
    out, err = capfd.readouterr()
    if "harness" in request.fixturenames:
        request.getfixturevalue("harness").logs.append(out + err)
    sys.stdout.write(out)
    sys.stderr.write(err)


TASK_RUNNER = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
from hcp_etcd.operators import backup as ops
for name, kwargs in spec["steps"]:
    op = getattr(ops, name)(**kwargs)
    op.execute({"run_id": spec["run_id"]})
    print("@@DONE@@ " + name, flush=True)
if spec.get("hang"):
    time.sleep(3600)
"""


def start_task_process(
    box: Sandbox, run_id: str, steps: list[tuple[str, dict[str, Any]]], hang: bool
) -> subprocess.Popen[str]:
    """Run backup operators in a process of their own (a worker that can be killed with SIGKILL)."""
    env = {**os.environ, **box.env}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")])
    env["AIRFLOW__WORKERS__API_RETRY_WAIT_MAX"] = "1"
    spec = {"run_id": run_id, "steps": steps, "hang": hang}
    return subprocess.Popen(
        [sys.executable, "-c", TASK_RUNNER, json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip


def sigkill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the task process (and anything it started); return its output."""
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return out


# A worker pool the way LocalExecutor has one: a process that imports the operators once, then forks
# a worker per task. A fresh `python -c` costs 10-40 s of imports here; a fork costs milliseconds.
FORK_SERVER = r"""
import functools, importlib, json, os, signal, sys, traceback
import hcp_etcd.hooks.hosted_cluster, hcp_etcd.hooks.snapshot_store
import hcp_etcd.operators.backup, hcp_etcd.operators.publish, hcp_etcd.operators.restore
import hcp_etcd.operators.transfer


class Ti:
    map_index = -1

    def xcom_push(self, key, value):
        print("@@XCOM@@ " + json.dumps({key: value}, default=str), flush=True)


class Outlets(dict):
    def __missing__(self, key):
        class Accessor:
            def add(self, asset, extra=None):
                print("@@OUTLET@@ " + json.dumps(extra, default=str), flush=True)

        return Accessor()


def arm(target, nth):
    # The kill point: right after the nth call of `target` returns, the worker stops itself
    # (SIGSTOP); the test looks at the state it left and then SIGKILLs it.
    module, path = target.split(":")
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def stop_after(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == nth:
            print("@@KILL-POINT@@ " + target, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        return result

    setattr(owner, name, stop_after)


def work(req):
    if req.get("kill_point"):
        arm(**req["kill_point"])
    context = {"run_id": req["run_id"], "ti": Ti(), "outlet_events": Outlets()}
    for module, name, kwargs in req["steps"]:
        result = getattr(importlib.import_module(module), name)(**kwargs).execute(context)
        print("@@DONE@@ " + name + " " + json.dumps(result, default=str), flush=True)


print("@@READY@@", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if "reap" in req:
        _, status = os.waitpid(req["reap"], 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        os.setsid()  # a process group of its own: SIGKILL reaches the worker and all it started
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 0
        try:
            work(req)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


@dataclass
class ForkedTask:
    """A worker forked by the ``TaskServer``, running task operators."""

    server: TaskServer
    pid: int
    log: Path
    code: int | None = None

    def state(self) -> str:
        """The process state from ``/proc`` (``T`` stopped, ``Z`` ended, not reaped yet)."""
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "gone"

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
    """The fork server: ``start(...)`` forks a worker that runs operators with a kill point armed."""

    def __init__(self, box: Sandbox, logs: Path, sink: list[str]) -> None:
        env = {**os.environ, **box.env}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")])
        env["AIRFLOW__WORKERS__API_RETRY_WAIT_MAX"] = "1"
        self.logs, self.sink = logs, sink
        self.started: list[int] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )  # fmt: skip
        ready = self._line()
        assert ready == "@@READY@@", f"fork server did not start: {ready!r}"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            return json.loads(self._line())

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
        answer = self._ask({"run_id": run_id, "steps": steps, "kill_point": point, "log": str(log)})
        self.started.append(answer["pid"])
        return ForkedTask(self, answer["pid"], log)

    def reap(self, pid: int) -> int:
        """The exit code of an ended worker (negative: the signal)."""
        return int(self._ask({"reap": pid})["code"])

    def close(self) -> None:
        """Kill what is left of the workers it forked (by their own process groups), then the server."""
        for pid in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="package")
def task_server(
    rel_box: Sandbox, harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TaskServer]:
    """The fork server of the killable workers (started once, on first use); their output joins
    the harness's task logs."""
    server = TaskServer(rel_box, tmp_path_factory.mktemp("workers"), harness.logs)
    try:
        yield server
    finally:
        server.close()
