"""Unit tests of the sandbox runtime's pieces that need no running sandbox."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hcp_etcd import aescbc as product_aescbc
from hcp_sandbox import aescbc, render
from hcp_sandbox.cli import build_parser, cluster_specs, fault_spec
from hcp_sandbox.controllers.cluster import (
    ClusterRuntime,
    control_plane_namespace,
    member_count,
    merge_conditions,
)
from hcp_sandbox.controllers.manager import IDLE_TICK, ControlPlane
from hcp_sandbox.controllers.pausereconcile import is_paused
from hcp_sandbox.errors import ApiError
from hcp_sandbox.faults import S3FaultMiddleware, add_s3_fault, take_s3_fault
from hcp_sandbox.layout import SandboxPaths
from hcp_sandbox.podexec import PodTarget, map_argument
from hcp_sandbox.seed import generate
from hcp_sandbox.serve import ClusterSpec
from hcp_sandbox.store import Store
from tests.support.api_server import seed_hosted_cluster

ROOT = Path("/sbx/pods/clusters-a/etcd-1")
SHIMS = Path("/sbx/shims")
TARGET = PodTarget(ROOT, etcd_client_port=40001)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("/usr/bin/etcdctl", "/sbx/shims/etcdctl"),
        ("--endpoints=localhost:2379", "--endpoints=127.0.0.1:40001"),
        ("--endpoints=https://127.0.0.1:2379", "--endpoints=https://127.0.0.1:40001"),
        ("/var/lib/data/snapshot.db", f"{ROOT}/var/lib/data/snapshot.db"),
        ("--cacert=/etc/etcd/tls/etcd-ca/ca.crt", f"--cacert={ROOT}/etc/etcd/tls/etcd-ca/ca.crt"),
        (
            "etcdctl snapshot save /var/lib/data/s.db && ls /var/lib",
            f"etcdctl snapshot save {ROOT}/var/lib/data/s.db && ls {ROOT}/var/lib",
        ),
        # Look-alikes stay as they are.
        ("/var/library", "/var/library"),
        ("/opt/var/lib", "/opt/var/lib"),
        ("localhost:23790", "localhost:23790"),
    ],
)
def test_map_argument(arg, expected):
    assert map_argument(arg, TARGET, SHIMS) == expected


def test_map_argument_is_a_single_pass():
    # The pod root itself contains /var/lib here: it must not be mapped twice.
    target = PodTarget(Path("/var/lib/sbx/etcd-0"), etcd_client_port=1)
    assert map_argument("/var/lib/data", target, SHIMS) == "/var/lib/sbx/etcd-0/var/lib/data"


def test_is_paused():
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert is_paused("true", now)
    assert not is_paused("false", now)
    assert not is_paused(None, now)
    assert is_paused("2030-01-01T00:00:05Z", now)
    assert not is_paused("2029-12-31T23:59:59Z", now)


def test_names_and_members():
    assert control_plane_namespace("clusters", "prod.eu-1") == "clusters-prod-eu-1"
    assert member_count({"spec": {"controllerAvailabilityPolicy": "HighlyAvailable"}}) == 3
    assert member_count({"spec": {"controllerAvailabilityPolicy": "SingleReplica"}}) == 1


def test_merge_conditions_keeps_transition_time():
    old = [{"type": "A", "status": "True", "lastTransitionTime": "then"}]
    kept = merge_conditions(old, [{"type": "A", "status": "True"}])
    assert kept[0]["lastTransitionTime"] == "then"
    changed = merge_conditions(old, [{"type": "A", "status": "False"}])
    assert changed[0]["lastTransitionTime"] != "then"


def test_aescbc_values_are_read_by_the_product_and_only_with_their_key():
    """The sandbox writes as kube-apiserver does; the product's reader (restore verification) opens it."""
    key = os.urandom(32)
    value = aescbc.encrypt(b'{"kind":"Secret"}', key)
    # HyperShift names a key key-<FNV-1 32 of its bytes> (v2/kas/aescbc.go: AESCBCKeyName).
    assert value.startswith(f"k8s:enc:aescbc:v1:{aescbc.key_name(key)}:".encode())
    assert product_aescbc.key_name_of(value) == aescbc.key_name(key) == product_aescbc.kas_key_name(key)
    assert aescbc.decrypt(value, key) == b'{"kind":"Secret"}'
    assert product_aescbc.decrypt(value, key) == b'{"kind":"Secret"}'
    with pytest.raises(ValueError):
        product_aescbc.decrypt(value, os.urandom(32))
    with pytest.raises(ValueError):
        product_aescbc.decrypt(b"plain", key)


# Go's hash/fnv golden values for New32 (FNV-1; FNV-1a of "a" would be 0xe40c292c).
FNV1_32_GOLDEN = {b"": 0x811C9DC5, b"a": 0x050C5D7E, b"ab": 0x70772D38, b"abc": 0x439C2F4B}


