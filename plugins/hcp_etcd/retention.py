"""Grandfather-father-son retention of verified backups (pure).

Retention is the one place where the project deletes backups, so it deletes only what it understands:

- a backup whose manifest is valid and that the policy does not keep (the newest is always kept);
- a directory with no ``manifest.json`` object at all, once older than the grace (a failed backup);
- an escrowed key that no manifest of any backup location sharing the key store refers to.

A directory whose manifest exists but cannot be read or validated (another ``schema_version``, a
truncated write, a field of a newer release, a manifest of another cluster) is **kept** and reported
as unreadable: a schema bump or a rollback to an older release must never look like garbage. Objects
that S3 Object Lock still protects are kept and reported as locked until their retention date.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups to keep, by count and by calendar bucket (UTC).

    In the daily, weekly and monthly buckets a quiesced backup (the documented procedure) is kept in
    preference to a newer online one of the same bucket; the hourly ones are the online backups'
    fine-grained history, the newest of each hour whatever its mode.

    :param keep_last: the newest N backups.
    :param keep_daily: the newest backup of each of the last N days that have one.
    :param keep_weekly: the newest backup of each of the last N ISO weeks that have one.
    :param keep_monthly: the newest backup of each of the last N months that have one.
    :param keep_hourly: the newest backup of each clock hour of the N hours up to the newest backup
        (counted from the newest backup, not from now: backups that stopped coming are not deleted
        faster for it).
    """

    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    keep_hourly: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_hourly"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"retention {name} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True, order=True)
class Backup:
    """A verified backup (one with a valid manifest).

    :param created: its timestamp (UTC).
    :param ts: its directory name.
    :param mode: ``quiesced`` or ``online`` (its manifest's ``mode``).
    """

    created: datetime
    ts: str
    mode: str = field(default="quiesced", compare=False)


@dataclass
class RetentionPlan:
    """What to keep and what to delete, with the reasons for keeping.

    :param keep: ts -> reasons.
    :param delete: the ts to delete, oldest first.
    """

    keep: dict[str, list[str]] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


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
    newest_hour = _hour(newest_first[0].created)
    hours: set[datetime] = set()
    for b in newest_first:
        hour = _hour(b.created)
        if newest_hour - hour >= timedelta(hours=policy.keep_hourly):
            break
        if hour not in hours:
            hours.add(hour)
            keep(b, "hourly")
    for kind, limit in (
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
    ):
        by_bucket: dict[Hashable, list[Backup]] = {}
        for b in newest_first:  # dicts keep insertion order: the newest bucket first
            by_bucket.setdefault(_BUCKETS[kind](b.created), []).append(b)
        for members in list(by_bucket.values())[:limit]:
            quiesced = [b for b in members if b.mode == "quiesced"]
            keep((quiesced or members)[0], kind)
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


@dataclass(frozen=True)
class ObjectLock:
    """The S3 Object Lock state of one object version.

    :param mode: ``GOVERNANCE``, ``COMPLIANCE`` or None.
    :param retain_until: end of its retention (None when it has none).
    :param legal_hold: whether a legal hold is on.
    """

    mode: str | None = None
    retain_until: datetime | None = None
    legal_hold: bool = False


def lock_blocking_delete(
    locks: Iterable[ObjectLock], now: datetime, bypass_governance: bool = False
) -> str | None:
    """Why S3 would refuse to delete these versions now (``"locked until …"``), or None if it would not.

    A legal hold and COMPLIANCE mode cannot be bypassed; GOVERNANCE mode only when the run asks for it
    (``bypass_governance``: it needs ``s3:BypassGovernanceRetention`` and says so in the log).

    :param locks: the lock state of every version to delete.
    :param now: the current time.
    :param bypass_governance: whether GOVERNANCE retention may be bypassed.
    """
    until: datetime | None = None
    holds = False
    for lock in locks:
        if lock.legal_hold:
            holds = True
        active = lock.retain_until is not None and lock.retain_until > now
        if active and not (bypass_governance and lock.mode == "GOVERNANCE"):
            assert lock.retain_until is not None
            until = lock.retain_until if until is None else max(until, lock.retain_until)
    if holds:
        return "under a legal hold"
    if until is not None:
        return f"locked until {until.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return None


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
        """Whether a ``manifest.json`` object is there (readable or not: still to be validated)."""
        return self.manifest_key is not None

    @property
    def manifest_key(self) -> str | None:
        """The key of its ``manifest.json``, None when it has none."""
        return next((k for k in self.keys if k.endswith("/manifest.json")), None)

    def deletion_order(self) -> list[str]:
        """Its keys, the manifest first: a delete cut short leaves a manifest-less directory, which the
        grace rule removes later, never a manifest whose snapshot is gone."""
        return sorted(self.keys, key=lambda k: (not k.endswith("/manifest.json"), k))


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
