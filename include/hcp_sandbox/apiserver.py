"""The sandbox's Kubernetes API server: real kubectl and the kubernetes Python client talk to it.

It serves discovery (legacy and aggregated v2), CRUD, list with label/field selectors, the four
patch types, the ``status`` and ``scale`` subresources and ``pods/exec`` over WebSocket
(``v5.channel.k8s.io``/``v4.channel.k8s.io``) from a :class:`~hcp_sandbox.store.Store`. What a
command in a pod does is the runtime's business: it passes an :class:`ExecHandler`.

It also has an admin API under ``/sandbox/v1`` (same token) to inject faults (failing API
calls, exec sessions cut mid-stream; every kind is in :mod:`hcp_sandbox.faults`) and to read the
request log, which tests use to prove that a bad input made no write.

An ``authorizer`` (RBAC) applies to the token only. An optional ``admin_token`` is never
authorized: the cluster-admin of the box, for tests that set up or inspect what the restricted
identity may not touch.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import copy
import datetime
import hmac
import json
import logging
import pathlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jsonpatch
from aiohttp import WSMsgType, web

from hcp_sandbox import resources
from hcp_sandbox.errors import (
    ApiError,
    bad_request,
    conflict,
    method_not_allowed,
    not_found,
    page_not_found,
    unsupported_media_type,
)
from hcp_sandbox.faults import ApiFaults, injected_error
from hcp_sandbox.resources import ResourceType
from hcp_sandbox.store import Obj, Store, matches_labels, parse_label_selector

log = logging.getLogger(__name__)
# The request-log entry being filled in while a request is handled.
_LOG_ENTRY: web.RequestKey[dict[str, Any]] = web.RequestKey("hcp_sandbox_log_entry", dict)

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.5",
    "gitCommit": "9894294ef13a5b32803e3ca2c0d620a088cc84d1",
    "gitTreeState": "clean",
    "buildDate": "2025-05-15T09:02:36Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")  # in order of preference
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
EXEC_CHUNK = 64 * 1024
REQUEST_LOG_SIZE = 50_000
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


class ExecHandler(Protocol):
    """Runs a command "in" a pod's container for ``pods/exec``; implemented by the runtime."""

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
        """
        Run ``command`` and return its exit code.

        :param stdin: chunks the client sends, ``None`` at EOF; ``None`` when the client asked no stdin.
        :param stdout: await it with output; it returns once the bytes are on their way (backpressure).
        :param stderr: same for standard error.
        """
        ...


