"""Restore and restore drills: the domain logic (pure functions, no I/O).

- resolve a backup: a ``manifest.json`` URI, or the newest complete backup of a cluster at or
  before a time;
- check a presigned URL against HyperShift's ``restoreSnapshotURL`` rules;
- edit the manifests rendered by ``hcp create cluster aws --render --render-sensitive`` (or cloned
  from a live HostedCluster for a drill) into the objects of a restore;
- the verification checks of a restored etcd, and the drill report.

The operators in ``hcp_etcd.operators.restore`` do the I/O around these.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from hcp_etcd import aescbc
from hcp_etcd.errors import ConfigurationError, describe
from hcp_etcd.manifest import ManifestError, validate_manifest
from hcp_etcd.naming import (
    ANNOTATION_PREFIX,
    CLUSTER_REF_PATTERN,
    ClusterRef,
    InvalidNameError,
    control_plane_namespace,
    parse_backup_ts,
    parse_rfc3339,
    validate_name,
    validate_namespace,
    validate_prefix,
)
from hcp_etcd.retention import group_backup_dirs

# HyperShift's CRD: restoreSnapshotURL has at most 1 item of at most 1024 characters, ^(https|s3)://.
RESTORE_URL_MAX_LENGTH = 1024
# SigV4 presigned URLs live at most 7 days.
MAX_URL_EXPIRY_HOURS = 168
# A URL must stay valid at least this long after creation: etcd-init downloads when the pods start.
MIN_URL_VALIDITY = timedelta(minutes=15)
MANIFEST_KIND = "hcp-etcd-backup"
RESTORED_FROM_ANNOTATION = f"{ANNOTATION_PREFIX}/restored-from"
RESTORED_BY_ANNOTATION = f"{ANNOTATION_PREFIX}/restored-by"
DRILL_LABEL = f"{ANNOTATION_PREFIX}/drill"
# JSON-schema pattern of the restore DAG's ``source`` Param: a manifest URI or namespace/name.
SOURCE_PATTERN = rf"^(s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]/.+/manifest\.json|{CLUSTER_REF_PATTERN[1:-1]})$"
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


class RestoreInputError(ConfigurationError, ValueError):
    """Bad input to a restore: refused before anything is created, and not retried (no retry changes
    a manifest, a key or a target name)."""


# ---- where the backup is ------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``.

    :param uri: the URI.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise RestoreInputError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key or ".." in key.split("/"):
        raise RestoreInputError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


@dataclass(frozen=True)
class BackupSource:
    """What the user asked to restore: one manifest, or the newest backup of a cluster.

    :param manifest_uri: ``s3://.../manifest.json`` when a manifest was named.
    :param cluster: the cluster whose newest backup is wanted otherwise.
    """

    manifest_uri: str | None = None
    cluster: ClusterRef | None = None


def parse_source(source: str) -> BackupSource:
    """Parse the ``source`` Param.

    :param source: ``s3://bucket/.../manifest.json`` or ``namespace/name``.
    """
    source = (source or "").strip()
    if source.startswith("s3://"):
        _, key = parse_s3_uri(source)
        if not key.endswith("/manifest.json"):
            raise RestoreInputError(f"{source!r} does not name a manifest.json")
        return BackupSource(manifest_uri=source)
    try:
        return BackupSource(cluster=ClusterRef.parse(source))
    except InvalidNameError as err:
        raise RestoreInputError(f"source must be s3://.../manifest.json or namespace/name: {err}") from None


def backup_candidates(
    objects: Iterable[tuple[str, datetime]], base: str, at_or_before: datetime
) -> list[str]:
    """Backup directories of one cluster that have a manifest and are not newer than a time, newest first.

    :param objects: (key, last modified) of the objects under the cluster's prefix.
    :param base: ``{prefix}/{ns}/{name}``.
    :param at_or_before: the cutoff (aware).
    """
    dirs = group_backup_dirs(objects, base)
    fit = [ts for ts, d in dirs.items() if d.has_manifest and parse_backup_ts(ts) <= at_or_before]
    return sorted(fit, reverse=True)


def check_manifest(data: Any, manifest_uri: str, expected: ClusterRef | None = None) -> dict[str, Any]:
    """Validate a manifest for a restore: ours, complete, consistent with where it was found.

    :param data: the parsed JSON.
    :param manifest_uri: where it was read from.
    :param expected: the cluster it must belong to (when resolved by cluster).
    """
    if isinstance(data, dict) and data.get("kind", MANIFEST_KIND) != MANIFEST_KIND:
        raise RestoreInputError(
            f"{manifest_uri} is not an hcp-etcd backup manifest (kind {data.get('kind')!r})"
        )
    try:
        manifest = validate_manifest(data)
    except ManifestError as err:
        raise RestoreInputError(f"{manifest_uri} is not a usable backup manifest: {err}") from None
    bucket, key = parse_s3_uri(manifest_uri)
    hc = manifest["hosted_cluster"]
    ref = ClusterRef(hc["namespace"], hc["name"])
    if expected is not None and ref != expected:
        raise RestoreInputError(f"{manifest_uri} belongs to {ref}, not {expected}")
    snap = manifest["snapshot"]
    sibling = key.rsplit("/", 1)[0] + "/snapshot.db"
    if snap["bucket"] != bucket or snap["key"] != sibling:
        raise RestoreInputError(
            f"{manifest_uri} names snapshot s3://{snap['bucket']}/{snap['key']}, not the snapshot next to it "
            f"(s3://{bucket}/{sibling}): refusing a manifest that points elsewhere"
        )
    parse_s3_uri(manifest["encryption_key"]["location"])
    return manifest


def key_entries(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The escrowed keys a manifest refers to, by aescbc role (``activeKey``, ``backupKey``).

    :param manifest: a valid manifest.
    """
    enc = manifest["encryption_key"]
    out = {"activeKey": {"location": enc["location"], "sha256": enc["sha256"]}}
    backup = enc.get("backup_key")
    if isinstance(backup, dict) and backup.get("location") and backup.get("sha256"):
        out["backupKey"] = {"location": backup["location"], "sha256": backup["sha256"]}
    return out


