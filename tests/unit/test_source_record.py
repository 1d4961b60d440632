"""The cluster's specs recorded with each backup: what a restore rebuilds a lost cluster from."""

from __future__ import annotations

import copy

import pytest

from hcp_etcd.manifest import ManifestError, build_manifest, source_record, validate_manifest
from tests.unit.test_manifest_retention import ARGS

URL = "https://bucket.s3.amazonaws.com/p/snapshot.db?X-Amz-Signature=" + "f" * 64

HOSTED_CLUSTER = {
    "apiVersion": "hypershift.openshift.io/v1beta1",
    "kind": "HostedCluster",
    "metadata": {
        "name": "prod1",
        "namespace": "clusters",
        "uid": "1234",
        "resourceVersion": "99",
        "labels": {"team": "payments"},
        "annotations": {
            "hypershift.openshift.io/control-plane-operator-image": "quay.io/cpo:override",
            "hcp-etcd.openshift.io/backup-lock": '{"run_id": "r"}',
            "kubectl.kubernetes.io/last-applied-configuration": f'{{"spec": {{"url": "{URL}"}}}}',
        },
    },
    "spec": {
        "release": {"image": "quay.io/openshift-release-dev/ocp-release:4.20.3-x86_64"},
        "infraID": "prod1-abcde",
        "pausedUntil": "2026-12-01T03:00:00Z",
        "pullSecret": {"name": "prod1-pull-secret"},
        "controllerAvailabilityPolicy": "HighlyAvailable",
        "etcd": {
            "managementType": "Managed",
            "managed": {"storage": {"type": "PersistentVolume", "restoreSnapshotURL": [URL]}},
        },
    },
    "status": {"conditions": [{"type": "Available", "status": "True"}]},
}
NODE_POOL = {
    "apiVersion": "hypershift.openshift.io/v1beta1",
    "kind": "NodePool",
    "metadata": {"name": "prod1-us-east-1a", "namespace": "clusters", "uid": "5678"},
    "spec": {
        "clusterName": "prod1",
        "replicas": 3,
        "platform": {"aws": {"instanceProfile": "prod1-abcde-worker"}},
    },
    "status": {"replicas": 3},
}


def test_the_record_keeps_the_specs_and_leaves_out_credentials_and_our_state() -> None:
    record = source_record(HOSTED_CLUSTER, [NODE_POOL])
    hc = record["hosted_cluster"]
    assert record["release_image"] == "quay.io/openshift-release-dev/ocp-release:4.20.3-x86_64"
    assert hc["spec"]["infraID"] == "prod1-abcde" and hc["spec"]["pullSecret"] == {
        "name": "prod1-pull-secret"
    }
    # The backup's own pause and a restore's presigned URL (a credential) are not part of the cluster.
    assert "pausedUntil" not in hc["spec"]
    assert "restoreSnapshotURL" not in hc["spec"]["etcd"]["managed"]["storage"]
    assert URL not in repr(record) and "X-Amz-Signature" not in repr(record)
    assert hc["metadata"] == {
        "name": "prod1",
        "namespace": "clusters",
        "labels": {"team": "payments"},
        "annotations": {"hypershift.openshift.io/control-plane-operator-image": "quay.io/cpo:override"},
    }
    assert "status" not in hc and "status" not in record["node_pools"][0]
    assert record["node_pools"][0]["spec"]["platform"]["aws"]["instanceProfile"] == "prod1-abcde-worker"
    # The HostedCluster read from the API is left as it was.
    assert HOSTED_CLUSTER["spec"]["pausedUntil"] and HOSTED_CLUSTER["spec"]["etcd"]["managed"]["storage"]


def test_node_pools_that_could_not_be_read_are_unknown_not_none() -> None:
    assert source_record(HOSTED_CLUSTER, None)["node_pools"] is None
    assert source_record(HOSTED_CLUSTER, [])["node_pools"] == []


def test_the_record_is_validated_with_the_manifest_and_older_manifests_have_none() -> None:
    assert "source" not in build_manifest(**ARGS)
    manifest = build_manifest(**ARGS, source=source_record(HOSTED_CLUSTER, [NODE_POOL]))
    assert validate_manifest(copy.deepcopy(manifest))["source"]["release_image"].endswith("4.20.3-x86_64")
    for mutate in [
        lambda s: s.pop("hosted_cluster"),
        lambda s: s["hosted_cluster"].pop("spec"),
        lambda s: s.update(node_pools={"a": 1}),
        lambda s: s.update(release_image=4),
    ]:
        bad = copy.deepcopy(manifest)
        mutate(bad["source"])
        with pytest.raises(ManifestError):
            validate_manifest(bad)
