"""Unit tests of the restore domain logic (hcp_etcd.restore.*, aescbc, the restore trigger's state)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hcp_etcd import aescbc
from hcp_etcd.errors import RestoreInputError
from hcp_etcd.etcd import parse_get_values, parse_member_list, secret_sample_command
from hcp_etcd.naming import ClusterRef
from hcp_etcd.restore.backups import (
    SOURCE_PATTERN,
    backup_candidates,
    check_manifest,
    key_entries,
    parse_source,
)
from hcp_etcd.restore.plan import (
    DRILL_LABEL,
    RESTORED_BY_ANNOTATION,
    RESTORED_FROM_ANNOTATION,
    availability_mismatch,
    check_identity_not_shared,
    check_target,
    clone_objects,
    drill_target_name,
    load_objects,
    prepare_objects,
    release_mismatch,
)
from hcp_etcd.restore.presign import check_presigned_url, check_url_expiry_hours
from hcp_etcd.restore.report import build_drill_report, drill_report_key
from hcp_etcd.restore.verify import (
    Check,
    check_members,
    check_revision,
    check_samples,
    check_secret_decrypts,
    compare_key_counts,
    is_split_brain,
)
from hcp_etcd.triggers.restore import restore_state

NOW = datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
SHA = "a" * 64
KEY_SHA = "b" * 64


def manifest(ns: str = "clusters", name: str = "prod1", ts: str = "20250301T020000Z", **enc: object) -> dict:
    base = f"hcp-etcd/backups/{ns}/{name}/{ts}"
    return {
        "schema_version": 1,
        "kind": "hcp-etcd-backup",
        "hosted_cluster": {"namespace": ns, "name": name},
        "created_at": "2025-03-01T02:00:00Z",
        "mode": "quiesced",
        "snapshot": {"bucket": "bk", "key": f"{base}/snapshot.db", "size_bytes": 10, "sha256": SHA},
        "etcd": {
            "revision": 100,
            "hash": 1,
            "total_keys": 5,
            "version": "3.5.17",
            "members": [{"pod": "etcd-0", "revision": 100, "hash": 1}],
            "key_counts": {"secrets": 2},
        },
        "encryption_key": {
            "location": f"s3://bk/hcp-etcd/keys/{ns}/{name}/{KEY_SHA}.key",
            "sha256": KEY_SHA,
            **enc,
        },
        "api_downtime_seconds": 3.0,
        "airflow": {"dag_id": "hcp_etcd_backup", "run_id": "r"},
    }


def uri(m: dict) -> str:
    return f"s3://bk/{m['snapshot']['key'].rsplit('/', 1)[0]}/manifest.json"


# ---- source and manifests --------------------------------------------------------------------------


def test_parse_source_forms() -> None:
    assert parse_source("clusters/prod1").cluster == ClusterRef("clusters", "prod1")
    assert parse_source("s3://bk/a/b/manifest.json").manifest_uri == "s3://bk/a/b/manifest.json"
    for bad in ("s3://bk/a/b/snapshot.db", "Clusters/x", "a/b/c", "../x", "s3://bk/../manifest.json", ""):
        with pytest.raises(RestoreInputError):
            parse_source(bad)


def test_source_pattern_matches_what_parse_accepts() -> None:
    import re

    pat = re.compile(SOURCE_PATTERN)
    assert pat.match("clusters/prod1") and pat.match("s3://bkt/hcp-etcd/x/manifest.json")
    assert not pat.match("clusters/prod1/x") and not pat.match("s3://bkt/x/snapshot.db")


def test_check_manifest_accepts_ours() -> None:
    m = manifest()
    assert check_manifest(m, uri(m), ClusterRef("clusters", "prod1")) == m


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(kind="something-else"), "not an hcp-etcd backup manifest"),
        (lambda m: m.pop("etcd"), "lacks etcd"),
        (lambda m: m["snapshot"].update(sha256="xyz"), "not a hex SHA-256"),
        (
            lambda m: m["snapshot"].update(
                key="hcp-etcd/backups/clusters/prod1/20250101T000000Z/snapshot.db"
            ),
            "points elsewhere",
        ),
        (lambda m: m["snapshot"].update(bucket="other"), "points elsewhere"),
        (lambda m: m.update(schema_version=99), "schema_version"),
    ],
)
def test_check_manifest_refuses(mutate, message: str) -> None:
    m = manifest()
    where = uri(m)
    mutate(m)
    with pytest.raises(RestoreInputError, match=message):
        check_manifest(m, where)


def test_check_manifest_refuses_other_cluster() -> None:
    m = manifest()
    with pytest.raises(RestoreInputError, match="belongs to clusters/prod1"):
        check_manifest(m, uri(m), ClusterRef("clusters", "prod2"))


def test_backup_candidates_newest_at_or_before() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    base = "p/clusters/prod1"
    objs = [
        (f"{base}/20250101T000000Z/snapshot.db", t),
        (f"{base}/20250101T000000Z/manifest.json", t),
        (f"{base}/20250105T000000Z/snapshot.db", t),
        (f"{base}/20250105T000000Z/manifest.json", t),
        (f"{base}/20250107T000000Z/snapshot.db", t),  # no manifest: not a backup
        (f"{base}/20250110T000000Z/manifest.json", t),
        (f"{base}/_drills/x.json", t),
    ]
    assert backup_candidates(objs, base, datetime(2025, 1, 8, tzinfo=UTC)) == [
        "20250105T000000Z",
        "20250101T000000Z",
    ]
    assert backup_candidates(objs, base, datetime(2025, 1, 5, tzinfo=UTC))[0] == "20250105T000000Z"
    assert backup_candidates(objs, base, datetime(2024, 12, 31, tzinfo=UTC)) == []


def test_key_entries_with_backup_key() -> None:
    m = manifest(backup_key={"location": "s3://bk/k/old.key", "sha256": "c" * 64})
    assert set(key_entries(m)) == {"activeKey", "backupKey"}
    assert set(key_entries(manifest())) == {"activeKey"}


# ---- presigned URLs ---------------------------------------------------------------------------------


def presigned(
    signed: datetime = NOW,
    expires: int = 4 * 3600,
    token: str | None = None,
    algorithm: str = "AWS4-HMAC-SHA256",
    path: str = "/bk/snap.db",
) -> str:
    q = {
        "X-Amz-Algorithm": algorithm,
        "X-Amz-Credential": "AKIA/2025/us-east-1/s3/aws4_request",
        "X-Amz-Date": signed.strftime("%Y%m%dT%H%M%SZ"),
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    if token:
        q["X-Amz-Security-Token"] = token
    q["X-Amz-Signature"] = "f" * 64
    return f"https://s3.amazonaws.com{path}?{urlencode(q)}"


def test_presigned_url_ok() -> None:
    info = check_presigned_url(presigned(), NOW)
    assert info.expires_at == "2025-03-09T16:00:00Z" and not info.session_token and info.length < 1024


def test_presigned_url_too_long_with_sts_says_why() -> None:
    with pytest.raises(RestoreInputError, match=r"at most 1024.*STS session token"):
        check_presigned_url(presigned(token="T" * 900), NOW)


def test_presigned_url_expired_or_soon() -> None:
    with pytest.raises(RestoreInputError, match="expired"):
        check_presigned_url(presigned(signed=NOW - timedelta(hours=5)), NOW)
    with pytest.raises(RestoreInputError, match="less than"):
        check_presigned_url(presigned(expires=600), NOW)


def test_presigned_url_must_be_sigv4_https() -> None:
    with pytest.raises(RestoreInputError, match="SigV4"):
        check_presigned_url(presigned(algorithm="HmacSHA1"), NOW)
    with pytest.raises(RestoreInputError, match="https"):
        check_presigned_url(presigned().replace("https://", "http://"), NOW)


@pytest.mark.parametrize(
    "value, ok", [(4, True), ("168", True), (0, False), (169, False), (True, False), ("x", False)]
)
def test_url_expiry_hours(value: object, ok: bool) -> None:
    if ok:
        assert check_url_expiry_hours(value) == int(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(RestoreInputError):
            check_url_expiry_hours(value)


# ---- targets and objects ----------------------------------------------------------------------------


def test_check_target_and_drill_name() -> None:
    assert drill_target_name("prod1", NOW) == "prod1-drill-20250309"
    assert check_target("hcp-etcd-drills", "prod1-drill-20250309").name == "prod1-drill-20250309"
    for ns, name in (("Bad", "x"), ("ok", "../x"), ("ok", "x" * 70)):
        with pytest.raises(RestoreInputError):
            check_target(ns, name)


def rendered(name: str = "new1", ns: str = "clusters", members: int = 3) -> list[dict]:
    """What ``hcp create cluster aws --render --render-sensitive`` prints (shape of the sandbox's render)."""
    from hcp_sandbox import render

    return yaml.safe_load_all(render.to_yaml(render.manifests(name, ns, members)))  # type: ignore[return-value]


def test_prepare_objects_sets_restore_fields() -> None:
    objs = list(rendered("prod1-restored", "restore-ns"))
    target = ClusterRef("restore-ns", "prod1-restored")
    m = manifest()
    plan = prepare_objects(objs, target, "https://s3/x?sig", m, uri(m), "dag/run")
    hc = plan.hosted_cluster
    assert hc["metadata"] == {
        "name": "prod1-restored",
        "namespace": "restore-ns",
        "annotations": {RESTORED_FROM_ANNOTATION: uri(m), RESTORED_BY_ANNOTATION: "dag/run"},
    }
    storage = hc["spec"]["etcd"]["managed"]["storage"]
    assert hc["spec"]["etcd"]["managementType"] == "Managed" and storage["type"] == "PersistentVolume"
    assert storage["restoreSnapshotURL"] == ["https://s3/x?sig"]
    assert hc["spec"]["pullSecret"]["name"] == "prod1-restored-pull-secret"
    assert plan.key_secrets == {"activeKey": "prod1-restored-etcd-encryption-key"}
    kinds = [o["kind"] for o in plan.objects]
    assert kinds[0] == "Namespace" and kinds.index("HostedCluster") > kinds.index("Secret")
    assert {o["metadata"].get("namespace") for o in plan.objects if o["kind"] != "Namespace"} == {
        "restore-ns"
    }
    assert next(o for o in plan.objects if o["kind"] == "NodePool")["spec"]["clusterName"] == "prod1-restored"
    key_secret = next(
        o for o in plan.objects if o["metadata"]["name"] == "prod1-restored-etcd-encryption-key"
    )
    # The freshly rendered key is gone until the create task fills the escrowed one in.
    assert "key" not in key_secret.get("data", {})
    plan.fill_key("activeKey", b"k" * 32)
    assert base64.b64decode(key_secret["data"]["key"]) == b"k" * 32
    assert plan.replicas == 3
    assert "Secret restore-ns/prod1-restored-etcd-encryption-key" in plan.summary()


def test_prepare_objects_adds_backup_key_secret() -> None:
    m = manifest(backup_key={"location": "s3://bk/k/old.key", "sha256": "c" * 64})
    plan = prepare_objects(list(rendered("x1", members=1)), ClusterRef("clusters", "x1"), "", m, uri(m), "r")
    assert plan.key_secrets["backupKey"] == "x1-etcd-encryption-backup-key"
    assert plan.hosted_cluster["spec"]["secretEncryption"]["aescbc"]["backupKey"] == {
        "name": "x1-etcd-encryption-backup-key"
    }
    assert plan.replicas == 1
    # Made by the restore, so marked as the run's: a retry adopts it, an undo deletes it.
    added = next(o for o in plan.objects if o["metadata"]["name"] == "x1-etcd-encryption-backup-key")
    assert added["metadata"]["annotations"] == {RESTORED_BY_ANNOTATION: "r"}


def test_prepare_objects_refusals() -> None:
    m = manifest()
    objs = list(rendered())
    with pytest.raises(RestoreInputError, match="exactly one"):
        prepare_objects(
            [o for o in objs if o["kind"] != "HostedCluster"],
            ClusterRef("clusters", "new1"),
            "",
            m,
            uri(m),
            "r",
        )
    no_key = [dict(o) for o in objs]
    hc = next(o for o in no_key if o["kind"] == "HostedCluster")
    hc["spec"] = {**hc["spec"], "secretEncryption": {"type": "kms", "kms": {}}}
    with pytest.raises(RestoreInputError, match="aescbc"):
        prepare_objects(no_key, ClusterRef("clusters", "new1"), "", m, uri(m), "r")


def test_load_objects_refuses_unknown_kinds_and_bad_yaml() -> None:
    with pytest.raises(RestoreInputError, match="not something a restore creates"):
        load_objects(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\n",
            "f.yaml",
        )
    with pytest.raises(RestoreInputError, match="not valid YAML"):
        load_objects("a: [", "f.yaml")
    with pytest.raises(RestoreInputError, match="needs apiVersion"):
        load_objects("just: text\n", "f.yaml")
    assert (
        len(
            load_objects(
                json.dumps(
                    {
                        "kind": "List",
                        "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}],
                    }
                ),
                "f.json",
            )
        )
        == 1
    )


def test_clone_objects_then_prepare() -> None:
    src = next(o for o in rendered("prod1") if o["kind"] == "HostedCluster")
    src["metadata"].update(annotations={"hcp-etcd.openshift.io/backup-lock": "x"}, uid="u")
    src["spec"]["pausedUntil"] = "true"
    src["spec"]["clusterID"] = "id"
    target = ClusterRef("drills", "prod1-drill-20250309")
    clone = clone_objects(src, target)
    assert clone.copies == {
        ("Secret", "prod1-drill-20250309-pull-secret"): "prod1-pull-secret",
        ("Secret", "prod1-drill-20250309-ssh-key"): "prod1-ssh-key",
    }
    m = manifest()
    plan = prepare_objects(clone.objects, target, "https://u", m, uri(m), "r")
    hc = plan.hosted_cluster
    assert "pausedUntil" not in hc["spec"] and "clusterID" not in hc["spec"]
    assert hc["metadata"]["labels"] == {DRILL_LABEL: "true"}
    assert RESTORED_FROM_ANNOTATION in hc["metadata"]["annotations"]
    assert "hcp-etcd.openshift.io/backup-lock" not in hc["metadata"]["annotations"]
    assert not [o for o in plan.objects if o["kind"] == "NodePool"]
    names = {o["metadata"]["name"] for o in plan.objects if o["kind"] == "Secret"}
    assert names == {
        "prod1-drill-20250309-pull-secret",
        "prod1-drill-20250309-ssh-key",
        "prod1-drill-20250309-etcd-encryption-key",
    }


# ---- a realistic AWS render (issue 14 item 4) -------------------------------------------------------

AWS_RENDER = os.path.join(os.path.dirname(__file__), "data", "hcp-render-aws.yaml")
INFRA_ID = "prod1-restored-x7k2p"


def aws_render() -> list[dict]:
    """``hcp create cluster aws --render`` with pre-created infra/IAM, external DNS, an SA signing key."""
    with open(AWS_RENDER, encoding="utf-8") as f:
        return load_objects(f.read(), AWS_RENDER)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_a_rendered_aws_file_is_applied_as_rendered() -> None:
    """Only restoreSnapshotURL (with its storage) and the key change: the AWS identity stays."""
    objects = aws_render()
    m = manifest(name="prod1")
    m["etcd"]["members"] = [{"pod": f"etcd-{i}", "revision": 100, "hash": 1} for i in range(3)]
    plan = prepare_objects(
        objects, ClusterRef("clusters", "prod1-restored"), "https://s3/x?sig", m, uri(m), "r"
    )
    rendered_hc, hc = of_kind(objects, "HostedCluster")[0], plan.hosted_cluster
    assert hc["spec"]["infraID"] == INFRA_ID
    assert hc["spec"]["issuerURL"] == f"https://hcp-oidc-example.s3.us-east-2.amazonaws.com/{INFRA_ID}"
    assert hc["spec"]["platform"] == rendered_hc["spec"]["platform"]
    assert all(f"role/{INFRA_ID}-" in arn for arn in hc["spec"]["platform"]["aws"]["rolesRef"].values())
    assert hc["spec"]["services"] == rendered_hc["spec"]["services"]
    assert hc["spec"]["serviceAccountSigningKey"] == {"name": "prod1-restored-sa-token-issuer-key"}
    assert hc["spec"]["additionalTrustBundle"] == {"name": "user-ca-bundle"}
    (pool,) = of_kind(plan.objects, "NodePool")
    assert pool["metadata"]["name"] == "prod1-restored-us-east-2a"
    assert pool["spec"] == of_kind(objects, "NodePool")[0]["spec"]
    assert pool["spec"]["platform"]["aws"]["instanceProfile"] == f"{INFRA_ID}-worker"
    # Everything but etcd's storage is the rendered spec.
    changed = {k for k in rendered_hc["spec"] if hc["spec"].get(k) != rendered_hc["spec"][k]}
    assert changed == {"etcd"}
    assert hc["spec"]["etcd"]["managed"]["storage"]["restoreSnapshotURL"] == ["https://s3/x?sig"]
    assert hc["spec"]["etcd"]["managed"]["storage"]["persistentVolume"]["storageClassName"] == "gp3-csi"
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in plan.objects}
    assert set(by_name) == {(o["kind"], o["metadata"]["name"]) for o in objects}
    for o in objects:
        if (
            o["kind"] in ("Secret", "ConfigMap")
            and o["metadata"]["name"] != "prod1-restored-etcd-encryption-key"
        ):
            assert by_name[(o["kind"], o["metadata"]["name"])]["data"] == o["data"]
    assert "key" not in by_name[("Secret", "prod1-restored-etcd-encryption-key")]["data"]
    assert availability_mismatch(hc, m) is None