def test_key_names_are_fnv1_32_as_hypershift_names_them():
    for data, value in FNV1_32_GOLDEN.items():
        assert aescbc.key_name(data) == f"key-{value}"


def test_seed_generates_kubernetes_keys_of_the_asked_size():
    key = os.urandom(32)
    items = list(generate(512 * 1024, key))
    assert 512 * 1024 <= sum(len(v) for _, v in items) < 600 * 1024
    kinds = {k.split("/")[2] for k, _ in items}
    assert {"configmaps", "secrets", "pods"} <= kinds
    assert all(k.startswith("/kubernetes.io/") for k, _ in items)
    assert all(len(v) <= 1024 * 1024 for _, v in items)
    secrets = [v for k, v in items if k.startswith("/kubernetes.io/secrets/")]
    assert secrets and all(product_aescbc.decrypt(v, key) for v in secrets)


def test_render_uses_the_given_key():
    key = os.urandom(32)
    docs = render.manifests("x", members=1, encryption_key=key)
    assert docs[3]["data"]["key"] == __import__("base64").b64encode(key).decode()
    with pytest.raises(ValueError):
        render.manifests("x", members=2)


def test_render_binds_the_aws_identity_to_the_infra_id():
    """As hcp does (cmd/infra/aws/create_iam.go, cmd/cluster/aws/create.go): issuer, roles and the
    instance profile are named after the infraID; --external-dns-domain gives <service>-<name> hosts."""
    docs = render.manifests("x", members=1, infra_id="x-ab12c", external_dns_domain="hcp.example.com")
    hc, pool = docs[4]["spec"], docs[5]["spec"]
    assert hc["infraID"] == "x-ab12c" and hc["issuerURL"].endswith(".amazonaws.com/x-ab12c")
    roles = hc["platform"]["aws"]["rolesRef"]
    assert len(roles) == 7 and all(":role/x-ab12c-" in arn for arn in roles.values())
    assert pool["platform"]["aws"]["instanceProfile"] == "x-ab12c-worker"
    hosts = {s["service"]: s["servicePublishingStrategy"] for s in hc["services"]}
    assert hosts["APIServer"] == {"type": "Route", "route": {"hostname": "api-x.hcp.example.com"}}
    assert render.manifests("x", members=1)[4]["spec"]["infraID"].startswith("x-")


def test_df_shim_reports_the_volume(tmp_path):
    volume = tmp_path / "var" / "lib"
    (volume / "data").mkdir(parents=True)
    (volume / "data" / "f").write_bytes(b"x" * 100_000)
    env = {**os.environ, "HCP_SANDBOX_VOLUME": str(volume), "HCP_SANDBOX_VOLUME_CAPACITY": str(8 * 1024**3)}
    df = Path(render.__file__).with_name("df.py")

    def run(*args: str, **extra: str) -> str:
        out = subprocess.run(
            [sys.executable, str(df), *args], env={**env, **extra}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    lines = run("-B1", str(volume / "data")).splitlines()
    assert lines[0].split()[:2] == ["Filesystem", "1B-blocks"]
    assert lines[1].split()[1] == str(8 * 1024**3) and lines[1].split()[-1] == "/var/lib"
    assert run("-B1", "--output=avail", str(volume), HCP_SANDBOX_VOLUME_FREE="4096").split() == [
        "Avail",
        "4096",
    ]
    assert "8.0G" in run("-h", str(volume))


def test_s3_fault_queue(tmp_path):
    faults = tmp_path / "faults.json"
    add_s3_fault(faults, count=2, code=503)
    add_s3_fault(faults, count=1, drop=True, after_bytes=10)
    taken = [take_s3_fault(faults) for _ in range(4)]
    assert [f and (f["code"], f["drop"]) for f in taken] == [(503, False), (503, False), (None, True), None]
    with pytest.raises(ValueError):
        add_s3_fault(faults, count=1)


def test_s3_middleware_answers_slowdown(tmp_path):
    faults = tmp_path / "faults.json"
    app = S3FaultMiddleware(lambda environ, start: [b"ok"], faults)
    add_s3_fault(faults, count=1, code=503)
    seen = []
    environ = {"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc"), "PATH_INFO": "/b/k"}
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    assert seen == ["503 Slow Down"] and b"<Code>SlowDown</Code>" in body
    assert b"".join(app(environ, lambda status, headers: None)) == b"ok"


