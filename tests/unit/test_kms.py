"""KMS-encrypted clusters: the stored KMS formats, the key ARNs a backup records, the restore's
refusal of a target with another key, and the verification through KMS."""

from __future__ import annotations

import base64
import copy
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hcp_etcd import kms
from hcp_etcd.encryption import kms_key_references, kms_record, kms_target_mismatch
from hcp_etcd.errors import RestoreInputError
from hcp_etcd.manifest import (
    ManifestError,
    build_manifest,
    escrowed_keys,
    kms_key_arns,
    referenced_key_objects,
    validate_manifest,
)
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.backup import EscrowEncryptionKeyOperator, read_escrow_keys
from hcp_etcd.restore.backups import key_entries
from hcp_etcd.restore.plan import prepare_objects
from hcp_etcd.restore.verify import check_kms_keys, check_secret_decrypts_kms
from hcp_sandbox import kms as sandbox_kms
from hcp_sandbox import render as sandbox_render
from tests.unit.test_key_rotation import _S3, SA_KEY_PEM
from tests.unit.test_manifest_retention import ARGS

ARN = "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555"
OLD_ARN = "arn:aws:kms:us-east-1:111122223333:key/99999999-2222-3333-4444-555555555555"
SECRET_KEY = "/kubernetes.io/secrets/payments/db"
SECRET = json.dumps({"kind": "Secret", "apiVersion": "v1", "data": {"password": "aHVudGVyMg=="}}).encode()


class FakeKms:
    """A KMS whose ciphertext is the key ARN's index and a one-time pad (enough to tell keys apart)."""

    def __init__(self, *arns: str) -> None:
        self.arns, self.pads, self.calls = list(arns), {}, 0

    def encrypt(self, arn: str, plaintext: bytes) -> bytes:
        pad = os.urandom(len(plaintext))
        blob = bytes([self.arns.index(arn)]) + bytes(a ^ b for a, b in zip(plaintext, pad, strict=True))
        self.pads[blob] = pad
        return blob

    def decrypt(self, blob: bytes) -> tuple[bytes, str]:
        self.calls += 1
        if blob not in self.pads:
            raise RuntimeError("KMS Decrypt refused: InvalidCiphertextException")
        return bytes(a ^ b for a, b in zip(blob[1:], self.pads[blob], strict=True)), self.arns[blob[0]]


def test_provider_name_is_hypershifts() -> None:
    # openshift/hypershift v2/kas/secretencryption_test.go: ARN "test" -> "awskmskey-3157003241".
    assert kms.provider_name("test") == "awskmskey-3157003241"
    assert sandbox_kms.provider_name(ARN) == kms.provider_name(ARN)


def test_a_kms_v2_value_written_by_the_sandbox_opens_with_its_seed() -> None:
    fake = FakeKms(ARN)
    envelope = sandbox_kms.new_envelope(ARN, fake.encrypt)
    value = envelope.encrypt(SECRET_KEY, SECRET)
    assert value.startswith(b"k8s:enc:kms:v2:" + kms.provider_name(ARN).encode() + b":")
    parsed = kms.parse(value)
    assert (parsed.version, parsed.key_id, parsed.source_type) == ("v2", ARN, kms.SOURCE_HKDF_SEED)
    seed, used = fake.decrypt(kms.kms_ciphertext(parsed.encrypted_dek))
    assert used == ARN
    assert kms.open_data(parsed, seed, SECRET_KEY) == SECRET
    # The etcd key is the AES-GCM additional data: the value does not open under another key.
    with pytest.raises(kms.KmsFormatError, match="tag mismatch"):
        kms.open_data(parsed, seed, "/kubernetes.io/secrets/payments/other")
    with pytest.raises(kms.KmsFormatError):
        kms.open_data(parsed, os.urandom(32), SECRET_KEY)


def v1_value(dek: bytes, wrapped: bytes, plain: bytes, etcd_key: str, cbc: bool = False) -> bytes:
    """``envelope/envelope.go``: prefix, uint16 length, encrypted DEK, then GCM (or pre-1.25 CBC)."""
    if cbc:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(dek), modes.CBC(iv)).encryptor()
        data = iv + enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    else:
        nonce = os.urandom(12)
        data = nonce + AESGCM(dek).encrypt(nonce, plain, etcd_key.encode())
    name = kms.provider_name(ARN).encode()
    return b"k8s:enc:kms:v1:" + name + b":" + len(wrapped).to_bytes(2, "big") + wrapped + data


