"""Names, references and S3 keys: validation and derivation (pure functions)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

# DNS-1123 label (namespaces) and subdomain (object names), as Kubernetes validates them.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")
DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
# JSON-schema pattern for a ``namespace/name`` reference (used by the DAG's Params).
CLUSTER_REF_PATTERN = rf"^{_DNS1123_LABEL}/{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$"
# An S3 prefix: path segments of safe characters, no "..", no leading or trailing "/".
S3_PREFIX_PATTERN = r"^(?!(.*/)?\.\.?(/|$))[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$"
BACKUP_TS_FORMAT = "%Y%m%dT%H%M%SZ"
BACKUP_TS_RE = re.compile(r"^\d{8}T\d{6}Z$")

ANNOTATION_PREFIX = "hcp-etcd.openshift.io"
LOCK_ANNOTATION = f"{ANNOTATION_PREFIX}/backup-lock"
PREVIOUS_PAUSE_ANNOTATION = f"{ANNOTATION_PREFIX}/previous-paused-until"
ORIGINAL_REPLICAS_ANNOTATION = f"{ANNOTATION_PREFIX}/original-replicas"

# The container of HyperShift's etcd pods that runs etcd (and etcdctl): where the in-pod steps exec.
ETCD_CONTAINER = "etcd"
API_SERVER_DEPLOYMENTS: tuple[str, ...] = (
    "kube-apiserver",
    "openshift-apiserver",
    "openshift-oauth-apiserver",
)


class InvalidNameError(ValueError):
    """A name or reference that Kubernetes (or our S3 layout) would not accept."""


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a DNS-1123 label, else raise.

    :param namespace: a Kubernetes namespace name.
    """
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS1123_LABEL_RE.match(namespace):
        raise InvalidNameError(f"{namespace!r} is not a valid namespace (DNS-1123 label, at most 63 chars)")
    return namespace


def validate_name(name: str) -> str:
    """Return ``name`` if it is a DNS-1123 subdomain, else raise.

    :param name: a Kubernetes object name.
    """
    if not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN_RE.match(name):
        raise InvalidNameError(f"{name!r} is not a valid object name (DNS-1123 subdomain, at most 253 chars)")
    return name


@dataclass(frozen=True, order=True)
class ClusterRef:
    """A HostedCluster, by namespace and name.

    :param namespace: namespace of the HostedCluster (e.g. ``clusters``).
    :param name: name of the HostedCluster.
    """

    namespace: str
    name: str

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)
        validate_name(self.name)

    @classmethod
    def parse(cls, ref: str) -> ClusterRef:
        """Parse ``namespace/name``.

        :param ref: the reference, e.g. ``clusters/prod1``.
        """
        if not isinstance(ref, str) or ref.count("/") != 1:
            raise InvalidNameError(f"{ref!r} is not a HostedCluster reference of the form namespace/name")
        namespace, name = ref.split("/")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def control_plane_namespace(self) -> str:
        """The hosted control plane namespace: ``<namespace>-<name with . replaced by ->``."""
        return control_plane_namespace(self.namespace, self.name)


def control_plane_namespace(namespace: str, name: str) -> str:
    """HyperShift's control-plane namespace of a HostedCluster.

    :param namespace: namespace of the HostedCluster.
    :param name: name of the HostedCluster.
    """
    return f"{namespace}-{name.replace('.', '-')}"


