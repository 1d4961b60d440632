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


FIELDS_OUT = """"ClusterID" : 1
"MemberID" : 10
"Revision" : 120
"RaftTerm" : 2
"Key" : "/kubernetes.io/configmaps/ns/a"
"CreateRevision" : 5
"ModRevision" : 7
"Version" : 2
"Value" : ""
"Lease" : 0
"Key" : "/kubernetes.io/configmaps/ns/b"
"CreateRevision" : 6
"ModRevision" : 110
"Version" : 3
"Value" : ""
"Lease" : 0
"Key" : "/kubernetes.io/configmaps/ns/new"
"CreateRevision" : 105
"ModRevision" : 105
"Version" : 1
"Value" : ""
"Lease" : 0
"Key" : "/kubernetes.io/events/ns/e"
"CreateRevision" : 8
"ModRevision" : 8
"Version" : 1
"Value" : ""
"Lease" : 7587899288875845638
"Key" : "/kubernetes.io/secrets/ns/s\\x01"
"CreateRevision" : 9
"ModRevision" : 9
"Version" : 1
"Value" : ""
"Lease" : 0
"More" : false
"Count" : 5
"""


def test_key_inventory_tells_the_backups_keys_from_later_ones():
    inv = etcd.KeyInventory(revision=100, samples_per_resource=8)
    for line in FIELDS_OUT.splitlines():
        inv.feed([line])
    assert inv.listed_revision == 120
    # Created at or before the backup's revision: the backup's keys, whatever was written since.
    assert inv.counts == {"configmaps": 2, "events": 1, "secrets": 1}
    assert inv.leased == {"events": 1} and inv.newer == {"configmaps": 1}
    # Sampled: unleased, not volatile, not modified since the backup (b was, at 110).
    assert inv.samples == ["/kubernetes.io/configmaps/ns/a", "/kubernetes.io/secrets/ns/s\x01"]
    everything = etcd.KeyInventory()
    everything.feed(FIELDS_OUT.splitlines())
    assert everything.total == 5 and everything.samples == []


def test_key_inventory_samples_are_the_same_whatever_the_order():
    keys = [f"/kubernetes.io/pods/ns/p{i}" for i in range(50)]

    def lines(order):
        out = []
        for k in order:
            out += [f'"Key" : "{k}"', '"CreateRevision" : 2', '"ModRevision" : 2', '"Lease" : 0']
        return out

    a, b = (
        etcd.KeyInventory(revision=10, samples_per_resource=3),
        etcd.KeyInventory(revision=10, samples_per_resource=3),
    )
    a.feed(lines(keys))
    b.feed(lines(reversed(keys)))
    assert len(a.samples) == 3 and a.samples == b.samples


def test_listing_commands_never_read_an_old_revision():
    for argv in (
        etcd.keys_listing_command(),
        etcd.get_keys_command(["/kubernetes.io/a/b"]),
        etcd.hashkv_command(7),
    ):
        assert not any(arg.startswith("--rev=") and arg != "--rev=7" for arg in argv)
    assert etcd.keys_listing_command()[-4:] == ["--keys-only", "-w", "fields", "/kubernetes.io/"]
    script = etcd.get_keys_command(["/kubernetes.io/a/it's"])[2]
    assert "'/kubernetes.io/a/it'\"'\"'s'" in script and "--rev" not in script
    assert etcd.hashkv_command(7)[-4:] == ["hashkv", "--rev=7", "-w", "json"]


def test_parse_get_json_lines_and_hashkv():
    out = (
        '{"header":{"revision":3},"kvs":[{"key":"L2t1YmVybmV0ZXMuaW8vYS94","create_revision":2,'
        '"mod_revision":2,"version":1,"value":"MQ=="}],"count":1}\n'
        '{"header":{"revision":3}}\n'
    )
    found = etcd.parse_get_json_lines(out)
    assert list(found) == ["/kubernetes.io/a/x"] and found["/kubernetes.io/a/x"].value == b"1"
    assert found["/kubernetes.io/a/x"].mod_revision == 2
    hkv = etcd.parse_hashkv(
        '[{"Endpoint":"127.0.0.1:1","HashKV":{"header":{"revision":3},"hash":161275819,"compact_revision":-1}}]'
    )
    assert hkv == etcd.HashKV(hash=161275819, compact_revision=-1, current_revision=3)
    with pytest.raises(SnapshotStatusError):
        etcd.parse_hashkv("Error: required revision has been compacted")


def test_members_at_different_revisions_agree_by_hashkv():
    members = [_m("etcd-0", 105, 1), _m("etcd-1", 103, 2), _m("etcd-2", 104, 3)]
    assert etcd.common_revision(members) == 103
    same = {m.pod: etcd.HashKV(hash=42, compact_revision=-1, current_revision=106) for m in members}
    # Lease revocations between the snapshots: the same history up to the common revision.
    check_members_agree(members, same)
    diverged = dict(same, **{"etcd-2": etcd.HashKV(hash=43, compact_revision=-1, current_revision=106)})
    with pytest.raises(MembersDisagreeError, match=r"up to revision 103.*split brain"):
        check_members_agree(members, diverged)
    with pytest.raises(MembersDisagreeError, match="etcd-1: revision 103"):
        check_members_agree(members, {"etcd-0": same["etcd-0"]})  # a member not compared
    with pytest.raises(MembersDisagreeError, match="same revision"):
        check_members_agree([_m("etcd-0", 5, 1), _m("etcd-1", 5, 2)], same)
