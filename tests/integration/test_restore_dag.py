"""Restore and restore drills end to end through ``dag.test()`` against the sandbox (issue 5's list).

One real backup of ``ha-one`` and ``single-one`` (the backup DAG, online mode) feeds every test; the
bad-input tests copy it into other backup directories with one thing changed. Every cluster a test
creates is deleted again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.airflow import AirflowEnv, RunResult
from tests.support.sandbox_objects import (
    HS,
    KEY_PREFIX,
    PREFIX,
    copy_backup,
    delete_cluster,
    drill_report,
    hc_exists,
    kube,
    render,
    s3,
)

pytestmark = pytest.mark.integration

DRILL_NS = "hcp-etcd-drills"


def run_dags(
    airflow_env: AirflowEnv,
    dag_id: str,
    runs: list[tuple[dict[str, Any], str]],
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
) -> list[RunResult]:
    """Several ``dag.test()`` runs of one DAG in one worker (Airflow's run set-up is the slow part)."""
    return airflow_env.run_dags(dag_id, runs, timeout, extra_env)


def run_dag(
    airflow_env: AirflowEnv,
    dag_id: str,
    conf: dict[str, Any],
    logical: str = "",
    timeout: float = 400,
    extra_env: dict[str, str] | None = None,
) -> RunResult:
    return run_dags(airflow_env, dag_id, [(conf, logical)], timeout, extra_env)[0]


def request_seq(box) -> int:
    return box.api.seq()


def writes_since(box, seq: int) -> list[str]:
    items, _ = box.api.requests_since(seq)
    return [
        f"{i['verb']} {i['plural']} {i.get('namespace')}/{i.get('name')}"
        for i in items
        if i.get("verb") in ("create", "update", "patch", "delete", "deletecollection")
        and i.get("subresource") != "exec"
    ]


@dataclass
class Backups:
    ha: str  # manifest URI of ha-one's backup
    single: str
    manifest_ha: dict


@pytest.fixture(scope="module")
def backups(sandbox, airflow_env) -> Backups:
    """A real backup of both clusters, by the backup DAG (online: no pause needed for these tests)."""
    run = airflow_env.run({"hosted_clusters": ["clusters/ha-one", "clusters/single-one"], "mode": "online"})
    assert run.state == "success", run.output[-5000:]
    c = s3(sandbox)
    found = {}
    for name in ("ha-one", "single-one"):
        keys = [
            o["Key"]
            for o in c.list_objects_v2(Bucket=sandbox.bucket, Prefix=f"{PREFIX}/clusters/{name}/").get(
                "Contents", []
            )
            if o["Key"].endswith("/manifest.json")
        ]
        found[name] = f"s3://{sandbox.bucket}/{sorted(keys)[-1]}"
    key = found["ha-one"].split("/", 3)[3]
    manifest = json.loads(c.get_object(Bucket=sandbox.bucket, Key=key)["Body"].read())
    return Backups(found["ha-one"], found["single-one"], manifest)


def restore_conf(source: str, name: str, manifests: str, **extra: Any) -> dict[str, Any]:
    return {
        "source": source,
        "target_namespace": "clusters",
        "target_name": name,
        "rendered_manifests": manifests,
        **extra,
    }


def test_restore_ha_from_rendered_file(sandbox, airflow_env, backups, tmp_path):
    """namespace/name -> newest backup; rendered YAML from a file; every check passes on 3 members.
    The file is applied as rendered: its AWS identity (infraID, issuerURL, IAM roles, the NodePool's
    instance profile) is the new cluster's (issue 14 item 4)."""
    path = render(sandbox, tmp_path / "ha.yaml", "ha-restored", 3)
    try:
        run = run_dag(
            airflow_env, "hcp_etcd_restore", restore_conf("clusters/ha-one", "ha-restored", str(path))
        )
        assert run.state == "success", run.output[-6000:]
        # The membership step between wait and verify found one cluster and changed nothing.
        members = run.xcom("check_etcd_cluster")["members"]
        assert members == {f"etcd-{i}": ["etcd-0", "etcd-1", "etcd-2"] for i in range(3)}
        assert "no split brain" in run.output
        verify = run.xcom("verify")
        assert verify["passed"] and {c["name"] for c in verify["checks"]} == {
            "members",
            "revision",
            "key_counts",
            "samples",
            "key_matches_manifest",
            "secret_decrypts",
            "sa_key_matches_manifest",
        }
        assert run.xcom("resolve_backup")["manifest_uri"] == backups.ha
        co, core = kube(sandbox)
        hc = co.get_namespaced_custom_object(*HS, "clusters", "hostedclusters", "ha-restored")
        url = hc["spec"]["etcd"]["managed"]["storage"]["restoreSnapshotURL"][0]
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and len(url) <= 1024
        docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
        rendered_spec = docs["HostedCluster"]["spec"]
        for field in ("infraID", "issuerURL", "platform", "services"):
            assert hc["spec"][field] == rendered_spec[field], field
        assert hc["spec"]["issuerURL"].endswith("/" + rendered_spec["infraID"])
        pool = co.get_namespaced_custom_object(
            *HS, "clusters", "nodepools", docs["NodePool"]["metadata"]["name"]
        )
        assert pool["spec"]["platform"]["aws"]["instanceProfile"] == f"{rendered_spec['infraID']}-worker"
        key = base64.b64decode(
            core.read_namespaced_secret("ha-restored-etcd-encryption-key", "clusters").data["key"]
        )
        assert hashlib.sha256(key).hexdigest() == backups.manifest_ha["encryption_key"]["sha256"]
        # Issue 16: service-account tokens survive. The restored control plane signs with the source's
        # key, given through spec.serviceAccountSigningKey; the manifest names it by fingerprint only.
        assert hc["spec"]["serviceAccountSigningKey"] == {"name": "ha-restored-sa-token-issuer-key"}
        source_sa = core.read_namespaced_secret("sa-signing-key", "clusters-ha-one").data
        restored_sa = core.read_namespaced_secret("sa-signing-key", "clusters-ha-restored").data
        assert restored_sa["service-account.key"] == source_sa["service-account.key"]
        assert restored_sa["service-account.pub"] == source_sa["service-account.pub"]
        sa_pem = base64.b64decode(source_sa["service-account.key"])
        recorded = backups.manifest_ha["service_account_key"]
        assert recorded["sha256"] == hashlib.sha256(sa_pem).hexdigest()
        sa_line = sa_pem.splitlines()[5].decode()
        assert sa_line not in json.dumps(run.xcoms) and sa_line not in run.output
        # Neither the key nor the URL's signature went into XCom or the task output.
        dump = json.dumps(run.xcoms)
        assert base64.b64encode(key).decode() not in dump and url.split("X-Amz-Signature=")[1] not in dump
        assert base64.b64encode(key).decode() not in run.output
        assert url.split("X-Amz-Signature=")[1] not in run.output
    finally:
        delete_cluster(sandbox, "clusters", "ha-restored")


def test_restore_single_replica_from_manifest_uri_and_s3_render(sandbox, airflow_env, backups, tmp_path):
    """A manifest URI as source; rendered YAML from S3; one member. In the recommended AWS setup
    (issue 18): the AWS connection is a role (a session token, which alone would make the URL too
    long) and ``presign_aws_conn_id`` names an IAM user's long-term keys, which sign the URL."""
    path = render(sandbox, tmp_path / "single.yaml", "single-restored", 1)
    s3(sandbox).put_object(Bucket=sandbox.bucket, Key="renders/single.yaml", Body=path.read_bytes())
    user = airflow_env.env["AIRFLOW_CONN_AWS_DEFAULT"]
    role = json.loads(user)
    role["extra"]["aws_session_token"] = "FwoGZXIvYXdzE" + "A" * 900
    # The same Airflow home, with a role's connection and a presigning user's.
    conns = {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(role), "AIRFLOW_CONN_HCP_ETCD_PRESIGN": user}
    try:
        run = run_dag(
            airflow_env,
            "hcp_etcd_restore",
            restore_conf(
                backups.single,
                "single-restored",
                f"s3://{sandbox.bucket}/renders/single.yaml",
                url_expiry_hours=1,
                presign_aws_conn_id="hcp_etcd_presign",
            ),
            extra_env=conns,
        )
        assert run.state == "success", run.output[-6000:]
        checks = {c["name"]: c for c in run.xcom("verify")["checks"]}
        assert checks["members"]["passed"] and "1 member(s)" in checks["members"]["detail"]
        assert run.xcom("wait_restored")["recovery_seconds"] > 0
    finally:
        delete_cluster(sandbox, "clusters", "single-restored")


def test_bad_inputs_refused_before_any_write(sandbox, airflow_env, backups, tmp_path):
    """A flipped byte, a missing key object, an existing target, a foreign manifest: no write at all."""
    path = render(sandbox, tmp_path / "ha.yaml", "rendered-ha", 3)
    c = s3(sandbox)
    corrupt = copy_backup(sandbox, backups.manifest_ha, "20240601T000000Z", flip_byte=True)
    missing_key = copy_backup(sandbox, backups.manifest_ha, "20240602T000000Z", key=os.urandom(32))
    c.delete_object(
        Bucket=sandbox.bucket,
        Key=json.loads(c.get_object(Bucket=sandbox.bucket, Key=missing_key.split("/", 3)[3])["Body"].read())[
            "encryption_key"
        ]["location"].split("/", 3)[3],
    )
    foreign_key = f"{PREFIX}/clusters/ha-one/20240603T000000Z/manifest.json"
    c.put_object(
        Bucket=sandbox.bucket, Key=foreign_key, Body=b'{"schema_version": 1, "kind": "velero-backup"}'
    )
    # A rendered file broken on a Secret's data line: yaml's message quotes that line (issue 12).
    pull_secret = base64.b64encode(os.urandom(48)).decode()
    broken = tmp_path / "broken.yaml"
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: p, namespace: clusters}\ndata:\n"
    broken.write_text(f"{path.read_text()}\n---\n{secret}  .dockerconfigjson: {pull_secret}: x\n")
    cases = {
        "corrupt": (restore_conf(corrupt, "bad-one", str(path)), "check_snapshot", "sha256"),
        "broken_yaml": (restore_conf(backups.ha, "bad-four", str(broken)), "create", "is not valid YAML"),
        # A file rendered for another cluster: its identity is not the target's (issue 14 item 4).
        "other_cluster": (
            restore_conf(backups.ha, "bad-five", str(path)),
            "create",
            "rendered for clusters/rendered-ha but the restore's target is clusters/bad-five",
        ),
        "missing_key": (restore_conf(missing_key, "bad-two", str(path)), "check_key", "does not exist"),
        "existing": (restore_conf(backups.ha, "single-one", str(path)), "resolve_backup", "already exists"),
        "foreign": (
            restore_conf(f"s3://{sandbox.bucket}/{foreign_key}", "bad-three", str(path)),
            "resolve_backup",
            "not an hcp-etcd backup manifest",
        ),
    }
    seq = request_seq(sandbox)
    runs = run_dags(airflow_env, "hcp_etcd_restore", [(conf, "") for conf, _, _ in cases.values()])
    for (label, (_, failing, message)), run in zip(cases.items(), runs, strict=True):
        assert run.state == "failed", label
        assert run.tis[f"{failing}[-1]"] == "failed", (label, run.tis)
        if failing != "create":
            assert run.tis["create[-1]"] == "upstream_failed", (label, run.tis)
        assert message in run.xcom(failing, "error"), (label, run.xcom(failing, "error"))
        # The error XCom is clear text in the metadata DB: no piece of the Secret's data in it.
        assert pull_secret[:16] not in run.xcom(failing, "error"), (label, run.xcom(failing, "error"))
    assert pull_secret[:16].encode() not in airflow_env.db_dump(), "Secret data stored in the metadata DB"
    # The sandbox's request log: not one write by any of these runs.
    assert writes_since(sandbox, seq) == []
    assert not hc_exists(sandbox, "clusters", "bad-one")


