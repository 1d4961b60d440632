"""Which encryption keys a HostedCluster references, and which of them a restored cluster gets (pure).

HyperShift (openshift/hypershift ``main`` 3ee9615567, ``api/hypershift/v1beta1/hostedcluster_types.go``
and ``control-plane-operator/controllers/hostedcontrolplane/v2/kas/secretencryption.go:
deriveAESCBCEncryptionConfig``) keeps a key in a Secret next to the HostedCluster, referenced from:

- ``spec.secretEncryption.aescbc.activeKey``: the key new writes should use;
- ``spec.secretEncryption.aescbc.backupKey``: deprecated, a read key honoured only while the status
  has no ``activeKey``;
- ``status.secretEncryption.activeKey``: the key all data was last confirmed encrypted with;
- ``status.secretEncryption.targetKey``: during a rotation, the key being rolled out. Until it is
  promoted the old key writes and it reads; then it writes and the old one reads, while every Secret
  is rewritten under it. Mid-rotation, etcd holds Secrets under both keys.

A status reference carries ``dataHash``, the hex SHA-256 of the key it means.

A ``type: kms`` cluster (``hcp create cluster aws --kms-key-arn``, ``cmd/cluster/aws/create.go``) has
no key to escrow: kube-apiserver envelope-encrypts with AWS KMS keys named by ARN in
``spec.secretEncryption.kms.aws`` (``activeKey``, deprecated ``backupKey``; ``AWSKMSSpec`` in
``api/hypershift/v1beta1/aws.go``) and, during a rotation, ``status.secretEncryption``
(``{provider: AWS, aws: {arn}}``; ``v2/kas/kms.go: deriveKMSKeys``). A backup records those ARNs
(:func:`kms_key_references`); a restore needs the same keys (:func:`kms_target_mismatch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPEC_ACTIVE = "spec.activeKey"
SPEC_BACKUP = "spec.backupKey"
STATUS_ACTIVE = "status.activeKey"
STATUS_TARGET = "status.targetKey"
ROLES = (SPEC_ACTIVE, SPEC_BACKUP, STATUS_ACTIVE, STATUS_TARGET)


@dataclass(frozen=True)
class KeyReference:
    """One reference of a HostedCluster to an AES-CBC key Secret.

    :param role: where it is (one of :data:`ROLES`).
    :param secret: the Secret's name (in the HostedCluster's namespace).
    :param data_hash: the SHA-256 the status records for the key (status references only).
    """

    role: str
    secret: str
    data_hash: str | None = None


@dataclass
class EscrowedKey:
    """One key, by content, with every reference that named it.

    :param sha256: hex SHA-256 of the key bytes (its identity and escrow object name).
    :param kas_key_name: its name in kube-apiserver's EncryptionConfiguration (``key-<fnv32>``).
    :param location: ``s3://`` URL of the escrowed object.
    :param roles: the references that name it, in :data:`ROLES` order.
    :param secrets: the Secrets that hold it.
    """

    sha256: str
    kas_key_name: str
    location: str
    roles: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The manifest's entry (no key material)."""
        return {
            "sha256": self.sha256,
            "kas_key_name": self.kas_key_name,
            "location": self.location,
            "roles": list(self.roles),
            "secrets": list(self.secrets),
        }


AESCBC = "aescbc"
KMS = "kms"


def encryption_type(hc: dict[str, Any]) -> str:
    """``spec.secretEncryption.type`` of a HostedCluster (``aescbc`` when it has none: older specs).

    :param hc: a HostedCluster.
    """
    enc = (hc.get("spec") or {}).get("secretEncryption") or {}
    kind = enc.get("type") or AESCBC
    if kind not in (AESCBC, KMS):
        raise RuntimeError(f"unknown spec.secretEncryption.type {kind!r} (HyperShift knows aescbc and kms)")
    return str(kind)


@dataclass(frozen=True)
class KmsKeyReference:
    """One reference of a HostedCluster to an AWS KMS key.

    :param role: where it is (one of :data:`ROLES`).
    :param arn: the key ARN.
    """

    role: str
    arn: str


