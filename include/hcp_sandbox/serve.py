"""The ``serve`` process: PKI, S3, the API server, the controllers, the hosted clusters.

``up`` starts it detached and waits for ``sandbox.json`` to say ``"ready": true`` (or to carry an
``"error"``). It runs until SIGTERM/SIGINT, then stops everything it started.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any

import yaml

from hcp_sandbox import apiserver, kms, pki, render, s3, seed
from hcp_sandbox.controllers.cluster import Options
from hcp_sandbox.controllers.manager import ControlPlane
from hcp_sandbox.errors import ApiError
from hcp_sandbox.layout import (
    ENCRYPTION_TYPES,
    HOSTED_CLUSTER_NAMESPACE,
    REPLICA_BUCKET,
    REPLICA_REGION,
    SandboxPaths,
    write_json_atomic,
)
from hcp_sandbox.podexec import PodExecHandler, install_shims
from hcp_sandbox.rbac import RbacAuthorizer
from hcp_sandbox.store import Store

log = logging.getLogger("hcp_sandbox")

AWS_ACCESS_KEY_ID = "hcp-sandbox"
AWS_SECRET_ACCESS_KEY = "hcp-sandbox-secret"  # noqa: S105 - moto accepts any credentials
REGION = "us-east-1"


@dataclass(frozen=True)
class ClusterSpec:
    """A hosted cluster to create at start: ``NAME[:MEMBERS[:ENCRYPTION]]`` (``aescbc`` or ``kms``)."""

    name: str
    members: int = 3
    encryption: str = "aescbc"

    @classmethod
    def parse(cls, text: str, default_members: int = 3, default_encryption: str = "aescbc") -> ClusterSpec:
        name, _, rest = text.partition(":")
        members, _, encryption = rest.partition(":")
        count = int(members) if members else default_members
        if count not in (1, 3):
            raise ValueError(f"{text}: members must be 3 (HighlyAvailable) or 1 (SingleReplica)")
        encryption = encryption or default_encryption
        if encryption not in ENCRYPTION_TYPES:
            raise ValueError(f"{text}: encryption must be one of {ENCRYPTION_TYPES}")
        return cls(name, count, encryption)

    def __str__(self) -> str:
        return f"{self.name}:{self.members}:{self.encryption}"


def aws_connection(paths: SandboxPaths, s3_port: int, region: str) -> dict[str, Any]:
    """An Airflow AWS connection (as JSON) to one of the sandbox's S3 endpoints."""
    return {
        "conn_type": "aws",
        "login": AWS_ACCESS_KEY_ID,
        "password": AWS_SECRET_ACCESS_KEY,
        "extra": {
            "endpoint_url": f"https://127.0.0.1:{s3_port}",
            "region_name": region,
            "verify": str(paths.ca_crt),
            "config_kwargs": {"signature_version": "s3v4", "s3": {"addressing_style": "path"}},
        },
    }


def airflow_connections(
    paths: SandboxPaths, api_port: int, s3_port: int, bucket: str, replica_s3_port: int | None = None
) -> dict[str, str]:
    """The variables of ``airflow.env``: Airflow connections (as JSON) and the bucket(s).

    With the replica endpoint (``replica_s3_port``), also its connection ``aws_replica`` and the
    settings that make every backup copy to it.
    """
    kubernetes = {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": str(paths.kubeconfig), "namespace": HOSTED_CLUSTER_NAMESPACE},
    }
    env = {
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(kubernetes),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_connection(paths, s3_port, REGION)),
        "HCP_ETCD_BUCKET": bucket,
        # For clients built without the connection's `verify` (boto3 honours it, so does the AWS CLI).
        "AWS_CA_BUNDLE": str(paths.ca_crt),
    }
    if replica_s3_port is not None:
        env |= {
            "AIRFLOW_CONN_AWS_REPLICA": json.dumps(aws_connection(paths, replica_s3_port, REPLICA_REGION)),
            "HCP_ETCD_REPLICA_BUCKET": REPLICA_BUCKET,
            "HCP_ETCD_REPLICA_AWS_CONN_ID": "aws_replica",
        }
    return env


def kubeconfig(server: str, ca_pem: bytes, token: str, user: str = "hcp-sandbox-admin") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hcp-sandbox",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "hcp-sandbox",
                "context": {
                    "cluster": "hcp-sandbox",
                    "user": user,
                    "namespace": HOSTED_CLUSTER_NAMESPACE,
                },
            }
        ],
        "current-context": "hcp-sandbox",
    }