def test_cli_arguments():
    parser = build_parser()
    args = parser.parse_args(["up", "--dir", "d", "--cluster", "a:1", "--cluster", "b"])
    assert [(s.name, s.members) for s in cluster_specs(args)] == [("a", 1), ("b", 3)]
    args = parser.parse_args(["up", "--dir", "d", "--hosted-clusters", "2", "--members", "1"])
    assert [(s.name, s.members) for s in cluster_specs(args)] == [("hc-1", 1), ("hc-2", 1)]
    args = parser.parse_args(["fault", "--dir", "d", "s3", "--drop", "--after-bytes", "5", "--count", "2"])
    assert fault_spec(args) == {"kind": "s3", "drop": True, "after_bytes": 5, "count": 2}
    args = parser.parse_args(
        ["fault", "--dir", "d", "volume", "--namespace", "n", "--pod", "p", "--free-bytes", "9"]
    )
    assert fault_spec(args) == {"kind": "volume", "namespace": "n", "pod": "p", "free_bytes": 9}
    args = parser.parse_args(["fault", "--dir", "d", "clock", "--ahead-seconds", "660"])
    assert fault_spec(args) == {"kind": "clock", "ahead_seconds": 660.0}
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--dir", "d", "--members", "2"])
    assert parser.parse_args(["up", "--dir", "d"]).writes_per_second == 5.0  # the default
    assert parser.parse_args(["up", "--dir", "d", "--writes-per-second", "0.5"]).writes_per_second == 0.5
    for nothing in ("0", "-1", "x"):  # the writer sleeps 1/N s between writes
        with pytest.raises(SystemExit):
            parser.parse_args(["up", "--dir", "d", "--writes-per-second", nothing])


def test_encryption_is_per_cluster_with_a_default():
    parser = build_parser()
    args = parser.parse_args(
        ["up", "--dir", "d", "--cluster", "a:1:kms", "--cluster", "b", "--hosted-clusters", "1"]
    )
    assert [(s.name, s.encryption) for s in cluster_specs(args)] == [
        ("a", "kms"),
        ("b", "aescbc"),
        ("hc-1", "aescbc"),
    ]
    args = parser.parse_args(
        ["up", "--dir", "d", "--encryption", "kms", "--cluster", "a:3:aescbc", "--cluster", "b:1"]
    )
    specs = cluster_specs(args)
    assert [(s.name, s.encryption) for s in specs] == [("a", "aescbc"), ("b", "kms")]
    # What `up` hands the serve process, and what it parses back.
    assert [ClusterSpec.parse(str(s)) for s in specs] == specs
    with pytest.raises(ValueError, match="encryption"):
        ClusterSpec.parse("a:1:secretbox")


def test_render_kms_is_what_hcp_renders_with_a_kms_key_arn():
    arn = "arn:aws:kms:us-east-1:123456789012:key/k"
    objects = render.manifests("k", members=1, infra_id="k-abcde", kms_key_arn=arn)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == ["k-pull-secret", "k-ssh-key"]
    hc = next(o for o in objects if o["kind"] == "HostedCluster")
    role = "arn:aws:iam::123456789012:role/k-abcde-kms-provider"
    assert hc["spec"]["secretEncryption"] == {
        "type": "kms",
        "kms": {
            "provider": "AWS",
            "aws": {"region": "us-east-1", "activeKey": {"arn": arn}, "auth": {"awsKms": role}},
        },
    }


def test_s3_faults_are_not_spent_on_kms_requests(tmp_path):
    faults = tmp_path / "faults.json"
    app = S3FaultMiddleware(lambda environ, start: [b"ok"], faults)
    add_s3_fault(faults, count=1, code=503)
    kms = {"HTTP_X_AMZ_TARGET": "TrentService.Decrypt", "CONTENT_LENGTH": "0", "wsgi.input": io.BytesIO()}
    assert b"".join(app(kms, lambda status, headers: None)) == b"ok"
    assert take_s3_fault(faults) is not None, "the S3 fault is still queued"


def _api_replicas(store: Store, namespace: str) -> set[int]:
    names = ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver")
    return {store.get("deployments", namespace, n)["spec"]["replicas"] for n in names}


