"""Every fault kind the sandbox can inject, in one room: what each one takes, where it waits, what it does.

``POST /sandbox/v1/faults`` (``python -m hcp_sandbox fault``) takes a JSON spec with a ``kind``:

- ``api``: queued in :class:`ApiFaults`; the API server answers the next N matching requests with
  :func:`injected_error`.
- ``exec-drop``: queued in :class:`ApiFaults`; the API server's exec session cuts the next N streams
  to that pod after B bytes.
- ``s3``: queued in ``DIR/s3-faults.json`` (:func:`add_s3_fault`); the S3 process's
  :class:`S3FaultMiddleware` answers an error or drops the connection.
- ``etcd-stop`` / ``etcd-start``: :class:`RuntimeFaults` stops / starts that member's process.
- ``restore-split-brain``: counted in :class:`RuntimeFaults`; the etcd room's next restores take it
  (:meth:`RuntimeFaults.take_legacy_etcd_init`) and run the released etcd-init, as ``up --etcd-init
  legacy`` does for every restore: one-member clusters.
- ``volume``: kept in :class:`RuntimeFaults`; an exec into that pod gets it, so ``df`` reports it.
- ``clock``: kept in :class:`RuntimeFaults`; HyperShift's "now" (the ``pausedUntil`` check) runs ahead.
- ``key-rotation``: not a fault but a state to meet, an AES-CBC key rotation caught midway; it needs
  the hosted clusters' etcd and objects, so the runtime applies it itself
  (:mod:`hcp_sandbox.controllers.reencryption`).

The API server handles ``api`` and ``exec-drop`` itself and hands every other kind to the runtime's
fault handler, :meth:`RuntimeFaults.inject`. Nothing here imports the runtime: the etcd members are
reached through the ``find_member`` callable the runtime passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hcp_sandbox.errors import ApiError, bad_request, conflict
from hcp_sandbox.resources import ResourceType

if TYPE_CHECKING:
    from hcp_sandbox.etcd import EtcdCluster, Member

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# api and exec-drop: the API server's
# ---------------------------------------------------------------------------------------------

API_FAULT_VERBS = frozenset({"get", "list", "create", "update", "patch", "delete", "deletecollection", "*"})
_FAULT_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiFaults:
    """The API layer's pending faults (``api``, ``exec-drop``); each fires on the next ``count``
    matching requests."""

    KINDS = frozenset({"api", "exec-drop"})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Validate and queue an ``api`` or ``exec-drop`` fault; returns it with its ``id``."""
        kind = spec.get("kind")
        count = spec.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise bad_request("fault count must be a positive integer")
        if kind == "api":
            resource, verb, code = spec.get("resource"), spec.get("verb", "*"), spec.get("code")
            if not isinstance(resource, str) or not resource:
                raise bad_request("api fault needs 'resource' (<plural>[/<subresource>] or '*')")
            if verb not in API_FAULT_VERBS:
                raise bad_request(f"api fault verb must be one of {sorted(API_FAULT_VERBS)}")
            if not isinstance(code, int) or not 400 <= code <= 599:
                raise bad_request("api fault needs an HTTP error 'code' (400-599)")
            fault = {"kind": kind, "resource": resource, "verb": verb, "code": code, "count": count}
        elif kind == "exec-drop":
            namespace, pod, after = spec.get("namespace"), spec.get("pod"), spec.get("after_bytes", 0)
            if not isinstance(namespace, str) or not isinstance(pod, str):
                raise bad_request("exec-drop fault needs 'namespace' and 'pod'")
            if not isinstance(after, int) or after < 0:
                raise bad_request("exec-drop 'after_bytes' must be a non-negative integer")
            fault = {"kind": kind, "namespace": namespace, "pod": pod, "after_bytes": after, "count": count}
        else:
            raise ValueError(kind)
        with self._lock:
            fault["id"] = next(self._ids)
            self._pending.append(fault)
        return dict(fault)

    def _take(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        with self._lock:
            for fault in self._pending:
                if match(fault):
                    fault["count"] -= 1
                    if fault["count"] == 0:
                        self._pending.remove(fault)
                    return dict(fault)
        return None

    def take_api(self, plural: str, subresource: str | None, verb: str) -> dict[str, Any] | None:
        """Consume one firing of an ``api`` fault matching this request, if any."""
        resource = f"{plural}/{subresource}" if subresource else plural
        return self._take(
            lambda f: f["kind"] == "api" and f["resource"] in (resource, "*") and f["verb"] in (verb, "*")
        )

    def take_exec_drop(self, namespace: str, pod: str) -> dict[str, Any] | None:
        """Consume one firing of an ``exec-drop`` fault for this pod, if any."""
        return self._take(
            lambda f: f["kind"] == "exec-drop" and (f["namespace"], f["pod"]) == (namespace, pod)
        )

    def list(self) -> list[dict[str, Any]]:
        """The pending faults."""
        with self._lock:
            return [dict(f) for f in self._pending]

    def clear(self) -> int:
        """Drop every pending fault; returns how many there were."""
        with self._lock:
            n = len(self._pending)
            self._pending.clear()
            return n


def injected_error(fault: dict[str, Any], rt: ResourceType, name: str) -> ApiError:
    """What a request hit by an ``api`` fault answers."""
    code = fault["code"]
    if code == 409:
        return conflict(rt, name)
    if code == 503:
        return ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    return ApiError(
        code,
        _FAULT_REASONS.get(code, "Unknown"),
        f"Internal error occurred: injected fault {fault['id']}",
    )


# ---------------------------------------------------------------------------------------------
# s3: queued in a file, consumed by the S3 process
# ---------------------------------------------------------------------------------------------

# The S3 process consumes the queue one request at a time, in order, under an ``flock``: answer the
# next N requests with an error code (503 ``SlowDown``), or drop the connection after reading B bytes
# of the request body.

_S3_REASONS = {500: "Internal Server Error", 503: "Slow Down", 403: "Forbidden", 404: "Not Found"}
_S3_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 404: "NoSuchKey"}