@pytest.mark.parametrize("cbc", [False, True])
def test_a_kms_v1_value_opens_with_its_dek(cbc: bool) -> None:
    dek = os.urandom(32)
    value = v1_value(dek, b"1" + b"blob", SECRET, SECRET_KEY, cbc)
    parsed = kms.parse(value)
    assert (parsed.version, parsed.key_id, parsed.encrypted_dek) == ("v1", None, b"1blob")
    assert kms.kms_ciphertext(parsed.encrypted_dek) == b"blob"
    assert kms.open_data(parsed, dek, SECRET_KEY) == SECRET


@pytest.mark.parametrize(
    "value",
    [b"k8s:enc:aescbc:v1:key-1:xxxx", b"k8s:enc:kms:v2:", b"k8s:enc:kms:v2:awskmskey-1:\x0a\x05ab", b"{}"],
)
def test_damaged_or_foreign_values_are_refused(value: bytes) -> None:
    with pytest.raises(kms.KmsFormatError):
        kms.parse(value)


def kms_cluster(
    status: dict[str, Any] | None = None, backup: str | None = None, provider: str = "AWS"
) -> dict:
    aws: dict[str, Any] = {
        "region": "us-east-1",
        "activeKey": {"arn": ARN},
        "auth": {"awsKms": "arn:aws:iam::1:role/r"},
    }
    if backup:
        aws["backupKey"] = {"arn": backup}
    hc: dict[str, Any] = {
        "metadata": {"namespace": "clusters", "name": "a"},
        "spec": {"secretEncryption": {"type": "kms", "kms": {"provider": provider, "aws": aws}}},
    }
    if status:
        hc["status"] = {"secretEncryption": status}
    return hc


def test_the_backup_records_every_key_arn_writing_key_first() -> None:
    assert kms_record(kms_cluster()) == {
        "type": "kms", "provider": "AWS", "region": "us-east-1", "kms_key_arns": [ARN],
        "kms_keys": [{"arn": ARN, "provider_name": kms.provider_name(ARN), "roles": ["spec.activeKey"]}],
    }  # fmt: skip
    # Mid-rotation: the status' target writes, its active key still holds Secrets.
    mid = {
        "activeKey": {"provider": "AWS", "aws": {"arn": OLD_ARN}},
        "targetKey": {"provider": "AWS", "aws": {"arn": ARN}},
    }
    record = kms_record(kms_cluster(mid))
    assert record["kms_key_arns"] == [ARN, OLD_ARN]
    assert [k["roles"] for k in record["kms_keys"]] == [
        ["spec.activeKey", "status.targetKey"],
        ["status.activeKey"],
    ]
    assert [r.role for r in kms_key_references(kms_cluster(backup=OLD_ARN))] == [
        "spec.activeKey",
        "spec.backupKey",
    ]


def test_a_kms_cluster_other_than_aws_is_refused() -> None:
    with pytest.raises(RuntimeError, match="only AWS KMS is supported"):
        kms_record(kms_cluster(provider="Azure"))
    with pytest.raises(RuntimeError, match="only AWS KMS"):
        read_escrow_keys(None, ClusterRef("clusters", "a"), kms_cluster(provider="IBMCloud"))  # type: ignore[arg-type]


def kms_manifest(arns: list[str] | None = None) -> dict[str, Any]:
    args = {**ARGS, "key_location": None, "key_sha256": None}
    record = {"type": "kms", "provider": "AWS", "region": "us-east-1", "kms_key_arns": arns or [ARN]}
    return build_manifest(**args, encryption=record)


def test_a_kms_manifest_has_no_key_to_escrow_and_older_manifests_still_read() -> None:
    m = kms_manifest([ARN, OLD_ARN])
    assert "encryption_key" not in m and kms_key_arns(m) == [ARN, OLD_ARN]
    assert escrowed_keys(m) == [] and key_entries(m) == {} and referenced_key_objects(m) == set()
    old = build_manifest(**ARGS)  # AES-CBC, no `encryption` at all: as every earlier release wrote
    assert (
        kms_key_arns(validate_manifest(old)) is None and key_entries(old)["activeKey"]["sha256"] == "c" * 64
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m["encryption"].update(kms_key_arns=[]),
        lambda m: m["encryption"].update(kms_key_arns=["not-an-arn"]),
        lambda m: m["encryption"].update(kms_key_arns=[ARN, ARN]),
        lambda m: m["encryption"].update(type="secretbox"),
        lambda m: m.update(encryption_key={"location": "s3://b/k", "sha256": "c" * 64}),
        lambda m: m.pop("encryption"),  # then it is an AES-CBC manifest without its key
    ],
)
def test_kms_manifests_are_validated(mutate: Any) -> None:
    bad = copy.deepcopy(kms_manifest())
    mutate(bad)
    with pytest.raises(ManifestError):
        validate_manifest(bad)


def rendered(arn: str | None) -> list[dict[str, Any]]:
    return sandbox_render.manifests("new1", members=3, kms_key_arn=arn)


