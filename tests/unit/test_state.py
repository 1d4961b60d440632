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
