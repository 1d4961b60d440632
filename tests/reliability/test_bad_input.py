"""Bad input across the three DAGs (issue 6): a clear error before any change, and no write.

Two kinds of case. Param cases go through Airflow's own validation of the DAG's Params (what the
UI and ``airflow dags trigger`` do before a run exists). Task cases run the first task(s) that see
the input against the sandbox; the sandbox's request log must show no write (POST/PUT/PATCH/DELETE,
exec included) between the start and the end of the case — the setup of a case (e.g. pausing the
cluster "by someone else") is done before that window opens.
"""

# ruff: noqa: E501 -- the case tables read best one case per line

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import ParamValidationError

from hcp_etcd.naming import LOCK_ANNOTATION, ClusterRef
from hcp_etcd.operators import restore as rops
from hcp_etcd.operators.backup import BackupPreflightOperator
from hcp_etcd.operators.fleet import ResolveHostedClustersOperator
from tests.support.harness import ONE, PREFIX, REPO, Figures, Harness

pytestmark = pytest.mark.integration

ONE_NS = f"clusters-{ONE}"
BAD = "hcp-etcd/backups/clusters/bad-input"  # where the doctored backups go (no real cluster)


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    """The three DAGs as Airflow parses them."""
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


@dataclass
class Backup:
    """A real backup of rel-one and doctored copies of it."""

    manifest_uri: str
    manifest: dict[str, Any]


@pytest.fixture(scope="module")
def backup(harness: Harness) -> Backup:
    """One real backup of rel-one (made here when none exists yet)."""
    if not harness.manifests(ONE):
        assert harness.backup(ONE).succeeded
    key = harness.manifests(ONE)[-1]
    return Backup(f"s3://{harness.bucket}/{key}", harness.s3.get_json(harness.bucket, key))