def plan(objects: list[dict[str, Any]], manifest: dict[str, Any]) -> Any:
    return prepare_objects(objects, ClusterRef("clusters", "new1"), "https://s3/x", manifest, "s3://m", "run")


def test_a_restore_needs_the_backups_kms_key_and_creates_no_key_secret() -> None:
    restored = plan(rendered(ARN), kms_manifest())
    assert restored.key_secrets == {}
    assert not [o for o in restored.objects if o["metadata"]["name"].endswith("etcd-encryption-key")]
    # Mid-rotation: the restored cluster reads the older key too.
    restored = plan(rendered(ARN), kms_manifest([ARN, OLD_ARN]))
    assert restored.hosted_cluster["spec"]["secretEncryption"]["kms"]["aws"]["backupKey"] == {"arn": OLD_ARN}


@pytest.mark.parametrize(
    ("objects", "names"),
    [
        (lambda: rendered(OLD_ARN), [ARN, OLD_ARN, "--kms-key-arn"]),
        (lambda: rendered(None), [ARN, "'aescbc'", "--kms-key-arn"]),
    ],
)
def test_a_restore_into_another_key_is_refused_naming_both(objects: Any, names: list[str]) -> None:
    with pytest.raises(RestoreInputError) as refused:
        plan(objects(), kms_manifest())
    for name in names:
        assert name in str(refused.value)


def test_a_mid_rotation_backup_refuses_another_backup_key() -> None:
    hc = kms_cluster(backup="arn:aws:kms:us-east-1:1:key/other")
    assert "backupKey" in (kms_target_mismatch(hc, [ARN, OLD_ARN]) or "")
    assert kms_target_mismatch(kms_cluster(backup=OLD_ARN), [ARN, OLD_ARN]) is None


def test_secrets_decrypt_through_kms_once_per_dek() -> None:
    fake = FakeKms(ARN, OLD_ARN)
    new, old = sandbox_kms.new_envelope(ARN, fake.encrypt), sandbox_kms.new_envelope(OLD_ARN, fake.encrypt)
    samples = [
        (f"/kubernetes.io/secrets/ns/s{i}", new.encrypt(f"/kubernetes.io/secrets/ns/s{i}", SECRET))
        for i in range(3)
    ]
    check = check_secret_decrypts_kms(samples, [ARN], fake.decrypt)
    assert check.passed and fake.calls == 1, check.detail
    # A Secret under a key the backup did not record, a KMS refusal, a value that is not KMS.
    under_old = [("/kubernetes.io/secrets/ns/o", old.encrypt("/kubernetes.io/secrets/ns/o", SECRET))]
    check = check_secret_decrypts_kms(under_old, [ARN], fake.decrypt)
    assert not check.passed and kms.provider_name(OLD_ARN) in check.detail
    assert check_secret_decrypts_kms(under_old, [ARN, OLD_ARN], fake.decrypt).passed

    def refuse(blob: bytes) -> tuple[bytes, str]:
        raise RuntimeError("KMS Decrypt refused: AccessDeniedException")

    check = check_secret_decrypts_kms(samples[:1], [ARN], refuse)
    assert not check.passed and "kms:Decrypt" in check.detail and "AccessDenied" in check.detail
    plain = [("/kubernetes.io/secrets/ns/p", b"k8s:enc:aescbc:v1:key-1:" + os.urandom(32))]
    assert not check_secret_decrypts_kms(plain, [ARN], fake.decrypt).passed
    assert not check_secret_decrypts_kms([], [ARN], fake.decrypt).passed


def test_the_restored_clusters_kms_keys_are_compared() -> None:
    assert check_kms_keys((ARN, None), [ARN]).passed
    assert not check_kms_keys((OLD_ARN, None), [ARN]).passed
    assert not check_kms_keys((ARN, None), [ARN, OLD_ARN]).passed
    assert check_kms_keys((ARN, OLD_ARN), [ARN, OLD_ARN]).passed


class _K8s:
    def __init__(self, hc: dict[str, Any]) -> None:
        self.hc = hc

    def get_hosted_cluster(self, ref: Any) -> dict[str, Any]:
        return self.hc

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        assert (namespace, name) == ("clusters-a", "sa-signing-key"), f"read {namespace}/{name}"
        return {"service-account.key": base64.b64encode(SA_KEY_PEM).decode()}


