from datetime import UTC, datetime

import pytest

from hcp_etcd.naming import (
    ClusterRef,
    InvalidNameError,
    asset_uri,
    control_plane_namespace,
    encryption_key_key,
    format_backup_ts,
    manifest_key,
    parse_backup_ts,
    snapshot_key,
    validate_prefix,
)


def test_parse_ref_and_control_plane_namespace():
    ref = ClusterRef.parse("clusters/prod.eu-1")
    assert (ref.namespace, ref.name) == ("clusters", "prod.eu-1")
    assert ref.control_plane_namespace == "clusters-prod-eu-1"
    assert control_plane_namespace("clusters", "ha-one") == "clusters-ha-one"
    assert str(ref) == "clusters/prod.eu-1"


@pytest.mark.parametrize(
    "bad",
    ["clusters", "a/b/c", "Clusters/x", "clusters/../x", "clusters/-x", "clusters/", "/x", "ns/x_y", "", 3],
)
def test_bad_refs_are_refused(bad):
    with pytest.raises(InvalidNameError):
        ClusterRef.parse(bad)


def test_backup_ts_roundtrip_and_layout():
    moment = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    ts = format_backup_ts(moment)
    assert ts == "20250304T050607Z"
    assert parse_backup_ts(ts) == moment
    ref = ClusterRef("clusters", "a")
    assert snapshot_key("p/q", ref, ts) == "p/q/clusters/a/20250304T050607Z/snapshot.db"
    assert manifest_key("p/q/", ref, ts) == "p/q/clusters/a/20250304T050607Z/manifest.json"
    assert asset_uri("b", "p", ref) == "s3://b/p/clusters/a"
    assert encryption_key_key("k", ref, "a" * 64) == f"k/clusters/a/{'a' * 64}.key"
    with pytest.raises(ValueError):
        format_backup_ts(datetime(2025, 1, 1))  # naive
    with pytest.raises(ValueError):
        parse_backup_ts("2025-01-01")
    with pytest.raises(ValueError):
        encryption_key_key("k", ref, "not-a-digest")


@pytest.mark.parametrize("bad", ["a/../b", "/a", "a/", "a//b", "a b", "..", "."])
def test_unsafe_prefixes(bad):
    with pytest.raises(InvalidNameError):
        validate_prefix(bad)


def test_safe_prefixes():
    assert validate_prefix("hcp-etcd/backups") == "hcp-etcd/backups"
    assert validate_prefix("") == ""
