"""Bringing a deleted cluster back under its own name: from the specs its backup recorded, and over
the Secrets a deleted HostedCluster leaves behind (issue 18)."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
from typing import Any

import pytest

from hcp_etcd.errors import RestoreInputError
from hcp_etcd.manifest import source_record
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.restore import CreateRestoredClusterOperator
from hcp_etcd.restore.plan import prepare_objects, recorded_objects, referenced_objects, same_content

KEY = os.urandom(32)
SHA = hashlib.sha256(KEY).hexdigest()
TARGET = ClusterRef("clusters", "prod1")
HOSTED_CLUSTER = {
    "apiVersion": "hypershift.openshift.io/v1beta1",
    "kind": "HostedCluster",
    "metadata": {"name": "prod1", "namespace": "clusters"},
    "spec": {
        "infraID": "prod1-abcde",
        "pausedUntil": "2026-12-01T03:00:00Z",
        "release": {"image": "quay.io/ocp-release:4.20.3-x86_64"},
        "pullSecret": {"name": "prod1-pull-secret"},
        "sshKey": {"name": "prod1-ssh-key"},
        "additionalTrustBundle": {"name": "user-ca-bundle"},
        "secretEncryption": {
            "type": "aescbc",
            "aescbc": {"activeKey": {"name": "prod1-etcd-encryption-key"}},
        },
        "etcd": {"managementType": "Managed", "managed": {"storage": {"type": "PersistentVolume"}}},
    },
}
NODE_POOL = {
    "apiVersion": "hypershift.openshift.io/v1beta1",
    "kind": "NodePool",
    "metadata": {"name": "prod1-us-east-1a", "namespace": "clusters"},
    "spec": {"clusterName": "prod1", "replicas": 3},
}


def manifest(**extra: Any) -> dict[str, Any]:
    base = "hcp-etcd/backups/clusters/prod1/20260301T020000Z"
    return {
        "schema_version": 1,
        "hosted_cluster": {"namespace": "clusters", "name": "prod1"},
        "snapshot": {"bucket": "bk", "key": f"{base}/snapshot.db"},
        "etcd": {"members": [{"pod": f"etcd-{i}", "revision": 1, "hash": 1} for i in range(3)]},
        "encryption_key": {"location": f"s3://bk/keys/clusters/prod1/{SHA}.key", "sha256": SHA},
        **extra,
    }


RECORDED = manifest(source=source_record(HOSTED_CLUSTER, [NODE_POOL]))


def test_the_recorded_cluster_comes_back_as_it_was_under_its_own_name() -> None:
    objects = recorded_objects(RECORDED, TARGET)
    assert [o["kind"] for o in objects] == ["Namespace", "HostedCluster", "NodePool"]
    plan = prepare_objects(objects, TARGET, "https://u/", RECORDED, "s3://bk/m.json", "r")
    hc = plan.hosted_cluster
    assert hc["spec"]["infraID"] == "prod1-abcde" and hc["spec"]["pullSecret"] == {
        "name": "prod1-pull-secret"
    }
    assert hc["spec"]["etcd"]["managed"]["storage"]["restoreSnapshotURL"] == ["https://u/"]
    # The key Secret is the restore's to fill; the pull secret, SSH key and CA bundle must exist.
    assert plan.key_secrets == {"activeKey": "prod1-etcd-encryption-key"}
    assert referenced_objects(hc) == [
        ("ConfigMap", "user-ca-bundle"),
        ("Secret", "prod1-pull-secret"),
        ("Secret", "prod1-ssh-key"),
    ]


def test_no_record_another_name_or_unknown_node_pools_are_refused_naming_the_way_out() -> None:
    with pytest.raises(RestoreInputError, match=r"records no cluster spec.*rendered_manifests"):
        recorded_objects(manifest(), TARGET)
    with pytest.raises(RestoreInputError, match="brings clusters/prod1 back under its own name"):
        recorded_objects(RECORDED, ClusterRef("clusters", "prod1-dr"))
    unknown = manifest(source=source_record(HOSTED_CLUSTER, None))
    with pytest.raises(RestoreInputError, match="not its NodePools"):
        recorded_objects(unknown, TARGET)


def test_same_content_compares_data_and_string_data() -> None:
    planned = {"data": {"a": base64.b64encode(b"x").decode()}, "stringData": {"b": "y"}}
    existing = {"a": base64.b64encode(b"x").decode(), "b": base64.b64encode(b"y").decode()}
    assert same_content("Secret", planned, existing)
    assert not same_content("Secret", planned, {**existing, "b": base64.b64encode(b"z").decode()})
    assert same_content("ConfigMap", {"data": {"ca.crt": "PEM"}}, {"ca.crt": "PEM"})
    assert not same_content("ConfigMap", {"data": {"ca.crt": "PEM"}}, {})


class LeftBehind:
    """The part of ``HostedClusterHook`` the create task's checks use, over a namespace's leftovers."""

    def __init__(self, secrets: dict[str, dict[str, str]], config_maps: dict[str, dict[str, str]]) -> None:
        self.secrets, self.config_maps = secrets, config_maps

    def object_annotations(self, api_version: str, kind: str, ns: str | None, name: str) -> dict | None:
        found = {"Secret": self.secrets, "ConfigMap": self.config_maps}.get(kind, {})
        return {} if name in found else None

    def object_exists(self, api_version: str, kind: str, ns: str | None, name: str) -> bool:
        return self.object_annotations(api_version, kind, ns, name) is not None

    def read_secret_data(self, ns: str, name: str) -> dict[str, str]:
        return dict(self.secrets[name])

    def read_config_map_data(self, ns: str, name: str) -> dict[str, str]:
        return dict(self.config_maps[name])


def create_op(hook: LeftBehind) -> CreateRestoredClusterOperator:
    op = CreateRestoredClusterOperator(task_id="create", bucket="bk", backup={"manifest": RECORDED})
    op.__dict__["k8s"] = hook  # the cached_property's slot
    return op


def plan() -> Any:
    objects = recorded_objects(RECORDED, TARGET)
    return prepare_objects(copy.deepcopy(objects), TARGET, "https://u/", RECORDED, "s3://bk/m.json", "r")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


LEFTOVERS = {
    "prod1-pull-secret": {".dockerconfigjson": b64(b"{}")},
    "prod1-ssh-key": {"id_rsa.pub": b64(b"ssh-rsa AAA")},
    "prod1-etcd-encryption-key": {"key": b64(KEY)},
}


def test_leftovers_holding_the_backups_key_are_used_as_they_are_and_never_created() -> None:
    p = plan()
    op = create_op(LeftBehind(LEFTOVERS, {"user-ca-bundle": {"ca-bundle.crt": "PEM"}}))
    adopted, reused = op._refuse_existing(p, "r")
    assert adopted == set() and reused == {"prod1-etcd-encryption-key"}
    assert all(o["metadata"]["name"] != "prod1-etcd-encryption-key" for o in p.objects), "not created again"
    op._require_referenced(p)  # the pull secret, SSH key and CA bundle are there


def test_a_leftover_key_secret_with_another_key_is_refused_with_the_command_that_removes_it() -> None:
    other = {**LEFTOVERS, "prod1-etcd-encryption-key": {"key": b64(os.urandom(32))}}
    with pytest.raises(RestoreInputError) as err:
        create_op(LeftBehind(other, {}))._refuse_existing(plan(), "r")
    message = str(err.value)
    assert "Secret clusters/prod1-etcd-encryption-key holds another key than the backup's" in message
    assert "oc delete secret -n clusters prod1-etcd-encryption-key" in message
    assert b64(KEY) not in message and b64(other["prod1-etcd-encryption-key"]["key"].encode()) not in message


def test_a_missing_pull_secret_is_refused_before_anything_is_created() -> None:
    p = plan()
    op = create_op(LeftBehind({"prod1-ssh-key": LEFTOVERS["prod1-ssh-key"]}, {}))
    op._refuse_existing(p, "r")
    with pytest.raises(RestoreInputError) as err:
        op._require_referenced(p)
    assert "ConfigMap clusters/user-ca-bundle, Secret clusters/prod1-pull-secret" in str(err.value)
    assert "oc create secret generic <name>-pull-secret -n clusters" in str(err.value)