def test_over_long_url_refused_with_sts_reason(sandbox, airflow_env, backups, tmp_path):
    """An STS session token makes the presigned URL pass 1024 characters: refused, saying why."""
    path = render(sandbox, tmp_path / "ha.yaml", "rendered-ha", 3)
    conn = json.loads(airflow_env.env["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["aws_session_token"] = "FwoGZXIvYXdzE" + "A" * 900
    env = {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn)}
    seq = request_seq(sandbox)
    # The same Airflow home with the session token in the connection.
    conf = restore_conf(backups.ha, "long-url", str(path))
    run = run_dag(airflow_env, "hcp_etcd_restore", conf, extra_env=env)
    assert run.state == "failed"
    assert "STS session token" in run.xcom("presign", "error")
    assert writes_since(sandbox, seq) == []


def test_wrong_key_fails_verification(sandbox, airflow_env, backups, tmp_path):
    """A backup whose escrowed key is not the one that encrypted its Secrets: restored, then refused."""
    path = render(sandbox, tmp_path / "ha.yaml", "wrong-key", 3)
    wrong = copy_backup(sandbox, backups.manifest_ha, "20240604T000000Z", key=os.urandom(32))
    try:
        run = run_dag(airflow_env, "hcp_etcd_restore", restore_conf(wrong, "wrong-key", str(path)))
        assert run.state == "failed"
        assert run.tis["verify[-1]"] == "failed" and run.tis["wait_restored[-1]"] == "success"
        error = run.xcom("verify", "error")
        # The key is the one the manifest names (fingerprint matches), yet it does not open the Secrets.
        assert "secret_decrypts" in error and "key_matches_manifest" not in error
    finally:
        delete_cluster(sandbox, "clusters", "wrong-key")


def test_drill_over_two_past_dates(sandbox, airflow_env, backups):
    """Backfill logic: each logical date drills the newest backup at or before it; clusters deleted."""
    first = copy_backup(sandbox, backups.manifest_ha, "20250105T020000Z")
    second = copy_backup(sandbox, backups.manifest_ha, "20250112T020000Z")
    conf = {"hosted_clusters": ["clusters/ha-one"], "drill_namespace": DRILL_NS}
    dates = (
        ("2025-01-12T00:00:00+00:00", "20250112", first),
        ("2025-01-19T04:00:00+00:00", "20250119", second),
    )
    runs = run_dags(airflow_env, "hcp_etcd_restore_drill", [(conf, logical) for logical, _, _ in dates])
    for (_, day, expected), run in zip(dates, runs, strict=True):
        assert run.state == "success", run.output[-6000:]
        report = drill_report(sandbox, "ha-one", day)
        assert report["passed"] and report["snapshot"]["manifest"] == expected
        assert report["drill_cluster"] == f"{DRILL_NS}/ha-one-drill-{day}"
        assert report["recovery_seconds"] > 0 and report["snapshot_age_seconds"] > 0
        assert {c["name"] for c in report["checks"]} >= {
            "members",
            "revision",
            "key_counts",
            "secret_decrypts",
            "sa_key_is_new",  # the drill signs with a key of its own, not its source's (issue 16)
        }
        assert run.tis["drill.delete_drill_cluster[0]"] == "success"
        assert not hc_exists(sandbox, DRILL_NS, f"ha-one-drill-{day}")
        # The clone took none of the source's cloud identity (issue 14 item 4).
        assert "drill clone of clusters/ha-one: issuerURL dropped" in run.output
        assert "drill clone of clusters/ha-one: infraID ha-one-" in run.output
    events = [r for r in sqlite_rows(airflow_env, "SELECT extra FROM asset_event") if "drills" in r[0]]
    assert len(events) >= 2 and all("key" not in json.loads(e[0]) for e in events)


def sqlite_rows(airflow_env, query: str) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(airflow_env.home / "airflow.db")
    try:
        return list(con.execute(query))
    finally:
        con.close()


def test_split_brain_fails_the_drill(sandbox, airflow_env, backups):
    """The sandbox restores three one-member clusters: the member check fails, the run fails, cleanup runs."""
    sandbox.fault("restore-split-brain", "--count", "1")
    run = run_dag(
        airflow_env,
        "hcp_etcd_restore_drill",
        {"hosted_clusters": ["clusters/ha-one"], "drill_namespace": DRILL_NS},
    )
    assert run.state == "failed"
    report = run.xcom("drill.report", map_index=0)
    rep = json.loads(
        s3(sandbox).get_object(Bucket=sandbox.bucket, Key=report["report"].split("/", 3)[3])["Body"].read()
    )
    members = next(c for c in rep["checks"] if c["name"] == "members")
    assert not rep["passed"] and not members["passed"] and "split brain" in members["detail"]
    assert run.tis["drill.verdict[0]"] == "failed"
    assert run.tis["drill.delete_drill_cluster[0]"] == "success"
    assert not hc_exists(sandbox, DRILL_NS, rep["drill_cluster"].split("/")[1])
    assert "docs/RUNBOOK.md, Part C" in members["detail"], "the report says where the repair is"


def test_ha_restore_on_legacy_etcd_init_fails_at_once_naming_the_split_brain(
    sandbox, airflow_env, backups, tmp_path
):
    """Released HyperShift's etcd-init splits an HA restore while the cluster turns Available: the
    restore fails at the membership step, not retried, with what each member reports and the runbook
    section (no repair from outside fits HyperShift's init containers: docs/RUNBOOK.md, Part C)."""
    path = render(sandbox, tmp_path / "ha.yaml", "legacy-ha", 3)
    sandbox.fault("restore-split-brain", "--count", "1")  # the next restore runs the legacy etcd-init
    try:
        run = run_dag(
            airflow_env, "hcp_etcd_restore", restore_conf("clusters/ha-one", "legacy-ha", str(path))
        )
        assert run.state == "failed"
        assert run.state_of("wait_restored") == "success", "HyperShift reports the split restore as done"
        assert run.state_of("check_etcd_cluster") == "failed"
        assert run.tries_of("check_etcd_cluster") == 1, "a split brain is not retried"
        assert run.state_of("verify") == "upstream_failed"
        error = run.xcom("check_etcd_cluster", "error")
        assert "split brain" in error and "one-member cluster" in error, error
        assert "docs/RUNBOOK.md, Part C" in error, error
        for pod in ("etcd-0", "etcd-1", "etcd-2"):
            assert f"{pod}: 1 member(s) {pod}" in error, error
    finally:
        delete_cluster(sandbox, "clusters", "legacy-ha")


def secrets_in_etcd(box, cp_namespace: str) -> dict[str, bytes]:
    """Every Secret value in a hosted cluster's etcd, read in its etcd-0 (the tests' admin client)."""
    from kubernetes.stream import stream

    _, core = kube(box)
    command = [
        "env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--cacert", "/etc/etcd/tls/etcd-ca/ca.crt",
        "--cert", "/etc/etcd/tls/client/etcd-client.crt", "--key", "/etc/etcd/tls/client/etcd-client.key",
        "--endpoints=localhost:2379", "-w", "json", "get", "--prefix", "/kubernetes.io/secrets/",
    ]  # fmt: skip
    resp = stream(
        core.connect_get_namespaced_pod_exec, "etcd-0", cp_namespace, command=command, container="etcd",
        stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
    )  # fmt: skip
    out = []
    while resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            out.append(resp.read_stdout())
    resp.close()
    assert resp.returncode == 0
    kvs = json.loads("".join(out)).get("kvs") or []
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]) for kv in kvs}