def test_a_render_for_another_cluster_is_refused_naming_both() -> None:
    m = manifest(name="prod1")
    with pytest.raises(RestoreInputError) as err:
        prepare_objects(aws_render(), ClusterRef("clusters", "prod1-dr"), "", m, uri(m), "r")
    message = str(err.value)
    assert "rendered for clusters/prod1-restored" in message and "target is clusters/prod1-dr" in message
    assert "--namespace clusters --name prod1-dr" in message
    with pytest.raises(RestoreInputError, match="rendered for clusters/prod1-restored"):
        prepare_objects(aws_render(), ClusterRef("restore-ns", "prod1-restored"), "", m, uri(m), "r")
    stray = aws_render()
    of_kind(stray, "NodePool")[0]["spec"]["clusterName"] = "prod1"
    with pytest.raises(
        RestoreInputError, match="NodePool prod1-restored-us-east-2a belongs to cluster 'prod1'"
    ):
        prepare_objects(stray, ClusterRef("clusters", "prod1-restored"), "", m, uri(m), "r")


def test_a_render_sharing_the_live_sources_infra_id_is_refused() -> None:
    hc = of_kind(aws_render(), "HostedCluster")[0]
    source = {"metadata": {"namespace": "clusters", "name": "prod1"}, "spec": {"infraID": INFRA_ID}}
    with pytest.raises(RestoreInputError, match="infraID of the live source clusters/prod1"):
        check_identity_not_shared(hc, source)
    check_identity_not_shared(hc, None)  # the source is gone: the usual disaster recovery
    check_identity_not_shared(hc, {**source, "spec": {"infraID": "prod1-abcde"}})


