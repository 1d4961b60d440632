"""Where the sandbox keeps its files under ``DIR``: one place, so the CLI, the serve process and the
exec mapping agree."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BUCKET = "hcp-etcd-backups"
# The second S3 endpoint (``up --replica-s3``): another region, its own bucket and connection.
REPLICA_BUCKET = "hcp-etcd-replica"
REPLICA_REGION = "eu-west-1"
# The etcd-init scripts a restore can run (control-plane-operator/controllers/hostedcontrolplane/
# v2/etcd/etcd-init.sh): ``fixed`` as PR 9048 (commits 55d36748ec, f02544c929), ``legacy`` as on
# ``main`` 3ee9615567 and release-4.20 to 5.2.
ETCD_INIT_VARIANTS = ("fixed", "legacy")
# How a hosted cluster's kube-apiserver encrypts Secrets (``spec.secretEncryption.type``).
ENCRYPTION_TYPES = ("aescbc", "kms")
HOSTED_CLUSTER_NAMESPACE = "clusters"
# What the pod's `df` reports as the size of the etcd volume (HyperShift's default PVC is 8Gi).
VOLUME_CAPACITY_BYTES = 8 * 1024**3


@dataclass(frozen=True)
class SandboxPaths:
    """The files of one sandbox, all under :attr:`root`."""

    root: Path

    @classmethod
    def of(cls, directory: str | os.PathLike[str]) -> SandboxPaths:
        """Paths of the sandbox in ``directory`` (made absolute: processes run in other cwds)."""
        return cls(Path(directory).resolve())

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        """The same server, with a token that ``--rbac`` does not restrict (tests' own requests)."""
        return self.root / "admin.kubeconfig"

    @property
    def ca_crt(self) -> Path:
        return self.root / "ca.crt"

    @property
    def airflow_env(self) -> Path:
        return self.root / "airflow.env"

    @property
    def info(self) -> Path:
        """``sandbox.json``: ports, pids, bucket, hosted clusters."""
        return self.root / "sandbox.json"

    @property
    def log(self) -> Path:
        return self.root / "sandbox.log"

    @property
    def pki(self) -> Path:
        """Private material (CA key, server keys): never mounted into pods."""
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        """One log per child process (etcd members, S3)."""
        return self.root / "logs"

    @property
    def shims(self) -> Path:
        """Put first on the PATH of exec'd commands (etcdctl, etcdutl, df)."""
        return self.root / "shims"

    @property
    def s3_faults(self) -> Path:
        """Pending S3 faults: written by the serve process, consumed by the S3 process."""
        return self.root / "s3-faults.json"

    @property
    def s3_replica_faults(self) -> Path:
        """Pending faults of the replica's S3 endpoint (``up --replica-s3``)."""
        return self.root / "s3-replica-faults.json"

    def pod_root(self, namespace: str, pod: str) -> Path:
        """The directory that stands for ``/`` inside a pod."""
        return self.root / "pods" / namespace / pod

    def namespace_pods(self, namespace: str) -> Path:
        return self.root / "pods" / namespace


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_info(paths: SandboxPaths) -> dict[str, Any] | None:
    """``sandbox.json`` as a dict, or ``None`` when there is none."""
    try:
        return json.loads(paths.info.read_text())
    except FileNotFoundError:
        return None


_handed_out: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never the same one twice in this process)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