def doctored(harness: Harness, backup: Backup, ts: str, **change: Any) -> str:
    """Copy the backup to ``{BAD}/{ts}/`` with one thing changed; return the manifest URI.

    ``flip_byte``: one byte of the snapshot inverted (the manifest keeps the true SHA-256);
    ``key``: other key bytes in the escrow object the copy points to; ``manifest_bytes``: the
    manifest object replaced by these bytes.
    """
    c, bucket = harness.s3.client, harness.bucket
    body = bytearray(c.get_object(Bucket=bucket, Key=backup.manifest["snapshot"]["key"])["Body"].read())
    if change.get("flip_byte"):
        body[len(body) // 2] ^= 0xFF
    manifest = copy.deepcopy(backup.manifest)
    manifest["snapshot"]["key"] = f"{BAD}/{ts}/snapshot.db"
    c.put_object(Bucket=bucket, Key=manifest["snapshot"]["key"], Body=bytes(body))
    if "key" in change:
        # An escrow object where the manifest says, holding other bytes than its fingerprint says.
        fingerprint = hashlib.sha256(ts.encode()).hexdigest()
        location = f"hcp-etcd/keys/clusters/{ONE}/{fingerprint}.key"
        c.put_object(Bucket=bucket, Key=location, Body=change["key"])
        enc = manifest["encryption_key"]
        # The list of every escrowed key (key rotation) names the active key too: the same change there.
        for entry in enc.get("keys") or []:
            if entry["sha256"] == enc["sha256"]:
                entry.update(location=f"s3://{bucket}/{location}", sha256=fingerprint)
        enc.update(location=f"s3://{bucket}/{location}", sha256=fingerprint)
    data = change.get("manifest_bytes", json.dumps(manifest).encode())
    c.put_object(Bucket=bucket, Key=f"{BAD}/{ts}/manifest.json", Body=data)
    return f"s3://{bucket}/{BAD}/{ts}/manifest.json"


# ---- the cases ------------------------------------------------------------------------------------------
# Each: (id, dag or None, conf for a Param case | a callable for a task case, expected error text).

PARAM_CASES = [
    ("backup-name-not-dns1123", "hcp_etcd_backup", {"hosted_clusters": ["clusters/Prod_1"]}, "does not match"),
    ("backup-name-path-traversal", "hcp_etcd_backup", {"hosted_clusters": ["clusters/../../etc"]}, "does not match"),
    ("backup-prefix-path-traversal", "hcp_etcd_backup", {"prefix": "hcp-etcd/../../other"}, "does not match"),
    ("backup-bucket-invalid", "hcp_etcd_backup", {"bucket": "Not_A_Bucket"}, "does not match"),
    ("backup-deadline-too-short", "hcp_etcd_backup", {"pause_deadline_minutes": 1}, "less than the minimum"),
    ("restore-target-path-traversal", "hcp_etcd_restore", {"target_name": "../evil"}, "does not match"),
    ("restore-source-not-s3", "hcp_etcd_restore", {"source": "file:///etc/passwd"}, "does not match"),
    ("restore-url-expiry-over-sigv4-limit", "hcp_etcd_restore", {"url_expiry_hours": 200}, "maximum"),
    ("drill-namespace-not-dns1123", "hcp_etcd_restore_drill", {"drill_namespace": "Drills NS"}, "does not match"),
    ("drill-cluster-path-traversal", "hcp_etcd_restore_drill", {"hosted_clusters": ["a/b/../c"]}, "does not match"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dag_id", "conf", "expected"), [c[1:] for c in PARAM_CASES], ids=[c[0] for c in PARAM_CASES]
)
def test_bad_input_param(
    harness: Harness, figures: Figures, dags: dict[str, Any], dag_id: str, conf: dict[str, Any], expected: str
) -> None:
    """Airflow's own Param validation refuses the conf: no run, so no write."""
    seq = harness.seq()
    params = copy.deepcopy(dags[dag_id].params)
    with pytest.raises(ParamValidationError, match=expected):
        params.update(conf)
        params.validate()
    writes = harness.writes_since(seq)
    figures.writes_by_bad_inputs += len(writes)
    assert not writes


def preflight(harness: Harness, cluster: str = ONE, **kwargs: Any) -> Callable[[], Any]:
    args = {"bucket": harness.bucket, "prefix": PREFIX, **kwargs}
    return lambda: BackupPreflightOperator(
        task_id="preflight", hosted_cluster=f"clusters/{cluster}", **args
    ).execute(harness.context("manual__bad-input"))


def restore_step(harness: Harness, cls: type, **kwargs: Any) -> Callable[[], Any]:
    args = {"bucket": harness.bucket, "prefix": PREFIX, **kwargs}
    return lambda: cls(task_id=cls.__name__, **args).execute(harness.context("manual__bad-input"))


def resolve(harness: Harness, source: str, **kwargs: Any) -> Any:
    args = {"target_namespace": "clusters", "target_name": "rel-restored", **kwargs}
    return restore_step(harness, rops.ResolveBackupOperator, source=source, **args)()


@dataclass
class TaskCase:
    """A task case: ``setup`` (may write), ``act`` (must refuse without a write), ``teardown``."""

    act: Callable[[Harness, Backup], Callable[[], Any]]
    expected: str
    setup: Callable[[Harness], Any] | None = None
    teardown: Callable[[Harness], Any] | None = None


def _pause_by_someone_else(h: Harness) -> None:
    h.k8s.patch_hosted_cluster(ClusterRef("clusters", ONE), {"spec": {"pausedUntil": "true"}})


def _pause_indefinitely_as_an_administrator_spells_it(h: Harness) -> None:
    # The CRD allows True as well as true; HyperShift reads both with strconv.ParseBool.
    h.k8s.patch_hosted_cluster(ClusterRef("clusters", ONE), {"spec": {"pausedUntil": "True"}})


def _unpause(h: Harness) -> None:
    h.k8s.patch_hosted_cluster(ClusterRef("clusters", ONE), {"spec": {"pausedUntil": None}})


def _lock_by_other_run(h: Harness) -> None:
    lock = json.dumps(
        {"run_id": "scheduled__nightly", "dag_id": "hcp_etcd_backup", "expires_at": "2999-01-01T00:00:00Z"}
    )
    h.k8s.patch_hosted_cluster(
        ClusterRef("clusters", ONE), {"metadata": {"annotations": {LOCK_ANNOTATION: lock}}}
    )


def _unlock(h: Harness) -> None:
    h.k8s.patch_hosted_cluster(
        ClusterRef("clusters", ONE), {"metadata": {"annotations": {LOCK_ANNOTATION: None}}}
    )


def _presign_later(h: Harness, b: Backup) -> Callable[[], Any]:
    """The URL checked 5 h after it was signed with a 4 h expiry: expired."""

    def act() -> Any:
        resolved = resolve(h, b.manifest_uri)
        mp = pytest.MonkeyPatch()
        later = rops.utcnow() + timedelta(hours=5)
        mp.setattr(rops, "utcnow", lambda: later)
        try:
            return restore_step(h, rops.PresignSnapshotOperator, backup=resolved, url_expiry_hours=4)()
        finally:
            mp.undo()

    return act


def _presign_with_sts(h: Harness, b: Backup) -> Callable[[], Any]:
    """Credentials with an STS session token make the URL longer than restoreSnapshotURL allows."""

    def act() -> Any:
        resolved = resolve(h, b.manifest_uri)
        conn = json.loads(h.box.env["AIRFLOW_CONN_AWS_DEFAULT"])
        conn["extra"]["aws_session_token"] = "IQoJb3JpZ2luX2VjE" + "A" * 900
        mp = pytest.MonkeyPatch()
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
        try:
            return restore_step(h, rops.PresignSnapshotOperator, backup=resolved, url_expiry_hours=4)()
        finally:
            mp.undo()

    return act


def _check_snapshot(h: Harness, uri: str) -> Any:
    return restore_step(h, rops.CheckSnapshotOperator, backup=resolve(h, uri))()


def _check_key(h: Harness, uri: str) -> Any:
    return restore_step(h, rops.CheckKeyOperator, backup=resolve(h, uri))()


TASK_CASES: dict[str, TaskCase] = {
    "backup-unknown-cluster": TaskCase(
        lambda h, b: lambda: ResolveHostedClustersOperator(
            task_id="resolve", hosted_clusters=["clusters/no-such-cluster"]
        ).execute(h.context("manual__bad-input")),
        "not found",
    ),
    "backup-preflight-unknown-cluster": TaskCase(lambda h, b: preflight(h, "no-such-cluster"), "does not exist"),
    "backup-missing-bucket": TaskCase(lambda h, b: preflight(h, bucket="no-such-bucket-here"), "not writable"),
    "backup-unwritable-bucket": TaskCase(
        lambda h, b: preflight(h), "not writable", setup=lambda h: h.box.fault("s3", "--code", "403", "--count", "1")
    ),
    "backup-no-bucket": TaskCase(lambda h, b: preflight(h, bucket=""), "no bucket given"),
    "backup-prefix-path-traversal-at-task": TaskCase(lambda h, b: preflight(h, prefix="a/../../b"), "prefix"),
    "backup-cluster-paused-by-someone-else": TaskCase(
        lambda h, b: preflight(h), "already paused", setup=_pause_by_someone_else, teardown=_unpause
    ),
    "backup-cluster-paused-by-someone-else-as-True": TaskCase(
        lambda h, b: preflight(h), "already paused", setup=_pause_indefinitely_as_an_administrator_spells_it,
        teardown=_unpause,
    ),
    "backup-cluster-locked-by-another-run": TaskCase(
        lambda h, b: preflight(h), "scheduled__nightly", setup=_lock_by_other_run, teardown=_unlock
    ),
    "backup-no-free-space-on-etcd-volume": TaskCase(
        lambda h, b: preflight(h),
        "MiB free",
        setup=lambda h: h.box.fault("volume", "--namespace", ONE_NS, "--pod", "etcd-0", "--free-bytes", "1048576"),
        teardown=lambda h: h.box.fault("volume", "--namespace", ONE_NS, "--pod", "etcd-0", "--free-bytes", "-1"),
    ),
    "backup-etcd-member-down": TaskCase(
        lambda h, b: preflight(h),
        "not running",
        setup=lambda h: h.box.fault("etcd-stop", "--namespace", ONE_NS, "--pod", "etcd-0"),
        teardown=lambda h: h.box.fault("etcd-start", "--namespace", ONE_NS, "--pod", "etcd-0"),
    ),
    "restore-manifest-missing": TaskCase(
        lambda h, b: lambda: resolve(h, f"s3://{h.bucket}/{BAD}/nothing/manifest.json"), "does not exist"
    ),
    "restore-foreign-manifest": TaskCase(
        lambda h, b: lambda: resolve(h, doctored(h, b, "foreign", manifest_bytes=b'{"kind": "Backup", "x": 1}')),
        "not an hcp-etcd backup manifest",
    ),
    "restore-truncated-manifest": TaskCase(
        lambda h, b: lambda: resolve(h, doctored(h, b, "truncated", manifest_bytes=json.dumps(b.manifest).encode()[:200])),
        "not JSON",
    ),
    "restore-flipped-byte-in-snapshot": TaskCase(
        lambda h, b: lambda: _check_snapshot(h, doctored(h, b, "flipped", flip_byte=True)), "has sha256"
    ),
    "restore-wrong-key": TaskCase(
        lambda h, b: lambda: _check_key(h, doctored(h, b, "wrongkey", key=b"\x01" * 32)), "has sha256"
    ),
    "restore-expired-url": TaskCase(_presign_later, "expired at"),
    "restore-over-long-url": TaskCase(_presign_with_sts, "STS session token"),
    "restore-existing-target": TaskCase(lambda h, b: lambda: resolve(h, b.manifest_uri, target_name=ONE), "already exists"),
    "restore-date-with-no-backup": TaskCase(
        lambda h, b: lambda: resolve(h, f"clusters/{ONE}", at_or_before="2001-01-01T00:00:00Z"), "no complete backup"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case_id", list(TASK_CASES))
def test_bad_input_task(harness: Harness, figures: Figures, backup: Backup, case_id: str) -> None:
    """The task refuses with a clear error, and the cluster saw no write meanwhile."""
    case = TASK_CASES[case_id]
    if case.setup:
        case.setup(harness)
    seq = harness.seq()
    try:
        with pytest.raises(Exception, match=case.expected) as err:
            case.act(harness, backup)()
        writes = harness.writes_since(seq)
    finally:
        if case.teardown:
            case.teardown(harness)
    figures.writes_by_bad_inputs += len(writes)
    assert not writes, f"{case_id} wrote to the cluster: {writes}"
    assert len(str(err.value)) > 20, f"not a clear error: {err.value!r}"


def test_enough_bad_inputs() -> None:
    """Issue 6 asks for at least 15 cases across the three DAGs."""
    assert len(PARAM_CASES) + len(TASK_CASES) >= 15
    assert {c[1] for c in PARAM_CASES} == {"hcp_etcd_backup", "hcp_etcd_restore", "hcp_etcd_restore_drill"}