def test_availability_policy_differing_from_the_backup_is_named() -> None:
    hc = of_kind(aws_render(), "HostedCluster")[0]
    m = manifest(name="prod1")  # one member: a SingleReplica source
    message = availability_mismatch(hc, m)
    assert message is not None and "1-member etcd (SingleReplica)" in message
    assert "HighlyAvailable" in message and "will have 3 member(s)" in message
    assert "--control-plane-availability-policy SingleReplica" in message


def live_source() -> dict:
    """The AWS render's HostedCluster as a live source: named prod1, with identity providers etc."""
    hc = of_kind(aws_render(), "HostedCluster")[0]
    text = yaml.safe_dump(hc).replace("prod1-restored", "prod1")
    hc = yaml.safe_load(text)
    hc["metadata"].update(uid="u", resourceVersion="7")
    hc["spec"]["clusterID"] = "id"
    hc["spec"]["kubeAPIServerDNSName"] = "api.prod1.example.com"
    hc["spec"]["dns"]["baseDomainPrefix"] = "prod"
    hc["spec"]["auditWebhook"] = {"name": "audit-webhook"}
    hc["spec"]["configuration"] = {
        "oauth": {
            "identityProviders": [
                {
                    "name": "github",
                    "type": "GitHub",
                    "github": {
                        "clientID": "x",
                        "clientSecret": {"name": "github-client"},
                        "ca": {"name": "gh-ca"},
                    },
                },
                {"name": "local", "type": "HTPasswd", "htpasswd": {"fileData": {"name": "prod1-htpasswd"}}},
            ],
            "templates": {"login": {"name": "login-template"}},
        },
        "proxy": {"trustedCA": {"name": "user-ca-bundle"}},
        "apiServer": {
            "clientCA": {"name": "client-ca"},
            "servingCerts": {
                "namedCertificates": [
                    {"names": ["api.prod1.example.com"], "servingCertificate": {"name": "api-cert"}}
                ]
            },
        },
        "authentication": {
            "type": "OIDC",
            "oidcProviders": [
                {
                    "name": "sso",
                    "issuer": {
                        "issuerURL": "https://sso.example.com",
                        "issuerCertificateAuthority": {"name": "sso-ca"},
                    },
                    "oidcClients": [{"componentName": "console", "clientSecret": {"name": "console-client"}}],
                }
            ],
        },
    }
    return hc


