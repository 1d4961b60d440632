"""etcd facts: commands run in the etcd container, and parsing of their output (pure)."""

from __future__ import annotations

import ast
import base64
import hashlib
import heapq
import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

ETCDCTL = "/usr/bin/etcdctl"
ETCDUTL = "/usr/bin/etcdutl"
CA_CERT = "/etc/etcd/tls/etcd-ca/ca.crt"
CLIENT_CERT = "/etc/etcd/tls/client/etcd-client.crt"
CLIENT_KEY = "/etc/etcd/tls/client/etcd-client.key"
ENDPOINT = "localhost:2379"
DATA_VOLUME = "/var/lib"
DEFAULT_SNAPSHOT_PATH = "/var/lib/data/snapshot.db"
RESOURCE_PREFIX = "/kubernetes.io/"
# Resources the control plane deletes or rewrites by itself, with no client asking: Events expire
# with their etcd lease (kube-apiserver ``--event-ttl``), master leases likewise, and kube-apiserver
# garbage-collects the identity Leases of API servers that are gone. Their keys may vanish between a
# snapshot (or a restore) and a later read, so they are neither sampled nor required to survive.
VOLATILE_RESOURCES = frozenset({"events", "leases", "masterleases"})


class SnapshotStatusError(ValueError):
    """The output of ``snapshot status`` could not be understood."""


def etcdctl(*args: str) -> list[str]:
    """An ``etcdctl`` argv with the hosted control plane's TLS flags (the seed's command).

    :param args: the etcdctl subcommand and its arguments.
    """
    return [
        "env",
        "ETCDCTL_API=3",
        ETCDCTL,
        "--cacert",
        CA_CERT,
        "--cert",
        CLIENT_CERT,
        "--key",
        CLIENT_KEY,
        f"--endpoints={ENDPOINT}",
        *args,
    ]


def snapshot_save_command(path: str) -> list[str]:
    """Write a snapshot of the local member to ``path``.

    :param path: a file under the etcd volume.
    """
    return etcdctl("snapshot", "save", path)


def snapshot_status_command(path: str) -> list[str]:
    """``etcdutl snapshot status -w json`` where etcdutl exists (etcd 3.6 dropped it from etcdctl).

    :param path: the snapshot file.
    """
    q = shlex.quote(path)
    script = (
        f"if [ -x {ETCDUTL} ]; then exec {ETCDUTL} snapshot status -w json {q}; "
        f"else exec env ETCDCTL_API=3 {ETCDCTL} snapshot status -w json {q}; fi"
    )
    return ["sh", "-c", script]


def endpoint_status_command() -> list[str]:
    """Health, version and revision of the local member."""
    return etcdctl("endpoint", "status", "-w", "json")


def keys_listing_command(prefix: str = RESOURCE_PREFIX) -> list[str]:
    """List every key under ``prefix`` at the current revision with its revisions and lease (no values).

    Never at an old revision: a restored etcd is compacted (HyperShift's etcd-init restores with
    ``--mark-compacted``; kube-apiserver compacts every 5 minutes), and a read at the snapshot's
    revision fails with "required revision has been compacted". ``-w fields`` prints one field a
    line, so the output is streamed and counted line by line (see :class:`KeyInventory`).

    :param prefix: the key prefix.
    """
    return etcdctl("get", "--prefix", "--keys-only", "-w", "fields", prefix)


def get_keys_command(keys: Iterable[str]) -> list[str]:
    """``etcdctl get KEY -w json`` for each key at the current revision, one JSON line each, in one exec.

    :param keys: the keys to read.
    """
    script = "; ".join(shlex.join(etcdctl("get", key, "-w", "json")) + " || exit 1" for key in keys)
    return ["sh", "-c", script or "true"]


def member_list_command() -> list[str]:
    """``etcdctl member list -w json`` against the local member (with the HCP's TLS flags)."""
    return etcdctl("member", "list", "-w", "json")


def secret_sample_command(limit: int = 1) -> list[str]:
    """The first ``limit`` Secrets as stored in etcd now (base64 JSON output).

    At the current revision: a restored etcd is compacted past the backup's revision.

    :param limit: how many.
    """
    return etcdctl("get", "--prefix", f"{RESOURCE_PREFIX}secrets/", f"--limit={int(limit)}", "-w", "json")


def hashkv_command(revision: int) -> list[str]:
    """``etcdctl endpoint hashkv --rev=REVISION``: the hash of the local member's key-value history.

    etcd's own corruption check compares this across members at one revision; lease revocations
    after that revision do not change it.

    :param revision: the revision to hash up to.
    """
    return etcdctl("endpoint", "hashkv", f"--rev={int(revision)}", "-w", "json")


