"""The sandbox runtime end to end: real etcd behind the pods, controllers, restore, S3, faults.

Uses the shared session ``sandbox`` (tests/conftest.py): ``clusters/ha-one`` (3 members) and
``clusters/single-one`` (1). Every test puts the clusters back the way it found them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from kubernetes import client, config
from kubernetes.stream import stream

from hcp_etcd import aescbc
from hcp_sandbox import render

pytestmark = pytest.mark.integration

HC_GROUP, HC_VERSION = "hypershift.openshift.io", "v1beta1"
ETCDCTL = [
    "env",
    "ETCDCTL_API=3",
    "/usr/bin/etcdctl",
    "--cacert",
    "/etc/etcd/tls/etcd-ca/ca.crt",
    "--cert",
    "/etc/etcd/tls/client/etcd-client.crt",
    "--key",
    "/etc/etcd/tls/client/etcd-client.key",
    "--endpoints=localhost:2379",
]
API_SERVERS = ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver")


# -- helpers -----------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(sandbox) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(sandbox.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture(scope="module")
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture(scope="module")
def custom(api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def s3(sandbox):
    aws = json.loads(sandbox.env["AIRFLOW_CONN_AWS_DEFAULT"])
    return boto3.client(
        "s3",
        endpoint_url=aws["extra"]["endpoint_url"],
        region_name="us-east-1",
        verify=str(sandbox.ca),
        aws_access_key_id=aws["login"],
        aws_secret_access_key=aws["password"],
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}
        ),
    )


def pod_exec(
    core, namespace: str, pod: str, command: list[str], container: str = "etcd"
) -> tuple[int, str, str]:
    """Run a command through the exec WebSocket; returns (exit code, stdout, stderr)."""
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=command,
        container=container,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    out, err = [], []
    while resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            out.append(resp.read_stdout())
        if resp.peek_stderr():
            err.append(resp.read_stderr())
    resp.close()
    return resp.returncode, "".join(out), "".join(err)


def etcdctl_json(core, namespace: str, pod: str, *args: str) -> Any:
    code, out, err = pod_exec(core, namespace, pod, [*ETCDCTL, "-w", "json", *args])
    assert code == 0, err
    return json.loads(out)


def revision(core, namespace: str, pod: str = "etcd-0") -> int:
    return etcdctl_json(core, namespace, pod, "endpoint", "status")[0]["Status"]["header"]["revision"]


def conditions(custom, name: str, namespace: str = "clusters") -> dict[str, dict[str, Any]]:
    hc = custom.get_namespaced_custom_object(HC_GROUP, HC_VERSION, namespace, "hostedclusters", name)
    return {c["type"]: c for c in hc.get("status", {}).get("conditions", [])}


def hcp_conditions(custom, name: str) -> dict[str, dict[str, Any]]:
    """The HostedControlPlane's conditions; none while the controller has not created it yet."""
    from kubernetes.client.rest import ApiException

    try:
        hcp = custom.get_namespaced_custom_object(
            HC_GROUP, HC_VERSION, f"clusters-{name}", "hostedcontrolplanes", name
        )
    except ApiException as err:
        if err.status == 404:
            return {}
        raise
    return {c["type"]: c for c in hcp.get("status", {}).get("conditions", [])}


def is_true(custom, name: str, ctype: str) -> bool:
    return conditions(custom, name).get(ctype, {}).get("status") == "True"


def set_paused(custom, name: str, value: str | None) -> None:
    custom.patch_namespaced_custom_object(
        HC_GROUP, HC_VERSION, "clusters", "hostedclusters", name, {"spec": {"pausedUntil": value}}
    )


def scale_api_servers(apps, namespace: str, replicas: int) -> None:
    for name in API_SERVERS:
        apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})


def ready_replicas(apps, namespace: str, name: str = "kube-apiserver") -> int:
    return apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0


def encryption_key(core, name: str) -> bytes:
    secret = core.read_namespaced_secret(f"{name}-etcd-encryption-key", "clusters")
    return base64.b64decode(secret.data["key"])


def create_hosted_cluster(core, custom, name: str, members: int, url: str, key: bytes) -> None:
    """What the restore procedure does: rendered manifests, the saved key, restoreSnapshotURL."""
    for obj in render.manifests(name, members=members, encryption_key=key):
        if obj["kind"] == "Secret":
            core.create_namespaced_secret("clusters", obj)
        elif obj["kind"] == "HostedCluster":
            obj["spec"]["etcd"]["managed"]["storage"]["restoreSnapshotURL"] = [url]
            custom.create_namespaced_custom_object(HC_GROUP, HC_VERSION, "clusters", "hostedclusters", obj)


def delete_hosted_cluster(sandbox, core, custom, name: str) -> None:
    custom.delete_namespaced_custom_object(HC_GROUP, HC_VERSION, "clusters", "hostedclusters", name)
    for suffix in ("pull-secret", "ssh-key", "etcd-encryption-key"):
        core.delete_namespaced_secret(f"{name}-{suffix}", "clusters")

    def gone() -> bool:
        info = sandbox.refresh()
        return (
            name not in info.get("hosted_clusters", {})
            and not (sandbox.dir / "pods" / f"clusters-{name}").exists()
        )

    wait_for(gone, 20, f"{name} torn down")
    assert f"clusters-{name}" not in [n.metadata.name for n in core.list_namespace().items]