def kms_key_references(hc: dict[str, Any]) -> list[KmsKeyReference]:
    """Every AWS KMS key reference of a ``type: kms`` HostedCluster, spec first.

    Refuses a KMS provider other than AWS (the project runs on AWS) and a spec without an active key.

    :param hc: the HostedCluster as read from the API.
    """
    meta = hc.get("metadata") or {}
    enc = (hc.get("spec") or {}).get("secretEncryption") or {}
    kms = enc.get("kms") or {}
    aws = kms.get("aws") or {}
    active = (aws.get("activeKey") or {}).get("arn")
    if kms.get("provider") != "AWS" or not active:
        raise RuntimeError(
            f"HostedCluster {meta.get('namespace')}/{meta.get('name')} has spec.secretEncryption.type kms "
            f"with provider {kms.get('provider')!r} and no spec.secretEncryption.kms.aws.activeKey.arn: "
            "only AWS KMS is supported"
        )
    refs = [KmsKeyReference(SPEC_ACTIVE, active)]
    backup = (aws.get("backupKey") or {}).get("arn")
    if backup:
        refs.append(KmsKeyReference(SPEC_BACKUP, backup))
    status = ((hc.get("status") or {}).get("secretEncryption")) or {}
    for role, field_name in ((STATUS_ACTIVE, "activeKey"), (STATUS_TARGET, "targetKey")):
        entry = status.get(field_name) or {}
        arn = (entry.get("aws") or {}).get("arn") if entry.get("provider") == "AWS" else None
        if arn:
            refs.append(KmsKeyReference(role, arn))
    return refs


