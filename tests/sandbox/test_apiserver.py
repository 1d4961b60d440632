"""The sandbox API server driven by real clients: the kubernetes Python client and kubectl."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from websocket import WebSocketConnectionClosedException

from hcp_sandbox.apiserver import json_patch, merge_patch
from hcp_sandbox.errors import ApiError
from hcp_sandbox.store import Store

CP = "clusters-x"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def raw(
    server,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = "default",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTPS request with urllib; returns (status, headers, decoded JSON or text)."""
    ctx = ssl.create_default_context(cadata=server._ca.decode())
    if token == "default":
        token = server.token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None and "Content-Type" not in (headers or {}):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            status, hdrs, payload = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, payload = exc.code, dict(exc.headers), exc.read()
    text = payload.decode()
    try:
        return status, hdrs, json.loads(text)
    except ValueError:
        return status, hdrs, text


def writes_since(server, seq: int) -> list[dict[str, Any]]:
    _, _, log = raw(server, "GET", f"/sandbox/v1/requests?since={seq}")
    return [
        e for e in log["items"] if e["verb"] in ("create", "update", "patch", "delete") and e["code"] < 300
    ]


def latest_seq(server) -> int:
    return raw(server, "GET", "/sandbox/v1/requests?since=0")[2]["latest"]


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