@pytest.fixture(scope="module")
def snapshot_url(sandbox, core, s3) -> str:
    """A snapshot of single-one's etcd, uploaded with boto3 and presigned (SigV4)."""
    code, _, err = pod_exec(
        core, "clusters-single-one", "etcd-0", [*ETCDCTL, "snapshot", "save", "/var/lib/data/drill.db"]
    )
    assert code == 0, err
    path = sandbox.dir / "pods" / "clusters-single-one" / "etcd-0" / "var" / "lib" / "data" / "drill.db"
    s3.upload_file(str(path), sandbox.bucket, "tests/single-one.db")
    pod_exec(core, "clusters-single-one", "etcd-0", ["rm", "-f", "/var/lib/data/drill.db"])
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": sandbox.bucket, "Key": "tests/single-one.db"}, ExpiresIn=3600
    )
    assert "X-Amz-Signature=" in url and url.startswith("https://")
    return url


# -- files and CLI -------------------------------------------------------------------------------


def test_up_wrote_its_files(sandbox):
    info = sandbox.info
    assert info["ready"] is True
    assert set(info["hosted_clusters"]) == {"ha-one", "single-one"}
    assert [m["pod"] for m in info["hosted_clusters"]["ha-one"]["etcd"]] == ["etcd-0", "etcd-1", "etcd-2"]
    assert len(sandbox.pids()) == 2 + 4  # serve, S3, 3 + 1 etcd members
    kube = json.loads(sandbox.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
    assert kube["extra"] == {"kube_config_path": str(sandbox.kubeconfig), "namespace": "clusters"}
    aws = json.loads(sandbox.env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["config_kwargs"]["signature_version"] == "s3v4"
    assert aws["extra"]["endpoint_url"].startswith("https://127.0.0.1:")
    assert sandbox.env["HCP_ETCD_BUCKET"] == sandbox.bucket == "hcp-etcd-backups"
    result = sandbox.cli("status", "--dir", str(sandbox.dir))
    assert result.returncode == 0, result.stdout
    assert "healthy" in result.stdout


def test_objects_look_like_hypershift(core, apps, custom):
    hc = custom.get_namespaced_custom_object(HC_GROUP, HC_VERSION, "clusters", "hostedclusters", "ha-one")
    assert hc["spec"]["secretEncryption"]["aescbc"]["activeKey"]["name"] == "ha-one-etcd-encryption-key"
    assert hc["spec"]["controllerAvailabilityPolicy"] == "HighlyAvailable"
    assert len(encryption_key(core, "ha-one")) == 32
    cond = conditions(custom, "ha-one")
    for ctype in ("Available", "ReconciliationActive", "KubeAPIServerAvailable", "EtcdAvailable"):
        assert cond[ctype]["status"] == "True", cond[ctype]
        assert {"lastTransitionTime", "reason", "message", "observedGeneration"} <= cond[ctype].keys()
    pods = core.list_namespaced_pod("clusters-ha-one", label_selector="app=etcd").items
    assert [p.metadata.name for p in pods] == ["etcd-0", "etcd-1", "etcd-2"]
    pod = pods[0]
    assert pod.status.phase == "Running"
    assert [c.name for c in pod.status.container_statuses] == [
        "etcd",
        "etcd-metrics",
        "healthz",
        "etcd-defrag",
    ]
    assert all(c.ready and c.state.running for c in pod.status.container_statuses)
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "data-etcd-0"
    assert apps.read_namespaced_stateful_set("etcd", "clusters-ha-one").spec.replicas == 3
    for name in API_SERVERS:
        assert apps.read_namespaced_deployment(name, "clusters-single-one").spec.replicas == 1


def test_render_prints_hcp_shaped_manifests(sandbox):
    import yaml

    outputs = []
    for _ in range(2):
        result = sandbox.cli("render", "--dir", str(sandbox.dir), "--name", "drill-x", "--members", "1")
        assert result.returncode == 0, result.stderr
        outputs.append(list(yaml.safe_load_all(result.stdout)))
    docs = outputs[0]
    assert [d["kind"] for d in docs] == [
        "Namespace",
        "Secret",
        "Secret",
        "Secret",
        "HostedCluster",
        "NodePool",
    ]
    key_secret = docs[3]
    assert key_secret["metadata"]["name"] == "drill-x-etcd-encryption-key"
    assert len(base64.b64decode(key_secret["data"]["key"])) == 32
    assert key_secret["data"]["key"] != outputs[1][3]["data"]["key"], "each render makes a NEW key"
    hc = docs[4]["spec"]
    assert hc["etcd"]["managementType"] == "Managed"
    assert hc["etcd"]["managed"]["storage"]["type"] == "PersistentVolume"
    assert hc["controllerAvailabilityPolicy"] == "SingleReplica"
    assert hc["platform"]["type"] == "AWS"


# -- exec mapping --------------------------------------------------------------------------------


def test_exec_maps_pod_paths_and_endpoint(sandbox, core):
    ns = "clusters-ha-one"
    for pod in ("etcd-0", "etcd-1"):
        status = etcdctl_json(core, ns, pod, "endpoint", "status")
        member_port = next(m for m in sandbox.info["hosted_clusters"]["ha-one"]["etcd"] if m["pod"] == pod)[
            "client_port"
        ]
        assert status[0]["Endpoint"].endswith(f":{member_port}"), (
            "localhost:2379 must reach that pod's member"
        )
    code, out, _ = pod_exec(
        core, ns, "etcd-1", ["sh", "-c", "ls /var/lib/data && df -B1 --output=avail /var/lib"]
    )
    assert code == 0 and "member" in out
    assert int(out.split()[-1]) > 0
    code, out, _ = pod_exec(core, ns, "etcd-1", ["sh", "-c", "exit 7"])
    assert code == 7
    # A non-etcd pod runs in its own root, without any mapping.
    kas = core.list_namespaced_pod(ns, label_selector="app=kube-apiserver").items[0].metadata.name
    code, out, _ = pod_exec(core, ns, kas, ["pwd"], container="kube-apiserver")
    assert code == 0 and out.strip().endswith(f"pods/{ns}/{kas}")


def test_volume_fault_changes_df(sandbox, core):
    ns, pod = "clusters-single-one", "etcd-0"
    sandbox.fault("volume", "--namespace", ns, "--pod", pod, "--free-bytes", "1048576")
    try:
        _, out, _ = pod_exec(core, ns, pod, ["df", "-B1", "--output=avail", "/var/lib/data"])
        assert out.split()[-1] == "1048576"
    finally:
        sandbox.fault("volume", "--namespace", ns, "--pod", pod, "--free-bytes", "-1")
    _, out, _ = pod_exec(core, ns, pod, ["df", "-B1", "--output=avail", "/var/lib/data"])
    assert int(out.split()[-1]) > 1024**3


@pytest.mark.kubectl
def test_seed_backup_procedure_with_kubectl(sandbox, apps, custom, tmp_path):
    """The docs' procedure, command for command: pause, scale to 0, snapshot save + status, unpause."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the procedure's kubectl commands cannot run")

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(sandbox.kubeconfig),
                "--cache-dir",
                str(tmp_path / "cache"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ns = "clusters-ha-one"
    result = kubectl(
        "patch",
        "-n",
        "clusters",
        "hostedclusters/ha-one",
        "-p",
        '{"spec":{"pausedUntil":"true"}}',
        "--type=merge",
    )
    assert result.returncode == 0, result.stderr
    try:
        result = kubectl("scale", "deployment", "-n", ns, "--replicas=0", *API_SERVERS)
        assert result.returncode == 0, result.stderr
        wait_for(
            lambda: not is_true(custom, "ha-one", "ReconciliationActive"), 10, "ReconciliationActive=False"
        )
        wait_for(
            lambda: kubectl("get", "pods", "-n", ns, "-l", "app=kube-apiserver", "-o", "name").stdout == "",
            15,
            "kube-apiserver pods gone",
        )
        time.sleep(1)
        assert apps.read_namespaced_deployment("kube-apiserver", ns).spec.replicas == 0, (
            "paused: not reconciled"
        )
        revisions = set()
        for pod in ("etcd-0", "etcd-1", "etcd-2"):
            save = kubectl(
                "exec",
                "-n",
                ns,
                pod,
                "-c",
                "etcd",
                "--",
                *ETCDCTL,
                "snapshot",
                "save",
                "/var/lib/data/snapshot.db",
            )
            assert save.returncode == 0, save.stderr
            status = kubectl(
                "exec",
                "-n",
                ns,
                pod,
                "-c",
                "etcd",
                "--",
                "env",
                "ETCDCTL_API=3",
                "etcdctl",
                "-w",
                "table",
                "snapshot",
                "status",
                "/var/lib/data/snapshot.db",
            )
            assert status.returncode == 0 and "REVISION" in status.stdout, status.stderr
            as_json = kubectl(
                "exec",
                "-n",
                ns,
                pod,
                "--",
                "etcdutl",
                "-w",
                "json",
                "snapshot",
                "status",
                "/var/lib/data/snapshot.db",
            )
            revisions.add(json.loads(as_json.stdout)["revision"])
            checksum = kubectl("exec", "-n", ns, pod, "--", "sha256sum", "/var/lib/data/snapshot.db")
            assert checksum.returncode == 0 and len(checksum.stdout.split()[0]) == 64
            assert kubectl("exec", "-n", ns, pod, "--", "rm", "/var/lib/data/snapshot.db").returncode == 0
        assert len(revisions) == 1, f"quiesced members must agree on the revision: {revisions}"
        failing = kubectl("exec", "-n", ns, "etcd-0", "--", "sh", "-c", "exit 3")
        assert failing.returncode == 3
    finally:
        result = kubectl(
            "patch",
            "-n",
            "clusters",
            "hostedclusters/ha-one",
            "-p",
            '{"spec":{"pausedUntil":null}}',
            "--type=merge",
        )
    assert result.returncode == 0, result.stderr
    wait_for(lambda: ready_replicas(apps, ns) == 3, 15, "replicas back after unpause")
    wait_for(lambda: is_true(custom, "ha-one", "Available"), 15, "Available again")


@pytest.mark.kubectl
def test_exec_streams_a_large_file(sandbox, tmp_path):
    """cat streams with backpressure: 64 MiB through the WebSocket, byte for byte."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the streaming check uses kubectl exec")
    ns, pod = "clusters-single-one", "etcd-0"
    path = sandbox.dir / "pods" / ns / pod / "var" / "lib" / "big.bin"
    path.write_bytes(os.urandom(64 * 1024 * 1024))
    try:
        result = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(sandbox.kubeconfig),
                "--cache-dir",
                str(tmp_path / "cache"),
                "exec",
                "-n",
                ns,
                pod,
                "--",
                "cat",
                "/var/lib/big.bin",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(path.read_bytes()).digest()
    finally:
        path.unlink()


# -- controllers -------------------------------------------------------------------------------


def test_pause_deadline_resumes_by_itself(core, apps, custom):
    ns = "clusters-single-one"
    deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=4)
    set_paused(custom, "single-one", deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))
    scale_api_servers(apps, ns, 0)
    wait_for(lambda: not is_true(custom, "single-one", "ReconciliationActive"), 5, "paused")
    assert conditions(custom, "single-one")["ReconciliationActive"]["reason"] == "ReconciliationPaused"
    wait_for(lambda: ready_replicas(apps, ns) == 0, 5, "scaled down while paused")
    assert apps.read_namespaced_deployment("kube-apiserver", ns).spec.replicas == 0
    # The dead-man's switch: past the deadline HyperShift reconciles again and scales back up.
    wait_for(lambda: ready_replicas(apps, ns) == 1, 15, "replicas back after the deadline")
    assert is_true(custom, "single-one", "ReconciliationActive")
    wait_for(lambda: is_true(custom, "single-one", "Available"), 10, "Available")
    set_paused(custom, "single-one", None)


