"""``manifest.json``: building and validating (pure). A backup without a valid manifest does not exist."""

from __future__ import annotations

import copy
import re
from typing import Any

from hcp_etcd.encryption import ROLES, SPEC_ACTIVE, SPEC_BACKUP

SCHEMA_VERSION = 1
MODES = ("quiesced", "online")


class ManifestError(ValueError):
    """A manifest that is not one of ours or is incomplete."""


# Required fields as dotted paths with their types: the contract with the restore DAG.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "hosted_cluster.namespace": str,
    "hosted_cluster.name": str,
    "created_at": str,
    "mode": str,
    "snapshot.bucket": str,
    "snapshot.key": str,
    "snapshot.size_bytes": int,
    "snapshot.sha256": str,
    "etcd.revision": int,
    "etcd.hash": int,
    "etcd.total_keys": int,
    "etcd.version": str,
    "etcd.members": list,
    "etcd.key_counts": dict,
    "api_downtime_seconds": (int, float, type(None)),
    "airflow.dag_id": str,
    "airflow.run_id": str,
}
# Required unless ``encryption.type`` is ``kms`` (older manifests have no ``encryption``: AES-CBC).
_REQUIRED_AESCBC: dict[str, type] = {"encryption_key.location": str, "encryption_key.sha256": str}
_ARN = re.compile(r"^arn:[^\s]{1,2044}$")


