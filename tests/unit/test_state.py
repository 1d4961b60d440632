import json
from datetime import UTC, datetime, timedelta

import pytest

from hcp_etcd.naming import LOCK_ANNOTATION, ORIGINAL_REPLICAS_ANNOTATION
from hcp_etcd.state import (
    BackupLock,
    LockHeldError,
    OriginalReplicas,
    check_lock,
    is_paused,
    parse_paused_until,
    paused_by_someone_else,
    previous_pause_annotation,
    read_previous_pause,
)

NOW = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)


def _lock(run_id, minutes):
    return {
        LOCK_ANNOTATION: BackupLock(
            run_id, "hcp_etcd_backup", NOW + timedelta(minutes=minutes)
        ).to_annotation()
    }


def test_lock_states():
    assert check_lock({}, "r1", NOW, "c/x") == "free"
    assert check_lock(_lock("r1", 10), "r1", NOW, "c/x") == "ours"
    assert check_lock(_lock("r0", -1), "r1", NOW, "c/x") == "expired"
    with pytest.raises(LockHeldError, match="run 'r0'"):
        check_lock(_lock("r0", 10), "r1", NOW, "c/x")
    assert check_lock({LOCK_ANNOTATION: "{garbage"}, "r1", NOW, "c/x") == "free"


def test_the_lock_is_owned_by_a_run_of_one_dag():
    """Run ids are unique per DAG only: the quiesced and the online DAG scheduled at the same minute
    both run ``scheduled__<minute>``, and must not take each other's lock for their own."""
    lock = {
        LOCK_ANNOTATION: BackupLock(
            "scheduled__x", "hcp_etcd_backup", NOW + timedelta(minutes=5)
        ).to_annotation()
    }
    assert check_lock(lock, "scheduled__x", NOW, "c/x", "hcp_etcd_backup") == "ours"
    with pytest.raises(LockHeldError, match="of DAG 'hcp_etcd_backup'"):
        check_lock(lock, "scheduled__x", NOW, "c/x", "hcp_etcd_backup_online")
    # A lock written without a DAG id (by hand, or an older release) is matched on the run id.
    legacy = {LOCK_ANNOTATION: json.dumps({"run_id": "r1", "expires_at": "2999-01-01T00:00:00Z"})}
    assert check_lock(legacy, "r1", NOW, "c/x", "hcp_etcd_backup_online") == "ours"


def test_previous_pause_is_per_run():
    ann = {"hcp-etcd.openshift.io/previous-paused-until": previous_pause_annotation("r1", None)}
    assert read_previous_pause(ann, "r1") == (True, None)
    assert read_previous_pause(ann, "r2") == (False, None)
    assert not paused_by_someone_else({"pausedUntil": "true"}, ann, "r1")
    assert paused_by_someone_else({"pausedUntil": "true"}, ann, "r2")
    assert not paused_by_someone_else({"pausedUntil": None}, {}, "r2")


def test_original_replicas_roundtrip_and_stale():
    rec = OriginalReplicas("r1", {"kube-apiserver": 3}, NOW)
    ann = {ORIGINAL_REPLICAS_ANNOTATION: rec.to_annotation()}
    assert OriginalReplicas.from_annotations(ann, "r1") == rec
    assert OriginalReplicas.from_annotations(ann, "r2") is None  # another run's record is stale
    assert OriginalReplicas.from_annotations({ORIGINAL_REPLICAS_ANNOTATION: json.dumps([1])}, "r1") is None


def test_is_paused():
    assert is_paused("true", NOW)
    assert not is_paused(None, NOW) and not is_paused("false", NOW)
    assert is_paused("2025-01-01T03:00:00Z", NOW)
    assert not is_paused("2025-01-01T01:00:00Z", NOW)


@pytest.mark.parametrize(
    ("value", "paused", "valid"),
    [
        # strconv.ParseBool's spellings: an administrator's indefinite pause, whatever the case.
        *((v, True, True) for v in ("true", "True", "TRUE", "t", "T", "1")),
        *((v, False, True) for v in ("false", "False", "FALSE", "f", "F", "0")),
        (None, False, True),
        ("2025-01-01T03:00:00Z", True, True),
        ("2025-01-01T02:59:59.123456789+01:00", False, True),  # 01:59:59 UTC: passed
        ("2025-01-01T02:00:01,5Z", True, True),
        # What the CRD's pattern lets through but Go's RFC3339 does not: invalid, not paused.
        ("2025-13-01T03:00:00Z", False, False),
        ("2025-01-01T03:00:00 UTC", False, False),
        ("2025-01-01t03:00:00z", False, False),
        ("yes", False, False),
        ("", False, False),
    ],
)
def test_paused_until_read_as_upstream(value, paused, valid):
    assert parse_paused_until(value, NOW) == (paused, valid)
    assert is_paused(value, NOW) is paused


def test_preflight_sees_an_indefinite_pause_spelled_true():
    assert paused_by_someone_else({"pausedUntil": "True"}, {}, "r2")
    assert paused_by_someone_else({"pausedUntil": "1"}, {}, "r2")
    assert not paused_by_someone_else({"pausedUntil": "2025-13-01T03:00:00Z"}, {}, "r2")
