"""Key rotation (issue 14 item 7): every referenced key escrowed, restored, and each Secret checked
with the key its stored value names."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hcp_etcd import aescbc
from hcp_etcd.encryption import (
    EscrowedKey,
    KeyReference,
    data_hash_mismatch,
    key_references,
    restore_keys,
)
from hcp_etcd.manifest import (
    ManifestError,
    build_manifest,
    escrowed_keys,
    referenced_key_objects,
    validate_manifest,
)
from hcp_etcd.operators.backup import EscrowEncryptionKeyOperator
from hcp_etcd.restore.backups import key_entries
from hcp_etcd.restore.verify import check_secret_decrypts
from tests.unit.test_manifest_retention import ARGS

# Go's hash/fnv golden values for New32 (FNV-1). FNV-1a would give 0xe40c292c for "a".
FNV1_32_GOLDEN = {b"": 0x811C9DC5, b"a": 0x050C5D7E, b"ab": 0x70772D38, b"abc": 0x439C2F4B}


def test_kas_key_name_is_fnv1_32_not_fnv1a() -> None:
    for data, value in FNV1_32_GOLDEN.items():
        assert aescbc.kas_key_name(data) == f"key-{value}"
    assert aescbc.kas_key_name(b"a") != f"key-{0xE40C292C}"


def hosted_cluster(status: dict[str, Any] | None = None, backup: str | None = None) -> dict[str, Any]:
    aes: dict[str, Any] = {"activeKey": {"name": "a-key-2"}}
    if backup:
        aes["backupKey"] = {"name": backup}
    hc: dict[str, Any] = {
        "metadata": {"namespace": "clusters", "name": "a"},
        "spec": {"secretEncryption": {"type": "aescbc", "aescbc": aes}},
    }
    if status is not None:
        hc["status"] = {"secretEncryption": status}
    return hc


def key_status(secret: str, key: bytes) -> dict[str, Any]:
    return {"provider": "AESCBC", "aescbc": {"secret": {"name": secret}, "dataHash": sha(key)}}


def sha(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


OLD, NEW = b"o" * 32, b"n" * 32
MID_ROTATION = {"activeKey": key_status("a-key", OLD), "targetKey": key_status("a-key-2", NEW)}


def test_key_references_read_spec_and_status() -> None:
    assert key_references(hosted_cluster()) == [KeyReference("spec.activeKey", "a-key-2")]
    refs = key_references(hosted_cluster(MID_ROTATION, backup="a-old"))
    assert refs == [
        KeyReference("spec.activeKey", "a-key-2"),
        KeyReference("spec.backupKey", "a-old"),
        KeyReference("status.activeKey", "a-key", sha(OLD)),
        KeyReference("status.targetKey", "a-key-2", sha(NEW)),
    ]
    # A KMS key in status (a migration from KMS) has no Secret to escrow.
    kms = {"activeKey": {"provider": "AWS", "aws": {"arn": "arn:aws:kms:x"}}}
    assert [r.role for r in key_references(hosted_cluster(kms))] == ["spec.activeKey"]
    with pytest.raises(RuntimeError, match="only AES-CBC"):
        kms_spec = {"secretEncryption": {"type": "kms"}}
        key_references({"metadata": {"namespace": "c", "name": "k"}, "spec": kms_spec})


def test_a_status_reference_whose_secret_changed_is_refused() -> None:
    ref = KeyReference("status.activeKey", "a-key", sha(OLD))
    assert data_hash_mismatch(ref, sha(OLD)) is None
    assert data_hash_mismatch(KeyReference("spec.activeKey", "a-key"), sha(NEW)) is None
    problem = data_hash_mismatch(ref, sha(NEW))
    assert problem and "status.activeKey names Secret a-key" in problem and sha(OLD) in problem


def escrowed(key: bytes, *roles: str) -> EscrowedKey:
    return EscrowedKey(sha(key), aescbc.kas_key_name(key), f"s3://k/{sha(key)}.key", list(roles), ["s"])


def test_restore_keys_newest_writes_the_other_reads() -> None:
    old, new = escrowed(OLD, "status.activeKey"), escrowed(NEW, "spec.activeKey", "status.targetKey")
    assert restore_keys([new, old]) == (new, old)
    # A rotation not started yet: the spec's key writes, the status' key (all data) reads.
    pending = escrowed(NEW, "spec.activeKey")
    assert restore_keys([pending, old]) == (pending, old)
    # No status (older HyperShift): the spec's two keys as they are.
    spec_only = [escrowed(NEW, "spec.activeKey"), escrowed(OLD, "spec.backupKey")]
    assert restore_keys(spec_only) == (spec_only[0], spec_only[1])
    same = escrowed(NEW, "spec.activeKey", "status.activeKey")
    assert restore_keys([same]) == (same, None)


def rotation_manifest() -> dict[str, Any]:
    old, new = escrowed(OLD, "status.activeKey"), escrowed(NEW, "spec.activeKey", "status.targetKey")
    args = {**ARGS, "key_location": new.location, "key_sha256": new.sha256}
    args.update(backup_key_location=old.location, backup_key_sha256=old.sha256)
    return build_manifest(**args, keys=[new.as_dict(), old.as_dict()])


def test_manifest_round_trip_records_every_key_never_the_key() -> None:
    m = rotation_manifest()
    assert validate_manifest(copy.deepcopy(m)) == m
    keys = m["encryption_key"]["keys"]
    assert [k["roles"] for k in keys] == [["spec.activeKey", "status.targetKey"], ["status.activeKey"]]
    assert keys[0]["kas_key_name"] == aescbc.kas_key_name(NEW) and keys[1]["sha256"] == sha(OLD)
    assert escrowed_keys(m) == keys
    assert referenced_key_objects(m) == {k["location"] for k in keys}
    # What an older restore reads: the newest key as activeKey, the old one as backupKey.
    assert key_entries(m)["activeKey"]["sha256"] == sha(NEW)
    assert key_entries(m)["backupKey"]["sha256"] == sha(OLD)
    for raw in (OLD, NEW):
        assert base64.b64encode(raw).decode() not in str(m) and raw.decode() not in str(m)


def test_old_manifests_still_read() -> None:
    old = build_manifest(**ARGS)
    assert "keys" not in old["encryption_key"] and validate_manifest(old) is old
    assert escrowed_keys(old) == [
        {"sha256": "c" * 64, "kas_key_name": None, "location": ARGS["key_location"],
         "roles": ["spec.activeKey"], "secrets": []},
    ]  # fmt: skip
    with_backup = build_manifest(**{**ARGS, "backup_key_location": "s3://b/k/old.key",
                                    "backup_key_sha256": "d" * 64})  # fmt: skip
    assert [k["roles"] for k in escrowed_keys(with_backup)] == [["spec.activeKey"], ["spec.backupKey"]]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: k[0].update(kas_key_name="activeKey"),
        lambda k: k[0].update(sha256="x"),
        lambda k: k[0].update(roles=["spec.somethingElse"]),
        lambda k: k[0].update(location="/tmp/key"),
        lambda k: k.pop(0),  # the restore's activeKey is not listed
        lambda k: k.clear(),
    ],
)
def test_manifest_keys_are_validated(mutate: Any) -> None:
    m = rotation_manifest()
    mutate(m["encryption_key"]["keys"])
    with pytest.raises(ManifestError):
        validate_manifest(m)


def encrypt(plain: bytes, key: bytes, name: str | None = None) -> bytes:
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    return aescbc.PREFIX + (name or aescbc.kas_key_name(key)).encode() + b":" + iv + body


def test_each_secret_is_checked_with_the_key_it_names() -> None:
    samples = [
        ("/kubernetes.io/secrets/ns/old", encrypt(b"k8s\x00a", OLD)),
        ("/kubernetes.io/secrets/ns/new", encrypt(b"k8s\x00b", NEW)),
    ]
    both = {aescbc.kas_key_name(OLD): OLD, aescbc.kas_key_name(NEW): NEW}
    ok = check_secret_decrypts(samples, both)
    assert ok.passed and aescbc.kas_key_name(OLD) in ok.detail and aescbc.kas_key_name(NEW) in ok.detail
    # Today's check had the new key only: the Secret still under the old key fails, named.
    only_new = check_secret_decrypts(samples, {aescbc.kas_key_name(NEW): NEW})
    assert not only_new.passed and "/ns/old" in only_new.detail and "/ns/new" not in only_new.detail
    assert "did not escrow" in only_new.detail
    # Escrowed, but not given to the restored cluster: said so.
    named = {aescbc.kas_key_name(OLD): "status.activeKey"}
    missing = check_secret_decrypts(samples, {aescbc.kas_key_name(NEW): NEW}, named)
    assert "escrowed by the backup but not in the restored cluster" in missing.detail
    # A value naming a key whose bytes are another key's: a wrong key, not a pass.
    forged = [("/kubernetes.io/secrets/ns/x", encrypt(b"k8s\x00c", os.urandom(32), aescbc.kas_key_name(NEW)))]
    assert not check_secret_decrypts(forged, both).passed


class _K8s:
    def __init__(self, hc: dict[str, Any], secrets: dict[str, bytes]) -> None:
        self.hc, self.secrets = hc, secrets

    def get_hosted_cluster(self, ref: Any) -> dict[str, Any]:
        return self.hc

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        return {"key": base64.b64encode(self.secrets[name]).decode()}


class _S3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def register_backup_location(self, *args: Any) -> None:
        pass

    def object_size(self, bucket: str, key: str) -> int | None:
        found = self.objects.get(f"{bucket}/{key}")
        return None if found is None else len(found)

    def put_bytes(self, data: bytes, bucket: str, key: str, kms: Any) -> None:
        self.objects[f"{bucket}/{key}"] = data


def escrow_operator(hc: dict[str, Any], secrets: dict[str, bytes]) -> tuple[EscrowEncryptionKeyOperator, _S3]:
    op = EscrowEncryptionKeyOperator(
        task_id="escrow", hosted_cluster="clusters/a", bucket="bkt", key_prefix="k"
    )
    s3 = _S3()
    op.__dict__.update(k8s=_K8s(hc, secrets), s3=s3)
    return op, s3


def test_escrow_writes_every_referenced_key_once() -> None:
    hc = hosted_cluster(MID_ROTATION, backup="a-key")
    op, s3 = escrow_operator(hc, {"a-key": OLD, "a-key-2": NEW})
    out = op.execute({})
    assert sorted(s3.objects.values()) == sorted([OLD, NEW])
    assert out["sha256"] == sha(NEW) and out["backup_key"]["sha256"] == sha(OLD)
    by_sha = {k["sha256"]: k for k in out["keys"]}
    assert by_sha[sha(NEW)]["roles"] == ["spec.activeKey", "status.targetKey"]
    assert by_sha[sha(OLD)] == {
        "sha256": sha(OLD),
        "kas_key_name": aescbc.kas_key_name(OLD),
        "location": f"s3://bkt/k/clusters/a/{sha(OLD)}.key",
        "roles": ["spec.backupKey", "status.activeKey"],
        "secrets": ["a-key"],
    }
    assert base64.b64encode(OLD).decode() not in str(out) and OLD.decode() not in str(out)


def test_escrow_refuses_a_status_key_that_is_gone_from_its_secret() -> None:
    op, _ = escrow_operator(hosted_cluster(MID_ROTATION), {"a-key": os.urandom(32), "a-key-2": NEW})
    with pytest.raises(RuntimeError, match=r"status\.activeKey names Secret a-key"):
        op.execute({})