@pytest.mark.parametrize(
    ("value", "paused", "reason", "message"),
    [
        ("True", True, "ReconciliationPaused", "Reconciliation paused until field removed"),
        (
            "2999-01-01T00:00:00Z",
            True,
            "ReconciliationPaused",
            "Reconciliation paused until: 2999-01-01T00:00:00Z",
        ),
        ("False", False, "AsExpected", "Reconciliation active on resource"),
        # Passes the CRD's pattern, not Go's RFC3339: HyperShift reconciles and says why.
        (
            "2999-01-01T00:00:00 UTC",
            False,
            "InvalidPausedUntilValue",
            "Invalid value provided for PausedUntil field",
        ),
    ],
)
def test_paused_until_read_as_upstream_on_both_objects(custom, value, paused, reason, message):
    """support/util/pausereconcile.go: the HostedCluster and its HostedControlPlane say the same."""
    set_paused(custom, "single-one", value)
    try:
        want = "False" if paused else "True"

        def both() -> bool:
            mine = conditions(custom, "single-one").get("ReconciliationActive", {})
            hcp = hcp_conditions(custom, "single-one").get("ReconciliationActive", {})
            return mine.get("reason") == reason and hcp.get("reason") == reason

        wait_for(both, 5, f"ReconciliationActive {reason} on HostedCluster and HostedControlPlane")
        for cond in (conditions(custom, "single-one"), hcp_conditions(custom, "single-one")):
            active = cond["ReconciliationActive"]
            assert (active["status"], active["message"]) == (want, message), active
    finally:
        set_paused(custom, "single-one", None)


