"""The sandbox as the tests use it: ``up``/``down`` through its CLI, and a client of its own API.

:func:`start_sandbox` runs, in a fresh directory::

    python -m hcp_sandbox up --dir <dir> --pod-ready-delay 0.2 --writes-per-second 1 <up_args>

and returns a :class:`Sandbox`:

- ``.dir`` (Path): the sandbox directory; ``.kubeconfig`` (Path): kubeconfig with server, CA, token;
- ``.env`` (dict): ``airflow.env`` parsed (``AIRFLOW_CONN_KUBERNETES_DEFAULT``,
  ``AIRFLOW_CONN_AWS_DEFAULT``, ``HCP_ETCD_BUCKET``, ``AWS_CA_BUNDLE``): put it in ``os.environ`` (e.g.
  ``monkeypatch.setenv``) and Airflow's ``kubernetes_default`` / ``aws_default`` reach the sandbox;
- ``.bucket`` (str), ``.info`` (dict: ``sandbox.json`` as read at start; ``.refresh()`` re-reads it);
- ``.cli(*args)`` runs ``python -m hcp_sandbox <args>`` (``--dir`` not included);
- ``.fault(kind, *args)`` runs ``python -m hcp_sandbox fault --dir DIR kind *args`` and returns the
  JSON answer, e.g. ``sandbox.fault("s3", "--code", "503", "--count", "2")``;
- ``.api`` (:class:`SandboxApi`): the ``/sandbox/v1`` API (request log, faults) with the
  kubeconfig's token;
- ``.pids()``: every process id the sandbox recorded; ``.down()`` stops it and asserts that none of
  them is left.

Pod timings: the tests start the sandbox with a 0.2 s pod readiness and termination delay instead
of the 1 s default (``--pod-ready-delay``; the demo and the bench keep 1 s). Every wait of the
product still waits for the same states (pods gone, replicas ready); they only come sooner.

kube-apiserver's writes: 1 a second instead of the default 5 (``--writes-per-second``; the demo and
the bench keep 5). Five sandboxes idle beside each other for most of ``make test``, and an idle
sandbox used 8.7 CPU-s per 90 s at 5 writes a second, 4.9 at 1 (side by side, its etcd members
most of it). The writes still come, leases and Events alike: the revision of a running cluster still
moves every second, and a test that needs a write at a given moment makes it itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from hcp_sandbox.client import SandboxApiError, SandboxClient

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "include" / "rbac"
# The shared sandbox of the integration suites: ha-one (3 members), single-one (1), 4 MiB each.
UP_ARGS = ("--cluster", "ha-one:3", "--cluster", "single-one:1", "--seed-mb", "4")
# Seconds before a new pod is Ready and before a deleted one is gone (the sandbox's default is 1 s).
TEST_POD_DELAY = 0.2
# kube-apiserver's writes into a running cluster's etcd per second (the sandbox's default is 5).
TEST_WRITES_PER_SECOND = 1.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "include"), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m hcp_sandbox ARGS`` with ``include`` on PYTHONPATH."""
    return subprocess.run(
        [sys.executable, "-m", "hcp_sandbox", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        check=False,
    )


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY='value'`` lines of ``airflow.env``."""
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key] = value
    return env


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class SandboxApi(SandboxClient):
    """The sandbox's one client (``hcp_sandbox.client``) with what only tests ask of it."""

    def refused_since(self, seq: int) -> list[str]:
        """Requests of the restricted token (Airflow's) that the sandbox's RBAC refused after ``seq``."""
        return [
            f"{i['verb']} {i['plural']}{'/' + i['subresource'] if i.get('subresource') else ''} "
            f"{i.get('namespace') or ''}/{i.get('name') or ''}"
            for i in self.requests_since(seq)[0]
            if i["code"] == 403 and i.get("user") == "token"
        ]


@dataclass
class Sandbox:
    """A running sandbox, as the fixtures hand it to tests (see the module docstring)."""

    dir: Path
    info: dict[str, Any]
    env: dict[str, str]
    seen_pids: set[int] = field(default_factory=set)

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        """The kubeconfig whose token ``--rbac`` does not restrict: for tests' setup and inspection."""
        return Path(self.info["admin_kubeconfig"])

    @property
    def bucket(self) -> str:
        return self.info["bucket"]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @cached_property
    def api(self) -> SandboxApi:
        """The ``/sandbox/v1`` API with the kubeconfig's (Airflow's) token."""
        return SandboxApi.from_kubeconfig(self.kubeconfig, self.ca)

    def refresh(self) -> dict[str, Any]:
        """Re-read ``sandbox.json`` (pids change when hosted clusters are created or deleted)."""
        self.info = json.loads((self.dir / "sandbox.json").read_text())
        self.seen_pids.update(self.pids())
        return self.info

    def pids(self) -> list[int]:
        pids = self.info.get("pids", {})
        found = [pids.get("serve"), pids.get("s3"), pids.get("s3_replica"), *pids.get("etcd", [])]
        return sorted({p for p in found if isinstance(p, int)})

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, timeout=timeout)

    def fault(self, kind: str, *args: str) -> dict[str, Any]:
        result = run_cli("fault", "--dir", str(self.dir), kind, *args)
        assert result.returncode == 0, f"fault {kind} {args} failed: {result.stdout}{result.stderr}"
        return json.loads(result.stdout)

    def down(self) -> None:
        """Stop the sandbox and assert that none of its processes is left."""
        self.refresh()
        result = run_cli("down", "--dir", str(self.dir))
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 10
        while (left := [p for p in self.seen_pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left after down: {left}"


def start_sandbox(directory: Path, *up_args: str) -> Sandbox:
    """``up`` a sandbox in ``directory``; fails the test with the CLI's output when it does not start."""
    timings = ("--pod-ready-delay", str(TEST_POD_DELAY), "--writes-per-second", str(TEST_WRITES_PER_SECOND))
    result = run_cli("up", "--dir", str(directory), *timings, *up_args)
    if result.returncode != 0:
        run_cli("down", "--dir", str(directory))
        pytest.fail(f"sandbox up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    box = Sandbox(directory, {}, parse_env_file(directory / "airflow.env"))
    box.refresh()
    return box


def start_rbac_sandbox(directory: Path, *up_args: str) -> Sandbox:
    """A sandbox that enforces include/rbac for the token in its ``airflow.env`` and ``kubeconfig``."""
    box = start_sandbox(directory, "--rbac", str(RBAC), *up_args)
    # Proof that it is enforced (else "no 403" would prove nothing): creating a Namespace, which
    # include/rbac does not grant, is refused for that token.
    try:
        with pytest.raises(SandboxApiError) as refused:
            box.api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "rbac-probe"}})
        assert refused.value.status == 403, refused.value
    except BaseException:
        box.down()
        raise
    return box
