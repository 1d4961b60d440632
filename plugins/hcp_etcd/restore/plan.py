"""The target of a restore and its manifests, edited into the objects to create (a :class:`RestorePlan`)."""

from __future__ import annotations

import base64
import copy
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from hcp_etcd.errors import RestoreInputError, describe
from hcp_etcd.naming import (
    ANNOTATION_PREFIX,
    ClusterRef,
    InvalidNameError,
    control_plane_namespace,
    validate_name,
    validate_namespace,
)
from hcp_etcd.restore.backups import key_entries

RESTORED_FROM_ANNOTATION = f"{ANNOTATION_PREFIX}/restored-from"
RESTORED_BY_ANNOTATION = f"{ANNOTATION_PREFIX}/restored-by"
DRILL_LABEL = f"{ANNOTATION_PREFIX}/drill"
DEFAULT_REPLICAS = {"HighlyAvailable": 3, "SingleReplica": 1}
HYPERSHIFT_API = "hypershift.openshift.io/v1beta1"
# What a restore may create: the kinds ``hcp create cluster aws --render`` prints. Anything else is
# refused before creation (the Airflow identity needs no RBAC beyond these).
SUPPORTED_KINDS: dict[tuple[str, str], int] = {
    ("v1", "Namespace"): 0,
    ("v1", "Secret"): 1,
    ("v1", "ConfigMap"): 1,
    (HYPERSHIFT_API, "HostedCluster"): 2,
    (HYPERSHIFT_API, "NodePool"): 3,
}
_KEY_ROLES = ("activeKey", "backupKey")
_STRIP_METADATA = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
)


def check_target(namespace: str, name: str) -> ClusterRef:
    """Validate a restore target, including its control-plane namespace (a DNS-1123 label).

    :param namespace: the new HostedCluster's namespace.
    :param name: the new HostedCluster's name.
    """
    try:
        ref = ClusterRef(validate_namespace(namespace), validate_name(name))
        validate_namespace(control_plane_namespace(namespace, name))
    except InvalidNameError as err:
        raise RestoreInputError(f"invalid restore target {namespace}/{name}: {err}") from None
    return ref


def drill_target_name(name: str, moment: datetime) -> str:
    """``<name>-drill-<YYYYMMDD>``: the scratch cluster of a drill.

    :param name: the drilled cluster's name.
    :param moment: the drill's date (aware).
    """
    return f"{name}-drill-{moment.astimezone(UTC).strftime('%Y%m%d')}"


def load_objects(text: str, origin: str) -> list[dict[str, Any]]:
    """Parse multi-document YAML (or a JSON list / ``kind: List``) into objects.

    :param text: the rendered manifests.
    :param origin: where they came from, for messages.
    """
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        # Position only: yaml's own text quotes the line, and rendered manifests hold Secrets.
        raise RestoreInputError(f"{origin} is not valid YAML: {describe(err, 300)}") from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, list):
            objects += doc
        elif isinstance(doc, dict) and doc.get("kind") == "List":
            objects += doc.get("items") or []
        else:
            objects.append(doc)
    for obj in objects:
        if not isinstance(obj, dict) or not {"apiVersion", "kind", "metadata"} <= obj.keys():
            raise RestoreInputError(f"{origin}: every document needs apiVersion, kind and metadata")
        if (obj["apiVersion"], obj["kind"]) not in SUPPORTED_KINDS:
            raise RestoreInputError(
                f"{origin}: {obj['apiVersion']} {obj['kind']} is not something a restore creates "
                f"(supported: {', '.join(k for _, k in SUPPORTED_KINDS)})"
            )
        if not isinstance(obj["metadata"], dict) or not obj["metadata"].get("name"):
            raise RestoreInputError(f"{origin}: a {obj['kind']} has no metadata.name")
    return objects