def test_a_drill_clone_never_collides_with_its_source() -> None:
    source = live_source()
    target = ClusterRef("hcp-etcd-drills", "prod1-drill-20250309")
    drill = target.name
    clone = clone_objects(source, target)
    m = manifest(name="prod1")
    plan = prepare_objects(clone.objects, target, "https://u", m, uri(m), "r")
    spec = plan.hosted_cluster["spec"]
    # Cloud identity: a new infraID; no OIDC issuer or signing key of the source's.
    assert spec["infraID"] != source["spec"]["infraID"] and spec["infraID"].startswith(
        "prod1-drill-20250309-"
    )
    assert "issuerURL" not in spec and "serviceAccountSigningKey" not in spec
    assert "kubeAPIServerDNSName" not in spec and "auditWebhook" not in spec
    assert "baseDomainPrefix" not in spec["dns"] and spec["dns"]["baseDomain"] == "example.com"
    # Hostnames: the drill's own.
    hostnames = [s["servicePublishingStrategy"]["route"]["hostname"] for s in spec["services"]]
    assert hostnames == [
        f"{svc}-{drill}.hcp.example.com" for svc in ("api", "ignition", "konnectivity", "oauth")
    ]
    # Every Secret/ConfigMap the spec names is a drill-named copy in the drill's namespace.
    config = spec["configuration"]
    idps = config["oauth"]["identityProviders"]
    refs = {
        ("Secret", spec["pullSecret"]["name"]): "prod1-pull-secret",
        ("Secret", spec["sshKey"]["name"]): "prod1-ssh-key",
        ("ConfigMap", spec["additionalTrustBundle"]["name"]): "user-ca-bundle",
        ("Secret", idps[0]["github"]["clientSecret"]["name"]): "github-client",
        ("ConfigMap", idps[0]["github"]["ca"]["name"]): "gh-ca",
        ("Secret", idps[1]["htpasswd"]["fileData"]["name"]): "prod1-htpasswd",
        ("Secret", config["oauth"]["templates"]["login"]["name"]): "login-template",
        ("ConfigMap", config["proxy"]["trustedCA"]["name"]): "user-ca-bundle",
        ("ConfigMap", config["apiServer"]["clientCA"]["name"]): "client-ca",
        (
            "ConfigMap",
            config["authentication"]["oidcProviders"][0]["issuer"]["issuerCertificateAuthority"]["name"],
        ): "sso-ca",
        (
            "Secret",
            config["authentication"]["oidcProviders"][0]["oidcClients"][0]["clientSecret"]["name"],
        ): "console-client",
    }
    assert plan.copies == {} and clone.copies == refs
    assert all(name.startswith(f"{drill}-") for _, name in refs)
    assert ("Secret", f"{drill}-htpasswd") in refs and ("ConfigMap", f"{drill}-user-ca-bundle") in refs
    assert "namedCertificates" not in config["apiServer"]["servingCerts"]
    made = {(o["kind"], o["metadata"]["name"]) for o in plan.objects if o["kind"] in ("Secret", "ConfigMap")}
    assert made == set(refs) | {("Secret", f"{drill}-etcd-encryption-key")}
    assert {o["metadata"].get("namespace") for o in plan.objects if o["kind"] != "Namespace"} == {
        target.namespace
    }
    # No name of the source's objects is left anywhere in the drill's spec.
    source_names = {
        "prod1-pull-secret",
        "prod1-ssh-key",
        "prod1-sa-token-issuer-key",
        "github-client",
        "api-cert",
    }
    text = json.dumps(spec)
    assert not [n for n in source_names if f'"{n}"' in text]
    assert any("issuerURL dropped" in c for c in clone.changes)
    assert any(
        "hostname api-prod1.hcp.example.com -> api-prod1-drill-20250309.hcp.example.com" in c
        for c in clone.changes
    )


