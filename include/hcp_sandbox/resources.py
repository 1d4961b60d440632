"""The kinds the sandbox serves, their discovery documents and their schema checks.

One registry drives everything: URL routing in :mod:`hcp_sandbox.apiserver`, the names in
:class:`hcp_sandbox.store.Store` error messages, legacy discovery (``/api``, ``/apis/<g>/<v>``)
and aggregated discovery (``apidiscovery.k8s.io/v2``, what kubectl 1.32 asks for first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)

AGGREGATED_DISCOVERY_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Subresource:
    """A subresource (``status``, ``scale``, ``exec``...) and the kind it answers with."""

    name: str
    group: str
    version: str
    kind: str
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class ResourceType:
    """One served resource: what discovery says about it and how its URLs look."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[Subresource, ...] = ()
    categories: tuple[str, ...] = ()
    # Custom resources (CRDs) refuse strategic merge patch with 415, built-in kinds accept it.
    custom: bool = False

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``<group>/<version>`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``pods`` or ``hostedclusters.hypershift.openshift.io``, as API error messages say it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def subresource(self, name: str) -> Subresource | None:
        """The subresource called ``name``, or ``None``."""
        return next((s for s in self.subresources if s.name == name), None)

    @property
    def has_status(self) -> bool:
        """Whether ``.status`` is only written through the ``status`` subresource."""
        return self.subresource("status") is not None


def _status(group: str, version: str, kind: str) -> Subresource:
    return Subresource("status", group, version, kind, ("get", "patch", "update"))


_SCALE = Subresource("scale", "autoscaling", "v1", "Scale", ("get", "patch", "update"))
HYPERSHIFT = "hypershift.openshift.io"

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        False,
        ("ns",),
        ("create", "delete", "get", "list", "patch", "update", "watch"),
        (_status("", "v1", "Namespace"),),
    ),
    ResourceType(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        True,
        ("po",),
        subresources=(
            Subresource("exec", "", "v1", "PodExecOptions", ("create", "get")),
            Subresource("log", "", "v1", "Pod", ("get",)),
            _status("", "v1", "Pod"),
        ),
        categories=("all",),
    ),
    ResourceType("", "v1", "Secret", "secrets", "secret", True),
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",)),
    ResourceType("", "v1", "Event", "events", "event", True, ("ev",)),
    ResourceType(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        True,
        ("deploy",),
        subresources=(_SCALE, _status("apps", "v1", "Deployment")),
        categories=("all",),
    ),
    ResourceType(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        True,
        ("sts",),
        subresources=(_SCALE, _status("apps", "v1", "StatefulSet")),
        categories=("all",),
    ),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
    ResourceType(
        HYPERSHIFT,
        "v1beta1",
        "HostedCluster",
        "hostedclusters",
        "hostedcluster",
        True,
        ("hc", "hcs"),
        subresources=(_status(HYPERSHIFT, "v1beta1", "HostedCluster"),),
        custom=True,
    ),
    ResourceType(
        HYPERSHIFT,
        "v1beta1",
        "HostedControlPlane",
        "hostedcontrolplanes",
        "hostedcontrolplane",
        True,
        ("hcp", "hcps"),
        subresources=(_status(HYPERSHIFT, "v1beta1", "HostedControlPlane"),),
        custom=True,
    ),
    ResourceType(
        HYPERSHIFT,
        "v1beta1",
        "NodePool",
        "nodepools",
        "nodepool",
        True,
        ("np", "nps"),
        subresources=(_status(HYPERSHIFT, "v1beta1", "NodePool"),),
        custom=True,
    ),
)

_BY_PLURAL: dict[str, ResourceType] = {r.plural: r for r in RESOURCES}
_BY_GVR: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}


def by_plural(plural: str) -> ResourceType:
    """The resource type for a plural (plurals are unique across groups in the sandbox)."""
    try:
        return _BY_PLURAL[plural]
    except KeyError:
        raise KeyError(f"the sandbox does not serve {plural!r}") from None


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource type served at ``/<group>/<version>/<plural>``, or ``None``."""
    return _BY_GVR.get((group, version, plural))


def group_versions() -> dict[str, list[str]]:
    """Every non-core group and its versions, in registry order."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    return out


# ---------------------------------------------------------------------------------------------
# Legacy discovery
# ---------------------------------------------------------------------------------------------


def api_versions() -> dict[str, Any]:
    """``GET /api``: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }


def api_group_list() -> dict[str, Any]:
    """``GET /apis``: every named group."""
    groups = []
    for group, versions in group_versions().items():
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    """``GET /apis/<group>``, or ``None`` for an unknown group."""
    versions = group_versions().get(group)
    if not versions:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``/apis/<group>/<version>``, or ``None`` when nothing is served there."""
    members = [r for r in RESOURCES if r.group == group and r.version == version]
    if not members:
        return None
    entries: list[dict[str, Any]] = []
    for r in members:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        for s in r.subresources:
            sub: dict[str, Any] = {
                "name": f"{r.plural}/{s.name}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": list(s.verbs),
            }
            # Only subresources answering with a kind of another group name it (like the real server).
            if (s.group, s.version) != (r.group, r.version):
                sub["group"], sub["version"] = s.group, s.version
            entries.append(sub)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": members[0].api_version,
        "resources": entries,
    }


# ---------------------------------------------------------------------------------------------
# Aggregated discovery (apidiscovery.k8s.io/v2)
# ---------------------------------------------------------------------------------------------


def _aggregated_resource(r: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = [
            {
                "subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": list(s.verbs),
            }
            for s in r.subresources
        ]
    return entry


def _aggregated_group(group: str, resources: Iterable[ResourceType]) -> dict[str, Any]:
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_version.setdefault(r.version, []).append(_aggregated_resource(r))
    return {
        "metadata": {"name": group, "creationTimestamp": None},
        "versions": [
            {"version": v, "resources": res, "freshness": "Current"} for v, res in by_version.items()
        ],
    }


def aggregated_discovery(core: bool) -> dict[str, Any]:
    """The ``APIGroupDiscoveryList`` for ``/api`` (``core=True``) or ``/apis``."""
    if core:
        items = [_aggregated_group("", (r for r in RESOURCES if not r.group))]
    else:
        items = [_aggregated_group(g, (r for r in RESOURCES if r.group == g)) for g in group_versions()]
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def wants_aggregated_discovery(accept: str | None) -> bool:
    """
    Whether an ``Accept`` header asks for aggregated discovery v2.

    Only a media range carrying ``v=v2`` (and ``g=apidiscovery.k8s.io``) qualifies: answering the
    aggregated body to a plain ``application/json`` request breaks kubectl.
    """
    for media_range in (accept or "").split(","):
        params = {
            k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in media_range.split(";")[1:])
        }
        if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2":
            return True
    return False