def kms_record(hc: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``encryption`` of a ``type: kms`` cluster: the ARNs (writing key first), each
    with the references that named it and its provider name, and the region. No key material.

    :param hc: the HostedCluster as read from the API.
    """
    from hcp_etcd.kms import provider_name

    by_arn: dict[str, list[str]] = {}
    for ref in kms_key_references(hc):
        by_arn.setdefault(ref.arn, []).append(ref.role)
    # The key a restored cluster writes with: the rotation's target, else the spec's active key.
    writer = next((a for a, r in by_arn.items() if STATUS_TARGET in r), None) or next(iter(by_arn))
    arns = [writer, *(a for a in by_arn if a != writer)]
    aws = ((hc.get("spec") or {}).get("secretEncryption") or {}).get("kms", {}).get("aws") or {}
    return {
        "type": KMS,
        "provider": "AWS",
        "region": aws.get("region"),
        "kms_key_arns": arns,
        "kms_keys": [{"arn": a, "provider_name": provider_name(a), "roles": by_arn[a]} for a in arns],
    }


def target_kms_arns(hc: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(activeKey, backupKey)`` ARNs of a HostedCluster to create (None where it has none).

    :param hc: a HostedCluster (spec only: a new cluster has no status).
    """
    aws = (((hc.get("spec") or {}).get("secretEncryption") or {}).get("kms") or {}).get("aws") or {}
    return (aws.get("activeKey") or {}).get("arn"), (aws.get("backupKey") or {}).get("arn")


def kms_target_mismatch(hc: dict[str, Any], arns: list[str]) -> str | None:
    """Why a HostedCluster to create cannot read a KMS backup's Secrets, or None.

    Its kube-apiserver must write with the backup's writing key (``arns[0]``) and read with the other
    one, if any (a backup taken mid-rotation holds Secrets under both): ``activeKey`` must be the
    first ARN and ``backupKey``, when the backup has a second one, that one (a new cluster has no
    status, so its ``spec.backupKey`` is honoured: ``deriveKMSKeys``).

    :param hc: the HostedCluster to create.
    :param arns: the manifest's ``encryption.kms_key_arns``.
    """
    enc = (hc.get("spec") or {}).get("secretEncryption") or {}
    provider = (enc.get("kms") or {}).get("provider")
    active, backup = target_kms_arns(hc)
    fix = (
        f"render the cluster with the backup's key (hcp create cluster aws --kms-key-arn {arns[0]} ...; "
        "its kms-provider role must be allowed kms:Encrypt and kms:Decrypt on it)"
    )
    if (enc.get("type") or AESCBC) != KMS or provider != "AWS" or not active:
        return (
            f"the backup's Secrets are encrypted with AWS KMS key {arns[0]}, but the HostedCluster to "
            f"create has secretEncryption type {enc.get('type') or AESCBC!r}"
            + (f" (provider {provider!r})" if enc.get("type") == KMS else "")
            + f" and would never read them: {fix}"
        )
    if active != arns[0]:
        return (
            f"the backup's Secrets are encrypted with AWS KMS key {arns[0]}, but the HostedCluster to "
            f"create has spec.secretEncryption.kms.aws.activeKey.arn {active}: {fix}"
        )
    others = arns[1:]
    if others and backup not in (None, others[0]):
        return (
            f"the backup holds Secrets under AWS KMS key {others[0]} too (taken mid-rotation), but the "
            f"HostedCluster to create has backupKey {backup}: set spec.secretEncryption.kms.aws.backupKey"
            f".arn to {others[0]}, or remove it (the restore sets it)"
        )
    if len(others) > 1:
        return f"the backup names {len(arns)} KMS keys; a restored cluster can read with two at most"
    return None


def key_references(hc: dict[str, Any]) -> list[KeyReference]:
    """Every AES-CBC key reference of a HostedCluster, spec first; refuses one that is not AES-CBC.

    :param hc: the HostedCluster as read from the API.
    """
    enc = (hc.get("spec") or {}).get("secretEncryption") or {}
    aescbc = enc.get("aescbc") or {}
    active = (aescbc.get("activeKey") or {}).get("name")
    if enc.get("type", "aescbc") != "aescbc" or not active:
        raise RuntimeError(
            f"HostedCluster {hc['metadata']['namespace']}/{hc['metadata']['name']} has no "
            f"spec.secretEncryption.aescbc.activeKey (type {enc.get('type')!r}); only AES-CBC key "
            "escrow is supported: a restore without the key cannot read the secrets in etcd"
        )
    refs = [KeyReference(SPEC_ACTIVE, active)]
    backup = (aescbc.get("backupKey") or {}).get("name")
    if backup:
        refs.append(KeyReference(SPEC_BACKUP, backup))
    status = ((hc.get("status") or {}).get("secretEncryption")) or {}
    for role, field_name in ((STATUS_ACTIVE, "activeKey"), (STATUS_TARGET, "targetKey")):
        entry = status.get(field_name) or {}
        if entry.get("provider") != "AESCBC":
            continue  # absent, or a KMS key: nothing to escrow
        aes = entry.get("aescbc") or {}
        name = (aes.get("secret") or {}).get("name")
        if name:
            refs.append(KeyReference(role, name, aes.get("dataHash") or None))
    return refs


def data_hash_mismatch(ref: KeyReference, sha256: str) -> str | None:
    """Why the Secret a status reference names no longer holds the key the status means, if it does not.

    :param ref: the reference.
    :param sha256: hex SHA-256 of the key now in its Secret.
    """
    if ref.data_hash is None or ref.data_hash == sha256:
        return None
    return (
        f"{ref.role} names Secret {ref.secret} with a key of sha256 {ref.data_hash}, but the Secret "
        f"now holds one of sha256 {sha256}: the key HyperShift still reads Secrets with is no longer "
        "there, and a backup without it cannot restore them. Put that key back into a Secret and "
        "point the status' rotation at it (or let the rotation finish) before backing up"
    )


def restore_keys(keys: list[EscrowedKey]) -> tuple[EscrowedKey, EscrowedKey | None]:
    """The keys a restored cluster gets: ``(activeKey, backupKey)``.

    A new cluster has no status, so its kube-apiserver writes with ``spec.activeKey`` and reads with
    ``spec.backupKey`` too (``deriveAESCBCEncryptionConfig``). The newest key writes: the rotation's
    target, else the spec's active key. The other one that data may be under reads: the status'
    active key (mid-rotation, or a rotation about to start), else the deprecated ``backupKey``.

    :param keys: the escrowed keys, each with its roles (one has :data:`SPEC_ACTIVE`).
    """
    by_role = {role: k for k in keys for role in k.roles}
    active = by_role.get(STATUS_TARGET) or by_role[SPEC_ACTIVE]
    for role in (STATUS_ACTIVE, SPEC_BACKUP):
        other = by_role.get(role)
        if other is not None and other.sha256 != active.sha256:
            return active, other
    return active, None