def test_a_drill_drops_hostnames_and_ports_it_cannot_make_its_own() -> None:
    source = live_source()
    source["spec"]["services"] = [
        {
            "service": "APIServer",
            "servicePublishingStrategy": {
                "type": "LoadBalancer",
                "loadBalancer": {"hostname": "api.corp.example.com"},
            },
        },
        {
            "service": "OAuthServer",
            "servicePublishingStrategy": {
                "type": "NodePort",
                "nodePort": {"address": "10.0.0.5", "port": 30443},
            },
        },
    ]
    clone = clone_objects(source, ClusterRef("hcp-etcd-drills", "prod1-drill-20250309"))
    spec = next(o for o in clone.objects if o["kind"] == "HostedCluster")["spec"]
    assert spec["services"][0]["servicePublishingStrategy"] == {"type": "LoadBalancer", "loadBalancer": {}}
    assert spec["services"][1]["servicePublishingStrategy"] == {
        "type": "NodePort",
        "nodePort": {"address": "10.0.0.5"},
    }


# ---- verification -----------------------------------------------------------------------------------


def test_member_checks_catch_split_brain() -> None:
    one = check_members(
        {
            "etcd-0": ["etcd-0", "etcd-1", "etcd-2"],
            "etcd-1": ["etcd-0", "etcd-1", "etcd-2"],
            "etcd-2": ["etcd-0", "etcd-1", "etcd-2"],
        },
        3,
    )
    assert one.passed
    split = check_members({"etcd-0": ["etcd-0"], "etcd-1": ["etcd-1"], "etcd-2": ["etcd-2"]}, 3)
    assert not split.passed and "split brain" in split.detail
    assert check_members({"etcd-0": ["etcd-0"]}, 1).passed
    # Released HyperShift's split (each member alone) is named with the runbook's repair.
    assert "one-member cluster" in split.detail and "docs/RUNBOOK.md, Part C" in split.detail
    one_short = check_members({"etcd-0": ["etcd-0", "etcd-1"], "etcd-1": ["etcd-0", "etcd-1"]}, 3)
    assert not one_short.passed and "Part C" not in one_short.detail, "not every disagreement is the split"