class FaultHandler(Protocol):
    """Injects the fault kinds the API layer does not know (the runtime's: ``s3``, ``etcd-stop``...)."""

    async def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply ``spec`` and return a JSON-able description of what was done."""
        ...


LogHandler = Callable[[str, str, str], str]
"""``log_handler(namespace, pod, container)``: what that container printed (``pods/log``)."""

Authorizer = Callable[[str, str, str, str | None, str | None], bool]
"""``authorizer(verb, plural, namespace, subresource, name)``: ``False`` answers 403 Forbidden."""

_ADMIN: web.RequestKey[bool] = web.RequestKey("hcp_sandbox_admin", bool)


def _status_response(error: ApiError) -> web.Response:
    return web.json_response(error.status(), status=error.code, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _ok(obj: Any, status: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(
        body=_dumps(obj).encode(),
        status=status,
        content_type=None,
        headers={
            "Content-Type": content_type,
        },
    )


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7386): objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class JsonPatchError(Exception):
    """A JSON patch operation that cannot be applied (answered 422, as the real server does)."""


_JSON_PATCH_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def _json_patch_failure(op: dict[str, Any], exc: Exception) -> JsonPatchError:
    """The real server's words (evanphx/json-patch, as kube-apiserver vendors it) for a failed op."""
    kind, path = op["op"], op["path"]
    if isinstance(exc, jsonpatch.JsonPatchTestFailed):
        return JsonPatchError(f"testing value {path} failed: test failed")
    if kind == "replace":
        return JsonPatchError(f"replace operation does not apply: doc is missing key: {path}: missing value")
    if kind == "remove":
        return JsonPatchError(f"remove operation does not apply: doc is missing path: {path}")
    # (Not the library's own text: it quotes the document, which may be a Secret.)
    missing = op.get("from", path)
    return JsonPatchError(f"{kind} operation does not apply: doc is missing path: {missing}: missing value")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply a JSON patch (RFC 6902, the ``jsonpatch`` library) to a copy of ``doc``.

    A malformed operation is a 400 :class:`~hcp_sandbox.errors.ApiError`; an operation that does not
    apply raises :class:`JsonPatchError` naming it.
    """
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    # One operation at a time, as the real server does: a failure names the operation that failed.
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request("invalid JSON patch operation: each needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind not in _JSON_PATCH_OPS:
            raise bad_request(f"Unexpected kind: {kind}")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"{kind} operation has no value: {path}")
        if kind in ("move", "copy") and "from" not in op:
            raise bad_request(f"{kind} operation has no 'from': {path}")
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.InvalidJsonPatch as exc:
            raise bad_request(f"invalid JSON patch operation: {exc}") from None
        # A path that does not resolve raises the pointer library's error (jsonpatch re-exports it).
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise _json_patch_failure(op, exc) from None
    return doc


def apply_patch(rt: ResourceType, content_type: str, doc: Obj, patch: Any) -> Obj:
    """Apply a PATCH body of ``content_type`` to ``doc`` as the real server would for ``rt``."""
    if content_type == JSON_PATCH:
        try:
            result = json_patch(doc, patch)
        except JsonPatchError as exc:
            raise ApiError(422, "Invalid", str(exc), details={}) from None
    elif content_type == MERGE_PATCH or (content_type == STRATEGIC_MERGE_PATCH and not rt.custom):
        # Strategic merge on built-in kinds differs from merge patch only for keyed lists
        # (containers by name...), which nothing in the procedure patches: merge is enough here.
        if not isinstance(patch, dict):
            raise bad_request("the patch must be a JSON object")
        result = merge_patch(doc, patch)
    else:
        raise unsupported_media_type([JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
    if not isinstance(result, dict):
        raise bad_request("the patch did not produce an object")
    return result


# ---------------------------------------------------------------------------------------------
# Subresource views
# ---------------------------------------------------------------------------------------------


def selector_string(selector: dict[str, Any] | None) -> str:
    """A ``LabelSelector`` as the string form a ``Scale``'s ``status.selector`` carries."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)


def scale_of(obj: Obj) -> Obj:
    """The ``autoscaling/v1`` ``Scale`` of a Deployment or StatefulSet."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string((obj.get("spec") or {}).get("selector")),
        },
    }


# ---------------------------------------------------------------------------------------------
# The request log
# ---------------------------------------------------------------------------------------------


class RequestLog:
    """The last requests (bounded), optionally mirrored to a JSON-lines file."""

    def __init__(self, path: pathlib.Path | None, maxlen: int = REQUEST_LOG_SIZE) -> None:
        self._lock = threading.Lock()
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = 0
        self._path = path

    def append(self, entry: dict[str, Any]) -> None:
        """Record one request (``seq`` and ``time`` are added here)."""
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq,
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                **entry,
            }
            self._entries.append(entry)
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as f:
                    f.write(_dumps(entry) + "\n")

    def since(self, seq: int) -> tuple[list[dict[str, Any]], int]:
        """Entries with a ``seq`` above ``seq``, and the latest ``seq``."""
        with self._lock:
            return [dict(e) for e in self._entries if e["seq"] > seq], self._seq


WATCH_HISTORY_SIZE = 10_000
WatchEvent = tuple[str, str, Obj]


def _watch_line(event: str, obj: Obj) -> bytes:
    return (_dumps({"type": event, "object": obj}) + "\n").encode()


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class EventHistory:
    """The store's recent changes, for watches that resume from a resourceVersion, and live fan-out."""

    def __init__(self, store: Store, maxlen: int = WATCH_HISTORY_SIZE) -> None:
        self._lock = threading.Lock()
        self._events: collections.deque[tuple[int, WatchEvent]] = collections.deque(maxlen=maxlen)
        # Versions at or below the floor are not retained: watching from there answers 410.
        self._floor = int(store.resource_version)
        self._watchers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[WatchEvent]]] = set()
        store.subscribe(self._record)

    def _record(self, event: str, plural: str, obj: Obj) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self._floor = self._events[0][0]
            self._events.append((rv, (event, plural, obj)))
            watchers = list(self._watchers)
        for loop, queue in watchers:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its watch is over
                loop.call_soon_threadsafe(queue.put_nowait, (event, plural, obj))

    @contextlib.contextmanager
    def watch(
        self, since: int
    ) -> collections.abc.Iterator[tuple[list[WatchEvent], asyncio.Queue[WatchEvent]]]:
        """Register a watcher: yields the retained events after ``since`` and a queue of live ones."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        watcher = (asyncio.get_running_loop(), queue)
        with self._lock:
            if since and since < self._floor:
                raise ApiError(410, "Expired", f"too old resource version: {since} ({self._floor})")
            backlog = [e for rv, e in self._events if rv > since] if since else []
            self._watchers.add(watcher)
        try:
            yield backlog, queue
        finally:
            with self._lock:
                self._watchers.discard(watcher)


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    """What a resource URL designates."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    def verb(self, method: str) -> str:
        """The Kubernetes verb for an HTTP method on this target."""
        if method == "GET":
            return "get" if self.name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if self.name else "deletecollection"
        raise method_not_allowed()