class Sandbox:
    """Everything the serve process runs, and ``sandbox.json`` describing it."""

    def __init__(
        self,
        paths: SandboxPaths,
        clusters: list[ClusterSpec],
        seed_mb: float,
        bucket: str,
        options: Options,
        authorizer: RbacAuthorizer | None = None,
        replica_s3: bool = False,
    ) -> None:
        self.paths = paths
        self.replica_s3 = replica_s3
        self.authorizer = authorizer
        self.clusters = clusters
        self.seed_mb = seed_mb
        self.bucket = bucket
        self.options = options
        self.info: dict[str, Any] = {
            "ready": False,
            "dir": str(paths.root),
            "bucket": bucket,
            "pids": {"serve": os.getpid(), "s3": None, "etcd": []},
        }
        self.s3: s3.S3Server | None = None
        self.s3_replica: s3.S3Server | None = None
        self.kms: kms.LocalKms | None = None
        self.control: ControlPlane | None = None
        self.runner: Any = None

    def save(self) -> None:
        """Rewrite ``sandbox.json`` (pids change when hosted clusters come and go)."""
        if self.control is not None:
            self.info["pids"]["etcd"] = self.control.etcd_pids()
            self.info["hosted_clusters"] = self.control.describe()
            self.info["hypershift_clock_ahead_seconds"] = self.control.faults.clock_ahead_seconds
        write_json_atomic(self.paths.info, self.info)

    async def start(self) -> None:
        paths = self.paths
        for d in (paths.pki, paths.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.save()
        ca_cert, ca_key = pki.make_ca()
        paths.ca_crt.write_bytes(ca_cert)
        (paths.pki / "ca.key").write_bytes(ca_key)
        (paths.pki / "ca.key").chmod(0o600)
        server_cert, server_key = pki.issue_cert(
            ca_cert, ca_key, "hcp-sandbox", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
        )
        for name, data in (("server.crt", server_cert), ("server.key", server_key)):
            (paths.pki / name).write_bytes(data)
        install_shims(paths)

        self.s3 = s3.S3Server(
            paths.root,
            paths.pki / "server.crt",
            paths.pki / "server.key",
            paths.s3_faults,
            self.bucket,
            paths.logs / "s3.log",
        )
        # The S3 process imports moto (seconds of CPU): let it start while the rest comes up.
        s3_started = asyncio.create_task(asyncio.to_thread(self.s3.start))
        replica_started = None
        if self.replica_s3:
            # A second moto process (about 3 s of CPU and 55 MiB): only when asked for.
            self.s3_replica = s3.S3Server(
                paths.root,
                paths.pki / "server.crt",
                paths.pki / "server.key",
                paths.s3_replica_faults,
                REPLICA_BUCKET,
                paths.logs / "s3-replica.log",
                region=REPLICA_REGION,
                name="s3-replica",
            )
            replica_started = asyncio.create_task(asyncio.to_thread(self.s3_replica.start))
        await asyncio.sleep(0)
        self.info["pids"]["s3"] = None

        store = Store()
        self.control = ControlPlane(store, paths, (ca_cert, ca_key), self.options, on_change=self.save)
        if self.s3_replica is None:
            self.control.faults.s3_replica_faults = None  # a replica fault has no endpoint to fail
        await self.control.start()
        token = secrets.token_urlsafe(32)
        # Not subject to --rbac: for tests' setup and inspection, never handed to Airflow.
        admin_token = secrets.token_urlsafe(32)
        app = apiserver.make_app(
            store,
            token=token,
            admin_token=admin_token,
            exec_handler=PodExecHandler(paths, self.control.resolve_pod),
            fault_handler=self.control.handle_fault,
            request_log=paths.logs / "requests.jsonl",
            authorizer=self.authorizer,
            log_handler=self.control.pod_log,
        )
        ssl_context = pki.server_ssl_context(paths.pki / "server.crt", paths.pki / "server.key")
        self.runner = await apiserver.start_server(app, "127.0.0.1", 0, ssl_context)
        api_port = apiserver.bound_port(self.runner)
        server = f"https://127.0.0.1:{api_port}"
        paths.kubeconfig.write_text(yaml.safe_dump(kubeconfig(server, ca_cert, token), sort_keys=False))
        paths.kubeconfig.chmod(0o600)
        admin = kubeconfig(server, ca_cert, admin_token, user="hcp-sandbox-cluster-admin")
        paths.admin_kubeconfig.write_text(yaml.safe_dump(admin, sort_keys=False))
        paths.admin_kubeconfig.chmod(0o600)

        if any(c.encryption == "kms" for c in self.clusters):
            await self._start_kms(s3_started)  # the KMS key ARN goes into the HostedClusters
        keys: dict[str, bytes] = {}
        for spec in self.clusters:
            keys[spec.name] = os.urandom(32)
            arn = self.info.get("kms_key_arn") if spec.encryption == "kms" else None
            objects = render.manifests(
                spec.name, members=spec.members, encryption_key=keys[spec.name], kms_key_arn=arn
            )
            for obj in objects:
                plural = {
                    "Namespace": "namespaces",
                    "Secret": "secrets",
                    "HostedCluster": "hostedclusters",
                    "NodePool": "nodepools",
                }[obj["kind"]]
                try:
                    store.create(plural, obj)
                except ApiError as exc:
                    if not (exc.code == 409 and plural == "namespaces"):  # the namespace is shared
                        raise RuntimeError(f"cannot create {obj['kind']} {spec.name}: {exc.message}") from exc
        # The Namespaces shipped with the RBAC (the drill namespace): `kubectl apply` creates them
        # with the roles, and the restricted identity may not.
        for namespace in self.authorizer.namespaces if self.authorizer else []:
            if store.find("namespaces", None, namespace) is None:
                store.create(
                    "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
                )

        await self._start_kms(s3_started)
        if replica_started is not None and self.s3_replica is not None:
            await replica_started
            self.info["pids"]["s3_replica"] = self.s3_replica.pid
            self.save()
        names = [(HOSTED_CLUSTER_NAMESPACE, c.name) for c in self.clusters]
        await self.control.wait_running(names, timeout=120)
        if self.seed_mb > 0:
            started = time.monotonic()
            await asyncio.gather(*(self._seed(c, keys[c.name]) for c in self.clusters))
            log.info(
                "seeded %s MiB into each of %d clusters in %.1fs",
                self.seed_mb,
                len(self.clusters),
                time.monotonic() - started,
            )

        replica_port = self.s3_replica.port or 0 if self.s3_replica is not None else None
        env = airflow_connections(paths, api_port, self.s3.port or 0, self.bucket, replica_port)
        paths.airflow_env.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
        self.info.update(
            {
                "ready": True,
                "api": {"url": server, "port": api_port},
                "s3": {
                    "url": self.s3.url,
                    "port": self.s3.port,
                    "region": REGION,
                    "access_key_id": AWS_ACCESS_KEY_ID,
                    "secret_access_key": AWS_SECRET_ACCESS_KEY,
                },
                **(
                    {
                        "s3_replica": {
                            "url": self.s3_replica.url,
                            "port": self.s3_replica.port,
                            "region": REPLICA_REGION,
                            "bucket": REPLICA_BUCKET,
                        }
                    }
                    if self.s3_replica is not None
                    else {}
                ),
                "kubeconfig": str(paths.kubeconfig),
                "admin_kubeconfig": str(paths.admin_kubeconfig),
                "ca": str(paths.ca_crt),
                "airflow_env": str(paths.airflow_env),
                "token": token,
            }
        )
        self.save()
        log.info("sandbox ready: API %s, S3 %s", server, self.s3.url)

    async def _start_kms(self, s3_started: asyncio.Task[None]) -> None:
        """Wait for the S3 (and KMS) process; create the sandbox's KMS key once (``kms_key_arn``)."""
        assert self.s3 is not None
        await s3_started
        self.info["pids"]["s3"] = self.s3.pid
        if not self.info.get("kms_key_arn"):
            self.kms = kms.LocalKms(
                self.s3.url, self.paths.ca_crt, REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
            )
            self.info["kms_key_arn"] = await asyncio.to_thread(
                self.kms.create_key, "hcp-sandbox: Secrets of type kms hosted clusters"
            )
        self.save()

    async def _seed(self, spec: ClusterSpec, key: bytes) -> None:
        assert self.control is not None
        rt = self.control.clusters[(HOSTED_CLUSTER_NAMESPACE, spec.name)]
        assert rt.client is not None and rt.etcd is not None
        secrets_as: bytes | seed.Encrypter = key
        if spec.encryption == "kms":
            # The cluster's kube-apiserver: one seed, wrapped once by its KMS plugin (envelope.go).
            assert self.kms is not None
            envelope = await asyncio.to_thread(kms.new_envelope, self.info["kms_key_arn"], self.kms.encrypt)
            secrets_as = envelope.encrypt
        count = await seed.seed(
            rt.client, rt.etcd.members[0].client_url, int(self.seed_mb * 1024 * 1024), secrets_as
        )
        log.info("seeded %s with %d keys", spec.name, count)

    async def stop(self) -> None:
        log.info("stopping")
        if self.control is not None:
            await self.control.close()
        log.info("controllers and etcd stopped")
        for server in (self.s3, self.s3_replica):
            if server is not None:
                await asyncio.to_thread(server.stop)
        if self.runner is not None:
            # Open exec streams and watches would hold a graceful shutdown for a minute: don't wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.runner.cleanup(), timeout=1)
        log.info("stopped")
        self.info["ready"] = False
        self.info["stopped"] = True
        self.save()


async def run(
    paths: SandboxPaths,
    clusters: list[ClusterSpec],
    seed_mb: float,
    bucket: str,
    options: Options,
    authorizer: RbacAuthorizer | None = None,
    replica_s3: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    sandbox = Sandbox(paths, clusters, seed_mb, bucket, options, authorizer, replica_s3)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        starting = asyncio.create_task(sandbox.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises a start failure
            await stopping
        else:
            starting.cancel()
    except Exception as exc:
        log.exception("sandbox failed")
        sandbox.info["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        await sandbox.stop()
    return code