# ---- presigned URL ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresignedUrlInfo:
    """What a presigned URL says about itself (never the URL: it is a bearer credential).

    :param length: characters.
    :param expires_at: RFC3339 expiry.
    :param session_token: whether it carries an STS session token.
    """

    length: int
    expires_at: str
    session_token: bool


def check_presigned_url(
    url: str, now: datetime, min_validity: timedelta = MIN_URL_VALIDITY
) -> PresignedUrlInfo:
    """Refuse a URL that HyperShift or etcd-init would reject, saying why.

    :param url: the presigned GET URL.
    :param now: the current time (aware).
    :param min_validity: how long it must stay valid from ``now``.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    token = "X-Amz-Security-Token" in query
    if parts.scheme != "https":
        raise RestoreInputError(
            f"restoreSnapshotURL must be https:// (etcd-init downloads it), got {parts.scheme}://"
        )
    if query.get("X-Amz-Algorithm") != ["AWS4-HMAC-SHA256"]:
        raise RestoreInputError(
            "the presigned URL is not SigV4 (X-Amz-Algorithm=AWS4-HMAC-SHA256): SigV2 URLs "
            "fail in newer regions and are deprecated"
        )
    if len(url) > RESTORE_URL_MAX_LENGTH:
        why = (
            (
                " It carries an STS session token (X-Amz-Security-Token), which is what makes it long: "
                "set presign_aws_conn_id to a connection with the long-term keys of an IAM user that may "
                "only read snapshots (include/aws/presign-user.json), or use a shorter bucket/prefix."
            )
            if token
            else " Use a shorter bucket name or prefix."
        )
        raise RestoreInputError(
            f"the presigned URL is {len(url)} characters; HostedCluster spec.etcd.managed.storage."
            f"restoreSnapshotURL allows at most {RESTORE_URL_MAX_LENGTH}.{why}"
        )
    try:
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))
    except (KeyError, IndexError, ValueError):
        raise RestoreInputError("the presigned URL has no valid X-Amz-Date/X-Amz-Expires") from None
    if expires <= now:
        raise RestoreInputError(f"the presigned URL expired at {expires.isoformat()}")
    if expires - now < min_validity:
        raise RestoreInputError(
            f"the presigned URL expires at {expires.isoformat()}, less than {min_validity} from now: "
            "etcd-init "
            "may download it later than that"
        )
    return PresignedUrlInfo(len(url), expires.strftime("%Y-%m-%dT%H:%M:%SZ"), token)


def check_url_expiry_hours(hours: Any) -> int:
    """Validate ``url_expiry_hours`` (1..168, the SigV4 limit).

    :param hours: the Param value.
    """
    if isinstance(hours, bool) or not isinstance(hours, int | str) or not str(hours).isdigit():
        raise RestoreInputError(f"url_expiry_hours must be an integer, got {hours!r}")
    value = int(hours)
    if not 1 <= value <= MAX_URL_EXPIRY_HOURS:
        raise RestoreInputError(
            f"url_expiry_hours must be 1..{MAX_URL_EXPIRY_HOURS} (SigV4 limit), got {value}"
        )
    return value


# ---- target and objects -------------------------------------------------------------------------


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


# ---- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One verification check.

    :param name: short id (``members``, ``revision``, ``key_counts``, ``secret_decrypts``, ...).
    :param passed: whether it passed.
    :param detail: what was seen (no secrets).
    """

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def member_list_command() -> list[str]:
    """``etcdctl member list -w json`` against the local member (with the HCP's TLS flags)."""
    from hcp_etcd.etcd import etcdctl

    return etcdctl("member", "list", "-w", "json")


