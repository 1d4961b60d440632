"""The sandbox's RBAC authorizer: the Kubernetes semantics it promises, and include/rbac through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hcp_sandbox.rbac import RbacAuthorizer

RBAC = Path(__file__).resolve().parents[2] / "include" / "rbac"
SA = [{"kind": "ServiceAccount", "name": "a", "namespace": "x"}]


def role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def binding(kind: str, ref_kind: str, ref: str, namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": f"bind-{ref}", **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref},
        "subjects": SA,
    }


SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "delete"]}


def test_role_and_rolebinding_grant_in_their_namespace_only() -> None:
    auth = RbacAuthorizer([role("Role", "r", [SECRETS], "team"), binding("RoleBinding", "Role", "r", "team")])
    assert auth("delete", "secrets", "team", None, "s")
    assert not auth("delete", "secrets", "other", None, "s")
    assert not auth("delete", "secrets", "", None, "s")  # nor at the cluster scope
    assert not auth("create", "secrets", "team", None, None)  # a verb it does not list


def test_a_role_is_found_in_the_bindings_namespace() -> None:
    # A Role of the same name in another namespace is another Role: the binding does not reach it.
    with pytest.raises(ValueError, match="unknown Role r"):
        RbacAuthorizer([role("Role", "r", [SECRETS], "team"), binding("RoleBinding", "Role", "r", "other")])


def test_clusterrole_bound_by_rolebindings_applies_in_those_namespaces() -> None:
    auth = RbacAuthorizer(
        [
            role("ClusterRole", "objects", [SECRETS]),
            binding("RoleBinding", "ClusterRole", "objects", "a"),
            binding("RoleBinding", "ClusterRole", "objects", "b"),
        ]
    )
    assert auth("get", "secrets", "a", None, "s") and auth("get", "secrets", "b", None, "s")
    assert not auth("get", "secrets", "c", None, "s")


def test_unbound_clusterrole_applies_everywhere_and_clusterrolebinding_too() -> None:
    unbound = RbacAuthorizer([role("ClusterRole", "c", [SECRETS])])
    bound = RbacAuthorizer(
        [role("ClusterRole", "c", [SECRETS]), binding("ClusterRoleBinding", "ClusterRole", "c")]
    )
    for auth in (unbound, bound):
        assert auth("delete", "secrets", "anywhere", None, "s")


def test_rolebinding_without_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no metadata\.namespace"):
        RbacAuthorizer([role("ClusterRole", "c", [SECRETS]), binding("RoleBinding", "ClusterRole", "c")])


def test_resource_names() -> None:
    rules = [
        {
            "apiGroups": [""],
            "resources": ["pods/exec"],
            "verbs": ["create", "get"],
            "resourceNames": ["etcd-0"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "list"], "resourceNames": ["k"]},
    ]
    auth = RbacAuthorizer([role("ClusterRole", "c", rules)])
    assert auth("create", "pods", "ns", "exec", "etcd-0") and auth("get", "pods", "ns", "exec", "etcd-0")
    assert not auth("create", "pods", "ns", "exec", "kube-apiserver-0")
    # Requests without a name (create, list) never match a rule with resourceNames, as in Kubernetes.
    assert not auth("create", "secrets", "ns", None, None)
    assert not auth("list", "secrets", "ns", None, None)
    assert not auth("create", "pods", "ns", "exec")  # name omitted: treated as none


def test_include_rbac_namespaces_to_create() -> None:
    assert RbacAuthorizer.from_paths([RBAC]).namespaces == ["hcp-etcd-drills"]


ALLOWED = [
    ("backup: exec into an etcd member", ("create", "pods", "clusters-a", "exec", "etcd-2")),
    ("backup: scale an API server", ("patch", "deployments", "clusters-a", "scale", "kube-apiserver")),
    ("backup: read a key Secret next to its HostedCluster", ("get", "secrets", "clusters", None, "a-key")),
    ("restore: create a Secret in clusters", ("create", "secrets", "clusters", None, None)),
    (
        "restore: create a HostedCluster in the drill namespace",
        ("create", "hostedclusters", "hcp-etcd-drills", None, None),
    ),
    (
        "drill teardown: delete its Secret",
        ("delete", "secrets", "hcp-etcd-drills", None, "a-drill-pull-secret"),
    ),
    ("restore: the target namespace exists", ("get", "namespaces", "", None, "clusters")),
]
REFUSED = [
    (
        "exec into a pod that is not an etcd member",
        ("create", "pods", "clusters-a", "exec", "kube-apiserver-7d4"),
    ),
    ("scale another Deployment", ("patch", "deployments", "clusters-a", "scale", "etcd-operator")),
    ("read a Secret of a control plane", ("get", "secrets", "clusters-a", None, "etcd-client-tls")),
    ("read a Secret in kube-system", ("get", "secrets", "kube-system", None, "x")),
    ("delete a Secret outside the restore's namespaces", ("delete", "secrets", "clusters-a", None, "x")),
    ("create a Secret outside them", ("create", "secrets", "default", None, None)),
    ("delete a HostedCluster outside them", ("delete", "hostedclusters", "tenants", None, "prod")),
    ("create a Namespace", ("create", "namespaces", "", None, None)),
    ("delete a Namespace", ("delete", "namespaces", "", None, "clusters")),
    ("list Secrets", ("list", "secrets", "clusters", None, None)),
]


@pytest.mark.parametrize(("what", "request_"), ALLOWED, ids=[a for a, _ in ALLOWED])
def test_include_rbac_allows(what: str, request_: tuple[Any, ...]) -> None:
    assert RbacAuthorizer.from_paths([RBAC])(*request_), what


@pytest.mark.parametrize(("what", "request_"), REFUSED, ids=[a for a, _ in REFUSED])
def test_include_rbac_refuses(what: str, request_: tuple[Any, ...]) -> None:
    assert not RbacAuthorizer.from_paths([RBAC])(*request_), what