def test_paused_until_outside_the_crd_is_refused(custom):
    """The CRD's rules: 4-35 characters, and true/false/True/False or a date-like pattern."""
    from kubernetes.client.rest import ApiException

    for value, expected in (
        ("TRUE", "PausedUntil must be a date in RFC3339 format or 'True', 'true', 'False' or 'false'"),
        ("1", "should be at least 4 chars long"),
        ("2999-01-01T00:00:00.000000000000000Z", "may not be more than 35 bytes"),
    ):
        with pytest.raises(ApiException) as info:
            set_paused(custom, "single-one", value)
        assert info.value.status == 422 and expected in info.value.body, (value, info.value.body)


def test_clock_fault_passes_a_long_deadline(sandbox, apps, custom):
    """Paused until now + 10 min: stays paused; HyperShift's clock 660 s ahead: reconciled at once."""
    ns = "clusters-single-one"
    deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
    set_paused(custom, "single-one", deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))
    try:
        scale_api_servers(apps, ns, 0)
        wait_for(lambda: ready_replicas(apps, ns) == 0, 10, "scaled down while paused")
        time.sleep(1)  # a few reconcile ticks (0.25 s): a paused cluster is not scaled back
        assert apps.read_namespaced_deployment("kube-apiserver", ns).spec.replicas == 0
        assert not is_true(custom, "single-one", "ReconciliationActive")
        answer = sandbox.fault("clock", "--ahead-seconds", "660")
        assert answer["ahead_seconds"] == 660.0
        wait_for(lambda: ready_replicas(apps, ns) == 1, 15, "replicas back past HyperShift's deadline")
        assert is_true(custom, "single-one", "ReconciliationActive")
        wait_for(lambda: is_true(custom, "single-one", "Available"), 10, "Available")
        assert "660s ahead" in sandbox.cli("status", "--dir", str(sandbox.dir)).stdout
    finally:
        sandbox.fault("clock", "--ahead-seconds", "0")
        set_paused(custom, "single-one", None)
    wait_for(lambda: ready_replicas(apps, ns) == 1, 15, "kube-apiserver back")


def test_writer_stops_at_zero_replicas_and_resumes(core, apps, custom):
    ns = "clusters-single-one"
    before = revision(core, ns)
    time.sleep(1)
    assert revision(core, ns) > before, "kube-apiserver writes leases/events while it runs"
    set_paused(custom, "single-one", "true")
    try:
        scale_api_servers(apps, ns, 0)
        wait_for(lambda: ready_replicas(apps, ns) == 0, 10, "no ready kube-apiserver")
        time.sleep(0.5)
        quiet = revision(core, ns)
        time.sleep(1.5)
        assert revision(core, ns) == quiet, "nothing writes at zero replicas"
    finally:
        set_paused(custom, "single-one", None)
    wait_for(lambda: ready_replicas(apps, ns) == 1, 15, "kube-apiserver back")
    wait_for(lambda: revision(core, ns) > quiet, 10, "writes resume")


