"""The service-account signing key (issue 16, first bullet): escrowed with each backup, recorded by
fingerprint in the manifest, given back through ``spec.serviceAccountSigningKey`` by a restore,
compared by the verification, kept by key GC while a manifest refers to it."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hcp_etcd import sakey
from hcp_etcd.manifest import ManifestError, build_manifest, referenced_key_objects, validate_manifest
from hcp_etcd.naming import ClusterRef, encryption_key_key, service_account_key_key
from hcp_etcd.restore.plan import RESTORED_BY_ANNOTATION, clone_objects, prepare_objects
from hcp_etcd.restore.verify import check_service_account_key
from tests.unit.test_key_rotation import SA_KEY_PEM, escrow_operator, hosted_cluster
from tests.unit.test_manifest_retention import ARGS
from tests.unit.test_restore import manifest, rendered, uri

REF = ClusterRef("clusters", "a")


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def upstream_public_pem(private_pem: bytes) -> bytes:
    """``certs.PublicKeyToPem`` (support/certs/tls.go): PKIX DER under the header RSA PUBLIC KEY."""
    der = _spki(serialization.load_pem_private_key(private_pem, password=None).public_key())
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN RSA PUBLIC KEY-----\n" + lines + b"\n-----END RSA PUBLIC KEY-----\n"


SA_PUBLIC_SHA = hashlib.sha256(
    _spki(serialization.load_pem_private_key(SA_KEY_PEM, None).public_key())
).hexdigest()
SA_ENTRY = {
    "location": f"s3://bk/hcp-etcd/keys/clusters/prod1/sa-signing-key/{hashlib.sha256(SA_KEY_PEM).hexdigest()}.key",
    "sha256": hashlib.sha256(SA_KEY_PEM).hexdigest(),
    "public_key_sha256": SA_PUBLIC_SHA,
    "secret": "clusters-prod1/sa-signing-key",
}


def test_fingerprints_of_the_private_key_and_of_upstreams_public_pem_agree() -> None:
    assert sakey.private_key_fingerprint(SA_KEY_PEM) == SA_PUBLIC_SHA
    assert sakey.public_key_fingerprints(upstream_public_pem(SA_KEY_PEM)) == [SA_PUBLIC_SHA]
    # A rotation appends old-key.pub after the current key (serviceAccountSigningKeyBytes): both, in order.
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old_pem = old.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    both = sakey.public_key_fingerprints(upstream_public_pem(SA_KEY_PEM) + old_pem)
    assert both == [SA_PUBLIC_SHA, hashlib.sha256(_spki(old.public_key())).hexdigest()]
    with pytest.raises(sakey.ServiceAccountKeyError):
        sakey.private_key_fingerprint(b"not a key")


def test_escrow_key_object_sits_with_the_clusters_keys_and_ends_in_key() -> None:
    sha = "d" * 64
    key = service_account_key_key("k", REF, sha)
    assert key == f"k/clusters/a/sa-signing-key/{sha}.key"
    assert key.startswith(encryption_key_key("k", REF, sha).rsplit("/", 1)[0] + "/")  # key GC lists it


def test_escrow_writes_the_control_planes_signing_key_and_returns_fingerprints_only() -> None:
    op, s3 = escrow_operator(hosted_cluster(), {"a-key-2": b"k" * 32})
    out = op.execute({})
    sa = out["service_account_key"]
    assert (
        s3.objects[f"bkt/k/clusters/a/sa-signing-key/{hashlib.sha256(SA_KEY_PEM).hexdigest()}.key"]
        == SA_KEY_PEM
    )
    assert sa == {
        "location": f"s3://bkt/k/clusters/a/sa-signing-key/{hashlib.sha256(SA_KEY_PEM).hexdigest()}.key",
        "sha256": hashlib.sha256(SA_KEY_PEM).hexdigest(),
        "public_key_sha256": SA_PUBLIC_SHA,
        "secret": "clusters-a/sa-signing-key",
    }
    body = SA_KEY_PEM.split(b"\n")[5].decode()
    assert body not in str(out) and base64.b64encode(SA_KEY_PEM).decode() not in str(out)


def test_manifest_records_the_key_and_key_gc_keeps_it() -> None:
    entry = {**SA_ENTRY, "location": "s3://b/k/clusters/a/sa-signing-key/" + SA_ENTRY["sha256"] + ".key"}
    m = build_manifest(**ARGS, service_account_key=entry)
    assert m["service_account_key"] == entry
    assert entry["location"] in referenced_key_objects(m)
    # Older manifests (no service_account_key) stay valid.
    old = build_manifest(**ARGS)
    assert "service_account_key" not in old and validate_manifest(copy.deepcopy(old))
    for bad in ({**entry, "public_key_sha256": "x"}, {**entry, "location": "/tmp/k"}, "key"):
        broken = {**m, "service_account_key": bad}
        with pytest.raises(ManifestError, match="service_account_key"):
            validate_manifest(broken)


def test_restore_plan_gives_the_escrowed_key_through_the_spec() -> None:
    target = ClusterRef("clusters", "prod1")
    m = {**manifest(), "service_account_key": SA_ENTRY}
    plan = prepare_objects(list(rendered("prod1")), target, "https://s3/x?sig", m, uri(m), "dag/run")
    assert plan.sa_key_secret == "prod1-sa-token-issuer-key"
    assert plan.hosted_cluster["spec"]["serviceAccountSigningKey"] == {"name": "prod1-sa-token-issuer-key"}
    secret = next(o for o in plan.objects if o["metadata"]["name"] == "prod1-sa-token-issuer-key")
    assert secret["metadata"]["annotations"][RESTORED_BY_ANNOTATION] == "dag/run"
    assert "key" not in (secret.get("data") or {}), "the key goes in only in the create task"
    kinds = [o["kind"] for o in plan.objects]
    assert kinds.index("Secret") < kinds.index("HostedCluster")
    plan.fill_service_account_key(SA_KEY_PEM)
    assert base64.b64decode(secret["data"]["key"]) == SA_KEY_PEM


def test_restore_plan_replaces_a_rendered_key_and_keeps_old_key_pub() -> None:
    objs = list(rendered("prod1"))
    hc = next(o for o in objs if o["kind"] == "HostedCluster")
    hc["spec"]["serviceAccountSigningKey"] = {"name": "mine"}
    rendered_key = {"key": base64.b64encode(b"another key").decode(), "old-key.pub": "b2xk"}
    objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mine"}, "data": rendered_key})
    m = {**manifest(), "service_account_key": SA_ENTRY}
    plan = prepare_objects(objs, ClusterRef("clusters", "prod1"), "", m, uri(m), "r")
    assert plan.sa_key_secret == "mine"
    secret = next(o for o in plan.objects if o["metadata"]["name"] == "mine")
    assert secret["data"] == {"old-key.pub": "b2xk"}


def test_no_escrowed_key_or_a_drill_keeps_hypershifts_own() -> None:
    target = ClusterRef("clusters", "prod1")
    old = manifest()  # taken before the key was escrowed
    plan = prepare_objects(list(rendered("prod1")), target, "", old, uri(old), "r")
    assert plan.sa_key_secret is None and "serviceAccountSigningKey" not in plan.hosted_cluster["spec"]
    m = {**manifest(), "service_account_key": SA_ENTRY}
    source = next(o for o in rendered("prod1") if o["kind"] == "HostedCluster")
    source["spec"]["serviceAccountSigningKey"] = {"name": "prod1-sa-token-issuer-key"}
    drill = ClusterRef("hcp-etcd-drills", "prod1-drill-20250301")
    clone = clone_objects(source, drill)
    new = prepare_objects(clone.objects, drill, "", m, uri(m), "r", escrowed_service_account_key=False)
    assert new.sa_key_secret is None and "serviceAccountSigningKey" not in new.hosted_cluster["spec"]
    escrowed = prepare_objects(clone.objects, drill, "", m, uri(m), "r", escrowed_service_account_key=True)
    assert escrowed.hosted_cluster["spec"]["serviceAccountSigningKey"] == {
        "name": "prod1-drill-20250301-sa-token-issuer-key"
    }


def test_verify_check_compares_both_fields_with_the_backup() -> None:
    other = "e" * 64
    assert check_service_account_key(SA_PUBLIC_SHA, SA_PUBLIC_SHA, [SA_PUBLIC_SHA, other], True).passed
    wrong = check_service_account_key(SA_PUBLIC_SHA, other, [other], True)
    assert not wrong.passed and wrong.name == "sa_key_matches_manifest" and other in wrong.detail
    # The private key is the backup's but kube-apiserver would validate with another public key.
    assert not check_service_account_key(SA_PUBLIC_SHA, SA_PUBLIC_SHA, [other], True).passed
    assert not check_service_account_key(SA_PUBLIC_SHA, None, [], True).passed
    # A drill keeping a key of its own must not sign with the source's.
    assert check_service_account_key(SA_PUBLIC_SHA, other, [other], False).passed
    same = check_service_account_key(SA_PUBLIC_SHA, SA_PUBLIC_SHA, [SA_PUBLIC_SHA], False)
    assert not same.passed and same.name == "sa_key_is_new"
    assert not check_service_account_key(SA_PUBLIC_SHA, None, [], False).passed


def test_escrow_without_access_to_the_signing_key_still_backs_up_and_says_what_to_grant(capsys) -> None:
    """An installation whose RBAC predates the rule must not lose its nightly backups over the tokens."""
    from kubernetes.client.rest import ApiException

    op, s3 = escrow_operator(hosted_cluster(), {"a-key-2": b"k" * 32})
    read = op.k8s.read_secret_data

    def forbidden(namespace: str, name: str) -> dict[str, str]:
        if name == sakey.CONTROL_PLANE_SECRET:
            raise ApiException(status=403, reason="Forbidden")
        return read(namespace, name)

    op.k8s.read_secret_data = forbidden
    out = op.execute({})
    assert out["service_account_key"] is None and out["sha256"], out
    assert not [k for k in s3.objects if "/sa-signing-key/" in k]
    logged = capsys.readouterr()
    assert "grant get on it: include/rbac/10-backup.yaml" in logged.out + logged.err
