"""Where the backup to restore is: the ``source`` Param, a cluster's candidates, the manifest's checks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hcp_etcd.errors import RestoreInputError
from hcp_etcd.manifest import ManifestError, escrowed_keys, kms_key_arns, validate_manifest
from hcp_etcd.naming import CLUSTER_REF_PATTERN, ClusterRef, InvalidNameError, parse_backup_ts
from hcp_etcd.retention import group_backup_dirs

MANIFEST_KIND = "hcp-etcd-backup"
# JSON-schema pattern of the restore DAG's ``source`` Param: a manifest URI or namespace/name.
SOURCE_PATTERN = rf"^(s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]/.+/manifest\.json|{CLUSTER_REF_PATTERN[1:-1]})$"


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
    for entry in escrowed_keys(manifest):
        parse_s3_uri(entry["location"])
    return manifest


def key_entries(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The escrowed keys a manifest refers to, by aescbc role (``activeKey``, ``backupKey``); none
    for a ``type: kms`` backup.

    :param manifest: a valid manifest.
    """
    if kms_key_arns(manifest) is not None:
        return {}
    enc = manifest["encryption_key"]
    out = {"activeKey": {"location": enc["location"], "sha256": enc["sha256"]}}
    backup = enc.get("backup_key")
    if isinstance(backup, dict) and backup.get("location") and backup.get("sha256"):
        out["backupKey"] = {"location": backup["location"], "sha256": backup["sha256"]}
    return out