@pytest.fixture
def kubectl(api_server, tmp_path: Path):
    """Run kubectl against the server; returns (returncode, stdout, stderr)."""
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed (needed to check the sandbox against the real CLI)")
    cache = tmp_path / "kube-cache"

    def run(*args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> tuple[int, str, str]:
        proc = subprocess.run(
            [binary, f"--kubeconfig={kubeconfig or api_server.kubeconfig}", f"--cache-dir={cache}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


# ---------------------------------------------------------------------------------------------
# version, health, auth, discovery
# ---------------------------------------------------------------------------------------------


def test_version_and_health(api_server, api_client) -> None:
    info = client.VersionApi(api_client).get_code()
    assert (info.major, info.minor) == ("1", "32")
    assert info.git_version.startswith("v1.32.")
    assert raw(api_server, "GET", "/healthz")[2] == "ok"
    assert raw(api_server, "GET", "/readyz")[2] == "ok"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_bad_token_is_401_status(api_server, token: str | None) -> None:
    code, _, body = raw(api_server, "GET", "/api/v1/namespaces", token=token)
    assert code == 401
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    # The exec upgrade is authenticated too.
    code, _, _ = raw(api_server, "GET", f"/api/v1/namespaces/{CP}/pods/etcd-0/exec?command=ls", token=token)
    assert code == 401


def test_aggregated_discovery_only_when_asked(api_server) -> None:
    accept = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    code, headers, body = raw(api_server, "GET", "/apis", headers={"Accept": accept})
    assert code == 200
    assert headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    groups = {g["metadata"]["name"]: g for g in body["items"]}
    hc = groups["hypershift.openshift.io"]["versions"][0]["resources"]
    hc = next(r for r in hc if r["resource"] == "hostedclusters")
    assert hc["shortNames"] == ["hc", "hcs"] and hc["scope"] == "Namespaced"
    apps = groups["apps"]["versions"][0]["resources"]
    deploy = next(r for r in apps if r["resource"] == "deployments")
    scale = next(s for s in deploy["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}

    code, headers, body = raw(api_server, "GET", "/api", headers={"Accept": accept})
    assert [g["metadata"]["name"] for g in body["items"]] == [""]
    pods = next(r for r in body["items"][0]["versions"][0]["resources"] if r["resource"] == "pods")
    assert {
        "subresource": "exec",
        "responseKind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "verbs": ["create", "get"],
    } in pods["subresources"]

    # Plain JSON gets legacy discovery under a plain content type.
    code, headers, body = raw(api_server, "GET", "/apis", headers={"Accept": "application/json"})
    assert (
        headers["Content-Type"].startswith("application/json")
        and "apidiscovery" not in headers["Content-Type"]
    )
    assert body["kind"] == "APIGroupList"
    assert {g["name"] for g in body["groups"]} >= {"apps", "hypershift.openshift.io", "coordination.k8s.io"}


def test_legacy_resource_lists(api_server) -> None:
    _, _, core = raw(api_server, "GET", "/api/v1")
    names = {r["name"]: r for r in core["resources"]}
    assert names["pods/exec"]["kind"] == "PodExecOptions"
    assert names["namespaces"]["namespaced"] is False
    _, _, apps = raw(api_server, "GET", "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    code, _, body = raw(api_server, "GET", "/apis/nope.example.com/v1")
    assert code == 404 and body["reason"] == "NotFound"


# ---------------------------------------------------------------------------------------------
# CRUD with the Python client
# ---------------------------------------------------------------------------------------------


def test_crud_core_and_custom(api_server, api_client) -> None:
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)

    secret = core.create_namespaced_secret(
        "clusters",
        {"metadata": {"name": "x-etcd-encryption-key", "labels": {"k": "v"}}, "data": {"key": "AAAA"}},
    )
    assert (
        secret.metadata.namespace == "clusters" and secret.metadata.uid and secret.metadata.resource_version
    )
    assert core.read_namespaced_secret("x-etcd-encryption-key", "clusters").data == {"key": "AAAA"}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret("clusters", {"metadata": {"name": "x-etcd-encryption-key"}})
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"

    # List: in a namespace, across namespaces, with label selectors.
    assert [s.metadata.name for s in core.list_namespaced_secret("clusters", label_selector="k=v").items] == [
        "x-etcd-encryption-key"
    ]
    assert core.list_namespaced_secret("clusters", label_selector="k!=v").items == []
    pods = core.list_pod_for_all_namespaces(label_selector="app in (etcd,other)")
    assert sorted(p.metadata.name for p in pods.items) == ["etcd-0", "etcd-1", "etcd-2"]
    assert int(pods.metadata.resource_version) > 0
    hcs = custom.list_cluster_custom_object("hypershift.openshift.io", "v1beta1", "hostedclusters")
    assert hcs["kind"] == "HostedClusterList" and [h["metadata"]["name"] for h in hcs["items"]] == ["x"]

    # 404 Status, with the real server's wording.
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(
            "hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters", "nope"
        )
    assert exc.value.status == 404
    assert status_of(exc.value)["message"] == 'hostedclusters.hypershift.openshift.io "nope" not found'

    # Namespaced create needs the namespace.
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("ghost", {"metadata": {"name": "c"}})
    assert exc.value.status == 404 and status_of(exc.value)["message"] == 'namespaces "ghost" not found'

    # Replace with a stale resourceVersion -> 409 Conflict; fresh one works.
    stale = core.read_namespaced_secret("x-etcd-encryption-key", "clusters")
    stale.data = {"key": "BBBB"}
    core.replace_namespaced_secret("x-etcd-encryption-key", "clusters", stale)
    stale.data = {"key": "CCCC"}
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_secret("x-etcd-encryption-key", "clusters", stale)
    assert exc.value.status == 409
    assert status_of(exc.value)["message"] == (
        'Operation cannot be fulfilled on secrets "x-etcd-encryption-key": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert core.read_namespaced_secret("x-etcd-encryption-key", "clusters").data == {"key": "BBBB"}

    # Delete returns the object; deleting a namespace deletes its content.
    core.delete_namespaced_secret("x-etcd-encryption-key", "clusters")
    assert core.list_namespaced_secret("clusters").items == []
    core.delete_namespace(CP)
    assert core.list_namespaced_pod(CP).items == []
    assert api_server.store.list("deployments", CP) == []


def test_invalid_names_are_422(api_client) -> None:
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("clusters", {"metadata": {"name": "Bad_Name"}})
    body = status_of(exc.value)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["message"].startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"'
    )


def test_dry_run_stores_nothing(api_server, api_client) -> None:
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map("clusters", {"metadata": {"name": "dry"}}, dry_run="All")
    assert created.metadata.name == "dry"
    assert api_server.store.find("configmaps", "clusters", "dry") is None


# ---------------------------------------------------------------------------------------------
# HostedCluster validation, patches, status subresource
# ---------------------------------------------------------------------------------------------


def _hc_patch(api_client, body: Any, **kwargs: Any) -> dict[str, Any]:
    return client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters", "x", body, **kwargs
    )


def test_paused_until_validation(api_server, api_client) -> None:
    for good in ("true", "false", "2030-01-02T03:04:05Z", "2030-01-02T03:04:05+02:00"):
        assert _hc_patch(api_client, {"spec": {"pausedUntil": good}})["spec"]["pausedUntil"] == good
    assert "pausedUntil" not in _hc_patch(api_client, {"spec": {"pausedUntil": None}})["spec"]

    # The CRD's rule is a pattern, not a date check: a month 13 is stored, and HyperShift then reads it
    # as not paused (InvalidPausedUntilValue, hcp_sandbox.hypershift).
    assert _hc_patch(api_client, {"spec": {"pausedUntil": "2030-13-45T00:00:00Z"}})["spec"]["pausedUntil"]
    _hc_patch(api_client, {"spec": {"pausedUntil": None}})

    seq = latest_seq(api_server)
    for bad in ("", "yes", "TRUE", "2030-01-02 03:04:05Z", "2030-01-02T03:04:05.0000000000000000Z"):
        with pytest.raises(ApiException) as exc:
            _hc_patch(api_client, {"spec": {"pausedUntil": bad}})
        body = status_of(exc.value)
        assert exc.value.status == 422 and body["reason"] == "Invalid", bad
        assert body["details"]["causes"][0]["field"] == "spec.pausedUntil"
        assert "spec.pausedUntil" in body["message"]
        assert (
            body["details"]["kind"] == "HostedCluster"
            and body["details"]["group"] == "hypershift.openshift.io"
        )
    assert writes_since(api_server, seq) == []
    assert "pausedUntil" not in api_server.store.get("hostedclusters", "clusters", "x")["spec"]


def _hc_with_url(name: str, urls: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "hypershift.openshift.io/v1beta1",
        "kind": "HostedCluster",
        "metadata": {"name": name},
        "spec": {
            "etcd": {
                "managementType": "Managed",
                "managed": {"storage": {"type": "PersistentVolume", "restoreSnapshotURL": urls}},
            }
        },
    }


def test_restore_snapshot_url_validation(api_server, api_client) -> None:
    custom = client.CustomObjectsApi(api_client)
    args = ("hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters")
    good = "https://s3.example.com/bucket/snap.db?X-Amz-Signature=abc"
    # The scheme is a CEL rule of the list (upstream's CRD), so the API server names the list; the
    # length is the item's maxLength.
    bad_cases = {
        "http://insecure.example.com/snap.db": (
            "must be a valid URL with scheme https or s3",
            "spec.etcd.managed.storage.restoreSnapshotURL",
        ),
        "https://s3.example.com/" + "a" * 1024: (
            "Too long",
            "spec.etcd.managed.storage.restoreSnapshotURL[0]",
        ),
    }
    for url, (fragment, field) in bad_cases.items():
        with pytest.raises(ApiException) as exc:
            custom.create_namespaced_custom_object(*args, _hc_with_url("r1", [url]))
        assert exc.value.status == 422, url
        body = status_of(exc.value)
        assert fragment in body["message"]
        assert body["details"]["causes"][0]["field"] == field
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*args, _hc_with_url("r1", [good, good]))
    assert exc.value.status == 422 and "more than 1 entry" in status_of(exc.value)["message"]
    assert api_server.store.find("hostedclusters", "clusters", "r1") is None

    # Exactly 1024 characters is fine; s3:// too.
    at_limit = "https://" + "a" * (1024 - len("https://"))
    custom.create_namespaced_custom_object(*args, _hc_with_url("r1", [at_limit]))
    custom.create_namespaced_custom_object(*args, _hc_with_url("r2", ["s3://bucket/key"]))

    # Immutable after creation.
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            *args, "r1", {"spec": {"etcd": {"managed": {"storage": {"restoreSnapshotURL": [good]}}}}}
        )
    assert exc.value.status == 422 and "restoreSnapshotURL is immutable" in status_of(exc.value)["message"]


def test_json_patch_and_strategic_merge(api_server) -> None:
    path = "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/hostedclusters/x"
    jp = {"Content-Type": "application/json-patch+json"}
    code, _, body = raw(
        api_server, "PATCH", path, [{"op": "add", "path": "/spec/pausedUntil", "value": "true"}], headers=jp
    )
    assert code == 200 and body["spec"]["pausedUntil"] == "true"
    seq = latest_seq(api_server)
    code, _, body = raw(
        api_server,
        "PATCH",
        path,
        [
            {"op": "test", "path": "/spec/pausedUntil", "value": "false"},
            {"op": "replace", "path": "/spec/pausedUntil", "value": "false"},
        ],
        headers=jp,
    )
    assert code == 422 and body["reason"] == "Invalid" and "test failed" in body["message"]
    # A custom resource refuses strategic merge patch, like a CRD does.
    code, _, body = raw(
        api_server,
        "PATCH",
        path,
        {"spec": {"pausedUntil": "false"}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    # A patch carrying a stale resourceVersion is a failed precondition.
    code, _, body = raw(
        api_server,
        "PATCH",
        path,
        {"metadata": {"resourceVersion": "1"}, "spec": {"pausedUntil": "false"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert code == 409 and body["reason"] == "Conflict"
    assert writes_since(api_server, seq) == []
    assert api_server.store.get("hostedclusters", "clusters", "x")["spec"]["pausedUntil"] == "true"


def test_status_subresource(api_server, api_client) -> None:
    custom = client.CustomObjectsApi(api_client)
    args = ("hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters", "x")
    condition = {"type": "Available", "status": "True"}
    updated = custom.patch_namespaced_custom_object_status(*args, {"status": {"conditions": [condition]}})
    assert updated["status"]["conditions"] == [condition]
    generation = updated["metadata"]["generation"]
    # Writes to the main resource cannot change .status.
    after = custom.patch_namespaced_custom_object(
        *args, {"spec": {"pausedUntil": "true"}, "status": {"conditions": []}}
    )
    assert after["status"]["conditions"] == [condition]
    assert after["metadata"]["generation"] == generation + 1
    # The status subresource cannot change .spec.
    after = custom.patch_namespaced_custom_object_status(
        *args, {"spec": {"pausedUntil": "false"}, "status": {}}
    )
    assert after["spec"]["pausedUntil"] == "true"


def test_patch_helpers() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3},
        "l": [2],
    }
    doc = {"a": [1, 2], "b": {"c/d": 1}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "remove", "path": "/b/c~1d"},
        {"op": "move", "from": "/a/0", "path": "/z"},
    ]
    assert json_patch(doc, ops) == {"a": [2, 3], "b": {}, "z": 1}
    assert doc == {"a": [1, 2], "b": {"c/d": 1}}, "the input is not modified"


# ---------------------------------------------------------------------------------------------
# scale subresource
# ---------------------------------------------------------------------------------------------


def test_scale_with_python_client(api_server, api_client) -> None:
    apps = client.AppsV1Api(api_client)
    scale = apps.read_namespaced_deployment_scale("kube-apiserver", CP)
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (3, 3, "app=kube-apiserver")
    # The Python client sends strategic-merge-patch to /scale.
    scaled = apps.patch_namespaced_deployment_scale("kube-apiserver", CP, {"spec": {"replicas": 0}})
    assert scaled.spec.replicas == 0
    assert api_server.store.get("deployments", CP, "kube-apiserver")["spec"]["replicas"] == 0
    sts = apps.patch_namespaced_stateful_set_scale("etcd", CP, {"spec": {"replicas": 1}})
    assert sts.spec.replicas == 1 and sts.status.selector == "app=etcd"
    # PUT of a Scale with a stale resourceVersion -> 409.
    stale = scale
    stale.spec.replicas = 2
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment_scale("kube-apiserver", CP, stale)
    assert exc.value.status == 409


# ---------------------------------------------------------------------------------------------
# exec with the Python client
# ---------------------------------------------------------------------------------------------


def _exec(api_client, command: list[str], pod: str = "etcd-0", **kwargs: Any) -> Any:
    return stream(
        client.CoreV1Api(api_client).connect_get_namespaced_pod_exec,
        pod,
        CP,
        command=command,
        stderr=True,
        stdout=True,
        stdin=kwargs.pop("stdin", False),
        tty=False,
        **kwargs,
    )


def test_exec_output_and_exit_codes(api_client) -> None:
    out = _exec(api_client, ["sh", "-c", "echo hello world; whoami"], container="etcd")
    assert out == "hello world\nclusters-x/etcd-0/etcd\n"
    # No container: the default-container annotation wins.
    assert _exec(api_client, ["whoami"], pod="etcd-1") == "clusters-x/etcd-1/etcd\n"

    ws = _exec(
        api_client, ["sh", "-c", "echo out; err oops; exit 3"], container="etcd", _preload_content=False
    )
    ws.run_forever(timeout=10)
    assert ws.read_stdout() == "out\n" and ws.read_stderr() == "oops\n"
    assert ws.returncode == 3
    ws.close()

    ws = _exec(api_client, ["sh", "-c", "echo ok"], container="etcd-metrics", _preload_content=False)
    ws.run_forever(timeout=10)
    assert ws.returncode == 0


def test_exec_binary_stdin_and_large_output(api_client) -> None:
    size = 5 * 1024 * 1024 + 123
    ws = _exec(api_client, ["bytes", str(size)], container="etcd", _preload_content=False, binary=True)
    received = bytearray()
    while ws.is_open():
        ws.update(timeout=5)
        received += ws.read_stdout(timeout=0) or b""
    received += ws.read_stdout(timeout=0) or b""
    assert len(received) == size
    assert bytes(received[:512]) == bytes(range(256)) * 2
    assert ws.returncode == 0

    ws = _exec(api_client, ["cat"], container="etcd", stdin=True, _preload_content=False, binary=True)
    ws.write_stdin(b"\x00\x01binary\xff")
    ws.close_channel(0)  # v5: end of stdin
    ws.run_forever(timeout=10)
    assert ws.read_stdout() == b"\x00\x01binary\xff"
    assert ws.returncode == 0


def test_exec_refusals(api_server, api_client) -> None:
    core = client.CoreV1Api(api_client)
    # The client turns a failed handshake into ApiException(status=0), then trips on its empty body.
    with pytest.raises((ApiException, AttributeError)):
        _exec(api_client, ["ls"], pod="nope")
    code, _, body = raw(api_server, "GET", f"/api/v1/namespaces/{CP}/pods/nope/exec?command=ls")
    assert code == 404 and body["message"] == 'pods "nope" not found'
    code, _, body = raw(
        api_server, "GET", f"/api/v1/namespaces/{CP}/pods/etcd-0/exec?command=ls&container=bogus"
    )
    assert code == 400 and body["message"] == "container bogus is not valid for pod etcd-0"
    code, _, body = raw(
        api_server, "POST", f"/api/v1/namespaces/{CP}/pods/etcd-0/exec?command=ls&container=etcd&stdout=true"
    )
    assert code == 400 and body["message"] == "Upgrade request required"
    pod = core.read_namespaced_pod_status("etcd-2", CP)
    api_server.store.update_status("pods", CP, "etcd-2", {**pod.status.to_dict(), "phase": "Succeeded"})
    code, _, body = raw(api_server, "GET", f"/api/v1/namespaces/{CP}/pods/etcd-2/exec?command=ls")
    assert code == 400 and "completed pod" in body["message"]


def test_exec_handler_failure_is_internal_error(api_client) -> None:
    ws = _exec(api_client, ["fail"], container="etcd", _preload_content=False)
    ws.run_forever(timeout=10)
    status = json.loads(ws.read_channel(3))
    assert status["status"] == "Failure" and status["reason"] == "InternalError"
    assert "the fake runtime exploded" in status["message"]


# ---------------------------------------------------------------------------------------------
# faults and the request log
# ---------------------------------------------------------------------------------------------


def test_api_fault_fails_next_n_requests(api_server, api_client) -> None:
    custom = client.CustomObjectsApi(api_client)
    args = ("hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters", "x")
    code, _, fault = raw(
        api_server,
        "POST",
        "/sandbox/v1/faults",
        {"kind": "api", "resource": "hostedclusters", "verb": "get", "code": 500, "count": 2},
    )
    assert code == 201 and fault["count"] == 2
    assert raw(api_server, "GET", "/sandbox/v1/faults")[2]["items"][0]["resource"] == "hostedclusters"
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            custom.get_namespaced_custom_object(*args)
        assert exc.value.status == 500 and status_of(exc.value)["reason"] == "InternalError"
    assert custom.get_namespaced_custom_object(*args)["metadata"]["name"] == "x"
    assert raw(api_server, "GET", "/sandbox/v1/faults")[2]["items"] == []

    # 409 on patch: nothing is written.
    raw(
        api_server,
        "POST",
        "/sandbox/v1/faults",
        {"kind": "api", "resource": "hostedclusters", "verb": "patch", "code": 409, "count": 1},
    )
    before = api_server.store.get("hostedclusters", "clusters", "x")
    with pytest.raises(ApiException) as exc:
        _hc_patch(api_client, {"spec": {"pausedUntil": "true"}})
    assert exc.value.status == 409 and "the object has been modified" in status_of(exc.value)["message"]
    assert api_server.store.get("hostedclusters", "clusters", "x") == before

    # Subresource faults only hit the subresource; DELETE clears pending faults.
    raw(
        api_server,
        "POST",
        "/sandbox/v1/faults",
        {"kind": "api", "resource": "deployments/scale", "verb": "*", "code": 503, "count": 5},
    )
    apps = client.AppsV1Api(api_client)
    assert apps.read_namespaced_deployment("kube-apiserver", CP).spec.replicas == 3
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment_scale("kube-apiserver", CP)
    assert exc.value.status == 503
    assert raw(api_server, "DELETE", "/sandbox/v1/faults")[2] == {"cleared": 1}
    assert apps.read_namespaced_deployment_scale("kube-apiserver", CP).spec.replicas == 3

    code, _, body = raw(api_server, "POST", "/sandbox/v1/faults", {"kind": "s3"})
    assert code == 400 and "no runtime fault handler" in body["message"]


def test_exec_drop_cuts_the_stream(api_server, api_client) -> None:
    raw(
        api_server,
        "POST",
        "/sandbox/v1/faults",
        {"kind": "exec-drop", "namespace": CP, "pod": "etcd-0", "count": 1, "after_bytes": 100_000},
    )
    ws = _exec(api_client, ["bytes", "1000000"], container="etcd", _preload_content=False, binary=True)
    received = bytearray()
    with pytest.raises(WebSocketConnectionClosedException):
        while ws.is_open():
            ws.update(timeout=5)
            received += ws.read_stdout(timeout=0) or b""
    assert 0 < len(received) <= 100_000
    assert ws.read_channel(3) in (b"", "")

    # Right after the upgrade (after_bytes 0): the preloading client errors out.
    raw(api_server, "POST", "/sandbox/v1/faults", {"kind": "exec-drop", "namespace": CP, "pod": "etcd-1"})
    with pytest.raises((ApiException, AttributeError)):
        _exec(api_client, ["sh", "-c", "echo never"], pod="etcd-1", container="etcd")
    # The fault is spent: the next session works.
    assert _exec(api_client, ["sh", "-c", "echo again"], pod="etcd-1", container="etcd") == "again\n"


def test_request_log(api_server, api_client) -> None:
    seq = latest_seq(api_server)
    client.CoreV1Api(api_client).read_namespaced_pod("etcd-0", CP)
    _hc_patch(api_client, {"spec": {"pausedUntil": "true"}})
    _, _, log = raw(api_server, "GET", f"/sandbox/v1/requests?since={seq}")
    entries = [
        (e["verb"], e["plural"], e["namespace"], e["name"], e["code"]) for e in log["items"] if e["plural"]
    ]
    assert entries == [("get", "pods", CP, "etcd-0", 200), ("patch", "hostedclusters", "clusters", "x", 200)]
    # The JSON-lines file mirrors the in-memory log (it also holds the log read itself).
    _, _, everything = raw(api_server, "GET", "/sandbox/v1/requests?since=0")
    lines = [json.loads(line) for line in api_server.request_log.read_text().splitlines()]
    assert lines[: len(everything["items"])] == everything["items"]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert all("body" not in e for e in lines)


# ---------------------------------------------------------------------------------------------
# kubectl
# ---------------------------------------------------------------------------------------------


@pytest.mark.kubectl
def test_kubectl_procedure_commands(api_server, kubectl) -> None:
    code, out, err = kubectl("get", "hc", "-n", "clusters")
    assert code == 0, err
    assert out.split()[:3] == ["NAME", "AGE", "x"]

    code, out, err = kubectl(
        "patch", "-n", "clusters", "hostedclusters/x", "-p", '{"spec":{"pausedUntil":"true"}}', "--type=merge"
    )
    assert code == 0, err
    assert "patched" in out
    assert api_server.store.get("hostedclusters", "clusters", "x")["spec"]["pausedUntil"] == "true"

    code, out, err = kubectl(
        "scale",
        "deployment",
        "-n",
        CP,
        "--replicas=0",
        "kube-apiserver",
        "openshift-apiserver",
        "openshift-oauth-apiserver",
    )
    assert code == 0, err
    assert out.count("scaled") == 3
    for name in ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"):
        assert api_server.store.get("deployments", CP, name)["spec"]["replicas"] == 0

    # --current-replicas: GET Scale, PUT it back without a Content-Type.
    code, _, err = kubectl(
        "scale", "deployment", "-n", CP, "kube-apiserver", "--current-replicas=0", "--replicas=3"
    )
    assert code == 0, err
    assert api_server.store.get("deployments", CP, "kube-apiserver")["spec"]["replicas"] == 3
    code, _, err = kubectl(
        "scale", "deployment", "-n", CP, "kube-apiserver", "--current-replicas=1", "--replicas=2"
    )
    assert code != 0 and "Expected replicas to be 1, was 3" in err

    code, out, err = kubectl(
        "get", "pods", "-n", CP, "-l", "app=etcd", "-o", "jsonpath={.items[*].metadata.name}"
    )
    assert code == 0 and out == "etcd-0 etcd-1 etcd-2", err


@pytest.mark.kubectl
def test_kubectl_errors(api_server, kubectl, tmp_path: Path) -> None:
    code, _, err = kubectl(
        "patch", "-n", "clusters", "hostedclusters/x", "-p", '{"spec":{"pausedUntil":""}}', "--type=merge"
    )
    assert code == 1 and "spec.pausedUntil" in err and "is invalid" in err
    code, _, err = kubectl(
        "patch", "-n", "clusters", "hostedclusters/x", "-p", '{"spec":{"pausedUntil":"true"}}'
    )
    assert code == 1 and "strategic-merge-patch" in err and "not supported" in err
    code, _, err = kubectl("get", "hc", "nope", "-n", "clusters")
    assert code == 1 and 'hostedclusters.hypershift.openshift.io "nope" not found' in err

    bad = api_server.write_kubeconfig(tmp_path / "bad-kubeconfig", "not-the-token")
    code, _, err = kubectl("get", "hc", "-n", "clusters", kubeconfig=bad)
    assert code == 1 and "You must be logged in to the server (Unauthorized)" in err


@pytest.mark.kubectl
def test_kubectl_exec(api_server, kubectl) -> None:
    code, out, err = kubectl("exec", "etcd-0", "-n", CP, "-c", "etcd", "--", "sh", "-c", "echo hi; err warn")
    assert (code, out, err) == (0, "hi\n", "warn\n")
    code, out, err = kubectl(
        "exec", "etcd-0", "-n", CP, "-c", "etcd", "--", "sh", "-c", "echo partial; exit 3"
    )
    assert code == 3 and out == "partial\n"
    assert "command terminated with exit code 3" in err
    code, _, err = kubectl("exec", "etcd-0", "-n", CP, "-c", "bogus", "--", "ls")
    assert code == 1 and "container bogus is not valid for pod etcd-0" in err


def test_store_label_selectors_and_events() -> None:
    store = Store()
    events: list[tuple[str, str, str]] = []
    store.subscribe(lambda event, plural, obj: events.append((event, plural, obj["metadata"]["name"])))
    store.create("namespaces", {"metadata": {"name": "ns"}})
    for name, labels in (("a", {"app": "etcd", "tier": "db"}), ("b", {"app": "kas"}), ("c", {})):
        store.create("configmaps", {"metadata": {"name": name, "namespace": "ns", "labels": labels}})

    def names(selector: str) -> list[str]:
        return [o["metadata"]["name"] for o in store.list("configmaps", "ns", selector)]

    assert names("app=etcd") == ["a"]
    assert names("app==kas") == ["b"]
    assert names("app!=etcd") == ["b", "c"]
    assert names("app") == ["a", "b"]
    assert names("!app") == ["c"]
    assert names("app in (etcd, kas),tier") == ["a"]
    assert names("app notin (etcd)") == ["b", "c"]
    with pytest.raises(ApiError) as exc:
        names("app=(")
    assert exc.value.code == 400
    store.delete("namespaces", None, "ns")
    assert events[-1] == ("DELETED", "namespaces", "ns")
    assert {e[2] for e in events if e[0] == "DELETED"} == {"a", "b", "c", "ns"}
    assert store.list("configmaps") == []


def test_authorizer_and_runtime_fault_handler(api_start) -> None:
    calls: list[tuple[str, str, str, str | None, str | None]] = []
    received: list[dict] = []

    def authorizer(verb: str, plural: str, namespace: str, subresource: str | None, name: str | None) -> bool:
        calls.append((verb, plural, namespace, subresource, name))
        return not (plural == "secrets" and verb in ("get", "list"))

    async def fault_handler(spec: dict) -> dict:
        received.append(spec)
        return {"injected": spec["kind"]}

    server = api_start(authorizer=authorizer, fault_handler=fault_handler)
    code, _, body = raw(server, "GET", "/api/v1/namespaces/clusters/secrets/x-etcd-encryption-key")
    assert code == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith('secrets "x-etcd-encryption-key" is forbidden')
    code, _, _ = raw(
        server,
        "PATCH",
        f"/apis/apps/v1/namespaces/{CP}/deployments/kube-apiserver/scale",
        {"spec": {"replicas": 1}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert code == 200
    assert ("patch", "deployments", CP, "scale", "kube-apiserver") in calls

    code, _, body = raw(server, "POST", "/sandbox/v1/faults", {"kind": "etcd-stop", "pod": "etcd-0"})
    assert code == 201 and body == {"injected": "etcd-stop"}
    assert received == [{"kind": "etcd-stop", "pod": "etcd-0"}]


def test_admin_token_is_not_authorized_and_is_logged_as_admin(api_start) -> None:
    """The second token (tests' setup and inspection) passes where the restricted one gets 403."""
    server = api_start(authorizer=lambda *_: False, admin_token="admin-token")
    path = "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/hostedclusters/x"
    seq = raw(server, "GET", "/sandbox/v1/requests?since=0")[2]["latest"]
    assert raw(server, "GET", path)[0] == 403
    code, _, body = raw(server, "GET", path, token="admin-token")
    assert code == 200 and body["metadata"]["name"] == "x"
    assert raw(server, "GET", path, token="wrong-token")[0] == 401
    items = raw(server, "GET", f"/sandbox/v1/requests?since={seq}")[2]["items"]
    assert [(i["user"], i["code"]) for i in items if i["path"] == path] == [
        ("token", 403),
        ("admin", 200),
        (None, 401),
    ]


def test_create_ignores_status_and_honours_generate_name(api_server, api_client) -> None:
    custom = client.CustomObjectsApi(api_client)
    obj = _hc_with_url("fresh", ["s3://bucket/key"])
    obj["status"] = {"conditions": [{"type": "Available", "status": "True"}]}
    created = custom.create_namespaced_custom_object(
        "hypershift.openshift.io", "v1beta1", "clusters", "hostedclusters", obj
    )
    assert "status" not in created and created["metadata"]["generation"] == 1
    cm = client.CoreV1Api(api_client).create_namespaced_config_map(
        "clusters", {"metadata": {"generateName": "drill-"}}
    )
    assert cm.metadata.name.startswith("drill-") and len(cm.metadata.name) == len("drill-") + 5


def test_exec_only_requested_streams(api_client) -> None:
    out = stream(
        client.CoreV1Api(api_client).connect_get_namespaced_pod_exec,
        "etcd-0",
        CP,
        command=["sh", "-c", "echo visible; err hidden"],
        container="etcd",
        stdout=True,
        stderr=False,
        stdin=False,
        tty=False,
    )
    assert out == "visible\n"


@pytest.mark.kubectl
def test_kubectl_exec_stdin(kubectl) -> None:
    code, out, err = kubectl(
        "exec", "-i", "etcd-0", "-n", CP, "-c", "etcd", "--", "cat", stdin="line1\nline2\n"
    )
    assert (code, out) == (0, "line1\nline2\n"), err


def test_watch_python_client(api_server, api_client) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("clusters", {"metadata": {"name": "before"}})
    listed = core.list_namespaced_config_map("clusters")
    timer = threading.Timer(
        0.3,
        lambda: api_server.store.create(
            "configmaps", {"metadata": {"name": "after", "namespace": "clusters"}}
        ),
    )
    timer.start()
    # From the list's resourceVersion: only what changed after it.
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "clusters",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
    ]
    timer.join()
    assert events == [("ADDED", "after")]
    # Without a resourceVersion: what exists first; deletions too; other namespaces are not seen.
    core.delete_namespaced_config_map("before", "clusters")
    api_server.store.create("configmaps", {"metadata": {"name": "elsewhere", "namespace": CP}})
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(core.list_namespaced_config_map, "clusters", timeout_seconds=1)
    ]
    assert events == [("ADDED", "after")]
    # Resuming from an old resourceVersion replays the history after it, deletions included.
    replayed = []
    w = watch.Watch()
    for e in w.stream(
        core.list_namespaced_config_map, "clusters", resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    ):  # fmt: skip
        replayed.append((e["type"], e["object"].metadata.name))
        if len(replayed) == 2:
            w.stop()
    assert replayed == [
        ("ADDED", "after"),
        ("DELETED", "before"),
    ]


@pytest.mark.kubectl
def test_kubectl_wait_uses_watch(api_server, kubectl) -> None:
    condition = {
        "conditions": [{"type": "Available", "status": "True", "reason": "AsExpected", "message": ""}]
    }
    timer = threading.Timer(
        0.5, lambda: api_server.store.update_status("hostedclusters", "clusters", "x", condition)
    )
    timer.start()
    code, out, err = kubectl(
        "wait", "--for=condition=Available", "hostedcluster/x", "-n", "clusters", "--timeout=10s"
    )
    timer.join()
    assert code == 0, err
    assert "condition met" in out