def test_a_backup_taken_mid_rotation_restores_every_secret(sandbox, airflow_env, tmp_path):
    """Issue 14 item 7: single-one mid-rotation (status activeKey old, targetKey new, half its Secrets
    rewritten under the new key). The backup escrows both keys and says which is which; the restore
    gives the new cluster both (target as activeKey, old as backupKey); every Secret decrypts with the
    key its value names. The rotation is completed and undone afterwards (single-one keeps its key)."""
    from hcp_sandbox import aescbc as sandbox_aescbc

    co, core = kube(sandbox)
    original = "single-one-etcd-encryption-key"
    rotation = sandbox.fault("key-rotation", "--name", "single-one", "--migrated", "0.5")
    target = rotation["target_secret"]
    try:
        assert rotation["active_secret"] == original and 0 < rotation["rewritten"] < rotation["secrets"]
        hc = co.get_namespaced_custom_object(*HS, "clusters", "hostedclusters", "single-one")
        status = hc["status"]["secretEncryption"]
        assert status["activeKey"]["aescbc"]["secret"]["name"] == original
        assert status["targetKey"]["aescbc"]["secret"]["name"] == target
        stored = secrets_in_etcd(sandbox, "clusters-single-one").values()
        names = {sandbox_aescbc.stored_key_name(v) for v in stored}
        assert names == set(rotation["key_names"].values()), "etcd holds Secrets under both keys"

        run = airflow_env.run({"hosted_clusters": ["clusters/single-one"], "mode": "online"})
        assert run.state == "success", run.output[-5000:]
        c = s3(sandbox)
        listed = c.list_objects_v2(Bucket=sandbox.bucket, Prefix=f"{PREFIX}/clusters/single-one/")["Contents"]
        manifest_key = sorted(o["Key"] for o in listed if o["Key"].endswith("/manifest.json"))[-1]
        manifest_uri = f"s3://{sandbox.bucket}/{manifest_key}"
        manifest = json.loads(c.get_object(Bucket=sandbox.bucket, Key=manifest_key)["Body"].read())
        enc = manifest["encryption_key"]
        roles = {k["kas_key_name"]: k["roles"] for k in enc["keys"]}
        assert roles == {
            rotation["key_names"]["target"]: ["spec.activeKey", "status.targetKey"],
            rotation["key_names"]["active"]: ["status.activeKey"],
        }
        old_key = base64.b64decode(core.read_namespaced_secret(original, "clusters").data["key"])
        new_key = base64.b64decode(core.read_namespaced_secret(target, "clusters").data["key"])
        assert enc["sha256"] == hashlib.sha256(new_key).hexdigest()
        assert enc["backup_key"]["sha256"] == hashlib.sha256(old_key).hexdigest()
        recorded = json.dumps(manifest) + run.output + json.dumps(run.xcoms)
        for raw in (old_key, new_key):  # fingerprints and names only
            assert base64.b64encode(raw).decode() not in recorded

        path = render(sandbox, tmp_path / "single.yaml", "rot-restored", 1)
        conf = restore_conf(manifest_uri, "rot-restored", str(path))
        restore = run_dag(airflow_env, "hcp_etcd_restore", conf)
        assert restore.state == "success", restore.output[-6000:]
        checks = {c["name"]: c for c in restore.xcom("verify")["checks"]}
        assert checks["secret_decrypts"]["passed"] and checks["key_matches_manifest"]["passed"]
        hc = co.get_namespaced_custom_object(*HS, "clusters", "hostedclusters", "rot-restored")
        aes = hc["spec"]["secretEncryption"]["aescbc"]
        restored = {
            role: base64.b64decode(core.read_namespaced_secret(aes[role]["name"], "clusters").data["key"])
            for role in ("activeKey", "backupKey")
        }
        assert restored == {"activeKey": new_key, "backupKey": old_key}
        # Every Secret of the restored etcd, not only the sampled ones, opens with the key it names.
        by_name = {sandbox_aescbc.key_name(k): k for k in restored.values()}
        values = secrets_in_etcd(sandbox, "clusters-rot-restored")
        assert {sandbox_aescbc.stored_key_name(v) for v in values.values()} == set(by_name)
        for key, value in values.items():
            secret = json.loads(sandbox_aescbc.decrypt(value, by_name[sandbox_aescbc.stored_key_name(value)]))
            assert secret["kind"] == "Secret", key
    finally:
        delete_cluster(sandbox, "clusters", "rot-restored")
        # Put single-one back: finish this rotation, rotate back to its own key, drop the new Secret.
        sandbox.fault("key-rotation", "--name", "single-one", "--complete")
        sandbox.fault("key-rotation", "--name", "single-one", "--secret", original, "--migrated", "1")
        sandbox.fault("key-rotation", "--name", "single-one", "--complete")
        core.delete_namespaced_secret(target, "clusters")