def test_clock_fault_moves_only_the_pause_check(tmp_path):
    """Paused until now + 10 min: not reconciled; 660 s ahead: the deadline has passed, replicas back."""
    store = Store()
    ns = seed_hosted_cluster(store, "tt", replicas=0)
    deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
    hc = store.get("hostedclusters", "clusters", "tt")
    hc["spec"]["pausedUntil"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
    hc["metadata"].pop("resourceVersion", None)
    store.replace("hostedclusters", hc)
    control = ControlPlane(store, SandboxPaths.of(tmp_path), (b"", b""))
    # A provisioned cluster of 3 members (what _provision leaves), without etcd processes.
    control.clusters[("clusters", "tt")] = ClusterRuntime("clusters", "tt", 3, phase="running")

    control.reconcile_all()
    assert _api_replicas(store, ns) == {0}, "paused: the API servers are left at 0"
    assert is_paused(hc["spec"]["pausedUntil"], control.now())

    with pytest.raises(ApiError) as err:
        asyncio.run(control.handle_fault({"kind": "clock", "ahead_seconds": -1}))
    assert err.value.code == 400
    answer = asyncio.run(control.handle_fault({"kind": "clock", "ahead_seconds": 660}))
    assert answer["ahead_seconds"] == 660.0
    assert not is_paused(hc["spec"]["pausedUntil"], control.now())
    # Real time did not move: the deadline is still ahead for everyone but HyperShift.
    assert is_paused(hc["spec"]["pausedUntil"])
    control.reconcile_all()
    assert _api_replicas(store, ns) == {3}, "past HyperShift's deadline: replicas put back"

    asyncio.run(control.handle_fault({"kind": "clock", "ahead_seconds": 0}))
    assert is_paused(hc["spec"]["pausedUntil"], control.now())


def test_the_replica_endpoint_has_its_own_fault_queue_and_connection(tmp_path: Path) -> None:
    """``up --replica-s3``: a fault with ``--replica`` fails the replica's endpoint only (its own queue),
    is refused without one, and ``airflow.env`` names the replica's connection, bucket and region."""
    from hcp_sandbox.faults import RuntimeFaults
    from hcp_sandbox.layout import REPLICA_BUCKET, REPLICA_REGION
    from hcp_sandbox.serve import airflow_connections

    paths = SandboxPaths.of(tmp_path)
    args = build_parser().parse_args(["fault", "--dir", "d", "s3", "--code", "503", "--replica"])
    spec = fault_spec(args)
    assert spec == {"kind": "s3", "code": 503, "count": 1, "replica": True}
    faults = RuntimeFaults(paths.s3_faults, lambda ns, pod: None, lambda: None, paths.s3_replica_faults)
    asyncio.run(faults.inject(spec))
    assert take_s3_fault(paths.s3_faults) is None
    assert take_s3_fault(paths.s3_replica_faults)["code"] == 503
    without = RuntimeFaults(paths.s3_faults, lambda ns, pod: None, lambda: None)
    with pytest.raises(ApiError, match="--replica-s3"):
        asyncio.run(without.inject(spec))

    assert "AIRFLOW_CONN_AWS_REPLICA" not in airflow_connections(paths, 1, 2, "b")
    env = airflow_connections(paths, 1, 2, "b", replica_s3_port=3)
    replica = json.loads(env["AIRFLOW_CONN_AWS_REPLICA"])
    assert replica["extra"]["endpoint_url"] == "https://127.0.0.1:3"
    assert replica["extra"]["region_name"] == REPLICA_REGION
    assert (env["HCP_ETCD_REPLICA_BUCKET"], env["HCP_ETCD_REPLICA_AWS_CONN_ID"]) == (
        REPLICA_BUCKET,
        "aws_replica",
    )


def test_stop_processes_also_stops_children_no_file_records(tmp_path: Path) -> None:
    """A serve process stopped (or killed) while it started the S3 server leaves a child whose pid no
    file records: `down` and a failed `up` still stop it, found by its command line; other processes
    that merely name the directory are left alone."""
    from hcp_sandbox.cli import stop_processes

    sleep = "import time; time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", sleep, "-m", "hcp_sandbox.s3", "--port-file", f"{tmp_path}/s3.port"]
    )
    bystander = subprocess.Popen([sys.executable, "-c", sleep, f"{tmp_path}/logs/serve.log"])
    try:
        assert stop_processes(SandboxPaths.of(tmp_path), timeout=1) == []
        assert child.wait(timeout=10) != 0
        assert bystander.poll() is None
    finally:
        for proc in (child, bystander):
            proc.kill()
            proc.wait()


def test_the_controllers_wake_for_the_next_pod_timer_else_at_the_idle_tick(tmp_path: Path) -> None:
    """A pod's readiness or removal delay is met when it falls due, not at the next tick; a timer that
    already fired (a Ready pod keeps its ready-at) does not keep the loop spinning."""
    store = Store()
    seed_hosted_cluster(store, "tt", replicas=3)
    control = ControlPlane(store, SandboxPaths.of(tmp_path), (b"", b""))
    rt = ClusterRuntime("clusters", "tt", 3, phase="running")
    control.clusters[("clusters", "tt")] = rt
    now = 1000.0
    assert control.next_wake(now) == IDLE_TICK, "nothing due: the idle tick"
    rt.timers.update({"kas-a": now - 5.0, "kas-b": now + 0.2, "kas-c": now + 0.7})
    assert control.next_wake(now) == pytest.approx(0.2), "the earliest timer still ahead"
    assert control.next_wake(now + 0.5) == pytest.approx(0.2), "then the next one"
    assert control.next_wake(now + 0.8) == IDLE_TICK, "all fired: the idle tick again"
