"""``on_kill`` of the restore's ``hcp`` render: the subprocess (and what it started) is ended."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.restore import CreateRestoredClusterOperator
from hcp_etcd.restore import RestoreInputError


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_render_ends_hcp_and_its_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An `hcp` that hangs in a child process (as a render waiting on AWS would).
    script = tmp_path / "bin" / "hcp"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\nsleep 3600 &\necho "$$ $!" > "{tmp_path}/pids"\nwait\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    op = CreateRestoredClusterOperator(task_id="create", bucket="b", render_options={"x": "y"})
    errors: list[BaseException] = []

    def render() -> None:
        try:
            op._render_with_hcp(ClusterRef("clusters", "new1"))
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=render, daemon=True)
    thread.start()
    pids_file = tmp_path / "pids"
    deadline = time.monotonic() + 30
    while not (pids_file.exists() and len(pids_file.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the fake hcp did not start"
        time.sleep(0.02)
    pids = [int(p) for p in pids_file.read_text().split()]
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the render did not end after on_kill"
    assert errors and isinstance(errors[0], RestoreInputError) and "exited with -9" in str(errors[0])
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if _alive(p)], "hcp or its child survived"
