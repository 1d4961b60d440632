"""A process that imports once and forks a worker per request, the way a LocalExecutor pool does.

A fresh ``python`` that imports Airflow, the providers and the project costs seconds; a fork of a
process that has them imported costs milliseconds. Each worker is still a process of its own, so
runs share nothing but what was imported before the fork (no DB connection is open then).

The server (``python -m tests.support.fork_server ITEM...``) imports each ITEM (a module, or calls
a ``module:function`` that warms up more than imports do), prints
``@@READY@@`` and reads one JSON request per line on stdin, answering one JSON line on stdout:

- ``{"call": "module:function", "kwargs": {...}, "log": PATH, "env": {...}}`` forks a worker that
  sets ``env`` in its environment (only what is read at use time, e.g. ``AIRFLOW_CONN_*``: Airflow's
  configuration was read when the server imported it), starts a session of its own (so a SIGKILL of
  its process group reaches all it started), writes its stdout and stderr to ``log`` and calls the
  function; it exits 0 when the function returned, 1 when it raised (traceback in the log). The
  answer: ``{"pid": PID}``.
- ``{"reap": PID}`` waits for that worker; the answer: ``{"code": EXIT_CODE}`` (negative: a signal).

:class:`ForkServer` is the client side: it starts the server and talks to it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
READY = "@@READY@@"


def process_state(pid: int) -> str:
    """The state letter of ``/proc/PID/stat`` (``T`` stopped, ``Z`` ended, not reaped yet), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def resolve(target: str) -> Callable[..., Any]:
    """``"module:function"`` (the function may be a dotted attribute path) to the object."""
    module, _, path = target.partition(":")
    found: Any = importlib.import_module(module)
    for part in path.split("."):
        found = getattr(found, part)
    return found


def _work(request: dict[str, Any], protocol: int) -> None:
    """The forked worker: never returns."""
    code = 0
    try:
        os.close(protocol)
        os.setsid()
        os.environ.update(request.get("env") or {})
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        resolve(request["call"])(**request.get("kwargs", {}))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(preload: list[str]) -> None:
    """Import ``preload``, then answer requests until stdin closes."""
    # The answers go to the original stdout; whatever the imported code prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for item in preload:
        if ":" in item:
            resolve(item)()  # a warm-up function
        else:
            importlib.import_module(item)
    print(READY, file=protocol, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "reap" in request:
            _, status = os.waitpid(request["reap"], 0)
            answer: dict[str, Any] = {"code": os.waitstatus_to_exitcode(status)}
        else:
            pid = os.fork()
            if pid == 0:
                _work(request, protocol.fileno())
            answer = {"pid": pid}
        print(json.dumps(answer), file=protocol, flush=True)


class ForkServer:
    """The client of a fork server started with ``env`` (its Airflow home, connections, paths).

    :param env: the server's environment; ``PYTHONPATH`` gets the repository root in front, so that
        the server finds ``tests.support``.
    :param preload: modules to import (or ``module:function`` to call) before the first fork.
    """

    def __init__(self, env: dict[str, str], preload: list[str]) -> None:
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.started: list[int] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fork_server", *preload],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )  # fmt: skip
        ready = self._line()
        assert ready == READY, f"fork server did not start: {ready!r} (exit code {self.proc.poll()})"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            return json.loads(self._line())

    def fork(self, call: str, kwargs: dict[str, Any], log: Path, env: dict[str, str] | None = None) -> int:
        """Fork a worker that calls ``call(**kwargs)`` with its output in ``log``; its pid."""
        pid = int(self._ask({"call": call, "kwargs": kwargs, "log": str(log), "env": env or {}})["pid"])
        self.started.append(pid)
        return pid

    def reap(self, pid: int) -> int:
        """The exit code of an ended worker (negative: the signal)."""
        return int(self._ask({"reap": pid})["code"])

    def wait(self, pid: int, timeout: float) -> int:
        """Wait until the worker ends and reap it; after ``timeout`` seconds SIGKILL it first."""
        deadline = time.monotonic() + timeout
        while process_state(pid) not in ("Z", "gone") and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_state(pid) not in ("Z", "gone"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return self.reap(pid)

    def close(self) -> None:
        """Kill what is left of the workers (by their own process groups), then stop the server."""
        for pid in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


if __name__ == "__main__":
    serve(sys.argv[1:])
