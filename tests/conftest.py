"""Shared fixtures: the sandbox (a HyperShift management cluster in a box) for integration tests.

``sandbox`` (session scope) runs, once per test session::

    python -m hcp_sandbox up --dir <tmp> --cluster ha-one:3 --cluster single-one:1 --seed-mb 4

and ``down`` at the end (asserting that no process of it is left). It yields a :class:`Sandbox`:

- ``.dir`` (Path): the sandbox directory; ``.kubeconfig`` (Path): kubeconfig with server, CA, token;
- ``.env`` (dict): ``airflow.env`` parsed (``AIRFLOW_CONN_KUBERNETES_DEFAULT``,
  ``AIRFLOW_CONN_AWS_DEFAULT``, ``HCP_ETCD_BUCKET``, ``AWS_CA_BUNDLE``): put it in ``os.environ`` (e.g.
  ``monkeypatch.setenv``) and Airflow's ``kubernetes_default`` / ``aws_default`` reach the sandbox;
- ``.bucket`` (str), ``.info`` (dict: ``sandbox.json`` as read at start; ``.refresh()`` re-reads it);
- ``.cli(*args)`` runs ``python -m hcp_sandbox <args>`` (``--dir`` not included);
- ``.fault(kind, *args)`` runs ``python -m hcp_sandbox fault --dir DIR kind *args`` and returns the
  JSON answer, e.g. ``sandbox.fault("s3", "--code", "503", "--count", "2")``;
- ``.pids()``: every process id the sandbox recorded.

Hosted clusters: ``clusters/ha-one`` (3 etcd members, HighlyAvailable, control plane in
``clusters-ha-one``) and ``clusters/single-one`` (1 member, SingleReplica). Tests that change them
must put them back (unpause, restart members, clear faults they did not consume).

``make_sandbox`` (function scope) is a factory for a test that needs a sandbox of its own:
``make_sandbox("--cluster", "x:1")`` starts one in a fresh directory, stopped after the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
UP_ARGS = ("--cluster", "ha-one:3", "--cluster", "single-one:1", "--seed-mb", "4")


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
    def bucket(self) -> str:
        return self.info["bucket"]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def refresh(self) -> dict[str, Any]:
        """Re-read ``sandbox.json`` (pids change when hosted clusters are created or deleted)."""
        self.info = json.loads((self.dir / "sandbox.json").read_text())
        self.seen_pids.update(self.pids())
        return self.info

    def pids(self) -> list[int]:
        pids = self.info.get("pids", {})
        found = [pids.get("serve"), pids.get("s3"), *pids.get("etcd", [])]
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
        while (left := [p for p in self.seen_pids if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left after down: {left}"


def start_sandbox(directory: Path, *up_args: str) -> Sandbox:
    """``up`` a sandbox in ``directory``; fails the test with the CLI's output when it does not start."""
    result = run_cli("up", "--dir", str(directory), *up_args)
    if result.returncode != 0:
        run_cli("down", "--dir", str(directory))
        pytest.fail(f"sandbox up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    box = Sandbox(directory, {}, parse_env_file(directory / "airflow.env"))
    box.refresh()
    return box


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The shared sandbox: ``ha-one`` (3 members) and ``single-one`` (1), 4 MiB of seed data each."""
    box = start_sandbox(tmp_path_factory.mktemp("sandbox"), *UP_ARGS)
    try:
        yield box
    finally:
        box.down()


@pytest.fixture
def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """A factory: ``make_sandbox(*up_args)`` starts an isolated sandbox, stopped after the test."""
    started: list[Sandbox] = []

    def make(*up_args: str) -> Sandbox:
        box = start_sandbox(tmp_path_factory.mktemp("own-sandbox"), *up_args)
        started.append(box)
        return box

    yield make
    for box in started:
        box.down()
