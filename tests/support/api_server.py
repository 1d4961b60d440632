"""The sandbox's API server in the test process (tests/sandbox): its TLS material, a toy exec
runtime, the handle the fixtures return, and a HyperShift-shaped seed of the store."""

from __future__ import annotations

import asyncio
import base64
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hcp_sandbox.store import Store

API_TOKEN = "sandbox-test-token"


@dataclass
class ApiPki:
    ca_pem: bytes
    cert_path: Path
    key_path: Path


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
