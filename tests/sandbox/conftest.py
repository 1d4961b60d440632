"""Fixtures for the sandbox API server tests: a CA, a running server, kubeconfigs, clients."""

from __future__ import annotations

import asyncio
import base64
import shlex
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hcp_sandbox import apiserver, pki
from hcp_sandbox.store import Store

API_TOKEN = "sandbox-test-token"


@dataclass
class ApiPki:
    ca_pem: bytes
    cert_path: Path
    key_path: Path


@pytest.fixture(scope="session")
def api_pki(tmp_path_factory: pytest.TempPathFactory) -> ApiPki:
    d = tmp_path_factory.mktemp("api-pki")
    ca_cert, ca_key = pki.make_ca()
    cert, key = pki.issue_cert(
        ca_cert, ca_key, "kube-apiserver", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    return ApiPki(ca_cert, d / "tls.crt", d / "tls.key")


@pytest.fixture(scope="session")
def api_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop in a background thread, shared by every server of the session."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-test-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


async def fake_exec(
    namespace: str,
    pod: dict[str, Any],
    container: str,
    command: list[str],
    stdin: asyncio.Queue[bytes | None] | None,
    stdout: Callable[[bytes], Awaitable[None]],
    stderr: Callable[[bytes], Awaitable[None]],
) -> int:
    """
    A toy shell: ``sh -c 'a; b'`` runs each of ``echo WORDS``, ``err WORDS``, ``exit N``,
    ``cat`` (stdin to stdout), ``bytes N`` (N bytes of a pattern), ``fail`` (raises),
    ``whoami`` (prints namespace/pod/container).
    """
    script = command[2] if command[:2] == ["sh", "-c"] else shlex.join(command)
    for statement in script.split(";"):
        words = shlex.split(statement)
        if not words:
            continue
        verb, args = words[0], words[1:]
        if verb == "echo":
            await stdout((" ".join(args) + "\n").encode())
        elif verb == "err":
            await stderr((" ".join(args) + "\n").encode())
        elif verb == "exit":
            return int(args[0])
        elif verb == "whoami":
            await stdout(f"{namespace}/{pod['metadata']['name']}/{container}\n".encode())
        elif verb == "cat":
            assert stdin is not None, "cat needs stdin"
            while (chunk := await stdin.get()) is not None:
                await stdout(chunk)
        elif verb == "bytes":
            remaining = int(args[0])
            block = bytes(range(256)) * 4096  # 1 MiB, every byte value
            while remaining > 0:
                n = min(remaining, len(block))
                await stdout(block[:n])
                remaining -= n
        elif verb == "fail":
            raise RuntimeError("the fake runtime exploded")
        else:
            await stderr(f"sh: {verb}: not found\n".encode())
            return 127
    return 0


@dataclass
class ApiServer:
    store: Store
    port: int
    url: str
    kubeconfig: Path
    loop: asyncio.AbstractEventLoop
    tmp_path: Path
    request_log: Path
    token: str = API_TOKEN

    def write_kubeconfig(self, path: Path, token: str) -> Path:
        ca = base64.b64encode(self._ca).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sandbox", "cluster": {"server": self.url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "admin"}}],
            "current-context": "sandbox",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    _ca: bytes = b""


def seed_hosted_cluster(store: Store, name: str = "x", namespace: str = "clusters", replicas: int = 3) -> str:
    """A HostedCluster and its control-plane namespace, like HyperShift makes them; returns that namespace."""
    cp = f"{namespace}-{name.replace('.', '-')}"
    for ns in (namespace, cp):
        if store.find("namespaces", None, ns) is None:
            store.create("namespaces", {"metadata": {"name": ns}})
    store.create(
        "hostedclusters",
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "etcd": {"managementType": "Managed", "managed": {"storage": {"type": "PersistentVolume"}}},
                "secretEncryption": {
                    "type": "aescbc",
                    "aescbc": {"activeKey": {"name": f"{name}-etcd-encryption-key"}},
                },
            },
        },
    )
    for deployment in ("kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"):
        created = store.create(
            "deployments",
            {
                "metadata": {"name": deployment, "namespace": cp, "labels": {"app": deployment}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": deployment}},
                    "template": {
                        "metadata": {"labels": {"app": deployment}},
                        "spec": {"containers": [{"name": deployment, "image": deployment}]},
                    },
                },
            },
        )
        store.update_status("deployments", cp, deployment, {"replicas": replicas, "readyReplicas": replicas})
        assert created
    store.create(
        "statefulsets",
        {
            "metadata": {"name": "etcd", "namespace": cp, "labels": {"app": "etcd"}},
            "spec": {
                "replicas": replicas,
                "serviceName": "etcd-discovery",
                "selector": {"matchLabels": {"app": "etcd"}},
                "template": {
                    "metadata": {"labels": {"app": "etcd"}},
                    "spec": {"containers": [{"name": "etcd", "image": "etcd"}]},
                },
            },
        },
    )
    containers = ["etcd", "etcd-metrics", "healthz", "etcd-defrag"]
    for i in range(replicas):
        store.create(
            "pods",
            {
                "metadata": {
                    "name": f"etcd-{i}",
                    "namespace": cp,
                    "labels": {"app": "etcd"},
                    "annotations": {"kubectl.kubernetes.io/default-container": "etcd"},
                },
                "spec": {
                    "nodeName": "sandbox",
                    "containers": [{"name": c, "image": "etcd"} for c in containers],
                },
            },
        )
        store.update_status(
            "pods",
            cp,
            f"etcd-{i}",
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": c,
                        "image": "etcd",
                        "imageID": "etcd@sha256:0",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
                    }
                    for c in containers
                ],
            },
        )
    return cp


@pytest.fixture
def api_start(
    api_pki: ApiPki, api_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> Iterator[Callable[..., ApiServer]]:
    """
    Start API servers on 127.0.0.1 (random port), each with a fresh store seeded with the
    HostedCluster ``clusters/x``; keyword arguments go to :func:`hcp_sandbox.apiserver.make_app`.
    """
    runners = []

    def start(**make_app_kwargs: Any) -> ApiServer:
        store = Store()
        seed_hosted_cluster(store)
        d = tmp_path / f"server-{len(runners)}"
        d.mkdir()
        request_log = d / "requests.jsonl"
        app = apiserver.make_app(
            store, token=API_TOKEN, exec_handler=fake_exec, request_log=request_log, **make_app_kwargs
        )
        ctx = pki.server_ssl_context(api_pki.cert_path, api_pki.key_path)
        runner = asyncio.run_coroutine_threadsafe(
            apiserver.start_server(app, "127.0.0.1", 0, ctx), api_loop
        ).result(10)
        runners.append(runner)
        port = apiserver.bound_port(runner)
        server = ApiServer(
            store, port, f"https://127.0.0.1:{port}", d / "kubeconfig", api_loop, d, request_log
        )
        server._ca = api_pki.ca_pem
        server.write_kubeconfig(server.kubeconfig, API_TOKEN)
        return server

    yield start
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), api_loop).result(10)


@pytest.fixture
def api_server(api_start: Callable[..., ApiServer]) -> ApiServer:
    """A running API server without runtime fault handler nor authorizer."""
    return api_start()


@pytest.fixture
def api_client(api_server: ApiServer) -> Iterator[Any]:
    """A kubernetes ``ApiClient`` configured from the server's kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(api_server.kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    yield api
    api.close()