def create_rendered(box, path: Path) -> None:
    """Create what ``render`` printed, as ``oc apply -f`` would (the Namespace exists already)."""
    co, core = kube(box)
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc["kind"] == "Namespace":
            continue
        ns = doc["metadata"]["namespace"]
        if doc["kind"] == "Secret":
            core.create_namespaced_secret(ns, doc)
        else:
            plural = {"HostedCluster": "hostedclusters", "NodePool": "nodepools"}[doc["kind"]]
            co.create_namespaced_custom_object(*HS, ns, plural, doc)


def seed_cluster(box, name: str, key: bytes, total_bytes: int = 256 * 1024) -> None:
    """Objects in a new cluster's etcd as its kube-apiserver would write them (Secrets encrypted with
    ``key``): the sandbox seeds only the clusters ``up`` made."""
    import asyncio

    import aiohttp

    from hcp_sandbox.etcd import EtcdClient, client_ssl_context
    from hcp_sandbox.seed import seed

    info = json.loads((box.dir / "sandbox.json").read_text())
    member = info["hosted_clusters"][name]["etcd"][0]
    tls = Path(member["pod_root"]) / "etc" / "etcd" / "tls"

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            await seed(EtcdClient(session, client_ssl_context(tls)), member["client_url"], total_bytes, key)

    asyncio.run(run())


