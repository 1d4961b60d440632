"""What every figure needs: the sandbox, its connections, raw etcd commands, files, statistics."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The plugins tree under test: the repo's, or another checkout's (``--plugins``, for "before" figures).
PLUGINS = Path(os.environ.get("HCP_ETCD_BENCH_PLUGINS") or REPO / "plugins").resolve()
DAGS = Path(os.environ.get("HCP_ETCD_BENCH_DAGS") or REPO / "dags").resolve()
MiB = 1024 * 1024
GiB = 1024 * MiB

for _path in (str(REPO / "include"), str(PLUGINS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: ``include`` and the plugins under test importable.

    :param extra: more variables.
    """
    env = dict(os.environ)
    inherited = [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and "plugins" not in Path(p).name
    ]
    paths = [str(REPO / "include"), str(PLUGINS), str(REPO), *inherited]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HCP_ETCD_BENCH_PLUGINS"] = str(PLUGINS)
    env["HCP_ETCD_BENCH_DAGS"] = str(DAGS)
    env.update(extra or {})
    return env


def median(values: list[float]) -> float:
    """The median (one value is its own median).

    :param values: measurements.
    """
    return float(statistics.median(values))


def log(message: str) -> None:
    """Progress on stderr (stdout carries the figure lines only).

    :param message: the text.
    """
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Member:
    """One etcd member of the sandbox, seen from the host.

    :param pod: pod name.
    :param client_url: its HTTPS client URL.
    :param pod_root: the directory standing for the pod's ``/``.
    """

    pod: str
    client_url: str
    pod_root: Path

    @property
    def tls_dir(self) -> Path:
        """The pod's ``/etc/etcd/tls``."""
        return self.pod_root / "etc" / "etcd" / "tls"

    @property
    def snapshot_file(self) -> Path:
        """Where the backup DAG writes the snapshot (``/var/lib/data/snapshot.db`` in the pod)."""
        return self.pod_root / "var" / "lib" / "data" / "snapshot.db"

    def etcdctl(self, *args: str) -> list[str]:
        """An ``etcdctl`` argv against this member with the pod's client certificate.

        :param args: subcommand and arguments.
        """
        from hcp_sandbox.etcd import binary

        tls = self.tls_dir
        return [
            binary("etcdctl"),
            f"--cacert={tls / 'etcd-ca' / 'ca.crt'}",
            f"--cert={tls / 'client' / 'etcd-client.crt'}",
            f"--key={tls / 'client' / 'etcd-client.key'}",
            f"--endpoints={self.client_url}",
            *args,
        ]


class Sandbox:
    """A sandbox started with ``python -m hcp_sandbox up`` and stopped with ``down``.

    :param directory: its directory.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.env: dict[str, str] = {}
        self.info: dict[str, Any] = {}

    def cli(self, *args: str, timeout: float = 900) -> str:
        """``python -m hcp_sandbox ARGS`` (raises with its output on failure).

        :param args: the arguments.
        :param timeout: seconds.
        """
        proc = subprocess.run(
            [sys.executable, "-m", "hcp_sandbox", *args],
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"hcp_sandbox {' '.join(args[:1])} failed: {proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def up(self, *args: str) -> None:
        """Start it and read its connections.

        :param args: ``up`` options (clusters, seed).
        """
        self.cli("up", "--dir", str(self.dir), *args)
        for line in (self.dir / "airflow.env").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                self.env[key] = shlex.split(value)[0] if value else ""
        self.refresh()

    def refresh(self) -> None:
        """Re-read ``sandbox.json``."""
        self.info = json.loads((self.dir / "sandbox.json").read_text())

    def down(self) -> None:
        """Stop every process it started."""
        if (self.dir / "sandbox.json").exists():
            self.cli("down", "--dir", str(self.dir), timeout=120)

    def members(self, cluster: str) -> list[Member]:
        """The etcd members of a hosted cluster.

        :param cluster: the HostedCluster name.
        """
        self.refresh()
        return [
            Member(m["pod"], m["client_url"], Path(m["pod_root"]))
            for m in self.info["hosted_clusters"][cluster]["etcd"]
        ]

    def export(self) -> None:
        """Put the sandbox's Airflow connections and CA into this process's environment."""
        os.environ.update(self.env)

    def fill(self, cluster: str, total_bytes: int, value_bytes: int = 1000 * 1024, workers: int = 8) -> None:
        """Add ``total_bytes`` of etcd data fast: large incompressible values through the JSON gateway.

        The sandbox's own seed writes kube-shaped objects at 6-15 MiB/s; what the downtime and
        restore figures need is the database size, so this writes ~1 MiB values (etcd's request
        limit is 1.5 MiB) with ``workers`` requests in flight.

        :param cluster: the HostedCluster name.
        :param total_bytes: bytes of values to add.
        :param value_bytes: bytes per value.
        :param workers: requests in flight.
        """
        import aiohttp

        from hcp_sandbox.etcd import EtcdClient, client_ssl_context

        member = self.members(cluster)[0]
        count = max(1, total_bytes // value_bytes)

        async def run() -> None:
            ssl_context = client_ssl_context(member.tls_dir)
            async with aiohttp.ClientSession() as session:
                client = EtcdClient(session, ssl_context)
                queue = iter(range(count))

                async def worker() -> None:
                    for i in queue:
                        key = f"/kubernetes.io/configmaps/bench-fill/blob-{i:06d}"
                        await client.put(member.client_url, key, os.urandom(value_bytes), timeout=120)

                await asyncio.gather(*(worker() for _ in range(workers)))

        asyncio.run(run())


def write_random_file(path: Path, size: int, chunk: int = 8 * MiB) -> None:
    """A file of ``size`` random bytes (a stand-in snapshot where the figure is about transfer).

    :param path: the file.
    :param size: bytes.
    :param chunk: bytes per write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(chunk)
    with path.open("wb") as out:
        left = size
        while left > 0:
            n = min(chunk, left)
            # Vary each block a little so nothing downstream can deduplicate.
            out.write(os.urandom(16) + block[16:n] if n > 16 else block[:n])
            left -= n


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    started = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - started)


def run_timed(argv: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> float:
    """Run a command, fail on non-zero exit, return its wall time.

    :param argv: the command.
    :param timeout: seconds.
    :param env: environment.
    """
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr[-800:]}")
    return elapsed