def test_secrets_are_stored_aescbc_encrypted(core):
    ns = "clusters-ha-one"
    code, out, err = pod_exec(
        core,
        ns,
        "etcd-0",
        [*ETCDCTL, "-w", "json", "get", "--prefix", "/kubernetes.io/secrets/", "--limit", "3"],
    )
    assert code == 0, err
    kvs = json.loads(out)["kvs"]
    assert kvs
    key = encryption_key(core, "ha-one")
    for kv in kvs:
        value = base64.b64decode(kv["value"])
        assert value.startswith(b"k8s:enc:aescbc:v1:")
        secret = json.loads(aescbc.decrypt(value, key))
        assert secret["kind"] == "Secret"
        with pytest.raises(ValueError):
            json.loads(aescbc.decrypt(value, os.urandom(32)))


def test_up_encryption_kms_stores_secrets_envelope_encrypted_with_its_kms_key(make_sandbox):
    """``up --encryption kms`` (here per cluster, next to an AES-CBC one): a KMS key in the local KMS,
    the HostedCluster names it, no key Secret, and Secrets are KMS v2 envelopes whose seed the local
    KMS decrypts with that key (read here with the product's own reader)."""
    from hcp_etcd import kms
    from hcp_sandbox.kms import LocalKms

    box = make_sandbox(
        "--encryption", "kms", "--cluster", "k:1", "--cluster", "a:1:aescbc", "--seed-mb", "0.25"
    )
    arn = box.info["kms_key_arn"]
    aws = json.loads(box.env["AIRFLOW_CONN_AWS_DEFAULT"])
    local = LocalKms(aws["extra"]["endpoint_url"], box.ca, "us-east-1", aws["login"], aws["password"])
    with client.ApiClient(box_configuration(box)) as api_client:
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        hc = custom.get_namespaced_custom_object(HC_GROUP, HC_VERSION, "clusters", "hostedclusters", "k")
        assert hc["spec"]["secretEncryption"]["kms"]["aws"]["activeKey"]["arn"] == arn
        names = {x.metadata.name for x in core.list_namespaced_secret("clusters").items}
        assert "k-etcd-encryption-key" not in names and "a-etcd-encryption-key" in names
        out = etcdctl_json(core, "clusters-k", "etcd-0", "get", "--prefix", "/kubernetes.io/secrets/")
        assert out["kvs"]
        for kv in out["kvs"]:
            key, value = base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"])
            envelope = kms.parse(value)
            assert (envelope.version, envelope.provider, envelope.key_id) == (
                "v2",
                kms.provider_name(arn),
                arn,
            )
            seed = local.decrypt(kms.kms_ciphertext(envelope.encrypted_dek))
            assert json.loads(kms.open_data(envelope, seed, key))["kind"] == "Secret"
        out = etcdctl_json(
            core, "clusters-a", "etcd-0", "get", "--prefix", "/kubernetes.io/secrets/", "--limit", "1"
        )
        assert base64.b64decode(out["kvs"][0]["value"]).startswith(b"k8s:enc:aescbc:v1:")


def test_etcd_available_is_quorum(sandbox, core, custom):
    """etcdStatefulSetCondition: one member of three down keeps EtcdAvailable (2 >= 3/2+1)."""
    ns = "clusters-ha-one"
    sandbox.fault("etcd-stop", "--namespace", ns, "--pod", "etcd-2")
    try:
        wait_for(
            lambda: (
                {c.type: c.status for c in core.read_namespaced_pod("etcd-2", ns).status.conditions}["Ready"]
                == "False"
            ),
            10,
            "etcd-2 not Ready",
        )
        time.sleep(1)  # a few reconcile ticks
        etcd_cond = conditions(custom, "ha-one")["EtcdAvailable"]
        assert (etcd_cond["status"], etcd_cond["reason"]) == ("True", "QuorumAvailable"), etcd_cond
        assert is_true(custom, "ha-one", "Available")
    finally:
        sandbox.fault("etcd-start", "--namespace", ns, "--pod", "etcd-2")


def test_etcd_stop_makes_etcd_unavailable(sandbox, core, custom):
    ns = "clusters-single-one"
    sandbox.fault("etcd-stop", "--namespace", ns, "--pod", "etcd-0")
    try:
        wait_for(lambda: not is_true(custom, "single-one", "EtcdAvailable"), 10, "EtcdAvailable=False")
        assert not is_true(custom, "single-one", "Available")
        pod = core.read_namespaced_pod("etcd-0", ns)
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
    finally:
        sandbox.fault("etcd-start", "--namespace", ns, "--pod", "etcd-0")
    wait_for(lambda: is_true(custom, "single-one", "Available"), 20, "Available after the member restarts")


# -- S3 --------------------------------------------------------------------------------------------


def test_s3_faults(sandbox, s3):
    s3.put_object(Bucket=sandbox.bucket, Key="tests/ok", Body=b"x")
    sandbox.fault("s3", "--code", "503", "--count", "2")
    for _ in range(2):
        with pytest.raises(ClientError) as info:
            s3.head_object(Bucket=sandbox.bucket, Key="tests/ok")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert s3.get_object(Bucket=sandbox.bucket, Key="tests/ok")["Body"].read() == b"x"
    sandbox.fault("s3", "--drop", "--after-bytes", "65536", "--count", "1")
    with pytest.raises((EndpointConnectionError, ClientError, Exception)) as dropped:
        s3.put_object(Bucket=sandbox.bucket, Key="tests/dropped", Body=os.urandom(1024 * 1024))
    assert "503" not in str(dropped.value)
    s3.put_object(Bucket=sandbox.bucket, Key="tests/after-drop", Body=b"y")