def secret_sample_command(limit: int = 1) -> list[str]:
    """The first ``limit`` Secrets as stored in etcd now (base64 JSON output).

    At the current revision: a restored etcd is compacted past the backup's revision.

    :param limit: how many.
    """
    from hcp_etcd.etcd import etcdctl

    return etcdctl("get", "--prefix", "/kubernetes.io/secrets/", f"--limit={int(limit)}", "-w", "json")


def parse_member_list(output: str) -> list[str]:
    """Member names (or hex ids when unnamed) from ``etcdctl member list -w json``.

    :param output: stdout.
    """
    start = output.find("{")
    try:
        members = json.loads(output[start:])["members"]
        return sorted(m.get("name") or format(int(m["ID"]), "x") for m in members)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"unexpected member list output: {output[-300:]!r}") from err


def parse_get_values(output: str) -> list[tuple[str, bytes]]:
    """``(key, value)`` pairs from ``etcdctl get -w json`` (keys and values are base64 there).

    :param output: stdout.
    """
    start = output.find("{")
    try:
        kvs = json.loads(output[start:]).get("kvs") or []
        return [
            (base64.b64decode(kv["key"]).decode("utf-8", "replace"), base64.b64decode(kv.get("value", "")))
            for kv in kvs
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"unexpected etcdctl get output ({len(output)} bytes)") from err


def check_members(per_pod: dict[str, list[str]], replicas: int) -> Check:
    """Every member sees the same membership of ``replicas`` members: the split-brain guard.

    HyperShift can restore an HA cluster into three one-member clusters while EtcdAvailable stays True.

    :param per_pod: pod -> member names it reports.
    :param replicas: the expected member count.
    """
    views = {tuple(v) for v in per_pod.values()}
    detail = "; ".join(f"{pod}: {len(v)} member(s) {', '.join(v)}" for pod, v in sorted(per_pod.items()))
    ok = len(per_pod) == replicas and len(views) == 1 and all(len(v) == replicas for v in views)
    if not ok:
        detail = f"expected {replicas} pods in one {replicas}-member cluster (split brain?): {detail}"
    return Check("members", ok, detail)


