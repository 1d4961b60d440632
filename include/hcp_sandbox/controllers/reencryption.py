"""A key rotation of a hosted cluster's AES-CBC key, caught midway: the ``key-rotation`` fault kind.

Upstream (openshift/hypershift ``main`` 3ee9615567), when ``spec.secretEncryption.aescbc.activeKey``
names another key than ``status.secretEncryption.activeKey``:

- the re-encryption controller
  (``control-plane-operator/hostedclusterconfigoperator/controllers/reencryption/reencryption.go``,
  ``startNewRotation``) sets the HostedControlPlane's ``status.secretEncryption.targetKey`` (``{provider:
  AESCBC, aescbc: {secret: {name}, dataHash: <hex SHA-256 of the key>}}``) and prepends a
  ``history`` entry (at most 5) whose ``from``/``to`` fingerprints are
  ``sha256("<secret name>/<dataHash>")`` (``support/secretencryption/fingerprint.go``);
- kube-apiserver gets both keys (``v2/kas/secretencryption.go: deriveAESCBCEncryptionConfig``): the
  old one writes and the target one reads (``ReadOnlyDeploy``), then the target one writes
  (``WritePromote``), and a StorageVersionMigration rewrites every Secret under it (``Migrating``);
- at the end status ``activeKey`` becomes the target key, ``targetKey`` is cleared and the entry is
  ``Completed`` (``reencryption.go``, the end of the migration);
- the HostedCluster controller copies the HostedControlPlane's ``status.secretEncryption`` to the
  HostedCluster (``hypershift-operator/controllers/hostedcluster/hostedcluster_controller.go``).

The sandbox runs no kube-apiserver and no migration of its own, so the fault does it by hand: it
takes the administrator's step (``spec.activeKey`` to another Secret: a new one with a random key
unless ``secret`` names one), sets the status as above in state ``Migrating``, and rewrites the
fraction ``migrated`` of the Secrets in etcd under the target key (spread over the key space), so
that a backup meets some Secrets under each key. ``complete`` rewrites the rest and finishes the
rotation as upstream does. The keys' Secrets live next to the HostedCluster (HyperShift copies them
into the control-plane namespace under the same names; the sandbox does not).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
from typing import Any

from hcp_sandbox import aescbc
from hcp_sandbox.controllers.cluster import ClusterRuntime, Context
from hcp_sandbox.errors import ApiError, bad_request
from hcp_sandbox.layout import HOSTED_CLUSTER_NAMESPACE

SECRETS_PREFIX = "/kubernetes.io/secrets/"
_HISTORY_MAX = 5  # hostedcluster_types.go: history MaxItems


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_status(secret: str, key: bytes) -> dict[str, Any]:
    """``status.secretEncryption.activeKey``/``targetKey`` of an AES-CBC key (``KeyStatusFromAESCBCSpec``).

    :param secret: the key's Secret.
    :param key: the key bytes.
    """
    return {"provider": "AESCBC", "aescbc": {"secret": {"name": secret}, "dataHash": _sha256(key)}}


def _fingerprint(status: dict[str, Any]) -> dict[str, str]:
    aes = status["aescbc"]
    return {
        "provider": "AESCBC",
        "fingerprint": _sha256(f"{aes['secret']['name']}/{aes['dataHash']}".encode()),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyRotation:
    """The ``key-rotation`` fault kind: start a rotation (partly migrated) or complete it.

    :param ctx: the rooms' shared context.
    :param clusters: the runtimes of the hosted clusters, by (namespace, name).
    """

    def __init__(self, ctx: Context, clusters: dict[tuple[str, str], ClusterRuntime]) -> None:
        self.ctx = ctx
        self.clusters = clusters

    async def inject(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply one ``key-rotation`` spec: ``namespace``, ``name``, ``secret``, ``migrated``, ``complete``.

        :param spec: the fault.
        """
        namespace = spec.get("namespace") or HOSTED_CLUSTER_NAMESPACE
        name = spec.get("name") or ""
        rt = self.clusters.get((namespace, name))
        if rt is None or rt.client is None or rt.etcd is None or rt.phase != "running":
            raise ApiError(404, "NotFound", f"no running hosted cluster {namespace}/{name}")
        if spec.get("complete"):
            return await self._complete(rt)
        migrated = spec.get("migrated", 0.5)
        if isinstance(migrated, bool) or not isinstance(migrated, int | float) or not 0 <= migrated <= 1:
            raise bad_request("key-rotation 'migrated' is a fraction from 0 to 1")
        return await self._start(rt, spec.get("secret"), float(migrated))

    def _key(self, namespace: str, secret: str) -> bytes:
        found = self.ctx.store.find("secrets", namespace, secret)
        encoded = ((found or {}).get("data") or {}).get("key")
        if not encoded:
            raise ApiError(404, "NotFound", f"Secret {namespace}/{secret} with data.key not found")
        return base64.b64decode(encoded)

    def _hcp_status(self, rt: ClusterRuntime) -> dict[str, Any]:
        hcp = self.ctx.store.find("hostedcontrolplanes", rt.cp_namespace, rt.name)
        if hcp is None:
            raise ApiError(404, "NotFound", f"no HostedControlPlane {rt.cp_namespace}/{rt.name}")
        return dict(hcp.get("status") or {})

    def _set_status(self, rt: ClusterRuntime, hcp_status: dict[str, Any]) -> None:
        self.ctx.store.update_status("hostedcontrolplanes", rt.cp_namespace, rt.name, hcp_status)
        self.ctx.kick()  # the HostedCluster controller copies it

    async def _start(self, rt: ClusterRuntime, secret: str | None, migrated: float) -> dict[str, Any]:
        store, ns = self.ctx.store, rt.namespace
        hc = store.get("hostedclusters", ns, rt.name)
        aes = ((hc.get("spec") or {}).get("secretEncryption") or {}).get("aescbc") or {}
        hcp_status = self._hcp_status(rt)
        enc = dict(hcp_status.get("secretEncryption") or {})
        if enc.get("targetKey"):
            raise ApiError(409, "Conflict", f"{ns}/{rt.name} is mid-rotation already: complete it first")
        # handleInitialBootstrap: a status without an active key starts from the spec's.
        active = enc.get("activeKey") or key_status(
            aes["activeKey"]["name"], self._key(ns, aes["activeKey"]["name"])
        )
        old_secret = active["aescbc"]["secret"]["name"]
        old_key = self._key(ns, old_secret)
        if secret is None:
            n = 2
            while store.find("secrets", ns, f"{rt.name}-etcd-encryption-key-{n}") is not None:
                n += 1
            secret = f"{rt.name}-etcd-encryption-key-{n}"
            store.create(
                "secrets",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {"name": secret, "namespace": ns},
                    "data": {"key": base64.b64encode(os.urandom(32)).decode()},
                },
            )
        new_key = self._key(ns, secret)
        if new_key == old_key:
            raise bad_request(f"Secret {ns}/{secret} holds the active key already: nothing to rotate")
        # The administrator's step: the spec names the new key.
        hc["spec"]["secretEncryption"]["aescbc"]["activeKey"] = {"name": secret}
        hc["metadata"].pop("resourceVersion", None)
        store.replace("hostedclusters", hc)
        target = key_status(secret, new_key)
        entry = {
            "from": _fingerprint(active),
            "to": _fingerprint(target),
            "state": "Migrating",
            "startedTime": _now(),
        }
        enc.update(
            activeKey=active, targetKey=target, history=[entry, *(enc.get("history") or [])][:_HISTORY_MAX]
        )
        hcp_status["secretEncryption"] = enc
        self._set_status(rt, hcp_status)
        rewritten, total = await self._rewrite(rt, old_key, new_key, migrated)
        return {
            "kind": "key-rotation",
            "namespace": ns,
            "name": rt.name,
            "active_secret": old_secret,
            "target_secret": secret,
            "key_names": {"active": aescbc.key_name(old_key), "target": aescbc.key_name(new_key)},
            "rewritten": rewritten,
            "secrets": total,
        }

    async def _complete(self, rt: ClusterRuntime) -> dict[str, Any]:
        hcp_status = self._hcp_status(rt)
        enc = dict(hcp_status.get("secretEncryption") or {})
        target = enc.get("targetKey")
        if not target:
            raise ApiError(409, "Conflict", f"{rt.namespace}/{rt.name} has no rotation in progress")
        old_key = self._key(rt.namespace, enc["activeKey"]["aescbc"]["secret"]["name"])
        new_key = self._key(rt.namespace, target["aescbc"]["secret"]["name"])
        rewritten, total = await self._rewrite(rt, old_key, new_key, 1.0)
        history = [dict(h) for h in enc.get("history") or []]
        if history:
            history[0].update(state="Completed", completionTime=_now())
        enc = {"activeKey": target, "history": history} if history else {"activeKey": target}
        hcp_status["secretEncryption"] = enc
        self._set_status(rt, hcp_status)
        return {
            "kind": "key-rotation",
            "namespace": rt.namespace,
            "name": rt.name,
            "active_secret": target["aescbc"]["secret"]["name"],
            "rewritten": rewritten,
            "secrets": total,
        }

    async def _rewrite(self, rt: ClusterRuntime, old: bytes, new: bytes, fraction: float) -> tuple[int, int]:
        """What the StorageVersionMigration does to ``fraction`` of the Secrets still under ``old``,
        spread over the key order: read and write back, now under ``new``. Returns (rewritten, total)."""
        assert rt.client is not None and rt.etcd is not None
        url = next((m.client_url for m in rt.etcd.members if m.running), rt.etcd.members[0].client_url)
        stored = await rt.client.range_prefix(url, SECRETS_PREFIX)
        old_name = aescbc.key_name(old)
        under_old = [(k, v) for k, v in stored if aescbc.stored_key_name(v) == old_name]
        rewritten = 0
        for i, (key, value) in enumerate(under_old):
            if int((i + 1) * fraction) > int(i * fraction):
                await rt.client.put(url, key, aescbc.encrypt(aescbc.decrypt(value, old), new))
                rewritten += 1
        return rewritten, len(stored)