def test_s3hook_works_with_the_airflow_connection(sandbox, monkeypatch):
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")
    hook.load_bytes(b"hook", key="tests/hook", bucket_name=sandbox.env["HCP_ETCD_BUCKET"], replace=True)
    assert hook.read_key("tests/hook", sandbox.env["HCP_ETCD_BUCKET"]) == "hook"


# -- restore at creation -----------------------------------------------------------------------


def test_restore_at_creation_gives_one_cluster(sandbox, core, custom, snapshot_url):
    key = encryption_key(core, "single-one")
    create_hosted_cluster(core, custom, "restored-ha", 3, snapshot_url, key)
    try:
        wait_for(lambda: is_true(custom, "restored-ha", "Available"), 60, "restored cluster Available")
        # Upstream computes Available without EtcdSnapshotRestored (hostedcontrolplane_controller.go):
        # the two are written in separate reconciles, so either may come first.
        wait_for(
            lambda: "EtcdSnapshotRestored" in hcp_conditions(custom, "restored-ha"),
            30,
            "EtcdSnapshotRestored on the HostedControlPlane",
        )
        restored = hcp_conditions(custom, "restored-ha")["EtcdSnapshotRestored"]
        # hostedcontrolplane_controller.go: etcdRestoredCondition: no message, HostedControlPlane only.
        assert (restored["status"], restored["reason"], restored["message"]) == ("True", "AsExpected", ""), (
            restored
        )
        assert "EtcdSnapshotRestored" not in conditions(custom, "restored-ha")
        pod = core.read_namespaced_pod("etcd-1", "clusters-restored-ha")
        [init] = pod.status.init_container_statuses
        assert (init.name, init.ready, init.state.terminated.exit_code) == ("etcd-init", True, 0)
        # The fixed etcd-init (PR 9048) runs before reset-member.
        assert [c.name for c in pod.spec.init_containers] == ["ensure-dns", "etcd-init", "reset-member"]
        ns = "clusters-restored-ha"
        for pod in ("etcd-0", "etcd-1", "etcd-2"):
            members = etcdctl_json(core, ns, pod, "member", "list")["members"]
            assert len(members) == 3, f"{pod} sees {len(members)} members"
        code, out, err = pod_exec(
            core,
            ns,
            "etcd-1",
            [*ETCDCTL, "get", "--prefix", "/kubernetes.io/secrets/", "--limit", "1", "--print-value-only"],
        )
        assert code == 0 and out.startswith("k8s:enc:aescbc:v1:"), err
    finally:
        delete_hosted_cluster(sandbox, core, custom, "restored-ha")


def test_split_brain_fault(sandbox, core, custom, snapshot_url):
    sandbox.fault("restore-split-brain", "--count", "1")
    create_hosted_cluster(core, custom, "split-ha", 3, snapshot_url, encryption_key(core, "single-one"))
    try:
        wait_for(lambda: is_true(custom, "split-ha", "Available"), 60, "split cluster Available")
        assert is_true(custom, "split-ha", "EtcdAvailable"), "the bug: EtcdAvailable stays True"
        for pod in ("etcd-0", "etcd-1", "etcd-2"):
            assert len(etcdctl_json(core, "clusters-split-ha", pod, "member", "list")["members"]) == 1
        assert_legacy_split(core, "clusters-split-ha")
    finally:
        delete_hosted_cluster(sandbox, core, custom, "split-ha")


def assert_legacy_split(core, namespace: str) -> None:
    """What the released etcd-init leaves: each member alone, on etcdutl's default peer URL and ids."""
    pod = core.read_namespaced_pod("etcd-0", namespace)
    assert [c.name for c in pod.spec.init_containers] == ["ensure-dns", "reset-member", "etcd-init"]
    views = [etcdctl_json(core, namespace, p, "member", "list") for p in ("etcd-0", "etcd-1", "etcd-2")]
    for i, view in enumerate(views):
        [member] = view["members"]
        assert member["name"] == f"etcd-{i}" and member["peerURLs"] == ["http://localhost:2380"]
    # etcdutl's defaults give every member the same member and cluster id.
    assert len({v["header"]["cluster_id"] for v in views}) == 1
    assert len({v["members"][0]["ID"] for v in views}) == 1


