"""``on_kill`` of the restore's ``hcp`` render: the subprocess (and what it started) is ended."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from hcp_etcd.errors import RestoreInputError
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.restore import CreateRestoredClusterOperator


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


def test_a_stopped_exec_stream_fails_its_reader_instead_of_ending_early() -> None:
    """An S3 multipart upload reading a stopped stream must abort, not store what it got as the whole."""
    from hcp_etcd.hooks.hosted_cluster import ExecError, ExecStream

    class OpenWS:  # a command still writing: frames keep coming until the socket is closed
        def __init__(self) -> None:
            self.open, self.data = True, b""

        def is_open(self) -> bool:
            return self.open

        def update(self, timeout: float = 0) -> None:
            if not self.open:
                raise ValueError("the socket was closed under this read")
            self.data += b"x" * 1024

        def peek_channel(self, channel: int, timeout: float = 0) -> bool:
            return channel == 1 and bool(self.data)

        def read_channel(self, channel: int, timeout: float = 0) -> bytes:
            data, self.data = self.data, b""
            return data

        def close(self) -> None:
            self.open = False

    stream = ExecStream(OpenWS(), "ns/etcd-0[etcd]", 60)
    assert len(stream.read(4096)) == 4096
    stream.stop()
    with pytest.raises(ExecError, match="stopped"):
        stream.read(4096)