def free_bytes_command(directory: str = DATA_VOLUME) -> list[str]:
    """``df`` of the etcd volume in 1K blocks, POSIX format.

    :param directory: a path on the volume.
    """
    return ["df", "-P", "-k", directory]


def sha256_command(path: str) -> list[str]:
    """SHA-256 of a file inside the pod.

    :param path: the file.
    """
    return ["sha256sum", path]


def remove_command(path: str) -> list[str]:
    """Remove a snapshot and etcdctl's partial file; succeeds when absent (idempotent).

    :param path: the snapshot file.
    """
    return ["rm", "-f", path, f"{path}.part"]


def size_command(path: str) -> list[str]:
    """Size in bytes of a file in the pod (POSIX ``wc -c``).

    :param path: the file.
    """
    return ["sh", "-c", f"wc -c < {shlex.quote(path)}"]


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``snapshot status`` says about one snapshot file.

    :param hash: etcd's hash of the snapshot's contents.
    :param revision: the store revision of the snapshot.
    :param total_keys: number of keys in the backend (all buckets).
    :param total_size: size of the backend in bytes.
    :param version: storage version when reported (etcd 3.6), else ``None``.
    """

    hash: int
    revision: int
    total_keys: int
    total_size: int
    version: str | None = None

    def as_dict(self) -> dict[str, int | str | None]:
        """A JSON-ready dict."""
        return asdict(self)


def parse_snapshot_status(output: str) -> SnapshotStatus:
    """Parse ``etcdutl|etcdctl snapshot status -w json`` (the last JSON object line wins).

    :param output: stdout of the command (log lines on stdout are tolerated).
    """
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "revision" not in data or "hash" not in data:
            continue
        try:
            return SnapshotStatus(
                hash=int(data["hash"]),
                revision=int(data["revision"]),
                total_keys=int(data.get("totalKey", 0)),
                total_size=int(data.get("totalSize", 0)),
                version=data.get("version") or None,
            )
        except (TypeError, ValueError) as err:
            raise SnapshotStatusError(f"snapshot status has non-numeric fields: {line!r}") from err
    raise SnapshotStatusError(f"no snapshot status JSON in output: {output[-500:]!r}")


@dataclass(frozen=True)
class EndpointStatus:
    """``etcdctl endpoint status`` of one member.

    :param version: etcd server version.
    :param revision: current store revision.
    :param member_id: the member's id.
    :param leader: the leader's member id.
    :param db_size: backend size in bytes.
    :param errors: alarms/errors reported by the member.
    """

    version: str
    revision: int
    member_id: int
    leader: int
    db_size: int
    errors: tuple[str, ...] = ()

    @property
    def has_leader(self) -> bool:
        """Whether the member knows a leader (0 means no leader)."""
        return self.leader != 0


def parse_endpoint_status(output: str) -> EndpointStatus:
    """Parse ``etcdctl endpoint status -w json`` for the single local endpoint.

    :param output: stdout of the command.
    """
    start = output.find("[")
    if start < 0:
        raise SnapshotStatusError(f"no endpoint status JSON in output: {output[-500:]!r}")
    try:
        data = json.loads(output[start:].strip())[0]["Status"]
        return EndpointStatus(
            version=str(data["version"]),
            revision=int(data["header"]["revision"]),
            member_id=int(data["header"]["member_id"]),
            leader=int(data["leader"]),
            db_size=int(data.get("dbSize", 0)),
            errors=tuple(data.get("errors") or ()),
        )
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise SnapshotStatusError(f"unexpected endpoint status output: {output[-500:]!r}") from err


def parse_df_available_bytes(output: str) -> int:
    """Available bytes from ``df -P -k`` (second line, fourth column).

    :param output: stdout of df.
    """
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected df output: {output!r}")
    fields = lines[-1].split()
    try:
        return int(fields[3]) * 1024
    except (IndexError, ValueError) as err:
        raise ValueError(f"unexpected df output: {output!r}") from err


def parse_sha256sum(output: str) -> str:
    """The hex digest from ``sha256sum`` output.

    :param output: stdout of sha256sum.
    """
    match = re.match(r"^\s*([0-9a-fA-F]{64})\b", output)
    if not match:
        raise ValueError(f"unexpected sha256sum output: {output[-200:]!r}")
    return match.group(1).lower()


def resource_of_key(key: str, prefix: str = RESOURCE_PREFIX) -> str | None:
    """The resource segment of an apiserver key: ``/kubernetes.io/pods/ns/x`` -> ``pods``.

    API groups stored under a domain keep it (``/kubernetes.io/config.openshift.io/...``), which is
    what a restore verification compares anyway.

    :param key: an etcd key.
    :param prefix: the storage prefix.
    """
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    resource = rest.split("/", 1)[0]
    return resource or None


class KeyCounter:
    """Count keys per resource from a stream of ``etcdctl get --keys-only`` lines.

    The output is one key per line separated by blank lines; fed line by line so memory stays
    bounded by the number of resources, not keys.
    """

    def __init__(self, prefix: str = RESOURCE_PREFIX) -> None:
        """Start with no keys counted.

        :param prefix: the storage prefix.
        """
        self.prefix = prefix
        self.counts: dict[str, int] = {}

    def feed(self, lines: Iterable[str]) -> None:
        """Count more lines.

        :param lines: lines of etcdctl output.
        """
        for line in lines:
            resource = resource_of_key(line.strip(), self.prefix)
            if resource is not None:
                self.counts[resource] = self.counts.get(resource, 0) + 1

    @property
    def total(self) -> int:
        """Keys counted under the prefix."""
        return sum(self.counts.values())


def _go_quoted(text: str) -> str:
    # etcdctl's fields printer quotes with Go's %q: JSON for printable ASCII, a Python literal otherwise.
    try:
        return str(json.loads(text))
    except ValueError:
        return str(ast.literal_eval(text))


@dataclass
class KeyInventory(KeyCounter):
    """Keys per resource of a backup, from ``etcdctl get --keys-only -w fields`` lines (streamed).

    Reads at the current revision and tells the backup's keys from later ones by their revisions: a
    key created at or before ``revision`` came from the backup, and one not modified since holds the
    backup's value. ``counts`` holds the backup's keys still present, ``leased`` those of them bound
    to an etcd lease (they vanish when it is revoked, with no writer), ``newer`` the keys created
    later, and ``samples`` up to ``samples_per_resource`` unchanged, unleased keys of each stable
    resource: the same ones whenever the same keys are listed (the smallest SHA-256 of the key).

    :param revision: the backup's revision (``None``: every key counts as the backup's).
    :param samples_per_resource: keys to sample per resource (0: none).
    :param prefix: the storage prefix.
    """

    revision: int | None = None
    samples_per_resource: int = 0
    prefix: str = RESOURCE_PREFIX
    counts: dict[str, int] = field(default_factory=dict)
    leased: dict[str, int] = field(default_factory=dict)
    newer: dict[str, int] = field(default_factory=dict)
    listed_revision: int | None = None
    _record: dict[str, str] = field(default_factory=dict, repr=False)
    _heaps: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict, repr=False)

    def feed(self, lines: Iterable[str]) -> None:
        """Take more lines of output.

        :param lines: lines of ``-w fields`` output.
        """
        for line in lines:
            name, sep, value = line.strip().partition(" : ")
            if not sep:
                continue
            name = name.strip('"')
            if name == "Key":
                self._record = {"Key": _go_quoted(value)}
            elif name == "Revision" and self.listed_revision is None and not self._record:
                self.listed_revision = int(value)
            elif self._record and name in ("CreateRevision", "ModRevision"):
                self._record[name] = value
            elif self._record and name == "Lease":  # the last field of a key
                self._add(self._record, int(value))
                self._record = {}

    def _add(self, record: dict[str, str], lease: int) -> None:
        key = record["Key"]
        resource = resource_of_key(key, self.prefix)
        if resource is None:
            return
        created, modified = int(record.get("CreateRevision", 0)), int(record.get("ModRevision", 0))
        if self.revision is not None and created > self.revision:
            self.newer[resource] = self.newer.get(resource, 0) + 1
            return
        self.counts[resource] = self.counts.get(resource, 0) + 1
        if lease:
            self.leased[resource] = self.leased.get(resource, 0) + 1
            return
        unchanged = self.revision is None or modified <= self.revision
        if self.samples_per_resource and unchanged and resource not in VOLATILE_RESOURCES:
            # A max-heap by negated digest keeps the smallest digests, in bounded memory.
            heap = self._heaps.setdefault(resource, [])
            digest = hashlib.sha256(key.encode()).hexdigest()
            entry = (_negated(digest), key, modified)
            if len(heap) < self.samples_per_resource:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)

    @property
    def samples(self) -> list[str]:
        """The sampled keys, sorted."""
        return sorted(key for heap in self._heaps.values() for _, key, _ in heap)


def _negated(hexdigest: str) -> str:
    return hexdigest.translate(str.maketrans("0123456789abcdef", "fedcba9876543210"))


@dataclass(frozen=True)
class StoredValue:
    """One key as read from etcd.

    :param key: the key.
    :param value: the raw stored bytes.
    :param create_revision: revision that created it.
    :param mod_revision: revision of its last change.
    :param lease: its etcd lease (0: none).
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the stored value."""
        return hashlib.sha256(self.value).hexdigest()


def parse_get_json_lines(output: str) -> dict[str, StoredValue]:
    """Keys found by one or more ``etcdctl get -w json`` (one JSON document a line); absent keys are absent.

    :param output: stdout.
    """
    found: dict[str, StoredValue] = {}
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            for kv in json.loads(line).get("kvs") or []:
                key = base64.b64decode(kv["key"]).decode("utf-8", "replace")
                found[key] = StoredValue(
                    key,
                    base64.b64decode(kv.get("value", "")),
                    int(kv.get("create_revision", 0)),
                    int(kv.get("mod_revision", 0)),
                    int(kv.get("lease", 0)),
                )
        except (ValueError, KeyError, TypeError) as err:
            raise SnapshotStatusError(f"unexpected etcdctl get output: {line[:300]!r}") from err
    return found


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


@dataclass(frozen=True)
class HashKV:
    """``etcdctl endpoint hashkv --rev`` of one member.

    :param hash: the hash of the key-value history up to the revision asked for.
    :param compact_revision: the member's compacted revision (-1: never compacted).
    :param current_revision: the member's revision when it answered.
    """

    hash: int
    compact_revision: int
    current_revision: int


def parse_hashkv(output: str) -> HashKV:
    """Parse ``etcdctl endpoint hashkv -w json`` for the single local endpoint.

    :param output: stdout.
    """
    start = output.find("[")
    try:
        data = json.loads(output[start:].strip())[0]["HashKV"]
        return HashKV(
            hash=int(data["hash"]),
            compact_revision=int(data.get("compact_revision", -1)),
            current_revision=int(data["header"]["revision"]),
        )
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise SnapshotStatusError(f"unexpected endpoint hashkv output: {output[-500:]!r}") from err


@dataclass(frozen=True)
class MemberSnapshot:
    """One member's snapshot and its status.

    :param pod: the etcd pod.
    :param status: its ``snapshot status``.
    """

    pod: str
    status: SnapshotStatus


class MembersDisagreeError(RuntimeError):
    """Quiesced snapshots of one cluster that do not agree on revision and hash."""


def common_revision(members: list[MemberSnapshot]) -> int:
    """The newest revision every member's snapshot holds: the lowest snapshot revision.

    :param members: snapshots of every member.
    """
    if not members:
        raise MembersDisagreeError("no member snapshots to compare")
    return min(m.status.revision for m in members)


def check_members_agree(members: list[MemberSnapshot], hashkv: dict[str, HashKV] | None = None) -> None:
    """Raise unless the members' snapshots hold the same data, judged the way etcd judges members.

    Members at one revision must have the same snapshot hash. Members at different revisions are
    compared by ``hashkv``: each member's ``endpoint hashkv`` at :func:`common_revision` (etcd's
    corruption check). With the API servers stopped the etcd leader still revokes expired leases
    (kube-apiserver's Events), each a new revision, so quiesced members snapshotted a moment apart
    may differ in revision while agreeing on every revision both hold. Without ``hashkv`` different
    revisions are a disagreement.

    :param members: snapshots of every member.
    :param hashkv: pod -> its hashkv at the common revision.
    """
    common = common_revision(members)
    detail = ", ".join(f"{m.pod}: revision {m.status.revision} hash {m.status.hash}" for m in members)
    if len({m.status.revision for m in members}) == 1:
        if len({m.status.hash for m in members}) > 1:
            raise MembersDisagreeError(
                f"etcd members hold different data at the same revision ({detail}): a member is "
                "corrupt or the members are not one cluster; check `etcdctl endpoint hashkv` and "
                "`etcdctl member list` on every member before retrying."
            )
        return
    if hashkv is None or set(hashkv) != {m.pod for m in members}:
        raise MembersDisagreeError(
            "etcd members disagree although the API servers were stopped (" + detail + "). "
            "Something still writes to etcd or a member lags: check `etcdctl endpoint status` "
            "on every member before retrying."
        )
    hashes = {pod: h.hash for pod, h in sorted(hashkv.items())}
    if len(set(hashes.values())) > 1:
        shown = ", ".join(f"{pod}: hashkv {h}" for pod, h in hashes.items())
        raise MembersDisagreeError(
            f"etcd members disagree on their history up to revision {common} ({shown}; snapshots: "
            f"{detail}): a member is corrupt or the members are not one cluster (split brain); check "
            "`etcdctl member list` and `etcdctl endpoint hashkv` on every member before retrying."
        )


def choose_canonical(members: list[MemberSnapshot]) -> MemberSnapshot:
    """The snapshot to upload: the highest revision, first pod by name on ties.

    :param members: snapshots of every member.
    """
    if not members:
        raise ValueError("no member snapshots")
    return sorted(members, key=lambda m: (-m.status.revision, m.pod))[0]
