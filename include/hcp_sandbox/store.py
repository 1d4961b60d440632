"""The sandbox's object store: an in-memory, thread-safe stand-in for the API server's etcd.

Objects are plain JSON-shaped dicts keyed by ``(plural, namespace, name)``; cluster-scoped objects
use the namespace ``""``. Every write bumps one global ``resourceVersion`` counter, as etcd's
revision does. Whatever goes in or comes out is a deep copy, so callers can never alias stored
state.
"""

from __future__ import annotations

import collections
import copy
import datetime
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

from hcp_sandbox import resources, validation
from hcp_sandbox.errors import already_exists, bad_request, conflict, invalid, not_found
from hcp_sandbox.validation import Validator, name_errors

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Listener = Callable[[str, str, Obj], None]

# ---------------------------------------------------------------------------------------------
# Label selectors
# ---------------------------------------------------------------------------------------------

Requirement = Callable[[dict[str, str]], bool]
_SET_RE = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)$")
_EQ_RE = re.compile(r"^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_EXISTS_RE = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (set-based values are comma-separated too)."""
    parts, depth, current = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """
    Parse a label selector string into predicates over a label dict.

    Supports ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``.
    Raises :class:`~hcp_sandbox.errors.ApiError` 400 on anything else, as the real server does.
    """
    requirements: list[Requirement] = []
    for term in _split_selector(selector or ""):
        if m := _SET_RE.match(term):
            key, op = m.group(1), m.group(2)
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            if op == "in":
                requirements.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                requirements.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := _EQ_RE.match(term):
            key, op, value = m.group(1), m.group(2), m.group(3)
            if op == "!=":
                requirements.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                requirements.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _EXISTS_RE.match(term):
            negate, key = bool(m.group(1)), m.group(2)
            requirements.append(lambda labels, k=key, n=negate: (k in labels) != n)
        else:
            raise bad_request(
                f"unable to parse requirement: found '{term}', expected: a valid label selector"
            )
    return requirements


def matches_labels(obj: Obj, requirements: list[Requirement]) -> bool:
    """Whether ``obj``'s labels satisfy every requirement."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(req(labels) for req in requirements)


def now_rfc3339() -> str:
    """The current UTC time as the API server writes timestamps (seconds, ``Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class Store:
    """
    Thread-safe in-memory object store keyed by ``(plural, namespace, name)``.

    Subscribers are called synchronously after each change, outside the store lock, by the
    writing thread (a callback may itself write to the store). Events of one thread arrive in
    commit order; events of concurrent writers may interleave.

    :param builtin_validators: register the served kinds' schema checks
        (``hcp_sandbox.validation.DEFAULTERS`` and ``VALIDATORS``).
    """

    def __init__(self, *, builtin_validators: bool = True) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._rv = 0
        self._listeners: list[Listener] = []
        self._validators: dict[str, list[Validator]] = collections.defaultdict(list)
        self._defaulters: dict[str, list[Callable[[Obj], None]]] = collections.defaultdict(list)
        # Each writing thread queues its events under the lock and delivers them after releasing
        # it: no lock is held while callbacks run, so a callback may take its own locks or write.
        self._local = threading.local()
        if builtin_validators:
            for plural, defaulter in validation.DEFAULTERS.items():
                self.add_defaulter(plural, defaulter)
            for plural, fns in validation.VALIDATORS.items():
                for fn in fns:
                    self.add_validator(plural, fn)

    # -- subscriptions and validators ---------------------------------------------------------

    def subscribe(self, callback: Listener) -> None:
        """Call ``callback(event, plural, obj)`` after every change (ADDED, MODIFIED, DELETED)."""
        with self._lock:
            self._listeners.append(callback)

    def unsubscribe(self, callback: Listener) -> None:
        """Stop calling ``callback`` (no error if it was not subscribed)."""
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def add_validator(self, plural: str, fn: Validator) -> None:
        """Check ``fn(old, new)`` before every create (``old=None``) and update; it raises ApiError 422."""
        with self._lock:
            self._validators[plural].append(fn)

    def add_defaulter(self, plural: str, fn: Callable[[Obj], None]) -> None:
        """Apply ``fn(new)`` (in place) before every create and update, ahead of the validators: the
        API server's structural defaulting of a CRD (the schema's ``default`` values)."""
        with self._lock:
            self._defaulters[plural].append(fn)

    def _default(self, plural: str, new: Obj) -> None:
        for fn in list(self._defaulters.get(plural, ())):
            fn(new)

    def _validate(self, plural: str, old: Obj | None, new: Obj) -> None:
        for fn in list(self._validators.get(plural, ())):
            fn(copy.deepcopy(old) if old is not None else None, copy.deepcopy(new))

    def _pending(self) -> collections.deque[tuple[str, str, Obj]]:
        pending = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = collections.deque()
        return pending

    def _deliver(self) -> None:
        """Run the callbacks for this thread's queued events (call without the lock held)."""
        pending = self._pending()
        while pending:
            event, plural, obj = pending.popleft()
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(event, plural, copy.deepcopy(obj))
                except Exception:
                    # The change is committed: a failing subscriber must not fail the writer.
                    log.exception("store subscriber %r failed on %s %s", listener, event, plural)

    def _emit(self, event: str, plural: str, obj: Obj) -> None:
        """Queue an event; call with the lock held, then :meth:`_deliver` after releasing it."""
        self._pending().append((event, plural, copy.deepcopy(obj)))

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # -- reads -----------------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        """The store's current (global) resourceVersion, as a List's ``metadata.resourceVersion``."""
        with self._lock:
            return str(self._rv)

    def find(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        """The object, or ``None``."""
        with self._lock:
            obj = self._objects.get((plural, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def get(self, plural: str, namespace: str | None, name: str) -> Obj:
        """The object; :class:`ApiError` 404 when absent."""
        obj = self.find(plural, namespace, name)
        if obj is None:
            raise not_found(resources.by_plural(plural), name)
        return obj

    def list(self, plural: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        """Objects of a kind, in one namespace or all (``None``), filtered by a label selector."""
        requirements = parse_label_selector(label_selector)
        with self._lock:
            found = [
                obj
                for (p, ns, _), obj in self._objects.items()
                if p == plural
                and (namespace is None or ns == namespace)
                and matches_labels(obj, requirements)
            ]
            found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return copy.deepcopy(found)

    # -- writes ----------------------------------------------------------------------------------

    def create(self, plural: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        """
        Store a new object, filling server-owned metadata.

        ``metadata.generateName`` is honoured when ``metadata.name`` is empty. Raises ApiError 409
        AlreadyExists, 422 Invalid (bad name or a validator's verdict).
        """
        rt = resources.by_plural(plural)
        new = copy.deepcopy(obj)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name") or ""
        if not name:
            raise invalid(
                rt,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "metadata.name",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        if errors := name_errors(rt, name):
            raise invalid(rt, name, errors)
        if rt.namespaced:
            if not meta.get("namespace"):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
        else:
            meta.pop("namespace", None)
        key = (plural, meta.get("namespace", ""), name)
        for server_owned in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp"):
            meta.pop(server_owned, None)
        self._default(plural, new)
        self._validate(plural, None, new)
        with self._lock:
            if key in self._objects:
                raise already_exists(rt, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            if dry_run:
                meta["resourceVersion"] = str(self._rv)
                return new
            meta["resourceVersion"] = self._next_rv()
            self._objects[key] = new
            self._emit("ADDED", plural, new)
            result = copy.deepcopy(new)
        self._deliver()
        return result

    def replace(self, plural: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        """
        Replace a stored object (a PUT).

        A ``metadata.resourceVersion`` in ``obj`` must equal the stored one (409 Conflict
        otherwise); none means "last write wins". ``generation`` is bumped when ``spec`` changes.
        """
        rt = resources.by_plural(plural)
        new = copy.deepcopy(obj)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        name = meta.get("name") or ""
        namespace = meta.get("namespace", "") if rt.namespaced else ""
        key = (plural, namespace, name)
        for _attempt in range(2):
            old = self.find(plural, namespace, name)
            if old is None:
                raise not_found(rt, name)
            expected = meta.get("resourceVersion")
            if expected and expected != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            # Server-owned metadata cannot be changed by a client.
            for owned in ("uid", "creationTimestamp", "generation"):
                if owned in old["metadata"]:
                    meta[owned] = old["metadata"][owned]
            if not rt.namespaced:
                meta.pop("namespace", None)
            self._default(plural, new)
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            self._validate(plural, old, new)
            with self._lock:
                current = self._objects.get(key)
                if current is None:
                    raise not_found(rt, name)
                if current["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]:
                    # Changed while we validated: a caller without a precondition gets a retry.
                    if expected:
                        raise conflict(rt, name)
                    continue
                if dry_run:
                    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
                    return new
                meta["resourceVersion"] = self._next_rv()
                self._objects[key] = new
                self._emit("MODIFIED", plural, new)
                result = copy.deepcopy(new)
            self._deliver()
            return result
        raise conflict(rt, name)

    def update_status(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Set ``.status`` only (the ``status`` subresource); 409 if ``resource_version`` is stale."""
        rt = resources.by_plural(plural)
        key = (plural, namespace or "", name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise not_found(rt, name)
            if resource_version and resource_version != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(status)
            if dry_run:
                return new
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = new
            self._emit("MODIFIED", plural, new)
            result = copy.deepcopy(new)
        self._deliver()
        return result

    def delete(self, plural: str, namespace: str | None, name: str, *, dry_run: bool = False) -> Obj:
        """
        Delete an object and return it (404 if absent).

        Deleting a Namespace deletes everything in it first (at once: the sandbox has no
        finalizers, so no ``Terminating`` phase either).
        """
        rt = resources.by_plural(plural)
        key = (plural, namespace or "", name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise not_found(rt, name)
            if dry_run:
                return copy.deepcopy(current)
            doomed = [key]
            if plural == "namespaces":
                doomed = [k for k in self._objects if k[1] == name] + doomed
            for k in doomed:
                obj = self._objects.pop(k)
                # Like the real server, the deleted object carries the deletion's resourceVersion.
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._emit("DELETED", k[0], obj)
            result = copy.deepcopy(obj)
        self._deliver()
        return result