def format_backup_ts(moment: datetime) -> str:
    """Format a moment as the backup directory name (UTC, ``YYYYmmddTHHMMSSZ``).

    :param moment: an aware datetime.
    """
    if moment.tzinfo is None:
        raise ValueError("backup timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime(BACKUP_TS_FORMAT)


def parse_backup_ts(value: str) -> datetime:
    """Parse a backup directory name back to an aware UTC datetime.

    :param value: ``YYYYmmddTHHMMSSZ``.
    """
    if not BACKUP_TS_RE.match(value):
        raise ValueError(f"{value!r} is not a backup timestamp (YYYYmmddTHHMMSSZ)")
    return datetime.strptime(value, BACKUP_TS_FORMAT).replace(tzinfo=UTC)


def rfc3339(moment: datetime, *, milliseconds: bool = False) -> str:
    """RFC3339 in UTC with a ``Z``: whole seconds, as Kubernetes writes times, or milliseconds.

    :param moment: an aware datetime.
    :param milliseconds: keep milliseconds (the ends of the API downtime: a window of a few seconds
        measured in whole seconds would be off by up to one).
    """
    moment = moment.astimezone(UTC)
    if milliseconds:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC3339 time (``Z`` or offset).

    :param value: the time string.
    """
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def validate_prefix(prefix: str) -> str:
    """Return an S3 prefix if it is safe (no empty or ``..`` segments), else raise.

    :param prefix: e.g. ``hcp-etcd/backups``; empty is allowed.
    """
    if prefix == "":
        return prefix
    if not re.match(S3_PREFIX_PATTERN, prefix) or any(seg in (".", "..") for seg in prefix.split("/")):
        raise InvalidNameError(f"{prefix!r} is not a safe S3 prefix")
    return prefix


def cluster_prefix(prefix: str, ref: ClusterRef) -> str:
    """``{prefix}/{ns}/{name}`` — where all backups of one cluster live.

    :param prefix: the backup prefix.
    :param ref: the cluster.
    """
    return _join(prefix, ref.namespace, ref.name)


def backup_dir(prefix: str, ref: ClusterRef, ts: str) -> str:
    """``{prefix}/{ns}/{name}/{ts}``.

    :param prefix: the backup prefix.
    :param ref: the cluster.
    :param ts: the backup timestamp (``YYYYmmddTHHMMSSZ``).
    """
    parse_backup_ts(ts)
    return _join(cluster_prefix(prefix, ref), ts)


def snapshot_key(prefix: str, ref: ClusterRef, ts: str) -> str:
    """S3 key of the raw snapshot of a backup.

    :param prefix: the backup prefix.
    :param ref: the cluster.
    :param ts: the backup timestamp.
    """
    return f"{backup_dir(prefix, ref, ts)}/snapshot.db"


def manifest_key(prefix: str, ref: ClusterRef, ts: str) -> str:
    """S3 key of the manifest of a backup.

    :param prefix: the backup prefix.
    :param ref: the cluster.
    :param ts: the backup timestamp.
    """
    return f"{backup_dir(prefix, ref, ts)}/manifest.json"


def encryption_key_key(key_prefix: str, ref: ClusterRef, sha256: str) -> str:
    """S3 key of an escrowed encryption key, addressed by its SHA-256 fingerprint.

    Content addressing lets nightly backups with an unchanged key share one object.

    :param key_prefix: the key prefix.
    :param ref: the cluster.
    :param sha256: hex SHA-256 of the key bytes.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("a key fingerprint is 64 lowercase hex digits")
    return f"{_join(key_prefix, ref.namespace, ref.name)}/{sha256}.key"


# Under the key prefix, next to ``{ns}/{name}/`` (no namespace can start with "_": DNS-1123).
BACKUP_LOCATIONS_DIR = "_backup-locations"


def backup_locations_prefix(key_prefix: str) -> str:
    """Where a key store lists the backup locations whose manifests refer to its keys.

    :param key_prefix: the key prefix.
    """
    return f"{_join(key_prefix, BACKUP_LOCATIONS_DIR)}/"


def backup_location_key(key_prefix: str, bucket: str, prefix: str) -> str:
    """The registry entry of one backup location (``s3://bucket/prefix``) in a key store.

    Key objects are content-addressed, so one key object can serve backups under several prefixes
    (and buckets): key garbage collection must read the manifests of every one of them, and this
    registry is how it knows them (``escrow_key`` registers its location before writing a key).

    :param key_prefix: the key prefix.
    :param bucket: the backup bucket.
    :param prefix: the backup prefix.
    """
    digest = hashlib.sha256(f"{bucket}/{prefix.strip('/')}".encode()).hexdigest()[:32]
    return f"{backup_locations_prefix(key_prefix)}{digest}.json"


def asset_uri(bucket: str, prefix: str, ref: ClusterRef) -> str:
    """The Asset URI of a cluster's backups.

    :param bucket: the bucket.
    :param prefix: the backup prefix.
    :param ref: the cluster.
    """
    return f"s3://{bucket}/{cluster_prefix(prefix, ref)}"


def asset_name(ref: ClusterRef) -> str:
    """The Asset name of a cluster's backups.

    :param ref: the cluster.
    """
    return f"hcp-etcd-backup/{ref.namespace}/{ref.name}"