def check_revision(revisions: dict[str, int], manifest_revision: int) -> Check:
    """Every member's revision is at least the backup's.

    :param revisions: pod -> current revision.
    :param manifest_revision: ``etcd.revision`` of the manifest.
    """
    low = {p: r for p, r in revisions.items() if r < manifest_revision}
    detail = ", ".join(f"{p}: {r}" for p, r in sorted(revisions.items())) + f" (backup: {manifest_revision})"
    return Check("revision", bool(revisions) and not low, detail)


def compare_key_counts(
    actual: dict[str, int], expected: dict[str, int], may_vanish: dict[str, int] | None = None
) -> Check:
    """The backup's keys per ``/kubernetes.io/<resource>/`` are all in the restored etcd.

    ``actual`` counts the restored keys that came from the backup (created at or before its
    revision; read at the current revision). Keys the control plane drops by itself may be gone:
    those bound to an etcd lease (``may_vanish``, from the manifest) and every key of
    :data:`hcp_etcd.etcd.VOLATILE_RESOURCES`. Fewer keys than that allows is missing data.

    :param actual: counted in the restored etcd.
    :param expected: ``etcd.key_counts`` of the manifest.
    :param may_vanish: ``etcd.leased_key_counts`` of the manifest, when it has them.
    """
    from hcp_etcd.etcd import VOLATILE_RESOURCES

    vanish = may_vanish or {}
    missing = {}
    for r in sorted(set(actual) | set(expected)):
        want, have = expected.get(r, 0), actual.get(r, 0)
        floor = 0 if r in VOLATILE_RESOURCES else want - vanish.get(r, 0)
        if have < floor:
            missing[r] = (want, have)
    if missing:
        shown = ", ".join(f"{r}: backup {e} restored {a}" for r, (e, a) in list(missing.items())[:10])
        return Check("key_counts", False, f"{len(missing)} resource(s) lack keys of the backup: {shown}")
    gone = sum(max(expected.get(r, 0) - actual.get(r, 0), 0) for r in expected)
    return Check(
        "key_counts",
        True,
        f"{sum(actual.values())} keys of the backup in {len(actual)} resources match the manifest"
        + (f" ({gone} leased or volatile keys gone since)" if gone else ""),
    )


def check_samples(samples: list[dict[str, Any]], found: dict[str, Any], revision: int) -> Check:
    """Every sampled key of the backup is in the restored etcd, with its value unless rewritten since.

    A key not modified after the backup's revision still holds the backup's bytes: its SHA-256 must
    match. A key modified later (the restored cluster wrote it) needs only to exist.

    :param samples: ``etcd.samples`` of the manifest.
    :param found: key -> :class:`hcp_etcd.etcd.StoredValue` read from the restored etcd now.
    :param revision: ``etcd.revision`` of the manifest.
    """
    failures, rewritten = [], 0
    for sample in samples:
        got = found.get(sample["key"])
        if got is None:
            failures.append(f"{sample['key']}: missing")
        elif got.mod_revision > revision:
            rewritten += 1
        elif got.sha256 != sample["sha256"]:
            failures.append(f"{sample['key']}: value differs from the backup's")
    if failures:
        return Check(
            "samples", False, f"{len(failures)} of {len(samples)} sampled keys: " + "; ".join(failures)[:500]
        )
    return Check(
        "samples",
        True,
        f"{len(samples) - rewritten} sampled keys hold the backup's values"
        + (f", {rewritten} rewritten by the restored cluster since" if rewritten else ""),
    )


def check_secret_decrypts(samples: list[tuple[str, bytes]], key: bytes | None) -> Check:
    """Secrets read from the restored etcd decrypt with the key the new cluster holds.

    :param samples: (etcd key, raw value) of Secrets.
    :param key: the key from the restored cluster's encryption Secret (None when missing).
    """
    if key is None:
        return Check("secret_decrypts", False, "the restored cluster's encryption key Secret has no data.key")
    if not samples:
        return Check("secret_decrypts", False, "no Secret found in the restored etcd to try the key on")
    failures = []
    for etcd_key, value in samples:
        if not aescbc.is_aescbc(value):
            failures.append(f"{etcd_key}: not aescbc-encrypted")
            continue
        try:
            aescbc.decrypt(value, key)
        except aescbc.DecryptError as err:
            failures.append(f"{etcd_key}: {err}")
    if failures:
        return Check("secret_decrypts", False, "; ".join(failures)[:500])
    return Check(
        "secret_decrypts",
        True,
        f"{len(samples)} Secret(s) decrypt with the restored key ({', '.join(k for k, _ in samples)})",
    )