def _get(data: dict[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def build_manifest(
    *,
    namespace: str,
    name: str,
    created_at: str,
    mode: str,
    bucket: str,
    snapshot_key: str,
    size_bytes: int,
    sha256: str,
    canonical_member: str,
    revision: int,
    etcd_hash: int,
    total_keys: int,
    total_size: int,
    etcd_version: str,
    members: list[dict[str, Any]],
    key_counts: dict[str, int],
    key_location: str | None,
    key_sha256: str | None,
    backup_key_location: str | None,
    backup_key_sha256: str | None,
    api_downtime_seconds: float | None,
    dag_id: str,
    run_id: str,
    sse: str,
    backup_prefix: str | None = None,
    leased_key_counts: dict[str, int] | None = None,
    samples: list[dict[str, Any]] | None = None,
    listed_at_revision: int | None = None,
    keys: list[dict[str, Any]] | None = None,
    source: dict[str, Any] | None = None,
    service_account_key: dict[str, Any] | None = None,
    encryption: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a manifest and validate it.

    :param namespace: HostedCluster namespace.
    :param name: HostedCluster name.
    :param created_at: RFC3339 time of the snapshot.
    :param mode: ``quiesced`` or ``online``.
    :param bucket: the bucket of the snapshot.
    :param snapshot_key: S3 key of the snapshot.
    :param size_bytes: snapshot size.
    :param sha256: hex SHA-256 of the snapshot object.
    :param canonical_member: the pod whose snapshot was uploaded.
    :param revision: revision of the uploaded snapshot.
    :param etcd_hash: hash of the uploaded snapshot (``snapshot status``).
    :param total_keys: total keys of the uploaded snapshot.
    :param total_size: backend size of the uploaded snapshot.
    :param etcd_version: etcd server version.
    :param members: per member: pod, revision, hash.
    :param key_counts: keys per ``/kubernetes.io/<resource>/`` at ``revision``.
    :param key_location: ``s3://`` URL of the escrowed key a restore makes ``activeKey``.
    :param key_sha256: fingerprint of that key (never the key).
    :param backup_key_location: location of the key a restore makes ``backupKey``, if any.
    :param backup_key_sha256: its fingerprint.
    :param api_downtime_seconds: scale-down start to API servers available (None in online mode).
    :param dag_id: Airflow DAG id.
    :param run_id: Airflow run id.
    :param sse: server-side encryption used (``aws:kms`` or ``AES256``).
    :param backup_prefix: the backup prefix the backup was written under (``{prefix}/{ns}/{name}/…``):
        key garbage collection and copies elsewhere can tell which location it belongs to.
    :param leased_key_counts: of ``key_counts``, the keys bound to an etcd lease (they may vanish).
    :param samples: sampled keys of the snapshot: key, SHA-256 of the value, mod_revision.
    :param listed_at_revision: the revision the keys were listed at (the snapshot's or later).
    :param keys: every escrowed key: ``sha256``, ``kas_key_name``, ``location``, ``roles`` (which
        spec and status references named it) and ``secrets`` (``hcp_etcd.encryption.EscrowedKey``).
    :param source: :func:`source_record` of the cluster (optional in schema 1: older manifests lack it).
    :param service_account_key: the escrowed service-account signing key: ``location``, ``sha256``
        (of the object), ``public_key_sha256`` (of its public key's DER SubjectPublicKeyInfo: what the
        restored cluster's key is compared with) and ``secret`` (where it was read). Optional in
        schema 1: older manifests lack it.
    :param encryption: ``{"type": "aescbc"}``, or for a ``type: kms`` cluster
        :func:`hcp_etcd.encryption.kms_record` (``kms_key_arns``, writing key first, and ``kms_keys``):
        then there is no ``encryption_key`` (no key to escrow) and ``key_location`` is None. Optional
        in schema 1: older manifests lack it (AES-CBC).
    """
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "hcp-etcd-backup",
        "hosted_cluster": {"namespace": namespace, "name": name},
        "created_at": created_at,
        "mode": mode,
        "backup_prefix": backup_prefix,
        "snapshot": {
            "bucket": bucket,
            "key": snapshot_key,
            "size_bytes": size_bytes,
            "sha256": sha256,
            "member": canonical_member,
            "format": "etcd-snapshot-raw",
            "sse": sse,
        },
        "etcd": {
            "revision": revision,
            "hash": etcd_hash,
            "total_keys": total_keys,
            "total_size": total_size,
            "version": etcd_version,
            "members": members,
            "key_counts": key_counts,
        },
        "api_downtime_seconds": api_downtime_seconds,
        "airflow": {"dag_id": dag_id, "run_id": run_id},
    }
    if source is not None:
        manifest["source"] = source
    if encryption is not None:
        manifest["encryption"] = copy.deepcopy(encryption)
    if key_location is not None:
        manifest["encryption_key"] = {"location": key_location, "sha256": key_sha256}
    # Optional in schema 1 (older manifests lack them): what a restore verifies at its current revision.
    for name, value in (
        ("leased_key_counts", leased_key_counts),
        ("samples", samples),
        ("listed_at_revision", listed_at_revision),
    ):
        if value is not None:
            manifest["etcd"][name] = value
    if backup_key_location and "encryption_key" in manifest:
        manifest["encryption_key"]["backup_key"] = {
            "location": backup_key_location,
            "sha256": backup_key_sha256,
        }
    if keys is not None and "encryption_key" in manifest:
        # Optional in schema 1: manifests before key rotation support list the two above only.
        manifest["encryption_key"]["keys"] = keys
    if service_account_key is not None:
        manifest["service_account_key"] = dict(service_account_key)
    validate_manifest(manifest)
    return manifest


# Annotations of a HostedCluster or NodePool that change what HyperShift runs (image overrides, resource
# requests, ...) are HyperShift's own; everything else (ours, kubectl's last-applied copy, which holds
# the whole spec and so a restore's presigned URL) stays out of the record.
_RECORDED_ANNOTATION_PREFIX = "hypershift.openshift.io/"


def _recorded(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(_RECORDED_ANNOTATION_PREFIX)
    }
    recorded_meta = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    if meta.get("labels"):
        recorded_meta["labels"] = dict(meta["labels"])
    if annotations:
        recorded_meta["annotations"] = annotations
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": recorded_meta,
        "spec": copy.deepcopy(obj.get("spec") or {}),
    }


def source_record(hosted_cluster: dict[str, Any], node_pools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What rebuilding the cluster needs once it is gone: its HostedCluster's and NodePools' specs.

    References only (Secrets are named, never read); no status. Left out: ``spec.pausedUntil`` (the
    backup's own pause) and ``restoreSnapshotURL`` (a cluster that was itself restored carries the
    presigned URL it was restored from: a credential).

    :param hosted_cluster: the HostedCluster as read from the API.
    :param node_pools: its NodePools (``spec.clusterName`` = its name); None when they could not be
        read (recorded as unknown, not as none).
    """
    hc = _recorded(hosted_cluster)
    hc["spec"].pop("pausedUntil", None)
    storage = ((hc["spec"].get("etcd") or {}).get("managed") or {}).get("storage") or {}
    storage.pop("restoreSnapshotURL", None)
    release = (hc["spec"].get("release") or {}).get("image")
    return {
        "hosted_cluster": hc,
        "node_pools": None if node_pools is None else [_recorded(np) for np in node_pools],
        "release_image": release if isinstance(release, str) else None,
    }


def _validate_source(source: Any) -> None:
    if not isinstance(source, dict) or not isinstance(source.get("hosted_cluster"), dict):
        raise ManifestError("manifest field source has no hosted_cluster")
    if not isinstance(source["hosted_cluster"].get("spec"), dict):
        raise ManifestError("manifest field source.hosted_cluster has no spec")
    pools = source.get("node_pools")
    if pools is not None and not (isinstance(pools, list) and all(isinstance(p, dict) for p in pools)):
        raise ManifestError("manifest field source.node_pools is not a list of objects")
    if not isinstance(source.get("release_image"), str | type(None)):
        raise ManifestError("manifest field source.release_image is not a string")


def validate_manifest(data: Any) -> dict[str, Any]:
    """Raise ``ManifestError`` unless ``data`` is a complete manifest of a supported schema.

    :param data: the parsed JSON.
    """
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"unsupported manifest schema_version {data.get('schema_version')!r}")
    kms = _validate_encryption(data.get("encryption"))
    for path, kind in {**_REQUIRED, **({} if kms else _REQUIRED_AESCBC)}.items():
        try:
            value = _get(data, path)
        except KeyError:
            raise ManifestError(f"manifest lacks {path}") from None
        # bool is an int in Python: never accept it for counts.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ManifestError(f"manifest field {path} has type {type(value).__name__}")
    if data["mode"] not in MODES:
        raise ManifestError(f"manifest mode {data['mode']!r} is not one of {MODES}")
    for path in ("snapshot.sha256", *(() if kms else ("encryption_key.sha256",))):
        if not re.fullmatch(r"[0-9a-f]{64}", _get(data, path)):
            raise ManifestError(f"manifest field {path} is not a hex SHA-256")
    if not data["snapshot"]["key"].endswith("/snapshot.db"):
        raise ManifestError("manifest snapshot.key does not name a snapshot.db")
    _validate_verification_fields(data["etcd"])
    if kms and data.get("encryption_key") is not None:
        raise ManifestError("a kms manifest has no encryption_key (there is no key to escrow)")
    if not kms:
        _validate_keys(data["encryption_key"])
    if data.get("source") is not None:
        _validate_source(data["source"])
    if data.get("service_account_key") is not None:
        _validate_service_account_key(data["service_account_key"])
    for member in data["etcd"]["members"]:
        if not isinstance(member, dict) or not {"pod", "revision", "hash"} <= member.keys():
            raise ManifestError("manifest etcd.members entries need pod, revision and hash")
    return data


def _validate_encryption(enc: Any) -> bool:
    """Check ``encryption`` (absent: AES-CBC); whether the manifest is of a ``type: kms`` cluster."""
    if enc is None:
        return False
    if not isinstance(enc, dict) or enc.get("type") not in ("aescbc", "kms"):
        raise ManifestError("manifest field encryption.type is not aescbc or kms")
    if enc["type"] == "aescbc":
        return False
    arns = enc.get("kms_key_arns")
    if not (
        isinstance(arns, list)
        and arns
        and all(isinstance(a, str) and _ARN.fullmatch(a) for a in arns)
        and len(set(arns)) == len(arns)
    ):
        raise ManifestError(
            "manifest field encryption.kms_key_arns needs one or more distinct key ARNs (arn:...)"
        )
    keys = enc.get("kms_keys")
    if keys is not None and not (
        isinstance(keys, list)
        and [k.get("arn") if isinstance(k, dict) else None for k in keys] == arns
        and all(isinstance(k.get("roles"), list) and all(r in ROLES for r in k["roles"]) for k in keys)
    ):
        raise ManifestError("manifest field encryption.kms_keys must list kms_key_arns in order, with roles")
    return True


def kms_key_arns(manifest: dict[str, Any]) -> list[str] | None:
    """The KMS key ARNs of a ``type: kms`` backup (writing key first); None for an AES-CBC one.

    :param manifest: a valid manifest.
    """
    enc = manifest.get("encryption") or {}
    return list(enc["kms_key_arns"]) if enc.get("type") == "kms" else None


def _validate_verification_fields(etcd: dict[str, Any]) -> None:
    leased = etcd.get("leased_key_counts")
    if leased is not None and (
        not isinstance(leased, dict) or not all(type(v) is int for v in leased.values())
    ):
        raise ManifestError("manifest field etcd.leased_key_counts is not a map of counts")
    samples = etcd.get("samples")
    if samples is not None and not (
        isinstance(samples, list)
        and all(
            isinstance(x, dict)
            and isinstance(x.get("key"), str)
            and isinstance(x.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", x["sha256"])
            and type(x.get("mod_revision")) is int
            for x in samples
        )
    ):
        raise ManifestError("manifest field etcd.samples needs key, sha256 and mod_revision entries")
    listed = etcd.get("listed_at_revision")
    if listed is not None and type(listed) is not int:
        raise ManifestError("manifest field etcd.listed_at_revision is not an integer")


def _validate_keys(enc: dict[str, Any]) -> None:
    keys = enc.get("keys")
    if keys is None:
        return
    ok = isinstance(keys, list) and bool(keys)
    for k in keys if ok else []:
        ok = ok and (
            isinstance(k, dict)
            and isinstance(k.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", k["sha256"]) is not None
            and isinstance(k.get("kas_key_name"), str)
            and re.fullmatch(r"key-[0-9]+", k["kas_key_name"]) is not None
            and isinstance(k.get("location"), str)
            and k["location"].startswith("s3://")
            and isinstance(k.get("roles"), list)
            and all(r in ROLES for r in k["roles"])
            and isinstance(k.get("secrets"), list)
            and all(isinstance(x, str) for x in k["secrets"])
        )
    if not ok:
        raise ManifestError(
            "manifest field encryption_key.keys needs sha256, kas_key_name (key-<n>), an s3:// location, "
            "roles and secrets entries"
        )
    listed = {k["sha256"] for k in keys}
    backup = enc.get("backup_key") or {}
    if enc["sha256"] not in listed or (backup.get("sha256") and backup["sha256"] not in listed):
        raise ManifestError("manifest encryption_key names a key that encryption_key.keys does not list")


def _validate_service_account_key(entry: Any) -> None:
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("location"), str)
        and entry["location"].startswith("s3://")
        and isinstance(entry.get("secret"), str)
        and all(
            isinstance(entry.get(f), str) and re.fullmatch(r"[0-9a-f]{64}", entry[f]) is not None
            for f in ("sha256", "public_key_sha256")
        )
    )
    if not ok:
        raise ManifestError(
            "manifest field service_account_key needs an s3:// location, sha256, public_key_sha256 (hex "
            "SHA-256) and secret"
        )


def service_account_key(manifest: dict[str, Any]) -> dict[str, str] | None:
    """The escrowed service-account signing key of a manifest (None: taken before it was escrowed).

    :param manifest: a valid manifest.
    """
    entry = manifest.get("service_account_key")
    return dict(entry) if isinstance(entry, dict) else None


def escrowed_keys(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every escrowed key of a manifest; an older manifest's (no ``keys``) with what it recorded.

    Entries of older manifests have ``kas_key_name`` None and the restore role as their only role.
    A ``type: kms`` backup has none.

    :param manifest: a valid manifest.
    """
    if kms_key_arns(manifest) is not None:
        return []
    enc = manifest["encryption_key"]
    if enc.get("keys") is not None:
        return [dict(k) for k in enc["keys"]]
    out = [{"sha256": enc["sha256"], "kas_key_name": None, "location": enc["location"],
            "roles": [SPEC_ACTIVE], "secrets": []}]  # fmt: skip
    backup = enc.get("backup_key")
    if isinstance(backup, dict) and backup.get("location") and backup.get("sha256"):
        out.append({"sha256": backup["sha256"], "kas_key_name": None, "location": backup["location"],
                    "roles": [SPEC_BACKUP], "secrets": []})  # fmt: skip
    return out


def referenced_key_objects(manifest: dict[str, Any]) -> set[str]:
    """``s3://`` locations of key objects a manifest refers to (AES keys and the service-account key).

    :param manifest: a valid manifest.
    """
    locations = {k["location"] for k in escrowed_keys(manifest)}
    sa_key = service_account_key(manifest)
    if sa_key is not None:
        locations.add(sa_key["location"])
    return locations


def _split_location(location: str) -> tuple[str, str]:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key


def _relocated(location: str, bucket: str) -> str:
    return f"s3://{bucket}/{_split_location(location)[1]}"


def backup_objects(manifest: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every object a backup consists of but its manifest, as ``(bucket, key, hex SHA-256)``:
    the snapshot, then each escrowed key (AES keys and the service-account key; their SHA-256 is
    of the object's bytes).

    :param manifest: a valid manifest.
    """
    snap = manifest["snapshot"]
    out = [(snap["bucket"], snap["key"], snap["sha256"])]
    keys = [(k["location"], k["sha256"]) for k in escrowed_keys(manifest)]
    sa_key = service_account_key(manifest)
    if sa_key is not None:
        keys.append((sa_key["location"], sa_key["sha256"]))
    for location, sha256 in keys:
        entry = (*_split_location(location), sha256)
        if entry not in out:
            out.append(entry)
    return out


def replica_manifest(manifest: dict[str, Any], bucket: str, manifest_uri: str) -> dict[str, Any]:
    """The manifest of a backup's copy in ``bucket``: every object at the same key there.

    The copy is a backup location of its own (a restore, retention and key GC read it as they read
    the primary); ``replica_of`` says where it was copied from.

    :param manifest: the primary's valid manifest.
    :param bucket: the replica bucket.
    :param manifest_uri: ``s3://`` of the primary's manifest.
    """
    out = copy.deepcopy(manifest)
    out["snapshot"]["bucket"] = bucket
    enc = out.get("encryption_key")  # a type kms backup has no key of its own
    if isinstance(enc, dict):
        enc["location"] = _relocated(enc["location"], bucket)
        if isinstance(enc.get("backup_key"), dict) and enc["backup_key"].get("location"):
            enc["backup_key"]["location"] = _relocated(enc["backup_key"]["location"], bucket)
        for entry in enc.get("keys") or []:
            entry["location"] = _relocated(entry["location"], bucket)
    if isinstance(out.get("service_account_key"), dict):
        out["service_account_key"]["location"] = _relocated(out["service_account_key"]["location"], bucket)
    out["replica_of"] = manifest_uri
    return validate_manifest(out)