def _clean_metadata(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    for k in _STRIP_METADATA:
        meta.pop(k, None)
    obj.pop("status", None)


def _renamed(value: str, old: str, new: str) -> str:
    """``old-xyz`` -> ``new-xyz`` (and ``old`` -> ``new``): how hcp names a cluster's objects."""
    if value == old:
        return new
    return new + value[len(old) :] if value.startswith(old + "-") else value


def _ref_paths(hc_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``{"name": ...}`` references of a HostedCluster spec to objects rendered with it."""
    aescbc_spec = ((hc_spec.get("secretEncryption") or {}).get("aescbc")) or {}
    refs = [hc_spec.get("pullSecret"), hc_spec.get("sshKey"), *(aescbc_spec.get(r) for r in _KEY_ROLES)]
    return [r for r in refs if isinstance(r, dict) and r.get("name")]


def key_secret_names(hc: dict[str, Any]) -> dict[str, str]:
    """``spec.secretEncryption.aescbc`` key Secrets by role; refuses a non-aescbc HostedCluster.

    :param hc: a HostedCluster.
    """
    enc = (hc.get("spec") or {}).get("secretEncryption") or {}
    spec = enc.get("aescbc") or {}
    names = {r: (spec.get(r) or {}).get("name") for r in _KEY_ROLES}
    if enc.get("type", "aescbc") != "aescbc" or not names["activeKey"]:
        raise RestoreInputError(
            "the HostedCluster has no spec.secretEncryption.aescbc.activeKey: a restore needs the AES-CBC "
            "key "
            "secret to hold the escrowed key (render with --render-sensitive)"
        )
    return {r: n for r, n in names.items() if n}


@dataclass
class RestorePlan:
    """The objects to create, in order, and which Secrets take which escrowed key.

    :param objects: the objects (Namespace first).
    :param target: the new HostedCluster.
    :param key_secrets: aescbc role -> Secret name (in the target namespace).
    :param replicas: etcd members the new cluster will have.
    :param copy_secrets: target Secret name -> source Secret name, data to copy (clone only).
    """

    objects: list[dict[str, Any]]
    target: ClusterRef
    key_secrets: dict[str, str]
    replicas: int
    copy_secrets: dict[str, str] = field(default_factory=dict)

    @property
    def hosted_cluster(self) -> dict[str, Any]:
        """The HostedCluster object of the plan."""
        return next(o for o in self.objects if o["kind"] == "HostedCluster")

    def summary(self) -> list[str]:
        """``Kind ns/name`` of every object (for logs and XCom: no data)."""
        return [
            f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}".replace(" /", " ")
            for o in self.objects
        ]

    def fill_key(self, role: str, key: bytes) -> None:
        """Put an escrowed key into its Secret (``data.key``). Only ever done inside the create task.

        :param role: ``activeKey`` or ``backupKey``.
        :param key: the 32 key bytes.
        """
        name = self.key_secrets[role]
        secret = next(o for o in self.objects if o["kind"] == "Secret" and o["metadata"]["name"] == name)
        secret["data"] = {**(secret.get("data") or {}), "key": base64.b64encode(key).decode()}
        secret.pop("stringData", None)


def replicas_of(hc: dict[str, Any]) -> int:
    """etcd members of a HostedCluster, from ``controllerAvailabilityPolicy`` (HyperShift's default: HA).

    :param hc: a HostedCluster.
    """
    policy = (hc.get("spec") or {}).get("controllerAvailabilityPolicy") or "HighlyAvailable"
    if policy not in DEFAULT_REPLICAS:
        raise RestoreInputError(f"unknown controllerAvailabilityPolicy {policy!r}")
    return DEFAULT_REPLICAS[policy]


def _set_restore_storage(hc: dict[str, Any], url: str) -> None:
    """Managed etcd on a PersistentVolume, restored from ``url`` (the only place a restore can happen)."""
    etcd = hc["spec"].setdefault("etcd", {})
    etcd["managementType"] = "Managed"
    etcd.pop("unmanaged", None)
    managed = etcd.setdefault("managed", {})
    storage = managed.setdefault("storage", {})
    storage["type"] = "PersistentVolume"
    storage.setdefault("persistentVolume", {"size": "8Gi"})
    storage["restoreSnapshotURL"] = [url]


def prepare_objects(
    objects: list[dict[str, Any]],
    target: ClusterRef,
    url: str,
    manifest: dict[str, Any],
    manifest_uri: str,
    restored_by: str,
) -> RestorePlan:
    """Edit rendered manifests into a restore of ``manifest`` as ``target``.

    The HostedCluster (exactly one) and everything rendered with it move to the target namespace and
    name (``<old>-x`` objects become ``<new>-x``); etcd becomes Managed/PersistentVolume with
    ``restoreSnapshotURL``; the aescbc key Secrets lose the rendered NEW key (the create task puts the
    escrowed one in); a backup key escrowed by the backup gets a Secret and ``backupKey`` too.

    :param objects: the rendered objects (not modified).
    :param target: the new HostedCluster.
    :param url: the presigned GET URL of the snapshot (``""`` to validate only).
    :param manifest: the backup manifest.
    :param manifest_uri: where the manifest is (recorded as an annotation).
    :param restored_by: the Airflow run (recorded as an annotation).
    """
    objs = copy.deepcopy(objects)
    hcs = [o for o in objs if o["kind"] == "HostedCluster"]
    if len(hcs) != 1:
        raise RestoreInputError(
            f"the rendered manifests hold {len(hcs)} HostedClusters; exactly one is needed"
        )
    hc = hcs[0]
    old_ns = hc["metadata"].get("namespace") or "clusters"
    old = hc["metadata"]["name"]
    if not isinstance(hc.get("spec"), dict):
        raise RestoreInputError("the rendered HostedCluster has no spec")
    for obj in objs:
        _clean_metadata(obj)
        meta = obj["metadata"]
        if obj["kind"] == "Namespace":
            if meta["name"] == old_ns:
                meta["name"] = target.namespace
            continue
        if meta.get("namespace", old_ns) != old_ns:
            raise RestoreInputError(
                f"{obj['kind']} {meta.get('namespace')}/{meta['name']} is outside the HostedCluster's "
                "namespace "
                f"{old_ns}: a restore creates objects in the target namespace only"
            )
        meta["namespace"] = target.namespace
        meta["name"] = _renamed(meta["name"], old, target.name)
        # Which run made it: a retry of that run adopts what a killed try left (it could not undo it).
        meta.setdefault("annotations", {})[RESTORED_BY_ANNOTATION] = restored_by
        if obj["kind"] == "NodePool":
            obj.setdefault("spec", {})["clusterName"] = target.name
    for ref in _ref_paths(hc["spec"]):
        ref["name"] = _renamed(ref["name"], old, target.name)
    hc["spec"].pop("pausedUntil", None)
    if hc["spec"].get("infraID"):
        # The infra id names cloud resources: a restore next to its source must not share them.
        hc["spec"]["infraID"] = f"{target.name[:20]}-{secrets.token_hex(3)[:5]}"
    _set_restore_storage(hc, url or "https://placeholder.invalid/")
    hc["metadata"]["annotations"][RESTORED_FROM_ANNOTATION] = manifest_uri  # restored-by: set above
    names = key_secret_names(hc)
    if "backupKey" in key_entries(manifest) and "backupKey" not in names:
        names["backupKey"] = f"{target.name}-etcd-encryption-backup-key"
        hc["spec"]["secretEncryption"]["aescbc"]["backupKey"] = {"name": names["backupKey"]}
    secrets_by_name = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    for role, name in names.items():
        secret = secrets_by_name.get(name)
        if secret is None:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": target.namespace},
            }
            objs.append(secret)
        if role not in key_entries(manifest):
            raise RestoreInputError(
                f"the HostedCluster names a {role} Secret {name!r} but the backup escrowed no such key"
            )
        # Never create the cluster with the freshly rendered key: it could not read the restored Secrets.
        secret["data"] = {k: v for k, v in (secret.get("data") or {}).items() if k != "key"}
        secret.pop("stringData", None)
    objs.sort(key=lambda o: SUPPORTED_KINDS[(o["apiVersion"], o["kind"])])
    return RestorePlan(objs, target, names, replicas_of(hc))


def clone_objects(
    source_hc: dict[str, Any], target: ClusterRef
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Manifests for a drill, cloned from the live source HostedCluster (control plane only, no NodePool).

    Returned as if rendered for the source (``prepare_objects`` renames them). The pull secret and
    SSH key Secrets are copied by the create task (their data never leaves it): the second value maps
    target Secret name -> source Secret name.

    :param source_hc: the source HostedCluster as read from the API.
    :param target: the drill cluster.
    """
    src_ns, src = source_hc["metadata"]["namespace"], source_hc["metadata"]["name"]
    spec = copy.deepcopy(source_hc.get("spec") or {})
    spec.pop("clusterID", None)  # a clone is another cluster: HyperShift assigns a new id
    hc = {
        "apiVersion": HYPERSHIFT_API,
        "kind": "HostedCluster",
        "metadata": {"name": src, "namespace": src_ns, "labels": {DRILL_LABEL: "true"}},
        "spec": spec,
    }
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": src_ns}},
        hc,
    ]
    copies: dict[str, str] = {}
    for field_name, suffix in (("pullSecret", "pull-secret"), ("sshKey", "ssh-key")):
        ref = spec.get(field_name)
        if isinstance(ref, dict) and ref.get("name"):
            copies[f"{target.name}-{suffix}"] = ref["name"]
            # Named as rendered for the source, so prepare_objects gives it the target's name.
            ref["name"] = f"{src}-{suffix}"
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {"name": ref["name"], "namespace": src_ns},
                }
            )
    aescbc_spec = (spec.get("secretEncryption") or {}).get("aescbc") or {}
    for role, suffix in (("activeKey", "etcd-encryption-key"), ("backupKey", "etcd-encryption-backup-key")):
        if isinstance(aescbc_spec.get(role), dict):
            aescbc_spec[role] = {"name": f"{src}-{suffix}"}
    return objects, copies
