"""Seed data: keys and values shaped like what kube-apiserver keeps in etcd.

Keys follow kube-apiserver's layout (``/kubernetes.io/<resource>/<namespace>/<name>``). Values are
JSON of the v1 object (a real kube-apiserver stores protobuf; JSON keeps the seed readable).
Secrets are stored aescbc-encrypted under the hosted cluster's key (:mod:`hcp_sandbox.aescbc`), or,
for a ``type: kms`` cluster, envelope-encrypted through its KMS key (:mod:`hcp_sandbox.kms`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import Callable, Iterator

from hcp_sandbox import aescbc
from hcp_sandbox.etcd import EtcdClient

# How kube-apiserver stores a Secret: (etcd key, plaintext) -> stored value.
Encrypter = Callable[[str, bytes], bytes]


def encrypter(key: bytes | Encrypter) -> Encrypter:
    """The stored form of Secrets: a 32-byte aescbc key, or an encrypter (e.g. a KMS envelope's)."""
    if isinstance(key, bytes):
        return lambda _etcd_key, plaintext: aescbc.encrypt(plaintext, key)
    return key


NAMESPACES = ("openshift-monitoring", "openshift-ingress", "payments", "catalog", "frontend", "default")
# etcd refuses requests above 1.5 MiB; kube-apiserver objects stay far below. Values here are a few
# KiB to a few tens of KiB, which keeps the raft log in memory small.
_MAX_VALUE = 48 * 1024
_CONCURRENCY = 16


def _blob(size: int) -> str:
    """Incompressible text, as certificates and tokens in real objects are."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


def _meta(name: str, namespace: str) -> dict[str, object]:
    return {"name": name, "namespace": namespace, "uid": os.urandom(16).hex(), "labels": {"app": name}}


def generate(
    total_bytes: int, key: bytes | Encrypter, rng: random.Random | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, value)`` pairs totalling about ``total_bytes``: configmaps, secrets, pods, events.

    :param key: the aescbc key of the Secrets, or an :data:`Encrypter`.
    """
    encrypt = encrypter(key)
    rng = rng or random.Random()  # noqa: S311 - sizes and names, not secrets
    written = 0
    index = 0
    while written < total_bytes:
        ns = NAMESPACES[index % len(NAMESPACES)]
        kind = ("configmaps", "secrets", "pods", "configmaps", "services")[index % 5]
        name = f"{kind[:-1]}-{index:06d}"
        etcd_key = f"/kubernetes.io/{kind}/{ns}/{name}"
        size = min(rng.randint(1024, _MAX_VALUE), max(total_bytes - written, 256))
        if kind == "secrets":
            obj = {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": _meta(name, ns),
                "type": "Opaque",
                "data": {"token": base64.b64encode(os.urandom(size * 3 // 4)).decode()},
            }
            value = encrypt(etcd_key, json.dumps(obj).encode())
        elif kind == "pods":
            obj = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": _meta(name, ns),
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "quay.io/example/app:1.0",
                            "env": [{"name": "BLOB", "value": _blob(size)}],
                        }
                    ]
                },
                "status": {"phase": "Running"},
            }
            value = json.dumps(obj).encode()
        elif kind == "services":
            obj = {
                "kind": "Service",
                "apiVersion": "v1",
                "metadata": _meta(name, ns),
                "spec": {"clusterIP": f"172.30.{index % 250}.{index % 200 + 1}", "ports": [{"port": 443}]},
                "annotations": {"blob": _blob(min(size, 2048))},
            }
            value = json.dumps(obj).encode()
        else:
            obj = {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": _meta(name, ns),
                "data": {"blob": _blob(size)},
            }
            value = json.dumps(obj).encode()
        yield etcd_key, value
        written += len(value)
        index += 1


async def seed(client: EtcdClient, url: str, total_bytes: int, key: bytes | Encrypter) -> int:
    """Write about ``total_bytes`` of seed data through ``url``; returns the number of keys."""
    items = generate(total_bytes, key)
    count = 0

    async def worker() -> None:
        nonlocal count
        # The workers share one generator: next() never awaits, so this is safe in one event loop.
        for name, value in items:
            await client.put(url, name, value, timeout=60)
            count += 1

    await asyncio.gather(*(worker() for _ in range(_CONCURRENCY)))
    return count