def test_up_etcd_init_legacy_splits_every_ha_restore(make_sandbox):
    """``up --etcd-init legacy``: released HyperShift's etcd-init, without a fault."""
    box = make_sandbox("--cluster", "src:1", "--seed-mb", "1", "--etcd-init", "legacy")
    with client.ApiClient(box_configuration(box)) as api_client:
        core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        ns = "clusters-src"
        code, _, err = pod_exec(core, ns, "etcd-0", [*ETCDCTL, "snapshot", "save", "/var/lib/data/s.db"])
        assert code == 0, err
        aws = json.loads(box.env["AIRFLOW_CONN_AWS_DEFAULT"])
        own_s3 = boto3.client(
            "s3",
            endpoint_url=aws["extra"]["endpoint_url"],
            region_name="us-east-1",
            verify=str(box.ca),
            aws_access_key_id=aws["login"],
            aws_secret_access_key=aws["password"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        own_s3.upload_file(str(box.dir / "pods" / ns / "etcd-0" / "var/lib/data/s.db"), box.bucket, "s.db")
        url = own_s3.generate_presigned_url("get_object", Params={"Bucket": box.bucket, "Key": "s.db"})
        create_hosted_cluster(core, custom, "legacy-ha", 3, url, encryption_key(core, "src"))
        wait_for(lambda: is_true(custom, "legacy-ha", "Available"), 60, "legacy restore Available")
        assert is_true(custom, "legacy-ha", "EtcdAvailable"), "the bug: EtcdAvailable stays True"
        assert_legacy_split(core, "clusters-legacy-ha")
        code, out, err = pod_exec(core, "clusters-legacy-ha", "etcd-2", [*ETCDCTL, "get", "--prefix",
                                  "/kubernetes.io/secrets/", "--limit", "1", "--keys-only"])  # fmt: skip
        assert code == 0 and out.startswith("/kubernetes.io/secrets/"), "each member holds the backup's data"


def box_configuration(box) -> client.Configuration:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(box.kubeconfig), client_configuration=configuration)
    return configuration


def failed_etcd_init(core, namespace: str, pod: str = "etcd-0") -> Any:
    """The pod's etcd-init status once it exited non-zero, else None."""
    with contextlib.suppress(Exception):
        for status in core.read_namespaced_pod(pod, namespace).status.init_container_statuses or []:
            terminated = status.last_state and status.last_state.terminated
            if status.name == "etcd-init" and terminated and terminated.exit_code != 0:
                return status
    return None


@pytest.mark.parametrize("what", ["xml-error-body", "corrupt-snapshot"])
def test_failed_restore_shows_in_the_etcd_pods_only(sandbox, core, custom, s3, what):
    """A failing etcd-init (an S3 error document, a corrupt file), as a kubelet and HyperShift show it:
    etcd-init exits 1 and backs off, its log says why, the pods stay un-Ready, EtcdSnapshotRestored
    never appears (hostedcontrolplane_controller.go: etcdRestoredCondition needs every replica Ready)."""
    key = "tests/missing.db"
    if what == "corrupt-snapshot":
        key = "tests/corrupt.db"
        s3.put_object(Bucket=sandbox.bucket, Key=key, Body=os.urandom(64 * 1024))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": sandbox.bucket, "Key": key})
    name = f"bad-{what.split('-')[0]}"
    ns = f"clusters-{name}"
    create_hosted_cluster(core, custom, name, 1, url, os.urandom(32))
    try:
        init = wait_for(lambda: failed_etcd_init(core, ns), 30, "etcd-init failed")
        assert init.state.waiting.reason == "CrashLoopBackOff"
        assert init.last_state.terminated.reason == "Error" and not init.ready
        log = core.read_namespaced_pod_log("etcd-0", ns, container="etcd-init", tail_lines=20)
        assert ("<Code>NoSuchKey</Code>" if what == "xml-error-body" else "snapshot") in log, log
        pod = core.read_namespaced_pod("etcd-0", ns)
        assert pod.status.phase == "Pending"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
        time.sleep(1)  # a few reconcile ticks
        assert "EtcdSnapshotRestored" not in hcp_conditions(custom, name)
        cond = conditions(custom, name)
        assert "EtcdSnapshotRestored" not in cond
        assert (cond["EtcdAvailable"]["status"], cond["EtcdAvailable"]["reason"]) == (
            "False",
            "EtcdWaitingForQuorum",
        )
        assert (cond["Available"]["status"], cond["Available"]["reason"]) == ("False", "EtcdWaitingForQuorum")
    finally:
        delete_hosted_cluster(sandbox, core, custom, name)


# -- lifecycle -----------------------------------------------------------------------------------


def test_own_sandbox_up_twice_refused_and_down_leaves_nothing(make_sandbox):
    box = make_sandbox("--hosted-clusters", "1", "--members", "1")
    assert list(box.info["hosted_clusters"]) == ["hc-1"]
    again = box.cli("up", "--dir", str(box.dir))
    assert again.returncode != 0 and "already runs" in again.stderr
    box.down()
    status = box.cli("status", "--dir", str(box.dir))
    assert status.returncode != 0


def test_api_and_exec_drop_faults_from_the_cli(sandbox, core, custom):
    from kubernetes.client.rest import ApiException

    sandbox.fault("api", "--resource", "hostedclusters", "--verb", "get", "--code", "500", "--count", "1")
    with pytest.raises(ApiException) as info:
        conditions(custom, "ha-one")
    assert info.value.status == 500
    assert conditions(custom, "ha-one"), "only the next request fails"
    ns, pod = "clusters-single-one", "etcd-0"
    sandbox.fault("exec-drop", "--namespace", ns, "--pod", pod, "--count", "1", "--after-bytes", "1000")
    command = ["head", "-c", "200000", "/dev/zero"]
    try:
        code, out, _ = pod_exec(core, ns, pod, command)
    except Exception:  # a stream cut without a status: the client may raise
        code, out = None, ""
    assert not (code == 0 and len(out) == 200000), "the stream must be cut"
    code, out, _ = pod_exec(core, ns, pod, command)
    assert code == 0 and len(out) == 200000


def test_failed_up_leaves_nothing_running(tmp_path):
    include = str(Path(render.__file__).resolve().parent.parent)
    argv = ["up", "--dir", str(tmp_path), "--hosted-clusters", "1", "--members", "1", "--timeout", "0.5"]
    result = subprocess.run(
        [sys.executable, "-m", "hcp_sandbox", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": include},
    )
    assert result.returncode != 0
    assert "not ready after" in result.stderr and "last lines of" in result.stderr
    time.sleep(0.5)
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path).encode() in cmdline:
                leftovers.append((proc.name, cmdline.replace(b"\0", b" ")[:300]))
    assert not leftovers


def test_restore_is_marked_compacted(sandbox, core, custom, snapshot_url):
    """etcd-init restores with `--bump-revision --mark-compacted` (HyperShift PR 9048): no revision of
    the snapshot can be read from the restored etcd, the current one can."""
    create_hosted_cluster(core, custom, "compacted-one", 1, snapshot_url, encryption_key(core, "single-one"))
    try:
        wait_for(lambda: is_true(custom, "compacted-one", "Available"), 60, "restored cluster Available")
        ns = "clusters-compacted-one"
        compacted = etcdctl_json(core, ns, "etcd-0", "endpoint", "hashkv")[0]["HashKV"]["compact_revision"]
        assert compacted > 1, "the restored history is compacted"
        code, _, err = pod_exec(
            core, ns, "etcd-0", [*ETCDCTL, "get", f"--rev={compacted - 1}", "/kubernetes.io/"]
        )
        assert code != 0 and "required revision has been compacted" in err
        current = etcdctl_json(
            core, ns, "etcd-0", "get", "--prefix", "--keys-only", "/kubernetes.io/secrets/"
        )
        assert current.get("kvs"), "the backup's data is there at the current revision"
    finally:
        delete_hosted_cluster(sandbox, core, custom, "compacted-one")


def test_events_expire_with_api_servers_stopped_and_etcd_is_compacted(make_sandbox):
    """kube-apiserver binds Events to etcd leases of --event-ttl; the etcd leader revokes them when
    they expire, API servers running or not: a quiesced cluster's revision still moves. While it
    runs, kube-apiserver compacts etcd every --etcd-compaction-interval."""
    box = make_sandbox("--cluster", "lease-one:1", "--event-ttl", "2", "--compaction-interval", "1")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(box.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        ns = "clusters-lease-one"

        def events() -> list[dict[str, Any]]:
            found = etcdctl_json(
                core, ns, "etcd-0", "get", "--prefix", "--keys-only", "/kubernetes.io/events/"
            )
            return found.get("kvs") or []

        wait_for(lambda: events(), 15, "kube-apiserver writes Events")
        assert all(int(kv.get("lease", 0)) for kv in events()), "every Event is bound to an etcd lease"
        hashkv = lambda: etcdctl_json(core, ns, "etcd-0", "endpoint", "hashkv")[0]["HashKV"]  # noqa: E731
        wait_for(lambda: hashkv()["compact_revision"] > 0, 15, "kube-apiserver compacts etcd")
        set_paused(custom, "lease-one", "true")
        scale_api_servers(apps, ns, 0)
        wait_for(lambda: ready_replicas(apps, ns) == 0, 10, "no ready kube-apiserver")
        quiet = revision(core, ns)
        wait_for(lambda: not events(), 15, "the Events' leases revoked")
        assert revision(core, ns) > quiet, "each revocation is a new revision, with nothing writing"
        stopped = hashkv()["compact_revision"]
        time.sleep(2.5)  # two compaction intervals: nobody compacts while the API servers are stopped
        assert hashkv()["compact_revision"] == stopped


def _rsa_public_der(pem: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo inside one PEM block, whatever its header (upstream writes PKIX
    DER under ``RSA PUBLIC KEY``: support/certs/tls.go PublicKeyToPem)."""
    body = b"".join(line for line in pem.strip().splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def test_sa_signing_key_generated_or_taken_from_the_spec_as_upstream(sandbox, core, custom, snapshot_url):
    """pki/sa.go: each control plane has sa-signing-key (RSA 2048: PKCS#1 private key, PKIX public
    key under the header RSA PUBLIC KEY); hostedcluster_controller.go: a spec.serviceAccountSigningKey
    Secret's `key` becomes service-account.key, its public key service-account.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def signing_key(ns: str) -> tuple[bytes, bytes]:
        data = core.read_namespaced_secret("sa-signing-key", ns).data
        return base64.b64decode(data["service-account.key"]), base64.b64decode(data["service-account.pub"])

    generated, public = signing_key("clusters-ha-one")
    assert generated.startswith(b"-----BEGIN RSA PRIVATE KEY-----") and public.startswith(
        b"-----BEGIN RSA PUBLIC KEY-----"
    )
    key = serialization.load_pem_private_key(generated, password=None)
    assert key.key_size == 2048
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert _rsa_public_der(public) == spki
    assert signing_key("clusters-single-one")[0] != generated, "each control plane generates its own"

    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own_pem = own.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    core.create_namespaced_secret(
        "clusters",
        {
            "metadata": {"name": "sa-own-sa-token-issuer-key"},
            "data": {"key": base64.b64encode(own_pem).decode()},
        },
    )
    try:
        for obj in render.manifests("sa-own", members=1, encryption_key=encryption_key(core, "single-one")):
            if obj["kind"] == "Secret":
                core.create_namespaced_secret("clusters", obj)
            elif obj["kind"] == "HostedCluster":
                obj["spec"]["etcd"]["managed"]["storage"]["restoreSnapshotURL"] = [snapshot_url]
                obj["spec"]["serviceAccountSigningKey"] = {"name": "sa-own-sa-token-issuer-key"}
                custom.create_namespaced_custom_object(
                    HC_GROUP, HC_VERSION, "clusters", "hostedclusters", obj
                )
        wait_for(lambda: is_true(custom, "sa-own", "Available"), 60, "sa-own Available")
        private, public = signing_key("clusters-sa-own")
        assert private == own_pem
        assert _rsa_public_der(public) == own.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    finally:
        with contextlib.suppress(Exception):
            delete_hosted_cluster(sandbox, core, custom, "sa-own")
        core.delete_namespaced_secret("sa-own-sa-token-issuer-key", "clusters")