def test_escrow_of_a_kms_cluster_records_the_arns_and_escrows_only_the_sa_key(capsys: Any) -> None:
    op = EscrowEncryptionKeyOperator(
        task_id="escrow", hosted_cluster="clusters/a", bucket="bkt", key_prefix="k"
    )
    s3 = _S3()
    op.__dict__.update(k8s=_K8s(kms_cluster()), s3=s3)
    out = op.execute({})
    assert out["location"] is None and out["encryption"]["kms_key_arns"] == [ARN]
    assert [k.split("/")[-2] for k in s3.objects] == ["sa-signing-key"]
    assert out["service_account_key"]["public_key_sha256"]
    assert "no key to escrow" in capsys.readouterr().out
    manifest = build_manifest(
        **{**ARGS, "key_location": out["location"], "key_sha256": out["sha256"]},
        encryption=out["encryption"], service_account_key=out["service_account_key"],
    )  # fmt: skip
    assert referenced_key_objects(manifest) == {out["service_account_key"]["location"]}


def test_the_hook_decrypts_through_kms_and_says_why_it_cannot(monkeypatch: Any) -> None:
    import boto3
    from moto import mock_aws

    from hcp_etcd.hooks.kms import KeyManagementHook, KmsDecryptError

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "y"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("kms", region_name="us-east-1")
        arn = client.create_key()["KeyMetadata"]["Arn"]
        envelope = sandbox_kms.new_envelope(
            arn, lambda a, p: client.encrypt(KeyId=a, Plaintext=p)["CiphertextBlob"]
        )
        value = envelope.encrypt(SECRET_KEY, SECRET)
        hook = KeyManagementHook(aws_conn_id=None)
        check = check_secret_decrypts_kms([(SECRET_KEY, value)], [arn], hook.decrypt)
        assert check.passed, check.detail
        # A ciphertext no key of this account made (moto does not refuse disabled keys).
        with pytest.raises(KmsDecryptError, match="KMS Decrypt refused: "):
            hook.decrypt(b"\x01" * 64)


class _Hook:
    """Stands for KeyManagementHook: the FakeKms of the test, or a refusal."""

    fake: FakeKms | None = None

    def __init__(self, aws_conn_id: str) -> None:
        self.aws_conn_id = aws_conn_id

    def decrypt(self, blob: bytes, region_name: str | None = None) -> tuple[bytes, str]:
        if self.fake is None:
            raise RuntimeError("KMS Decrypt refused: AccessDeniedException")
        return self.fake.decrypt(blob)


@pytest.mark.parametrize("refuse", [False, True])
def test_backup_verify_decrypts_a_secret_of_the_snapshot_through_kms(refuse: bool, monkeypatch: Any) -> None:
    from hcp_etcd import etcd
    from hcp_etcd.hooks.hosted_cluster import ExecResult
    from hcp_etcd.operators.backup import VerifySnapshotsOperator

    fake = FakeKms(ARN)
    value = sandbox_kms.new_envelope(ARN, fake.encrypt).encrypt(SECRET_KEY, SECRET)
    stdout = json.dumps({"kvs": [{"key": base64.b64encode(SECRET_KEY.encode()).decode(),
                                  "value": base64.b64encode(value).decode()}]})  # fmt: skip
    op = VerifySnapshotsOperator(task_id="verify", hosted_cluster="clusters/a", aws_conn_id="aws_x")
    op.__dict__.update(k8s=_K8s(kms_cluster()))
    op.kms_hook_class = f"{__name__}._Hook"
    monkeypatch.setattr(_Hook, "fake", None if refuse else fake)
    monkeypatch.setattr(op, "exec_in_pod", lambda *a, **k: ExecResult(0, stdout, ""))
    canonical = etcd.MemberSnapshot("etcd-0", None)  # type: ignore[arg-type]
    if refuse:
        with pytest.raises(RuntimeError, match=r"do not decrypt through AWS KMS.*kms:Decrypt"):
            op._kms_decrypts("clusters-a", canonical, [])
        return
    check = op._kms_decrypts("clusters-a", canonical, [("/kubernetes.io/configmaps/ns/c", b"{}")])
    assert check is not None and check["passed"] and SECRET_KEY in check["detail"]
    # An AES-CBC cluster: nothing to do here (its key is escrowed).
    op.__dict__.update(k8s=_K8s({"spec": {"secretEncryption": {"type": "aescbc"}}}))
    assert op._kms_decrypts("clusters-a", canonical, []) is None


def test_a_drill_clone_of_a_kms_cluster_keeps_its_key() -> None:
    from hcp_etcd.restore.plan import clone_objects

    source = next(o for o in rendered(ARN) if o["kind"] == "HostedCluster")
    source["metadata"]["name"] = "prod1"
    clone = clone_objects(source, ClusterRef("hcp-etcd-drills", "prod1-drill-20261201"))
    restored = prepare_objects(
        clone.objects, ClusterRef("hcp-etcd-drills", "prod1-drill-20261201"), "https://s3/x", kms_manifest(),
        "s3://m", "run",
    )  # fmt: skip
    assert restored.key_secrets == {}
    assert restored.hosted_cluster["spec"]["secretEncryption"]["kms"]["aws"]["activeKey"] == {"arn": ARN}
