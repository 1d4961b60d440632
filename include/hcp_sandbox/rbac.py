"""Kubernetes RBAC, enforced by the sandbox for the token it issues.

The sandbox reads the same manifests that a management cluster is given (``include/rbac/``):
``ClusterRole``/``Role`` rules, and the ``ClusterRoleBinding``/``RoleBinding`` objects that say where
they apply. A request is allowed when one bound rule matches its API group, resource (with
subresource, as ``pods/exec``), verb and, for a rule with ``resourceNames``, the object's name —
the RBAC authorizer's semantics, less non-resource URLs, which the procedure does not need.

A ``ClusterRole`` bound by a ``RoleBinding`` grants its rules in that binding's namespace only; a
``Role`` only in its own namespace. ``Namespace`` documents in the same files are what ``kubectl
apply`` would create with them: :attr:`RbacAuthorizer.namespaces` lists them for the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hcp_sandbox.resources import by_plural


@dataclass(frozen=True)
class Rule:
    """One policy rule, limited to a namespace (``None``: every namespace and cluster scope)."""

    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    namespace: str | None
    resource_names: frozenset[str] = frozenset()

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str = "") -> bool:
        """Whether this rule grants ``verb`` on ``resource`` (``plural`` or ``plural/sub``).

        :param verb: the request's verb (get, list, watch, create, update, patch, delete...).
        :param group: the resource's API group (``""`` for core).
        :param resource: ``plural`` or ``plural/subresource``.
        :param namespace: the request's namespace, ``""`` for cluster scope.
        :param name: the object's name, ``""`` when the request has none (create, list, watch,
            deletecollection): then a rule with ``resourceNames`` does not match, as in Kubernetes.
        """
        if self.namespace is not None and self.namespace != namespace:
            return False
        if self.resource_names and name not in self.resource_names:
            return False
        return (
            ("*" in self.api_groups or group in self.api_groups)
            and ("*" in self.resources or resource in self.resources)
            and ("*" in self.verbs or verb in self.verbs)
        )


def _rules(role: dict[str, Any], namespace: str | None) -> list[Rule]:
    return [
        Rule(
            api_groups=frozenset(r.get("apiGroups") or []),
            resources=frozenset(r.get("resources") or []),
            verbs=frozenset(r.get("verbs") or []),
            namespace=namespace,
            resource_names=frozenset(r.get("resourceNames") or []),
        )
        for r in role.get("rules") or []
        if r.get("resources")  # nonResourceURLs rules do not apply to resources
    ]


def _role_key(role: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name): a Role is named within its namespace, a ClusterRole has none."""
    namespace = role["metadata"].get("namespace", "") if role["kind"] == "Role" else ""
    return role["kind"], namespace, role["metadata"]["name"]


class RbacAuthorizer:
    """``authorizer(verb, plural, namespace, subresource, name)`` for :func:`hcp_sandbox.apiserver.make_app`.

    :param documents: the parsed manifests (Roles, ClusterRoles and their bindings; other kinds are
        ignored). ClusterRoles that no binding names apply cluster-wide, so a file of roles alone
        can be enforced as it is.
    """

    def __init__(self, documents: Iterable[dict[str, Any]]) -> None:
        docs = [d for d in documents if isinstance(d, dict)]
        self.namespaces: list[str] = [d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"]
        roles = {_role_key(d): d for d in docs if d.get("kind") in ("ClusterRole", "Role")}
        self.rules: list[Rule] = []
        bound: set[tuple[str, str, str]] = set()
        for binding in docs:
            kind = binding.get("kind")
            if kind not in ("ClusterRoleBinding", "RoleBinding"):
                continue
            ref = binding["roleRef"]
            namespace = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
            if kind == "RoleBinding" and not namespace:
                # kubectl would put it in the context's namespace: say where, explicitly.
                raise ValueError(f"RoleBinding {binding['metadata']['name']} has no metadata.namespace")
            # A Role lives in the binding's namespace; a ClusterRole has none.
            key = (ref["kind"], (namespace or "") if ref["kind"] == "Role" else "", ref["name"])
            if key not in roles:
                name = binding["metadata"]["name"]
                raise ValueError(f"{kind} {name} refers to unknown {ref['kind']} {ref['name']}")
            bound.add(key)
            self.rules += _rules(roles[key], namespace)
        for key, role in roles.items():
            if key[0] == "ClusterRole" and key not in bound:
                self.rules += _rules(role, None)

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> RbacAuthorizer:
        """Load every ``*.yaml`` file (or the files themselves) under ``paths``.

        :param paths: files or folders of manifests.
        """
        docs: list[dict[str, Any]] = []
        for path in paths:
            files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
            for file in files:
                docs += [d for d in yaml.safe_load_all(file.read_text()) if d]
        if not docs:
            raise ValueError(f"no RBAC manifests found in {', '.join(map(str, paths))}")
        return cls(docs)

    def __call__(
        self, verb: str, plural: str, namespace: str, subresource: str | None, name: str | None = None
    ) -> bool:
        """Whether the sandbox's token may do this request.

        :param verb: the request's verb.
        :param plural: the resource.
        :param namespace: the namespace, ``""`` for cluster scope.
        :param subresource: ``exec``, ``scale``, ``status``... or ``None``.
        :param name: the object's name (the pod's, for ``pods/exec``); ``None`` when there is none.
        """
        group = by_plural(plural).group
        resource = f"{plural}/{subresource}" if subresource else plural
        return any(rule.allows(verb, group, resource, namespace, name or "") for rule in self.rules)