@contextlib.contextmanager
def _locked_s3_faults(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The pending fault list, locked; changes to the list are written back."""
    path.touch(exist_ok=True)
    with open(path, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = fh.read()
        faults: list[dict[str, Any]] = json.loads(text) if text.strip() else []
        yield faults
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(faults))


def add_s3_fault(
    path: Path, *, count: int, code: int | None = None, drop: bool = False, after_bytes: int = 0
) -> None:
    """Queue a fault for the next ``count`` requests (called by the serve process)."""
    if count < 1 or (code is None) == (not drop):
        raise ValueError("an S3 fault needs count >= 1 and exactly one of code or drop")
    with _locked_s3_faults(path) as faults:
        faults.append({"code": code, "drop": drop, "after_bytes": after_bytes, "remaining": count})


def take_s3_fault(path: Path) -> dict[str, Any] | None:
    """Consume one firing of the first queued S3 fault (called by the S3 process for each request)."""
    with _locked_s3_faults(path) as faults:
        if not faults:
            return None
        fault = dict(faults[0])
        faults[0]["remaining"] -= 1
        if faults[0]["remaining"] <= 0:
            faults.pop(0)
        return fault


def clear_s3_faults(path: Path) -> int:
    """Drop the S3 faults not consumed yet; returns how many were queued."""
    with _locked_s3_faults(path) as faults:
        n = len(faults)
        faults.clear()
        return n


StartResponse = Callable[..., Any]


class S3FaultMiddleware:
    """WSGI middleware in front of moto that applies the pending faults."""

    def __init__(self, app: Callable[..., Iterable[bytes]], faults_file: Path) -> None:
        self.app = app
        self.faults_file = faults_file

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("TrentService."):
            return self.app(environ, start_response)  # KMS, served by the same moto: S3 faults are S3's
        fault = take_s3_fault(self.faults_file)
        if fault is None:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        if fault["drop"]:
            # Read part of the body, as a server that dies mid-upload does, then cut the connection.
            remaining = min(fault["after_bytes"], length)
            while remaining > 0 and (chunk := stream.read(min(remaining, 65536))):
                remaining -= len(chunk)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            log.warning("S3 fault: dropped %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            # werkzeug treats a ConnectionError as "client went away" and writes nothing more.
            raise ConnectionAbortedError("sandbox fault: connection dropped")
        # Drain the body so the keep-alive connection stays in sync, then answer the error. boto3
        # sends small PUTs chunked (aws-chunked, no Content-Length): drain those to their end too,
        # or the client sees a reset connection and retries instead of reading the error.
        if environ.get("wsgi.input_terminated"):
            while stream.read(65536):
                pass
        while length > 0 and (chunk := stream.read(min(length, 65536))):
            length -= len(chunk)
        code = int(fault["code"])
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{_S3_CODES.get(code, 'InternalError')}</Code>"
            "<Message>Please reduce your request rate.</Message>"
            f"<Resource>{environ.get('PATH_INFO', '')}</Resource><RequestId>sandbox-fault</RequestId></Error>"
        ).encode()
        log.warning("S3 fault: %s for %s %s", code, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        start_response(
            f"{code} {_S3_REASONS.get(code, 'Error')}",
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        return [body]


# ---------------------------------------------------------------------------------------------
# The runtime's kinds: s3, etcd-stop/start, restore-split-brain, volume, clock
# ---------------------------------------------------------------------------------------------

MemberLookup = Callable[[str, str], "tuple[EtcdCluster, Member] | None"]
"""``find_member(namespace, pod)``: the etcd cluster and member behind an etcd pod, or ``None``."""


class RuntimeFaults:
    """The fault kinds the API layer does not apply, and the state they leave for the runtime to read.

    :param s3_faults: the S3 process's queue file (``DIR/s3-faults.json``).
    :param s3_replica_faults: the replica S3 process's (``up --replica-s3``); None without one.
    :param find_member: the etcd member behind a pod (:data:`MemberLookup`).
    :param changed: called after a fault changed the runtime (rewrite ``sandbox.json``, reconcile now).
    """

    def __init__(
        self,
        s3_faults: Path,
        find_member: MemberLookup,
        changed: Callable[[], None],
        s3_replica_faults: Path | None = None,
    ) -> None:
        self.s3_faults = s3_faults
        self.s3_replica_faults = s3_replica_faults
        self._find_member = find_member
        self._changed = changed
        # The `clock` fault: how far HyperShift's "now" runs ahead of real time (pause check only).
        self.clock_ahead_seconds = 0.0
        # The `restore-split-brain` fault: how many of the next restores run the legacy etcd-init.
        self.split_brain_restores = 0
        # The `volume` fault: what `df` reports as free in a pod, by (namespace, pod).
        self._volume_free: dict[tuple[str, str], int] = {}

    def take_legacy_etcd_init(self) -> bool:
        """Whether the restore starting now runs the legacy etcd-init (consumes one pending fault)."""
        if self.split_brain_restores <= 0:
            return False
        self.split_brain_restores -= 1
        return True

    def volume_free_bytes(self, namespace: str, pod: str) -> int | None:
        """What ``df`` reports as free in that pod; ``None`` for the real figure."""
        return self._volume_free.get((namespace, pod))

    def forget_namespace(self, namespace: str) -> None:
        """A control-plane namespace is gone: its pods' faults go with it."""
        for key in [k for k in self._volume_free if k[0] == namespace]:
            del self._volume_free[key]

    async def inject(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply one fault ``spec``; returns what was done (the API's answer)."""
        kind = spec.get("kind")
        if kind == "s3":
            # The replica's endpoint keeps its own queue next to the primary's.
            queue = self.s3_replica_faults if spec.get("replica") else self.s3_faults
            if queue is None:
                raise ApiError(400, "BadRequest", "no replica S3 endpoint: up --replica-s3")
            try:
                add_s3_fault(
                    queue,
                    count=int(spec.get("count", 1)),
                    code=spec.get("code"),
                    drop=bool(spec.get("drop")),
                    after_bytes=int(spec.get("after_bytes", 0)),
                )
            except (TypeError, ValueError) as exc:
                raise ApiError(400, "BadRequest", f"bad s3 fault: {exc}") from exc
            return dict(spec)
        if kind == "clock":
            return self._set_clock(spec.get("ahead_seconds"))
        if kind == "restore-split-brain":
            self.split_brain_restores += int(spec.get("count", 1))
            return {"kind": kind, "pending": self.split_brain_restores}
        namespace, pod = spec.get("namespace", ""), spec.get("pod", "")
        found = self._find_member(namespace, pod)
        if found is None:
            raise ApiError(404, "NotFound", f"no etcd pod {namespace}/{pod}")
        cluster, member = found
        if kind == "etcd-stop":
            await asyncio.to_thread(cluster.stop_member, member)
        elif kind == "etcd-start":
            cluster.start_member(member)
        elif kind == "volume":
            free = spec.get("free_bytes")
            if free is None or int(free) < 0:
                self._volume_free.pop((namespace, pod), None)
            else:
                self._volume_free[(namespace, pod)] = int(free)
        else:
            raise ApiError(400, "BadRequest", f"unknown fault kind {kind!r}")
        self._changed()
        return {"kind": kind, "namespace": namespace, "pod": pod}

    def _set_clock(self, ahead: Any) -> dict[str, Any]:
        """Run HyperShift's clock ``ahead`` seconds ahead of real time (0: real time again)."""
        if isinstance(ahead, bool) or not isinstance(ahead, int | float) or not 0 <= ahead <= 10**9:
            raise ApiError(400, "BadRequest", "clock fault needs 'ahead_seconds', a number >= 0")
        self.clock_ahead_seconds = float(ahead)
        # Reconcile now: a deadline passed by the jump is acted on at once, not at the next tick.
        self._changed()
        return {
            "kind": "clock",
            "ahead_seconds": self.clock_ahead_seconds,
            "now": self.hypershift_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def hypershift_now(self) -> datetime.datetime:
        """HyperShift's "now": real time plus the ``clock`` fault's offset."""
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.clock_ahead_seconds)