def test_split_brain_is_every_member_alone() -> None:
    alone = {"etcd-0": ["etcd-0"], "etcd-1": ["etcd-1"], "etcd-2": ["etcd-2"]}
    assert is_split_brain(alone, 3)
    assert not is_split_brain({"etcd-0": ["etcd-0"]}, 1), "a SingleReplica cluster is one member"
    assert not is_split_brain({p: ["etcd-0", "etcd-1", "etcd-2"] for p in alone}, 3)


def test_parse_member_list_and_get_values() -> None:
    out = json.dumps({"header": {}, "members": [{"ID": 1, "name": "etcd-1"}, {"ID": 255, "name": ""}]})
    assert parse_member_list(out) == ["etcd-1", "ff"]
    get = json.dumps(
        {
            "kvs": [
                {
                    "key": base64.b64encode(b"/kubernetes.io/secrets/a/b").decode(),
                    "value": base64.b64encode(b"v").decode(),
                }
            ]
        }
    )
    assert parse_get_values(get) == [("/kubernetes.io/secrets/a/b", b"v")]
    with pytest.raises(ValueError):
        parse_member_list("nope")


def test_revision_and_key_counts() -> None:
    assert check_revision({"etcd-0": 101}, 100).passed
    assert not check_revision({"etcd-0": 101, "etcd-1": 99}, 100).passed
    assert compare_key_counts({"secrets": 2, "pods": 1}, {"secrets": 2, "pods": 1}).passed
    bad = compare_key_counts({"secrets": 1}, {"secrets": 2, "pods": 1})
    assert not bad.passed and "secrets: backup 2 restored 1" in bad.detail


