"""The retention plan with online backups between the quiesced ones: ``keep_hourly`` on top of the
grandfather-father-son buckets, and a quiesced backup preferred in the daily, weekly and monthly ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hcp_etcd.naming import format_backup_ts
from hcp_etcd.retention import Backup, RetentionPolicy, plan_retention

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday


def backup(at: datetime, mode: str = "online") -> Backup:
    return Backup(at, format_backup_ts(at), mode)


def day_of_backups(day: datetime) -> list[Backup]:
    """One day as the default schedules make it: quiesced at 02:00, online every 4 hours."""
    return [backup(day.replace(hour=2), "quiesced")] + [backup(day.replace(hour=h)) for h in range(0, 24, 4)]


def only(reason: str, plan) -> set[str]:
    return {ts for ts, reasons in plan.keep.items() if reason in reasons}


def test_keep_hourly_keeps_the_newest_of_each_hour_of_the_last_n_hours():
    newest = START + timedelta(hours=30, minutes=30)
    backups = [backup(newest - timedelta(hours=h)) for h in range(48)]
    backups += [backup(newest - timedelta(hours=5, minutes=20))]  # an older second backup in one hour
    plan = plan_retention(backups, RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0,
                                                   keep_hourly=24))  # fmt: skip
    hourly = only("hourly", plan)
    assert hourly == {format_backup_ts(newest - timedelta(hours=h)) for h in range(24)}
    # The hour with two backups keeps its newest only; what is older than 24 hours goes.
    assert format_backup_ts(newest - timedelta(hours=5, minutes=20)) in plan.delete
    assert format_backup_ts(newest - timedelta(hours=24)) in plan.delete
    assert len(plan.delete) == len(backups) - 24


def test_the_hourly_window_ends_at_the_newest_backup_not_now():
    """Backups that stopped coming (a cluster lost days ago) keep their last hours: no "now" involved."""
    last = START + timedelta(days=1, hours=23)
    backups = [backup(last - timedelta(hours=h)) for h in range(10)]
    plan = plan_retention(backups, RetentionPolicy(1, 0, 0, 0, keep_hourly=6))
    assert only("hourly", plan) == {format_backup_ts(last - timedelta(hours=h)) for h in range(6)}


def test_without_keep_hourly_the_plan_of_quiesced_backups_is_unchanged():
    backups = [backup(START + timedelta(days=d, hours=2), "quiesced") for d in range(40)]
    policy = RetentionPolicy(keep_last=3, keep_daily=5, keep_weekly=2, keep_monthly=2)
    plan = plan_retention(backups, policy)
    kept_days = sorted(plan.keep)
    assert len(only("daily", plan)) == 5 and len(only("last", plan)) == 3
    assert kept_days[-5:] == [format_backup_ts(START + timedelta(days=d, hours=2)) for d in range(35, 40)]
    assert plan_retention(backups, RetentionPolicy(3, 5, 2, 2, keep_hourly=0)).keep == plan.keep


def test_daily_weekly_monthly_keep_the_quiesced_backup_of_their_bucket():
    """With online backups after the nightly quiesced one, the newest of a day is an online backup; the
    long-kept backup of that day is the quiesced one (the documented procedure)."""
    backups = [b for d in range(14) for b in day_of_backups(START + timedelta(days=d))]
    plan = plan_retention(backups, RetentionPolicy(keep_last=1, keep_daily=7, keep_weekly=2, keep_monthly=1))
    quiesced = {b.ts for b in backups if b.mode == "quiesced"}
    for kind in ("daily", "weekly", "monthly"):
        assert only(kind, plan) <= quiesced, kind
    assert only("daily", plan) == {format_backup_ts(START + timedelta(days=d, hours=2)) for d in range(7, 14)}
    # The newest (an online backup at 20:00) is still kept, as always.
    newest = format_backup_ts(START + timedelta(days=13, hours=20))
    assert plan.keep[newest] == ["newest", "last"]


def test_a_bucket_without_a_quiesced_backup_keeps_its_newest_online_one():
    backups = [backup(START + timedelta(hours=h)) for h in (1, 5, 9)]  # online only (quiesced turned off)
    backups.append(backup(START + timedelta(days=1, hours=2), "quiesced"))
    plan = plan_retention(backups, RetentionPolicy(keep_last=1, keep_daily=2, keep_weekly=0, keep_monthly=0))
    assert only("daily", plan) == {format_backup_ts(START + timedelta(hours=9)),
                                   format_backup_ts(START + timedelta(days=1, hours=2))}  # fmt: skip


def test_keep_hourly_is_checked_and_mode_is_not_identity():
    with pytest.raises(ValueError, match="keep_hourly"):
        RetentionPolicy(keep_hourly=-1)
    at = START + timedelta(hours=3)
    assert backup(at, "online") == backup(at, "quiesced")
    assert len(plan_retention([backup(at), backup(at, "quiesced")], RetentionPolicy()).keep) == 1
