import pytest

from hcp_etcd import etcd
from hcp_etcd.etcd import (
    KeyCounter,
    MembersDisagreeError,
    MemberSnapshot,
    SnapshotStatus,
    SnapshotStatusError,
    check_members_agree,
    choose_canonical,
    parse_df_available_bytes,
    parse_endpoint_status,
    parse_sha256sum,
    parse_snapshot_status,
)

ETCDUTL_OUT = '{"hash":1650729402,"revision":3,"totalKey":8,"totalSize":20480}\n'
ENDPOINT_OUT = (
    '[{"Endpoint":"localhost:2379","Status":{"header":{"cluster_id":1,"member_id":10,"revision":3,'
    '"raft_term":2},"version":"3.5.1","dbSize":20480,"leader":10,"raftIndex":6}}]'
)


def test_seed_command_is_exact():
    assert etcd.snapshot_save_command("/var/lib/data/snapshot.db") == [
        "env", "ETCDCTL_API=3", "/usr/bin/etcdctl",
        "--cacert", "/etc/etcd/tls/etcd-ca/ca.crt",
        "--cert", "/etc/etcd/tls/client/etcd-client.crt",
        "--key", "/etc/etcd/tls/client/etcd-client.key",
        "--endpoints=localhost:2379", "snapshot", "save", "/var/lib/data/snapshot.db",
    ]  # fmt: skip


def test_status_command_prefers_etcdutl():
    cmd = etcd.snapshot_status_command("/var/lib/data/snapshot.db")
    assert cmd[:2] == ["sh", "-c"]
    assert "etcdutl snapshot status -w json" in cmd[2] and "etcdctl snapshot status -w json" in cmd[2]


def test_parse_snapshot_status_with_noise():
    out = '{"level":"info","msg":"x"}\nDeprecated: Use `etcdutl snapshot status` instead.\n' + ETCDUTL_OUT
    st = parse_snapshot_status(out)
    assert st == SnapshotStatus(hash=1650729402, revision=3, total_keys=8, total_size=20480)
    st36 = parse_snapshot_status('{"hash":1,"revision":2,"totalKey":3,"totalSize":4,"version":"3.6.0"}')
    assert st36.version == "3.6.0"
    with pytest.raises(SnapshotStatusError):
        parse_snapshot_status("Error: snapshot file not found")


def test_parse_endpoint_status():
    st = parse_endpoint_status(ENDPOINT_OUT)
    assert (st.version, st.revision, st.leader, st.db_size, st.has_leader) == ("3.5.1", 3, 10, 20480, True)
    with pytest.raises(SnapshotStatusError):
        parse_endpoint_status("nope")


def test_df_and_sha():
    out = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 8000 1000 7000 13% /var/lib\n"
    assert parse_df_available_bytes(out) == 7000 * 1024
    with pytest.raises(ValueError):
        parse_df_available_bytes("garbage")
    digest = "A" * 64
    assert parse_sha256sum(f"{digest}  /var/lib/data/snapshot.db\n") == "a" * 64
    with pytest.raises(ValueError):
        parse_sha256sum("sha256sum: no such file")


def test_key_counter():
    c = KeyCounter()
    c.feed(["/kubernetes.io/pods/ns/a", "", "/kubernetes.io/pods/ns/b", "", "/kubernetes.io/secrets/ns/s"])
    c.feed(["/openshift.io/x", "/kubernetes.io/config.openshift.io/clusterversions/version"])
    assert c.counts == {"pods": 2, "secrets": 1, "config.openshift.io": 1}
    assert c.total == 4


def _m(pod, rev, h):
    return MemberSnapshot(pod, SnapshotStatus(hash=h, revision=rev, total_keys=1, total_size=1))


def test_members_agree_and_canonical():
    check_members_agree([_m("etcd-0", 5, 1), _m("etcd-1", 5, 1)])
    with pytest.raises(MembersDisagreeError, match="etcd-1: revision 6"):
        check_members_agree([_m("etcd-0", 5, 1), _m("etcd-1", 6, 1)])
    with pytest.raises(MembersDisagreeError):
        check_members_agree([_m("etcd-0", 5, 1), _m("etcd-1", 5, 2)])
    with pytest.raises(MembersDisagreeError):
        check_members_agree([])
    assert choose_canonical([_m("etcd-1", 5, 1), _m("etcd-0", 5, 1), _m("etcd-2", 4, 1)]).pod == "etcd-0"
    assert choose_canonical([_m("etcd-0", 5, 1), _m("etcd-2", 7, 1)]).pod == "etcd-2"