def encrypt(plain: bytes, key: bytes) -> bytes:
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    return aescbc.PREFIX + b"key1:" + iv + body


def test_aescbc_decrypts_and_refuses_wrong_key() -> None:
    key, other = os.urandom(32), os.urandom(32)
    value = encrypt(b'{"kind":"Secret"}', key)
    assert aescbc.decrypt(value, key) == b'{"kind":"Secret"}'
    assert aescbc.key_name_of(value) == "key1"
    with pytest.raises(aescbc.DecryptError):
        aescbc.decrypt(value, other)
    with pytest.raises(aescbc.DecryptError):
        aescbc.decrypt(b"plain", key)


def test_check_secret_decrypts() -> None:
    key = os.urandom(32)
    samples = [("/kubernetes.io/secrets/ns/a", encrypt(b"k8s\x00proto", key))]
    assert check_secret_decrypts(samples, {"key1": key}).passed
    assert not check_secret_decrypts(samples, {"key1": os.urandom(32)}).passed
    assert not check_secret_decrypts([("/k/s", b"plaintext")], {"key1": key}).passed
    assert not check_secret_decrypts([], {"key1": key}).passed
    assert not check_secret_decrypts(samples, {}).passed


# ---- report and trigger state -----------------------------------------------------------------------


def test_drill_report() -> None:
    m = manifest()
    ref = ClusterRef("clusters", "prod1")
    assert (
        drill_report_key("hcp-etcd/backups", ref, NOW)
        == "hcp-etcd/backups/_drills/clusters/prod1/20250309.json"
    )
    # A HostedCluster namespace named "drills": its backups never share a folder with drill reports.
    from hcp_etcd.naming import cluster_prefix

    drills_ns = cluster_prefix("hcp-etcd/backups", ClusterRef("drills", "clusters")) + "/"
    assert not drill_report_key("hcp-etcd/backups", ref, NOW).startswith(drills_ns)
    assert drill_report_key("", ref, NOW) == "_drills/clusters/prod1/20250309.json"
    checks = [
        Check("members", True, "ok").as_dict(),
        Check("revision", False, "low").as_dict(),
    ]
    rep = build_drill_report(
        ref=ref,
        target="d/prod1-drill-20250309",
        as_of=NOW,
        ran_at=NOW,
        backup={"manifest_uri": uri(m), "manifest": m},
        created={"created_at": "t"},
        restored={"recovery_seconds": 12.5, "available_at": "t2"},
        checks=checks,
        errors=[],
        run_id="r",
    )
    assert rep["passed"] is False and rep["recovery_seconds"] == 12.5
    assert rep["snapshot_age_seconds"] == (NOW - datetime(2025, 3, 1, 2, tzinfo=UTC)).total_seconds()
    nothing = build_drill_report(
        ref=ref,
        target="?",
        as_of=NOW,
        ran_at=NOW,
        backup=None,
        created=None,
        restored=None,
        checks=[],
        errors=[],
        run_id="r",
    )
    assert nothing["passed"] is False and nothing["errors"]


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_restore_state() -> None:
    hc = {"status": {"conditions": [cond("Available", "True")]}}
    hcp_ok = {"status": {"conditions": [cond("EtcdSnapshotRestored", "True")]}}
    hcp_bad = {
        "status": {"conditions": [cond("EtcdSnapshotRestored", "False", "EtcdRestoreFailed", "xml body")]}
    }
    assert restore_state(hc, hcp_ok) == ("done", "")
    state, msg = restore_state({"status": {"conditions": [cond("Available", "False")]}}, hcp_bad)
    assert state == "failed" and "xml body" in msg
    assert restore_state(hc, None)[0] == "waiting"
    assert restore_state({"status": {}}, hcp_ok)[0] == "waiting"


