"""etcd facts: commands run in the etcd container, and parsing of their output (pure)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass

ETCDCTL = "/usr/bin/etcdctl"
ETCDUTL = "/usr/bin/etcdutl"
CA_CERT = "/etc/etcd/tls/etcd-ca/ca.crt"
CLIENT_CERT = "/etc/etcd/tls/client/etcd-client.crt"
CLIENT_KEY = "/etc/etcd/tls/client/etcd-client.key"
ENDPOINT = "localhost:2379"
DATA_VOLUME = "/var/lib"
DEFAULT_SNAPSHOT_PATH = "/var/lib/data/snapshot.db"
RESOURCE_PREFIX = "/kubernetes.io/"


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


def keys_at_revision_command(revision: int, prefix: str = RESOURCE_PREFIX) -> list[str]:
    """List every key under ``prefix`` as of ``revision`` (keys only).

    :param revision: the snapshot's revision, so counts match the snapshot even when writers run.
    :param prefix: the key prefix.
    """
    return etcdctl("get", "--prefix", "--keys-only", f"--rev={int(revision)}", prefix)


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


def check_members_agree(members: list[MemberSnapshot]) -> None:
    """Raise unless all members have the same revision and hash (the quiesced invariant).

    :param members: snapshots of every member.
    """
    if not members:
        raise MembersDisagreeError("no member snapshots to compare")
    seen = {(m.status.revision, m.status.hash) for m in members}
    if len(seen) > 1:
        detail = ", ".join(f"{m.pod}: revision {m.status.revision} hash {m.status.hash}" for m in members)
        raise MembersDisagreeError(
            "etcd members disagree although the API servers were stopped (" + detail + "). "
            "Something still writes to etcd or a member lags: check `etcdctl endpoint status` "
            "on every member before retrying."
        )


def choose_canonical(members: list[MemberSnapshot]) -> MemberSnapshot:
    """The snapshot to upload: the highest revision, first pod by name on ties.

    :param members: snapshots of every member.
    """
    if not members:
        raise ValueError("no member snapshots")
    return sorted(members, key=lambda m: (-m.status.revision, m.pod))[0]