def wait_available(box, ns: str, name: str, seconds: float = 120) -> dict:
    co, _ = kube(box)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hc = co.get_namespaced_custom_object(*HS, ns, "hostedclusters", name)
        conditions = {c["type"]: c["status"] for c in (hc.get("status") or {}).get("conditions") or []}
        if conditions.get("Available") == "True":
            return hc
        time.sleep(0.5)
    raise AssertionError(f"{ns}/{name} not Available within {seconds:.0f}s")


def test_a_deleted_cluster_comes_back_under_its_name_from_its_backup(sandbox, airflow_env, tmp_path):
    """The 3 a.m. path (issue 18): the HostedCluster was deleted (``oc delete hostedcluster``: its
    pull secret, SSH key and key Secret stay), nobody kept a rendered file. The restore, given only
    ``namespace/name``, rebuilds it from the specs its backup recorded, under its own name and
    identity, over the Secrets it left, and every check passes."""
    name = "lost-one"
    rendered = render(sandbox, tmp_path / "lost.yaml", name, 1)
    create_rendered(sandbox, rendered)
    try:
        original = wait_available(sandbox, "clusters", name)
        key = next(
            base64.b64decode(d["data"]["key"])
            for d in yaml.safe_load_all(rendered.read_text())
            if d and d["kind"] == "Secret" and d["metadata"]["name"] == f"{name}-etcd-encryption-key"
        )
        seed_cluster(sandbox, name, key)
        backup = airflow_env.run({"hosted_clusters": [f"clusters/{name}"], "mode": "online"})
        assert backup.state == "success", backup.output[-5000:]
        co, core = kube(sandbox)
        co.delete_namespaced_custom_object(*HS, "clusters", "hostedclusters", name)
        for pool in co.list_namespaced_custom_object(*HS, "clusters", "nodepools")["items"]:
            if pool["spec"].get("clusterName") == name:
                co.delete_namespaced_custom_object(*HS, "clusters", "nodepools", pool["metadata"]["name"])
        deadline = time.monotonic() + 60
        while hc_exists(sandbox, "clusters", name) or f"clusters-{name}" in {
            n.metadata.name for n in core.list_namespace().items
        }:
            assert time.monotonic() < deadline, "the deleted cluster's control plane is still there"
            time.sleep(0.5)
        left = {s.metadata.name for s in core.list_namespaced_secret("clusters").items}
        assert {f"{name}-pull-secret", f"{name}-ssh-key", f"{name}-etcd-encryption-key"} <= left

        run = run_dag(
            airflow_env,
            "hcp_etcd_restore",
            {"source": f"clusters/{name}", "target_namespace": "clusters", "target_name": name},
        )
        assert run.state == "success", run.output[-6000:]
        assert run.xcom("verify")["passed"], run.xcom("verify")
        assert "from the HostedCluster and NodePool specs its backup recorded" in run.output
        assert "left by the deleted HostedCluster" in run.output
        assert f"{name}-etcd-encryption-key" in run.output
        restored = co.get_namespaced_custom_object(*HS, "clusters", "hostedclusters", name)
        for field in ("infraID", "issuerURL", "platform", "release", "pullSecret"):
            assert restored["spec"][field] == original["spec"][field], field
        pools = [p for p in co.list_namespaced_custom_object(*HS, "clusters", "nodepools")["items"]
                 if p["spec"].get("clusterName") == name]  # fmt: skip
        assert len(pools) == 1
    finally:
        delete_cluster(sandbox, "clusters", name)


