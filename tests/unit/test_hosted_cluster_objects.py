"""Unit tests of HostedClusterHook's object handling: create-with-rollback, deletes, "not found".

The hook's Kubernetes clients are replaced by an in-memory API that answers like the real one
(404 for an absent object, 409 for an existing one, 422 for a refused body).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from hcp_etcd.hooks.hosted_cluster import HostedClusterHook, ObjectExistsError
from hcp_etcd.naming import ClusterRef

HC_API = "hypershift.openshift.io/v1beta1"


class FakeApi:
    """CoreV1Api and CustomObjectsApi in one, over ``{(kind, namespace, name): object}``.

    :param refuse: ``(verb, kind) -> status`` to answer instead of doing the call.
    """

    _CORE = {"namespace": "Namespace", "namespaced_secret": "Secret", "namespaced_config_map": "ConfigMap"}
    _PLURALS = {"hostedclusters": "HostedCluster", "nodepools": "NodePool", "hostedcontrolplanes": "HCP"}

    def __init__(self, refuse: dict[tuple[str, str], int] | None = None) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.refuse = dict(refuse or {})

    def put(self, kind: str, namespace: str | None, name: str, annotations: dict | None = None) -> None:
        meta = {"name": name, "namespace": namespace, "annotations": annotations}
        self.objects[(kind, namespace, name)] = {"kind": kind, "metadata": meta}

    def _do(self, verb: str, kind: str, namespace: str | None, name: str, body: Any = None) -> Any:
        self.calls.append((verb, kind, name))
        if (verb, kind) in self.refuse:
            raise ApiException(status=self.refuse[(verb, kind)], reason="refused")
        key = (kind, namespace, name)
        if verb == "create":
            if key in self.objects:
                raise ApiException(status=409, reason="AlreadyExists")
            self.objects[key] = body
            return body
        if key not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        return self.objects.pop(key) if verb == "delete" else self.objects[key]

    def __getattr__(self, method: str) -> Any:
        verb, _, what = method.partition("_")
        if what in self._CORE:  # core: read_namespace(name) / read_namespaced_secret(name, ns) ...
            kind = self._CORE[what]
            if verb == "create":
                if kind == "Namespace":
                    return lambda body: self._do("create", kind, None, body["metadata"]["name"], body)
                return lambda ns, body: self._do("create", kind, ns, body["metadata"]["name"], body)
            return lambda name, ns=None: self._model(self._do(verb, kind, ns, name))
        if what == "namespaced_custom_object":
            if verb == "create":
                return lambda g, v, ns, plural, body: self._do(
                    "create", self._PLURALS[plural], ns, body["metadata"]["name"], body
                )
            return lambda g, v, ns, plural, name: self._do(verb, self._PLURALS[plural], ns, name)
        raise AttributeError(method)

    @staticmethod
    def _model(obj: dict[str, Any]) -> Any:
        """Core kinds come back as client models (attributes), as from the real client."""

        class Meta:
            annotations = obj["metadata"].get("annotations")

        class Model:
            metadata = Meta

        return Model


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def hook_on(api: FakeApi) -> HostedClusterHook:
    hook = HostedClusterHook()
    hook.__dict__["core_v1_client"] = api  # the provider's cached_property slots
    hook.__dict__["custom_object_client"] = api
    return hook


def objects(ns: str = "clusters", name: str = "new1") -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-pull-secret", "namespace": ns}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-key", "namespace": ns}},
        {"apiVersion": HC_API, "kind": "HostedCluster", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": HC_API, "kind": "NodePool", "metadata": {"name": f"{name}-a", "namespace": ns}},
    ]


def test_create_objects_in_order_keeps_an_existing_namespace_and_lists_adopted(api: FakeApi) -> None:
    api.put("Namespace", None, "clusters")
    api.put("Secret", "clusters", "new1-key")  # left by an earlier try of the same run
    created = hook_on(api).create_objects(objects(), adopted={("Secret", "new1-key")})
    assert [(o["kind"], o["name"]) for o in created] == [
        ("Secret", "new1-pull-secret"),
        ("Secret", "new1-key"),
        ("HostedCluster", "new1"),
        ("NodePool", "new1-a"),
    ]
    assert created[0] == {
        "apiVersion": "v1",
        "kind": "Secret",
        "namespace": "clusters",
        "name": "new1-pull-secret",
    }
    assert [c for c in api.calls if c[0] == "create"] == [
        ("create", "Secret", "new1-pull-secret"),
        ("create", "HostedCluster", "new1"),
        ("create", "NodePool", "new1-a"),
    ]


def test_create_objects_undoes_its_partial_work_before_raising(api: FakeApi) -> None:
    api.put("Namespace", None, "clusters")
    api.put("Secret", "clusters", "new1-key")
    api.refuse[("create", "NodePool")] = 422
    with pytest.raises(ApiException) as err:
        hook_on(api).create_objects(objects(), adopted={("Secret", "new1-key")})
    assert err.value.status == 422
    # Newest first, the adopted Secret too; the Namespace that existed before stays.
    assert [c for c in api.calls if c[0] == "delete"] == [
        ("delete", "HostedCluster", "new1"),
        ("delete", "Secret", "new1-key"),
        ("delete", "Secret", "new1-pull-secret"),
    ]
    assert set(api.objects) == {("Namespace", None, "clusters")}


def test_create_objects_refuses_an_object_that_appeared_and_leaves_nothing(api: FakeApi) -> None:
    api.put("HostedCluster", "clusters", "new1")
    with pytest.raises(ObjectExistsError) as err:
        hook_on(api).create_objects(objects())
    assert err.value.what == "HostedCluster clusters/new1"
    # What this call made is gone (the Namespace too: it created it); the object it met is kept.
    assert set(api.objects) == {("HostedCluster", "clusters", "new1")}


def test_delete_objects_goes_on_after_a_failure_and_reports_it(api: FakeApi) -> None:
    hook = hook_on(api)
    created = hook.create_objects(objects())
    api.objects.pop(("Secret", "clusters", "new1-key"))  # already gone: not an error
    api.refuse[("delete", "HostedCluster")] = 403
    left = hook.delete_objects(created)
    assert len(left) == 1 and left[0].startswith("HostedCluster clusters/new1: ")
    assert set(api.objects) == {("HostedCluster", "clusters", "new1")}
    assert [c[1:] for c in api.calls if c[0] == "delete"] == [
        ("NodePool", "new1-a"),
        ("HostedCluster", "new1"),
        ("Secret", "new1-key"),
        ("Secret", "new1-pull-secret"),
        ("Namespace", "clusters"),
    ]


def test_not_found_is_none_or_false_and_other_errors_raise(api: FakeApi) -> None:
    hook = hook_on(api)
    ref = ClusterRef("clusters", "absent")
    assert hook.find_hosted_cluster(ref) is None
    assert hook.hosted_cluster_exists(ref) is False
    assert hook.get_hosted_control_plane("clusters-absent", "absent") is None
    assert hook.object_annotations("v1", "Secret", "clusters", "absent") is None
    assert hook.delete_object("v1", "Secret", "clusters", "absent") is False
    api.put("HostedCluster", "clusters", "here", {"a": "b"})
    assert hook.find_hosted_cluster(ClusterRef("clusters", "here"))["metadata"]["name"] == "here"
    assert hook.object_annotations(HC_API, "HostedCluster", "clusters", "here") == {"a": "b"}
    assert hook.delete_object(HC_API, "HostedCluster", "clusters", "here") is True
    api.refuse[("get", "HostedCluster")] = 403
    with pytest.raises(ApiException):
        hook.find_hosted_cluster(ref)
    with pytest.raises(ApiException):
        hook.hosted_cluster_exists(ref)