def parse_resource_path(path: str) -> Target | None:
    """
    Map ``/api/v1/...`` or ``/apis/<g>/<v>/...`` onto a :class:`Target`; ``None`` if not a resource URL.

    Raises 404 for URLs under a served group that name nothing served.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        rt = resources.lookup(group, version, rest[2])
        if rt is not None and rt.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = resources.lookup(group, version, rest[0])
    if rt is None or len(rest) > 3:
        raise page_not_found()
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if rt.namespaced and namespace is None and name is not None:
        raise page_not_found()  # /api/v1/pods/<name> does not exist
    if subresource is not None and rt.subresource(subresource) is None:
        raise page_not_found()
    return Target(rt, namespace, name, subresource)


def _flag(request: web.Request, name: str) -> bool:
    # The Python client sends "True", kubectl "true": booleans are case-insensitive.
    return request.query.get(name, "").lower() in ("true", "1")


def _field_matches(obj: Obj, selector: str | None) -> bool:
    """A minimal field selector: ``a.b=c``, ``a.b==c``, ``a.b!=c``, comma-joined."""
    for term in (t.strip() for t in (selector or "").split(",")):
        if not term:
            continue
        negate = "!=" in term
        key, _, value = term.partition("!=" if negate else ("==" if "==" in term else "="))
        node: Any = obj
        for part in key.strip().split("."):
            node = node.get(part) if isinstance(node, dict) else None
        actual = "" if node is None else str(node)
        if (actual == value.strip()) == negate:
            return False
    return True


class _Api:
    """The request handlers; one per application."""

    def __init__(
        self,
        store: Store,
        *,
        token: str,
        exec_handler: ExecHandler,
        fault_handler: FaultHandler | None,
        request_log: pathlib.Path | None,
        authorizer: Authorizer | None,
        admin_token: str | None = None,
        log_handler: LogHandler | None = None,
    ) -> None:
        self.store = store
        self.log_handler = log_handler
        self.token = token
        self.admin_token = admin_token
        self.exec_handler = exec_handler
        self.fault_handler = fault_handler
        self.authorizer = authorizer
        self.faults = ApiFaults()
        self.requests = RequestLog(request_log)
        self.events = EventHistory(store)

    # -- middleware: auth, errors, request log ---------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        request[_LOG_ENTRY] = entry = {
            "method": request.method,
            "path": request.path,
            "plural": None,
            "verb": None,
            "namespace": None,
            "name": None,
            "subresource": None,
            "code": 500,
            "user": None,
        }
        try:
            user = self._authenticated(request)
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            request[_ADMIN] = user == "admin"
            entry["user"] = user  # tests tell their own (admin) requests from the identity's
            response = await handler(request)
        except ApiError as exc:
            response = _status_response(exc)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            response = _status_response(ApiError(500, "InternalError", f"Internal error occurred: {exc}"))
        entry["code"] = response.status
        self.requests.append(entry)
        log.debug(
            "%s %s -> %d (%.1f ms)",
            request.method,
            request.path_qs,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _authenticated(self, request: web.Request) -> str | None:
        """``"token"``, ``"admin"`` or ``None`` (not authenticated)."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        given = credential.strip().encode()
        if hmac.compare_digest(given, self.token.encode()):
            return "token"
        if self.admin_token and hmac.compare_digest(given, self.admin_token.encode()):
            return "admin"
        return None

    # -- meta endpoints --------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return _ok(KUBERNETES_VERSION)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path.startswith("/sandbox/v1/"):
            return await self._admin(request, path)
        if request.method == "GET":
            discovery = self._discovery(request, path)
            if discovery is not None:
                return discovery
        target = parse_resource_path(path)
        if target is None:
            raise page_not_found()
        return await self._resource(request, target)

    def _discovery(self, request: web.Request, path: str) -> web.Response | None:
        aggregated = resources.wants_aggregated_discovery(request.headers.get("Accept"))
        if path in ("/api", "/apis"):
            if aggregated:
                body = resources.aggregated_discovery(core=path == "/api")
                return _ok(body, content_type=resources.AGGREGATED_DISCOVERY_CONTENT_TYPE)
            return _ok(resources.api_versions() if path == "/api" else resources.api_group_list())
        parts = path.strip("/").split("/")
        doc: dict[str, Any] | None
        if len(parts) == 2 and parts[0] == "api":
            doc = resources.api_resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = resources.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = resources.api_resource_list(parts[1], parts[2])
        else:
            return None
        if doc is None:
            raise page_not_found()
        return _ok(doc)

    async def _admin(self, request: web.Request, path: str) -> web.Response:
        if path == "/sandbox/v1/faults":
            if request.method == "GET":
                return _ok({"items": self.faults.list()})
            if request.method == "DELETE":
                return _ok({"cleared": self.faults.clear()})
            if request.method == "POST":
                spec = await self._json_body(request)
                if not isinstance(spec, dict):
                    raise bad_request("a fault is a JSON object")
                if spec.get("kind") in ApiFaults.KINDS:
                    return _ok(self.faults.add(spec), status=201)
                if self.fault_handler is None:
                    raise bad_request(f"unknown fault kind {spec.get('kind')!r} and no runtime fault handler")
                return _ok(await self.fault_handler(spec), status=201)
        elif path == "/sandbox/v1/requests" and request.method == "GET":
            try:
                since = int(request.query.get("since", "0"))
            except ValueError:
                raise bad_request("since must be an integer") from None
            items, latest = self.requests.since(since)
            return _ok({"items": items, "latest": latest})
        raise page_not_found()

    # -- resources -------------------------------------------------------------------------------

    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt, method = target.rt, request.method
        if target.subresource == "exec" and method in ("GET", "POST"):
            verb = "create" if method == "POST" else "get"
        else:
            verb = target.verb(method)
        request[_LOG_ENTRY].update(
            plural=rt.plural,
            verb=verb,
            namespace=target.namespace,
            name=target.name,
            subresource=target.subresource,
        )
        if (
            self.authorizer is not None
            and not request[_ADMIN]
            and not self.authorizer(verb, rt.plural, target.namespace or "", target.subresource, target.name)
        ):
            raise self._forbidden(target, verb)
        if fault := self.faults.take_api(rt.plural, target.subresource, verb):
            raise injected_error(fault, rt, target.name or "")
        if target.subresource == "exec":
            return await self._exec(request, target)
        if target.subresource == "log" and method == "GET":
            return self._pod_log(request, target)
        dry_run = self._dry_run(request)
        if verb == "list":
            if _flag(request, "watch"):
                return await self._watch(request, target)
            return self._list(request, target)
        if verb == "get":
            return _ok(self._view(target, self.store.get(rt.plural, target.namespace, target.name or "")))
        if verb == "create":
            if target.name is not None:
                raise method_not_allowed()
            return _ok(self._create(target, await self._json_body(request), dry_run), status=201)
        if verb == "update":
            body = await self._json_body(request)
            if not isinstance(body, dict):
                raise bad_request("the body must be a JSON object")
            client_rv = (body.get("metadata") or {}).get("resourceVersion")
            return _ok(self._update(target, lambda _current: (body, client_rv), dry_run))
        if verb == "patch":
            return _ok(await self._patch(request, target, dry_run))
        if verb == "delete":
            return _ok(self._delete(target, await self._json_body(request, optional=True), dry_run))
        return _ok(self._delete_collection(request, target, dry_run))

    def _pod_log(self, request: web.Request, target: Target) -> web.Response:
        """``pods/log``: ``container`` (checked against the pod's containers) and ``tailLines``."""
        pod = self.store.get(target.rt.plural, target.namespace, target.name or "")
        spec = pod.get("spec") or {}
        names = [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
        container = request.query.get("container") or (
            (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION) or names[0]
        )
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {target.name}")
        text = ""
        if self.log_handler is not None:
            text = self.log_handler(target.namespace or "", target.name or "", container)
        tail = request.query.get("tailLines")
        if tail is not None and tail.isdigit():
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) else ""
        return web.Response(text=text, content_type="text/plain")

    @staticmethod
    def _forbidden(target: Target, verb: str) -> ApiError:
        rt = target.rt
        scope = f' in the namespace "{target.namespace}"' if target.namespace else " at the cluster scope"
        resource = f"{rt.plural}/{target.subresource}" if target.subresource else rt.plural
        return ApiError(
            403,
            "Forbidden",
            f'{rt.group_resource} "{target.name or ""}" is forbidden: User cannot '
            f'{verb} resource "{resource}" in API group "{rt.group}"{scope}',
            details={"name": target.name or "", "group": rt.group, "kind": rt.plural},
        )

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        if any(v != "All" for v in values):
            raise bad_request(f"Invalid dryRun value: {values} (only All is supported)")
        return bool(values)

    @staticmethod
    async def _json_body(request: web.Request, *, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the request body is empty")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the body of the request is not valid JSON: {exc}") from None

    @staticmethod
    def _view(target: Target, obj: Obj) -> Obj:
        """What a GET of the target returns: the object, or its Scale."""
        return scale_of(obj) if target.subresource == "scale" else obj

    def _list(self, request: web.Request, target: Target) -> web.Response:
        rt = target.rt
        items = self.store.list(rt.plural, target.namespace, request.query.get("labelSelector"))
        field_selector = request.query.get("fieldSelector")
        items = [i for i in items if _field_matches(i, field_selector)]
        return _ok(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        """
        Stream watch events as JSON lines, like ``?watch=true`` on a real server.

        ``resourceVersion`` empty or ``"0"`` starts with synthetic ADDED events for what exists;
        a later one replays the retained history after it (410 Expired when it is too old).
        """
        rt = target.rt
        requirements = parse_label_selector(request.query.get("labelSelector"))
        field_selector = request.query.get("fieldSelector")
        try:
            timeout = float(request.query.get("timeoutSeconds") or 1800)
            since = int(request.query.get("resourceVersion") or 0)
        except ValueError:
            raise bad_request("timeoutSeconds and resourceVersion must be integers") from None

        def wanted(plural: str, obj: Obj) -> bool:
            return (
                plural == rt.plural
                and (target.namespace is None or obj["metadata"].get("namespace") == target.namespace)
                and matches_labels(obj, requirements)
                and _field_matches(obj, field_selector)
            )

        with self.events.watch(since) as (backlog, queue):
            initial: list[Obj] = []
            seen: dict[tuple[str, str], int] = {}
            if since == 0:
                # Objects as they are now, then only what changed after each one's version.
                initial = [o for o in self.store.list(rt.plural, target.namespace) if wanted(rt.plural, o)]
                seen = {_key(o): int(o["metadata"]["resourceVersion"]) for o in initial}
            response = web.StreamResponse(headers={"Content-Type": JSON})
            response.enable_chunked_encoding()
            await response.prepare(request)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            try:
                for obj in initial:
                    await response.write(_watch_line("ADDED", obj))
                pending = collections.deque(backlog)
                while True:
                    if not pending:
                        remaining = deadline - loop.time()
                        transport = request.transport
                        if remaining <= 0 or transport is None or transport.is_closing():
                            break
                        # Wake up now and then: a client that went away is only noticed here.
                        with contextlib.suppress(TimeoutError):
                            pending.append(await asyncio.wait_for(queue.get(), min(remaining, 0.25)))
                        continue
                    event, plural, obj = pending.popleft()
                    rv = int(obj["metadata"]["resourceVersion"])
                    if wanted(plural, obj) and rv > seen.get(_key(obj), since):
                        await response.write(_watch_line(event, obj))
                await response.write_eof()
            except ConnectionError:
                log.debug("watch client went away")
        return response

    def _create(self, target: Target, body: Any, dry_run: bool) -> Obj:
        rt = target.rt
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if rt.namespaced:
            if target.namespace is None:
                raise page_not_found()
            if meta.get("namespace") and meta["namespace"] != target.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = target.namespace
            if self.store.find("namespaces", None, target.namespace) is None:
                raise not_found(resources.by_plural("namespaces"), target.namespace)
        if rt.has_status:
            # Like the real server: status is not settable on create where a status subresource exists.
            body.pop("status", None)
        return self.store.create(rt.plural, body, dry_run=dry_run)

    def _update(
        self,
        target: Target,
        compute: Callable[[Obj], tuple[Obj, str | None]],
        dry_run: bool,
    ) -> Obj:
        """
        Read-modify-write the target with optimistic concurrency.

        ``compute(current_view)`` gives the new view and the client's resourceVersion precondition
        (``None`` for "whatever is current"); without a precondition a concurrent write is retried.
        """
        rt, name = target.rt, target.name or ""
        for _attempt in range(5):
            current = self.store.get(rt.plural, target.namespace, name)
            new_view, client_rv = compute(self._view(target, current))
            if not isinstance(new_view, dict):
                raise bad_request("the body must be a JSON object")
            current_rv = current["metadata"]["resourceVersion"]
            if client_rv and client_rv != current_rv:
                raise conflict(rt, name)
            new_meta = new_view.get("metadata") or {}
            if new_meta.get("name", name) != name:
                raise bad_request(
                    f"the name of the object ({new_meta.get('name')}) does not match the name "
                    f"on the URL ({name})"
                )
            try:
                return self._write(target, current, new_view, dry_run)
            except ApiError as exc:
                if exc.reason != "Conflict" or client_rv:
                    raise
        raise conflict(rt, name)

    def _write(self, target: Target, current: Obj, new_view: Obj, dry_run: bool) -> Obj:
        """Store ``new_view`` over ``current`` (precondition: ``current``'s resourceVersion)."""
        rt, rv = target.rt, current["metadata"]["resourceVersion"]
        if target.subresource == "status":
            return self.store.update_status(
                rt.plural,
                target.namespace,
                target.name or "",
                new_view.get("status") or {},
                resource_version=rv,
                dry_run=dry_run,
            )
        if target.subresource == "scale":
            replicas = (new_view.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{target.name}" is invalid: spec.replicas: '
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                    details={},
                )
            obj = copy.deepcopy(current)
            obj.setdefault("spec", {})["replicas"] = replicas
            return scale_of(self.store.replace(rt.plural, obj, dry_run=dry_run))
        obj = copy.deepcopy(new_view)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = rv
        meta["name"] = target.name
        if rt.namespaced:
            meta["namespace"] = target.namespace
        if rt.has_status:
            # The main resource cannot change .status: only the status subresource can.
            if "status" in current:
                obj["status"] = copy.deepcopy(current["status"])
            else:
                obj.pop("status", None)
        return self.store.replace(rt.plural, obj, dry_run=dry_run)

    async def _patch(self, request: web.Request, target: Target, dry_run: bool) -> Obj:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        patch = await self._json_body(request)
        rt = target.rt
        if target.subresource == "scale" and content_type == STRATEGIC_MERGE_PATCH:
            content_type = MERGE_PATCH  # Scale is a built-in kind, whatever its parent is

        def compute(current_view: Obj) -> tuple[Obj, str | None]:
            patched = apply_patch(rt, content_type, current_view, patch)
            patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
            # A patch that sets resourceVersion is a precondition (e.g. a JSON patch "test" substitute).
            before = current_view["metadata"].get("resourceVersion")
            return patched, patched_rv if patched_rv != before else None

        return self._update(target, compute, dry_run)

    def _delete(self, target: Target, options: Any, dry_run: bool) -> Obj:
        rt, name = target.rt, target.name or ""
        preconditions = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        current = self.store.get(rt.plural, target.namespace, name)
        expected_rv = preconditions.get("resourceVersion")
        if expected_rv and expected_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.group_resource} "{name}": Precondition failed: '
                f"ResourceVersion in precondition: {expected_rv}, ResourceVersion in object meta: "
                f"{current['metadata']['resourceVersion']}",
            )
        expected_uid = preconditions.get("uid")
        if expected_uid and expected_uid != current["metadata"].get("uid"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.group_resource} "{name}": Precondition failed: '
                f"UID in precondition: {expected_uid}, UID in object meta: {current['metadata'].get('uid')}",
            )
        return self.store.delete(rt.plural, target.namespace, name, dry_run=dry_run)

    def _delete_collection(self, request: web.Request, target: Target, dry_run: bool) -> Obj:
        rt = target.rt
        items = self.store.list(rt.plural, target.namespace, request.query.get("labelSelector"))
        field_selector = request.query.get("fieldSelector")
        deleted = []
        for obj in items:
            if not _field_matches(obj, field_selector):
                continue
            meta = obj["metadata"]
            try:
                deleted.append(
                    self.store.delete(rt.plural, meta.get("namespace"), meta["name"], dry_run=dry_run)
                )
            except ApiError as exc:
                if exc.code != 404:  # deleted meanwhile (e.g. with its namespace): fine
                    raise
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": self.store.resource_version},
            "items": deleted,
        }

    # -- exec ------------------------------------------------------------------------------------

    def _exec_container(self, request: web.Request, pod: Obj) -> str:
        """Pick and check the container like the API server and kubelet do."""
        name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.query.get("container")
        if not container:
            default = (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
            container = default if default in containers else (containers[0] if containers else "")
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if not (pod.get("spec") or {}).get("nodeName") and phase == "Pending":
            raise bad_request(f"pod {name} does not have a host assigned")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        running = any(s.get("name") == container and "running" in (s.get("state") or {}) for s in statuses)
        if phase != "Running" or not running:
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        return container

    async def _exec(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.namespace is None or target.name is None:
            raise page_not_found()
        pod = self.store.get("pods", target.namespace, target.name)
        container = self._exec_container(request, pod)
        command = request.query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least one command for the container")
        streams = {name for name in ("stdin", "stdout", "stderr") if _flag(request, name)}
        if not streams:
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # kubectl falls back to SPDY when the WebSocket upgrade fails: it then prints this.
            raise bad_request("Upgrade request required")
        offered = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        protocol = next((p for p in EXEC_PROTOCOLS if p in offered), None)
        if protocol is None:
            raise bad_request(f"the sandbox only supports the subprotocols {', '.join(EXEC_PROTOCOLS)}")
        drop = self.faults.take_exec_drop(target.namespace, target.name)
        session = _ExecSession(
            request,
            protocol,
            self.exec_handler,
            target.namespace,
            pod,
            container,
            command,
            with_stdin="stdin" in streams,
            outputs=frozenset(ch for ch, name in ((STDOUT, "stdout"), (STDERR, "stderr")) if name in streams),
            drop_after=None if drop is None else drop["after_bytes"],
        )
        request[_LOG_ENTRY]["code"] = 101
        return await session.run()


class _ExecSession:
    """One ``pods/exec`` WebSocket session: channels in, command output and final status out."""

    def __init__(
        self,
        request: web.Request,
        protocol: str,
        handler: ExecHandler,
        namespace: str,
        pod: Obj,
        container: str,
        command: list[str],
        *,
        with_stdin: bool,
        outputs: frozenset[int],
        drop_after: int | None,
    ) -> None:
        self.request = request
        self.protocol = protocol
        self.handler = handler
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.command = command
        self.stdin: asyncio.Queue[bytes | None] | None = asyncio.Queue() if with_stdin else None
        self.stdin_closed = False
        self.outputs = outputs  # output channels the client asked for; the rest is discarded
        self.drop_after = drop_after  # exec-drop fault: cut after this many stdout bytes
        self.sent_stdout = 0
        self.dropped = False
        self.ws = web.WebSocketResponse(
            protocols=(protocol,), compress=False, max_msg_size=16 * 1024 * 1024, autoping=True
        )

    async def run(self) -> web.WebSocketResponse:
        ws = self.ws
        await ws.prepare(self.request)
        transport = self.request.transport
        if transport is not None:
            # Bigger socket buffers mean fewer pauses when streaming snapshots through stdout.
            transport.set_write_buffer_limits(high=4 * 1024 * 1024)
        if self.drop_after == 0:
            self._drop()
            return ws
        reader = asyncio.create_task(self._read_client())
        command = asyncio.create_task(self._run_command())
        try:
            await asyncio.wait({command, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not command.done():
                # The client closed the connection: stop the command, as the kubelet does, instead
                # of letting a silent one (`sleep`, a long `snapshot save`) run on unobserved.
                command.cancel()
                with contextlib.suppress(asyncio.CancelledError, _Dropped):
                    await command
                return ws
            status = command.result()
            if not self.dropped:
                await ws.send_bytes(bytes([STATUS]) + _dumps(status).encode())
                await ws.close(code=1000)
        except _Dropped:
            pass
        except (ConnectionError, RuntimeError) as exc:
            log.debug("exec client went away before the status frame: %s", exc)
        finally:
            self._end_stdin()
            command.cancel()  # a no-op once it finished; stops it when the server shuts down
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await reader
        return ws

    async def _run_command(self) -> dict[str, Any]:
        try:
            code = await self.handler(
                self.namespace,
                self.pod,
                self.container,
                list(self.command),
                self.stdin,
                self._stdout,
                self._stderr,
            )
        except _Dropped:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "exec handler failed for pod %s/%s: %s", self.namespace, self.pod["metadata"]["name"], exc
            )
            return {
                "metadata": {},
                "status": "Failure",
                "message": f"Internal error occurred: error executing command in container: {exc}",
                "reason": "InternalError",
                "code": 500,
            }
        if code == 0:
            return {"metadata": {}, "status": "Success"}
        quoted = " ".join(self.command)
        return {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command [{quoted}], "
            f"exit code {code}",
            "reason": "NonZeroExitCode",
            # clients read the exit code from causes[0] without checking its reason: keep it first.
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }

    def _drop(self) -> None:
        """Cut the connection without a close frame or status (the exec-drop fault)."""
        self.dropped = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def _send(self, channel: int, data: bytes) -> None:
        if channel not in self.outputs:
            return
        prefix = bytes([channel])
        view = memoryview(data)
        for offset in range(0, len(view), EXEC_CHUNK):
            chunk = view[offset : offset + EXEC_CHUNK]
            if channel == STDOUT and self.drop_after is not None:
                room = self.drop_after - self.sent_stdout
                if len(chunk) >= room:
                    if room:
                        await self.ws.send_bytes(prefix + chunk[:room])
                    self._drop()
                    raise _Dropped
                self.sent_stdout += len(chunk)
            await self.ws.send_bytes(prefix + chunk)

    async def _stdout(self, data: bytes) -> None:
        await self._send(STDOUT, data)

    async def _stderr(self, data: bytes) -> None:
        await self._send(STDERR, data)

    def _end_stdin(self) -> None:
        if self.stdin is not None and not self.stdin_closed:
            self.stdin_closed = True
            self.stdin.put_nowait(None)

    async def _read_client(self) -> None:
        """Feed stdin frames to the handler's queue; resize frames are accepted and ignored."""
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                data = msg.data.encode()
            elif msg.type == WSMsgType.BINARY:
                data = msg.data
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == CLOSE and self.protocol.startswith("v5") and payload[:1] == bytes([STDIN]):
                self._end_stdin()
            elif channel == STDIN and self.stdin is not None and not self.stdin_closed and payload:
                await self.stdin.put(bytes(payload))
        self._end_stdin()


class _Dropped(Exception):
    """Raised inside an exec session cut by an ``exec-drop`` fault."""


# ---------------------------------------------------------------------------------------------
# Application
# ---------------------------------------------------------------------------------------------

API_KEY: web.AppKey[_Api] = web.AppKey("hcp_sandbox_api", _Api)


def make_app(
    store: Store,
    *,
    token: str,
    exec_handler: ExecHandler,
    fault_handler: FaultHandler | None = None,
    request_log: pathlib.Path | None = None,
    authorizer: Authorizer | None = None,
    admin_token: str | None = None,
    log_handler: LogHandler | None = None,
) -> web.Application:
    """
    Build the API server application.

    :param store: the objects served.
    :param token: the only bearer token accepted (on every request, the exec upgrade included).
    :param exec_handler: runs commands for ``pods/exec``.
    :param fault_handler: handles fault kinds other than ``api`` and ``exec-drop``.
    :param request_log: a JSON-lines file that receives a copy of the request log.
    :param authorizer: ``authorizer(verb, plural, namespace, subresource, name)``; ``False`` → 403.
    :param admin_token: a second bearer token that the authorizer does not apply to.
    :param log_handler: what a container printed, for ``pods/log`` (empty logs without it).
    """
    api = _Api(
        store,
        token=token,
        exec_handler=exec_handler,
        fault_handler=fault_handler,
        request_log=request_log,
        authorizer=authorizer,
        admin_token=admin_token,
        log_handler=log_handler,
    )
    # Bodies up to 64 MiB: big Secrets/ConfigMaps fit, nothing larger is legitimate here.
    app = web.Application(middlewares=[api.middleware], client_max_size=64 * 1024 * 1024)
    app[API_KEY] = api
    app.router.add_route("*", "/{tail:.*}", api.dispatch)
    return app


async def start_server(app: web.Application, host: str, port: int, ssl_context: Any) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (``0`` picks a free port: see :func:`bound_port`)."""
    # Open watches and exec sessions get a few seconds, not aiohttp's default minute, at shutdown.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a started runner listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the runner is not listening on a TCP port")