def local_kms(box):
    """The sandbox's KMS (moto, on the S3 endpoint), as the tests' own client."""
    from hcp_sandbox.kms import LocalKms

    conn = json.loads(box.env["AIRFLOW_CONN_AWS_DEFAULT"])
    extra = conn["extra"]
    return LocalKms(extra["endpoint_url"], box.ca, extra["region_name"], conn["login"], conn["password"])


def test_a_kms_cluster_is_backed_up_with_its_key_arns_and_restored_only_with_its_key(
    sandbox, airflow_env, tmp_path
):
    """Issue 14 item 6: a ``type: kms`` cluster (Secrets envelope-encrypted with the sandbox's KMS key,
    as kube-apiserver's KMS v2 provider writes them). The backup escrows no AES key, records the key
    ARN, and proves a Secret of the snapshot decrypts through KMS; a restore into a cluster rendered
    with another KMS key is refused before any write, naming both ARNs; one with the same key
    restores, creates no key Secret, and its Secrets decrypt through KMS."""
    from hcp_sandbox import kms as sandbox_kms

    name, arn = "kms-one", sandbox.refresh()["kms_key_arn"]
    rendered = tmp_path / "kms.yaml"
    out = sandbox.cli(
        "render", "--dir", str(sandbox.dir), "--name", name, "--members", "1", "--encryption", "kms"
    )
    assert out.returncode == 0, out.stderr
    rendered.write_text(out.stdout)
    create_rendered(sandbox, rendered)
    kms_client = local_kms(sandbox)
    other_arn = kms_client.create_key("another cluster's key")
    try:
        wait_available(sandbox, "clusters", name)
        # The new cluster's kube-apiserver: one seed, wrapped by its KMS plugin, then every Secret.
        seed_cluster(sandbox, name, sandbox_kms.new_envelope(arn, kms_client.encrypt).encrypt)
        stored = secrets_in_etcd(sandbox, f"clusters-{name}")
        assert stored and all(v.startswith(b"k8s:enc:kms:v2:awskmskey-") for v in stored.values())

        backup = airflow_env.run({"hosted_clusters": [f"clusters/{name}"], "mode": "online"})
        assert backup.state == "success", backup.output[-5000:]
        assert "no key to escrow" in backup.output
        assert backup.xcom("backup.verify", map_index=0)["secret_decrypts"]["passed"]
        c = s3(sandbox)
        listed = c.list_objects_v2(Bucket=sandbox.bucket, Prefix=f"{PREFIX}/clusters/{name}/")["Contents"]
        manifest_key = sorted(o["Key"] for o in listed if o["Key"].endswith("/manifest.json"))[-1]
        manifest = json.loads(c.get_object(Bucket=sandbox.bucket, Key=manifest_key)["Body"].read())
        assert manifest["encryption"]["type"] == "kms" and manifest["encryption"]["kms_key_arns"] == [arn]
        assert "encryption_key" not in manifest and manifest["service_account_key"]["location"]
        keys = c.list_objects_v2(Bucket=sandbox.bucket, Prefix=f"{KEY_PREFIX}/clusters/{name}/").get(
            "Contents", []
        )
        assert [o["Key"].split("/")[-2] for o in keys] == ["sa-signing-key"], "only the SA key is escrowed"

        uri = f"s3://{sandbox.bucket}/{manifest_key}"
        paths = {}
        for target, key_arn in (("kms-other", other_arn), ("kms-restored", arn)):
            out = sandbox.cli(
                "render", "--name", target, "--members", "1", "--encryption", "kms", "--kms-key-arn", key_arn
            )
            assert out.returncode == 0, out.stderr
            paths[target] = tmp_path / f"{target}.yaml"
            paths[target].write_text(out.stdout)
        seq = request_seq(sandbox)
        refused, restored = run_dags(
            airflow_env,
            "hcp_etcd_restore",
            [(restore_conf(uri, target, str(path)), "") for target, path in paths.items()],
        )
        assert refused.state == "failed" and refused.tis["create[-1]"] == "failed", refused.tis
        error = refused.xcom("create", "error")
        assert arn in error and other_arn in error and "--kms-key-arn" in error, error
        assert not [w for w in writes_since(sandbox, seq) if "kms-other" in w], "a refused restore wrote"
        assert not hc_exists(sandbox, "clusters", "kms-other")

        assert restored.state == "success", restored.output[-6000:]
        checks = {c["name"]: c for c in restored.xcom("verify")["checks"]}
        assert checks["kms_key_matches_manifest"]["passed"], checks
        assert checks["secret_decrypts"]["passed"] and "AWS KMS" in checks["secret_decrypts"]["detail"], (
            checks
        )
        _, core = kube(sandbox)
        made = {s.metadata.name for s in core.list_namespaced_secret("clusters").items}
        assert "kms-restored-etcd-encryption-key" not in made
        # Every Secret of the restored etcd opens through KMS, as its kube-apiserver would read it.
        for key, value in secrets_in_etcd(sandbox, "clusters-kms-restored").items():
            assert json.loads(sandbox_kms.decrypt(value, key, kms_client.decrypt))["kind"] == "Secret"
    finally:
        for target in (name, "kms-restored", "kms-other"):
            if hc_exists(sandbox, "clusters", target):
                delete_cluster(sandbox, "clusters", target)
