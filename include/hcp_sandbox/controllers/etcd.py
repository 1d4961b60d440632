"""The HostedControlPlane's etcd: the StatefulSet ``etcd``, its pods and members, etcd-init's restore.

As HyperShift's etcd component (``control-plane-operator/controllers/hostedcontrolplane/v2/etcd``):
the client certificate Secret ``etcd-client-tls``, the StatefulSet and pods ``etcd-0..N-1`` (label
``app=etcd``, containers ``etcd``, ``etcd-metrics``, ``healthz``, ``etcd-defrag``, volume ``data``
from PVC ``data-etcd-N`` at ``/var/lib``), a real etcd member behind each pod
(:mod:`hcp_sandbox.etcd`), the ``etcd-init`` init container of a restore (``etcd-init.sh``), and the
StatefulSet's and pods' status from the members' health.

It may touch the etcd StatefulSet, its pods (status through the kubelet), the ``etcd-client-tls``
Secret, the pod roots on disk and the member processes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp

from hcp_sandbox import etcd, pki
from hcp_sandbox.controllers.cluster import ETCD_IMAGE, ClusterRuntime, Context, rs_hash
from hcp_sandbox.controllers.kubelet import Kubelet, init_restarts
from hcp_sandbox.layout import free_port

log = logging.getLogger(__name__)

ETCD_CONTAINERS = ("etcd", "etcd-metrics", "healthz", "etcd-defrag")


class RestoreError(Exception):
    """etcd-init failed: the message is what the EtcdSnapshotRestored condition reports."""


class EtcdComponent:
    """The etcd of every hosted control plane."""

    def __init__(self, ctx: Context, kubelet: Kubelet) -> None:
        self.ctx = ctx
        self.kubelet = kubelet

    def create(self, rt: ClusterRuntime, urls: list[str]) -> None:
        """TLS material, members (not started), the client Secret, the StatefulSet and its pods.

        :param urls: ``spec.etcd.managed.storage.restoreSnapshotURL`` (empty: no restore, no etcd-init).
        """
        ns = rt.cp_namespace
        server = pki.issue_cert(
            self.ctx.ca_cert,
            self.ctx.ca_key,
            f"etcd-server-{ns}",
            dns_names=["localhost", f"etcd-client.{ns}.svc", f"*.etcd-discovery.{ns}.svc"],
            # etcd's JSON gateway dials the member with the server certificate.
            ip_addresses=["127.0.0.1"],
            client=True,
        )
        client = pki.issue_cert(self.ctx.ca_cert, self.ctx.ca_key, "etcd-client", client=True, server=False)
        tls = etcd.TLSMaterial(self.ctx.ca_cert, server[0], server[1], client[0], client[1])
        members = []
        for i in range(rt.members):
            root = self.ctx.paths.pod_root(ns, f"etcd-{i}")
            etcd.install_tls(root, tls)
            (root / "var" / "lib" / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
            (root / "tmp").mkdir(parents=True, exist_ok=True)
            members.append(etcd.Member(i, free_port(), free_port(), root))
        rt.etcd = etcd.EtcdCluster(ns, members, self.ctx.paths.logs)
        if urls:
            # The variant is fixed at creation: it decides the pods' init containers and the restore.
            legacy = self.ctx.faults.take_legacy_etcd_init()
            rt.etcd_init = "legacy" if legacy else self.ctx.options.etcd_init
            rt.etcd.legacy_restore = rt.etcd_init == "legacy"
        rt.health = [False] * rt.members
        assert self.ctx.session is not None
        rt.client = etcd.EtcdClient(self.ctx.session, etcd.client_ssl_context(members[0].tls_dir))
        self.ctx.ensure(
            "secrets",
            {
                "metadata": {"name": "etcd-client-tls", "namespace": ns},
                "type": "Opaque",
                "data": {
                    k: base64.b64encode(v).decode()
                    for k, v in {
                        "etcd-client.crt": client[0],
                        "etcd-client.key": client[1],
                        "etcd-client-ca.crt": self.ctx.ca_cert,
                    }.items()
                },
            },
        )
        etcd_init = rt.etcd_init if urls else None
        self.ctx.ensure("statefulsets", etcd_statefulset(ns, rt.members, etcd_init=etcd_init))
        for member in members:
            pod = self.ctx.ensure("pods", etcd_pod(ns, member.name, etcd_init=etcd_init))
            init = {"init": "running"} if urls else {}
            self.kubelet.write_pod_status(rt, pod, ready=False, initializing=True, **init)

    async def restore(self, rt: ClusterRuntime, url: str) -> bool:
        """etcd-init in every member's pod; False (``rt`` failed, pods in CrashLoopBackOff) when it fails."""
        assert rt.etcd is not None
        members = rt.etcd.members
        try:
            for member in members:
                await self._etcd_init(rt.etcd, member, url)
        except RestoreError as exc:
            log.warning("etcd restore of %s failed: %s", rt.name, exc)
            # What etcd-init printed; the pods' etcd-init goes into CrashLoopBackOff, so the pods
            # are never Ready and HyperShift never writes EtcdSnapshotRestored.
            rt.restore = (False, "Error", str(exc))
            rt.init_failed_at = time.monotonic()
            rt.phase = "failed"
            return False
        rt.restore = (True, "Completed", "INFO: using etcdutl (etcd 3.6+)\n")
        return True

    def start(self, rt: ClusterRuntime) -> None:
        """Start the members and watch their health."""
        assert rt.etcd is not None
        rt.etcd.start()
        self.ctx.on_change()
        rt.tasks.append(asyncio.create_task(self._health_loop(rt), name=f"health-{rt.name}"))

    async def wait_available(self, rt: ClusterRuntime, *, restored: bool) -> None:
        """Wait for quorum (at most ``etcd_start_timeout``); a restored etcd then gets its history compacted.

        :param restored: the members were restored from a snapshot.
        """
        assert rt.etcd is not None and rt.client is not None
        members = rt.etcd.members
        deadline = time.monotonic() + self.ctx.options.etcd_start_timeout
        while not rt.etcd_available and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if restored and rt.etcd.needs_mark_compacted and rt.etcd_available:
            # etcd-init's `--mark-compacted`, emulated before any API server reads the restored etcd.
            for member in members if rt.etcd.legacy_restore else members[:1]:
                revision = await rt.client.mark_compacted(member.client_url)
                log.info("%s/%s: restored history compacted at revision %s", rt.name, member.name, revision)

    async def _etcd_init(self, cluster: etcd.EtcdCluster, member: etcd.Member, url: str) -> None:
        """HyperShift's etcd-init container: download, reject an XML error, restore; skip non-empty."""
        if member.data_dir.exists() and any(member.data_dir.iterdir()):
            log.info("%s: data dir not empty, restore skipped", member.name)
            return
        target = member.pod_root / "tmp" / "snapshot.db"
        # `curl -o` without -f: any HTTP status writes its body, the XML check catches S3 errors.
        try:
            assert self.ctx.session is not None
            async with self.ctx.session.get(url, ssl=_ca_context(self.ctx.paths.ca_crt)) as resp:
                with open(target, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        out.write(chunk)
        except (aiohttp.ClientError, OSError) as exc:
            raise RestoreError(f"downloading the snapshot failed: {exc}") from exc
        with open(target, "rb") as fh:
            head = fh.read(4096)
        if head.startswith(b"<?xml"):
            target.unlink()
            # etcd-init.sh: `head -c 5 /tmp/snapshot | grep -q '<?xml' && cat /tmp/snapshot && exit 1`
            raise RestoreError(head.decode(errors="replace"))
        try:
            await cluster.restore_member(member, target)
        except RuntimeError as exc:
            raise RestoreError(str(exc)) from exc
        finally:
            target.unlink(missing_ok=True)

    async def _health_loop(self, rt: ClusterRuntime) -> None:
        assert rt.etcd is not None and rt.client is not None
        while True:
            health = await asyncio.gather(
                *(rt.client.healthy(m.client_url) if m.running else _false() for m in rt.etcd.members)
            )
            if list(health) != rt.health:
                rt.health = list(health)
                self.ctx.kick()
            await asyncio.sleep(1.0)

    def reconcile_status(self, rt: ClusterRuntime) -> None:
        """The etcd pods' and the StatefulSet's status from the members."""
        if rt.etcd is not None:
            for member in rt.etcd.members:
                self._write_etcd_pod_status(rt, member)

    def _write_etcd_pod_status(self, rt: ClusterRuntime, member: etcd.Member) -> None:
        pod = self.ctx.store.find("pods", rt.cp_namespace, member.name)
        if pod is None:
            return
        healthy = member.index < len(rt.health) and rt.health[member.index]
        # Pods of a restore have the etcd-init init container: its status is what a kubelet reports.
        init = {"init": "completed"} if rt.restore is not None else {}
        if rt.restore is not None and not rt.restore[0]:
            restarts = init_restarts(rt.init_failed_at, time.monotonic())
            self.kubelet.write_pod_status(rt, pod, ready=False, init="failed", init_restarts=restarts)
        elif rt.phase != "running" and not member.running:
            self.kubelet.write_pod_status(rt, pod, ready=False, initializing=True)
        elif not member.running:
            self.kubelet.write_pod_status(rt, pod, ready=False, crashed="etcd", **init)
        else:
            self.kubelet.write_pod_status(rt, pod, ready=healthy, **init)
        ready_members = sum(rt.health)
        sts = self.ctx.store.find("statefulsets", rt.cp_namespace, "etcd")
        if sts is not None:
            status = {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": rt.members,
                "currentReplicas": rt.members,
                "updatedReplicas": rt.members,
                "availableReplicas": ready_members,
                "readyReplicas": ready_members,
                "currentRevision": f"etcd-{rs_hash('etcd')}",
                "updateRevision": f"etcd-{rs_hash('etcd')}",
                "collisionCount": 0,
            }
            if status != sts.get("status"):
                self.ctx.store.update_status("statefulsets", rt.cp_namespace, "etcd", status)


async def _false() -> bool:
    return False


def _ca_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _etcd_container(name: str) -> dict[str, Any]:
    mounts = [{"name": "data", "mountPath": "/var/lib"}]
    if name == "etcd":
        mounts += [
            {"name": "client-tls", "mountPath": "/etc/etcd/tls/client"},
            {"name": "server-tls", "mountPath": "/etc/etcd/tls/server"},
            {"name": "etcd-ca", "mountPath": "/etc/etcd/tls/etcd-ca"},
        ]
    return {
        "name": name,
        "image": ETCD_IMAGE,
        "volumeMounts": mounts,
        "command": ["/usr/bin/etcd"] if name == "etcd" else ["/usr/bin/control-plane-operator", name],
        "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}},
    }


def init_containers(etcd_init: str | None) -> list[dict[str, Any]]:
    """The etcd pods' init containers, in upstream's order.

    As ``control-plane-operator/controllers/hostedcontrolplane/v2/assets/etcd/statefulset.yaml`` and
    ``v2/etcd/statefulset.go`` (``adaptStatefulSet``) at ``main`` 3ee9615567: ``ensure-dns``, then
    ``reset-member``; a restore appends ``etcd-init`` (released HyperShift, ``legacy``); PR 9048
    (commit 55d36748ec, ``fixed``) inserts it before ``reset-member`` instead, so that
    ``reset-member`` finds the restored data and leaves the member alone. The sandbox runs only
    etcd-init's work (``EtcdComponent.restore``); the other two are there for their place.

    :param etcd_init: the etcd-init variant of a restore, None without one.
    """
    data = [{"name": "data", "mountPath": "/var/lib"}]
    containers = [
        {"name": "ensure-dns", "image": "controlplane-operator", "command": ["/bin/bash"]},
        {"name": "reset-member", "image": ETCD_IMAGE, "command": ["/bin/bash"], "volumeMounts": data},
    ]
    if etcd_init is not None:
        init = {"name": "etcd-init", "image": ETCD_IMAGE, "command": ["/bin/sh", "-ce"], "volumeMounts": data}
        containers.insert(len(containers) if etcd_init == "legacy" else 1, init)
    return containers


def etcd_pod(namespace: str, name: str, *, etcd_init: str | None) -> dict[str, Any]:
    """Pod ``name`` of the StatefulSet ``etcd``.

    :param etcd_init: the etcd-init variant of a restore (``fixed``, ``legacy``), None without one.
    """
    index = name.rsplit("-", 1)[1]
    spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": "etcd-discovery",
        "nodeName": "ip-10-0-1-10.ec2.internal",
        "containers": [_etcd_container(c) for c in ETCD_CONTAINERS],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"data-etcd-{index}"}},
            {"name": "client-tls", "secret": {"secretName": "etcd-client-tls", "defaultMode": 416}},
            {"name": "server-tls", "secret": {"secretName": "etcd-server-tls", "defaultMode": 416}},
            {"name": "etcd-ca", "configMap": {"name": "etcd-ca", "defaultMode": 420}},
        ],
        "initContainers": init_containers(etcd_init),
    }
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app": "etcd",
                "statefulset.kubernetes.io/pod-name": name,
                "hypershift.openshift.io/control-plane-component": "etcd",
            },
            "annotations": {"kubectl.kubernetes.io/default-container": "etcd"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": "etcd",
                    "uid": "",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def etcd_statefulset(namespace: str, members: int, *, etcd_init: str | None) -> dict[str, Any]:
    """The StatefulSet ``etcd`` of a control-plane namespace.

    :param etcd_init: the etcd-init variant of a restore, None without one.
    """
    pod = etcd_pod(namespace, "etcd-0", etcd_init=etcd_init)
    template_labels = {"app": "etcd", "hypershift.openshift.io/control-plane-component": "etcd"}
    return {
        "metadata": {"name": "etcd", "namespace": namespace, "labels": {"app": "etcd"}},
        "spec": {
            "replicas": members,
            "serviceName": "etcd-discovery",
            "selector": {"matchLabels": {"app": "etcd"}},
            "podManagementPolicy": "Parallel",
            "template": {
                "metadata": {"labels": template_labels},
                "spec": {**pod["spec"], "volumes": pod["spec"]["volumes"][1:]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}}},
                }
            ],
        },
    }
