"""Grandfather-father-son retention of verified backups (pure)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups to keep, by count and by calendar bucket (UTC).

    :param keep_last: the newest N backups.
    :param keep_daily: the newest backup of each of the last N days that have one.
    :param keep_weekly: the newest backup of each of the last N ISO weeks that have one.
    :param keep_monthly: the newest backup of each of the last N months that have one.
    """

    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"retention {name} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True, order=True)
class Backup:
    """A verified backup (one with a valid manifest).

    :param created: its timestamp (UTC).
    :param ts: its directory name.
    """

    created: datetime
    ts: str


@dataclass
class RetentionPlan:
    """What to keep and what to delete, with the reasons for keeping.

    :param keep: ts -> reasons.
    :param delete: the ts to delete, oldest first.
    """

    keep: dict[str, list[str]] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)


_BUCKETS: dict[str, Callable[[datetime], Hashable]] = {
    "daily": lambda d: d.date(),
    "weekly": lambda d: d.isocalendar()[:2],
    "monthly": lambda d: (d.year, d.month),
}


def plan_retention(backups: Iterable[Backup], policy: RetentionPolicy) -> RetentionPlan:
    """Decide which verified backups to keep. The newest one is always kept, whatever the policy.

    :param backups: verified backups of one cluster.
    :param policy: the policy.
    """
    newest_first = sorted(set(backups), reverse=True)
    plan = RetentionPlan()
    if not newest_first:
        return plan

    def keep(b: Backup, reason: str) -> None:
        plan.keep.setdefault(b.ts, []).append(reason)

    keep(newest_first[0], "newest")
    for b in newest_first[: policy.keep_last]:
        keep(b, "last")
    for kind, limit in (
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
    ):
        seen: set[Hashable] = set()
        for b in newest_first:
            if len(seen) >= limit:
                break
            bucket = _BUCKETS[kind](b.created)
            if bucket not in seen:
                seen.add(bucket)
                keep(b, kind)
    plan.delete = sorted(b.ts for b in newest_first if b.ts not in plan.keep)
    return plan


def stale_incomplete(
    incomplete: Iterable[tuple[str, datetime]], now: datetime, grace: timedelta
) -> list[str]:
    """Backup directories without a manifest that are old enough to be dead, not in progress.

    :param incomplete: (ts, last modified) of directories without a valid manifest.
    :param now: the current time.
    :param grace: how long an in-progress backup may stay without a manifest.
    """
    return sorted(ts for ts, modified in incomplete if now - modified >= grace)


def unreferenced_keys(
    key_objects: Iterable[tuple[str, datetime]],
    referenced: set[str],
    now: datetime,
    grace: timedelta,
) -> list[str]:
    """Escrowed key objects that no remaining manifest refers to (and that are not being written now).

    :param key_objects: (s3 location, last modified) of the cluster's key objects.
    :param referenced: locations referred to by the manifests that remain.
    :param now: the current time.
    :param grace: age below which a key object may belong to a backup in progress.
    """
    return sorted(loc for loc, modified in key_objects if loc not in referenced and now - modified >= grace)


@dataclass
class BackupDir:
    """The objects of one backup directory.

    :param ts: the directory name.
    :param keys: object keys in it.
    :param last_modified: newest modification among them.
    """

    ts: str
    keys: list[str] = field(default_factory=list)
    last_modified: datetime | None = None

    @property
    def has_manifest(self) -> bool:
        """Whether ``manifest.json`` is there (still to be validated)."""
        return any(k.endswith("/manifest.json") for k in self.keys)


def group_backup_dirs(objects: Iterable[tuple[str, datetime]], cluster_prefix: str) -> dict[str, BackupDir]:
    """Group ``{cluster_prefix}/{ts}/...`` objects by ``ts``; other keys are ignored.

    :param objects: (key, last modified).
    :param cluster_prefix: ``{prefix}/{ns}/{name}`` without a trailing slash.
    """
    from hcp_etcd.naming import BACKUP_TS_RE

    dirs: dict[str, BackupDir] = {}
    base = cluster_prefix.rstrip("/") + "/"
    for key, modified in objects:
        if not key.startswith(base):
            continue
        ts = key[len(base) :].split("/", 1)[0]
        if not BACKUP_TS_RE.match(ts) or "/" not in key[len(base) :]:
            continue
        d = dirs.setdefault(ts, BackupDir(ts))
        d.keys.append(key)
        d.last_modified = modified if d.last_modified is None else max(d.last_modified, modified)
    return dirs