def failed(checks: Iterable[Check | dict[str, Any]]) -> list[str]:
    """Names of the failed checks.

    :param checks: checks or their dicts.
    """
    out = []
    for c in checks:
        d = c.as_dict() if isinstance(c, Check) else c
        if not d.get("passed"):
            out.append(str(d.get("name")))
    return out


# ---- drill report -------------------------------------------------------------------------------


# Drill reports sit beside the backups, under a folder no namespace can be called (DNS-1123 labels
# have no "_"): a HostedCluster namespace named "drills" must not mix its backups with drill reports.
DRILL_REPORTS_DIR = "_drills"


def drill_report_key(prefix: str, ref: ClusterRef, moment: datetime) -> str:
    """``{prefix}/_drills/{ns}/{name}/{YYYYmmdd}.json``.

    :param prefix: the backup prefix.
    :param ref: the drilled cluster.
    :param moment: the drill date.
    """
    parts = (validate_prefix(prefix).strip("/"), DRILL_REPORTS_DIR, ref.namespace, ref.name)
    return "/".join(p for p in parts if p) + f"/{moment.astimezone(UTC).strftime('%Y%m%d')}.json"


def drill_asset_name(ref: ClusterRef) -> str:
    """Asset name of a cluster's drills.

    :param ref: the drilled cluster.
    """
    return f"hcp-etcd-drill/{ref.namespace}/{ref.name}"


def build_drill_report(
    *,
    ref: ClusterRef,
    target: str,
    as_of: datetime,
    ran_at: datetime,
    backup: dict[str, Any] | None,
    created: dict[str, Any] | None,
    restored: dict[str, Any] | None,
    checks: list[dict[str, Any]],
    errors: list[str],
    run_id: str,
) -> dict[str, Any]:
    """The drill report (no secrets: locations, fingerprints, times, checks).

    :param ref: the drilled cluster.
    :param target: ``namespace/name`` of the scratch cluster.
    :param as_of: the run's data interval end (the backup cutoff).
    :param ran_at: when the report was written.
    :param backup: result of the resolve task (manifest URI and manifest) or None.
    :param created: result of the create task or None.
    :param restored: result of the wait task (recovery time) or None.
    :param checks: the verification checks.
    :param errors: failures of tasks before the checks (bad input, timeouts).
    :param run_id: Airflow run id.
    """
    manifest = (backup or {}).get("manifest") or {}
    created_at = manifest.get("created_at")
    age = None if not created_at else (as_of - parse_rfc3339(created_at)).total_seconds()
    age_now = None if not created_at else (ran_at - parse_rfc3339(created_at)).total_seconds()
    all_checks = list(checks)
    if not all_checks and not errors:
        errors = ["no verification ran"]
    passed = not errors and not failed(all_checks)
    return {
        "schema_version": 1,
        "kind": "hcp-etcd-drill",
        "hosted_cluster": {"namespace": ref.namespace, "name": ref.name},
        "drill_cluster": target,
        "as_of": as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ran_at": ran_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "passed": passed,
        "snapshot": {
            "manifest": (backup or {}).get("manifest_uri"),
            "key": (manifest.get("snapshot") or {}).get("key"),
            "sha256": (manifest.get("snapshot") or {}).get("sha256"),
            "created_at": created_at,
            "revision": (manifest.get("etcd") or {}).get("revision"),
        },
        "snapshot_age_seconds": age,
        "snapshot_age_at_run_seconds": age_now,
        "recovery_seconds": (restored or {}).get("recovery_seconds"),
        "created_at": (created or {}).get("created_at"),
        "available_at": (restored or {}).get("available_at"),
        "checks": all_checks,
        "errors": errors,
        "airflow": {"run_id": run_id},
    }