def test_key_counts_allow_what_leases_and_the_control_plane_drop():
    expected = {"configmaps": 10, "events": 7, "secrets": 4, "leases": 3}
    # An hour later: events revoked with their leases, identity leases collected: still the backup.
    later = {"configmaps": 10, "secrets": 4, "events": 1}
    assert compare_key_counts(later, expected, {"events": 7}).passed
    assert compare_key_counts(later, expected).passed  # an older manifest: by resource
    lost = compare_key_counts({"configmaps": 9, "secrets": 4}, expected, {"events": 7})
    assert not lost.passed and "configmaps: backup 10 restored 9" in lost.detail
    leased_configmaps = compare_key_counts({"configmaps": 8, "secrets": 4}, expected, {"configmaps": 2})
    assert leased_configmaps.passed


def test_samples_checked_at_the_current_revision():
    from hcp_etcd.etcd import StoredValue

    samples = [
        {
            "key": "/kubernetes.io/configmaps/a/x",
            "sha256": hashlib.sha256(b"x").hexdigest(),
            "mod_revision": 5,
        },
        {
            "key": "/kubernetes.io/configmaps/a/y",
            "sha256": hashlib.sha256(b"y").hexdigest(),
            "mod_revision": 6,
        },
    ]
    found = {
        "/kubernetes.io/configmaps/a/x": StoredValue("/kubernetes.io/configmaps/a/x", b"x", 5, 5),
        # Rewritten by the restored cluster after the backup's revision (100): only needs to exist.
        "/kubernetes.io/configmaps/a/y": StoredValue(
            "/kubernetes.io/configmaps/a/y", b"y2", 6, 1_000_000_150
        ),
    }
    ok = check_samples(samples, found, 100)
    assert ok.passed and "1 rewritten" in ok.detail
    changed = dict(
        found, **{"/kubernetes.io/configmaps/a/x": StoredValue("/kubernetes.io/configmaps/a/x", b"z", 5, 5)}
    )
    assert not check_samples(samples, changed, 100).passed
    missing = check_samples(
        samples, {"/kubernetes.io/configmaps/a/x": found["/kubernetes.io/configmaps/a/x"]}, 100
    )
    assert not missing.passed and "configmaps/a/y: missing" in missing.detail
    assert "--rev" not in " ".join(secret_sample_command(3))


def test_a_release_other_than_the_backups_is_named() -> None:
    hc = of_kind(aws_render(), "HostedCluster")[0]
    rendered = hc["spec"]["release"]["image"]
    assert release_mismatch(hc, manifest()) is None  # an older manifest records no release
    same = {**manifest(), "source": {"hosted_cluster": {"spec": {}}, "release_image": rendered}}
    assert release_mismatch(hc, same) is None
    older = "quay.io/openshift-release-dev/ocp-release:4.19.9-x86_64"
    message = release_mismatch(
        hc, {**manifest(), "source": {"hosted_cluster": {"spec": {}}, "release_image": older}}
    )
    assert message is not None and older in message and rendered in message
    assert f"--release-image {older}" in message
