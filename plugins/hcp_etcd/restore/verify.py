"""The checks of a restored etcd: one cluster of the expected size, the backup's data, the key."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from hcp_etcd import aescbc, kms
from hcp_etcd.etcd import VOLATILE_RESOURCES


@dataclass(frozen=True)
class Check:
    """One verification check.

    :param name: short id (``members``, ``revision``, ``key_counts``, ``secret_decrypts``, ...).
    :param passed: whether it passed.
    :param detail: what was seen (no secrets).
    """

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


# Where a person finds what to do about a split restore.
SPLIT_BRAIN_RUNBOOK = "docs/RUNBOOK.md, Part C (an HA restore split into one-member clusters)"


def is_split_brain(per_pod: dict[str, list[str]], replicas: int) -> bool:
    """Released HyperShift's split restore: more than one member expected, each alone in its cluster.

    Its etcd-init restores without ``--initial-cluster`` (fixed by PR 9048, OCPBUGS-99534), so every
    member of an HA restore is a one-member cluster while EtcdAvailable stays True.

    :param per_pod: pod -> member names it reports.
    :param replicas: the expected member count.
    """
    return replicas > 1 and len(per_pod) > 1 and all(len(v) == 1 for v in per_pod.values())


def check_members(per_pod: dict[str, list[str]], replicas: int) -> Check:
    """Every member sees the same membership of ``replicas`` members: the split-brain guard.

    HyperShift can restore an HA cluster into three one-member clusters while EtcdAvailable stays True.

    :param per_pod: pod -> member names it reports.
    :param replicas: the expected member count.
    """
    views = {tuple(v) for v in per_pod.values()}
    detail = "; ".join(f"{pod}: {len(v)} member(s) {', '.join(v)}" for pod, v in sorted(per_pod.items()))
    ok = len(per_pod) == replicas and len(views) == 1 and all(len(v) == replicas for v in views)
    if ok:
        return Check("members", ok, detail)
    if is_split_brain(per_pod, replicas):
        detail = (
            f"split brain: each of the {len(per_pod)} members is its own one-member cluster "
            "(HyperShift's etcd-init restored without --initial-cluster; fixed by PR 9048), expected "
            f"one {replicas}-member cluster: {detail}; see {SPLIT_BRAIN_RUNBOOK}"
        )
    else:
        detail = f"expected {replicas} pods in one {replicas}-member cluster (split brain?): {detail}"
    return Check("members", ok, detail)


def check_revision(revisions: dict[str, int], manifest_revision: int) -> Check:
    """Every member's revision is at least the backup's.

    :param revisions: pod -> current revision.
    :param manifest_revision: ``etcd.revision`` of the manifest.
    """
    low = {p: r for p, r in revisions.items() if r < manifest_revision}
    detail = ", ".join(f"{p}: {r}" for p, r in sorted(revisions.items())) + f" (backup: {manifest_revision})"
    return Check("revision", bool(revisions) and not low, detail)


def compare_key_counts(
    actual: dict[str, int], expected: dict[str, int], may_vanish: dict[str, int] | None = None
) -> Check:
    """The backup's keys per ``/kubernetes.io/<resource>/`` are all in the restored etcd.

    ``actual`` counts the restored keys that came from the backup (created at or before its
    revision; read at the current revision). Keys the control plane drops by itself may be gone:
    those bound to an etcd lease (``may_vanish``, from the manifest) and every key of
    :data:`hcp_etcd.etcd.VOLATILE_RESOURCES`. Fewer keys than that allows is missing data.

    :param actual: counted in the restored etcd.
    :param expected: ``etcd.key_counts`` of the manifest.
    :param may_vanish: ``etcd.leased_key_counts`` of the manifest, when it has them.
    """
    vanish = may_vanish or {}
    missing = {}
    for r in sorted(set(actual) | set(expected)):
        want, have = expected.get(r, 0), actual.get(r, 0)
        floor = 0 if r in VOLATILE_RESOURCES else want - vanish.get(r, 0)
        if have < floor:
            missing[r] = (want, have)
    if missing:
        shown = ", ".join(f"{r}: backup {e} restored {a}" for r, (e, a) in list(missing.items())[:10])
        return Check("key_counts", False, f"{len(missing)} resource(s) lack keys of the backup: {shown}")
    gone = sum(max(expected.get(r, 0) - actual.get(r, 0), 0) for r in expected)
    return Check(
        "key_counts",
        True,
        f"{sum(actual.values())} keys of the backup in {len(actual)} resources match the manifest"
        + (f" ({gone} leased or volatile keys gone since)" if gone else ""),
    )


def check_samples(samples: list[dict[str, Any]], found: dict[str, Any], revision: int) -> Check:
    """Every sampled key of the backup is in the restored etcd, with its value unless rewritten since.

    A key not modified after the backup's revision still holds the backup's bytes: its SHA-256 must
    match. A key modified later (the restored cluster wrote it) needs only to exist.

    :param samples: ``etcd.samples`` of the manifest.
    :param found: key -> :class:`hcp_etcd.etcd.StoredValue` read from the restored etcd now.
    :param revision: ``etcd.revision`` of the manifest.
    """
    failures, rewritten = [], 0
    for sample in samples:
        got = found.get(sample["key"])
        if got is None:
            failures.append(f"{sample['key']}: missing")
        elif got.mod_revision > revision:
            rewritten += 1
        elif got.sha256 != sample["sha256"]:
            failures.append(f"{sample['key']}: value differs from the backup's")
    if failures:
        return Check(
            "samples", False, f"{len(failures)} of {len(samples)} sampled keys: " + "; ".join(failures)[:500]
        )
    return Check(
        "samples",
        True,
        f"{len(samples) - rewritten} sampled keys hold the backup's values"
        + (f", {rewritten} rewritten by the restored cluster since" if rewritten else ""),
    )


def check_secret_decrypts(
    samples: list[tuple[str, bytes]], keys: dict[str, bytes], escrowed: dict[str, str] | None = None
) -> Check:
    """Secrets read from the restored etcd decrypt, each with the key its stored value names.

    A value names its key (``k8s:enc:aescbc:v1:<key name>:``, :func:`hcp_etcd.aescbc.key_name_of`):
    after a backup taken mid-rotation some Secrets are under the old key and some under the new one.

    :param samples: (etcd key, raw value) of Secrets.
    :param keys: the keys in the restored cluster's encryption Secrets, by kube-apiserver key name
        (:func:`hcp_etcd.aescbc.kas_key_name`); empty when none has ``data.key``.
    :param escrowed: the backup's escrowed keys by key name, with the references that named them.
    """
    if not keys:
        return Check("secret_decrypts", False, "the restored cluster's encryption key Secret has no data.key")
    if not samples:
        return Check("secret_decrypts", False, "no Secret found in the restored etcd to try the key on")
    escrowed = escrowed or {}
    failures, used = [], set()
    for etcd_key, value in samples:
        if not aescbc.is_aescbc(value):
            failures.append(f"{etcd_key}: not aescbc-encrypted")
            continue
        try:
            name = aescbc.key_name_of(value)
            key = keys.get(name)
            if key is None:
                if name in escrowed:
                    failures.append(
                        f"{etcd_key}: encrypted with {name} ({escrowed[name]}), escrowed by the backup "
                        "but not in the restored cluster's key Secrets"
                    )
                else:
                    known = ", ".join(f"{n} ({r})" for n, r in sorted(escrowed.items())) or "none"
                    failures.append(
                        f"{etcd_key}: encrypted with {name}, a key the backup did not escrow "
                        f"(escrowed: {known})"
                    )
                continue
            aescbc.decrypt(value, key)
            used.add(name)
        except aescbc.DecryptError as err:
            failures.append(f"{etcd_key}: {err}")
    if failures:
        return Check("secret_decrypts", False, "; ".join(failures)[:500])
    return Check(
        "secret_decrypts",
        True,
        f"{len(samples)} Secret(s) decrypt with the restored key(s) {', '.join(sorted(used))} "
        f"({', '.join(k for k, _ in samples)})",
    )


# KMS Decrypt of a CiphertextBlob: (plaintext, ARN of the key KMS used); raises on a refusal.
KmsDecrypt = Callable[[bytes], tuple[bytes, str]]


def check_secret_decrypts_kms(
    samples: list[tuple[str, bytes]], arns: list[str], decrypt: KmsDecrypt
) -> Check:
    """Secrets read from etcd decrypt through AWS KMS, each under a key the backup recorded.

    A value names its kube-apiserver provider (``awskmskey-<n>``, :func:`hcp_etcd.kms.provider_name`
    of an ARN) and, in KMS v2, the key ARN; its DEK (or seed) is opened by KMS ``Decrypt``, once per
    distinct DEK, and must come back from one of ``arns``; the DEK must open the object.

    :param samples: (etcd key, raw value) of Secrets.
    :param arns: the backup's ``encryption.kms_key_arns``.
    :param decrypt: KMS ``Decrypt`` (through the AWS connection).
    """
    if not samples:
        return Check("secret_decrypts", False, "no Secret found in etcd to decrypt through KMS")
    by_provider = {kms.provider_name(a): a for a in arns}
    opened: dict[bytes, tuple[bytes, str]] = {}
    failures, used = [], set()
    for etcd_key, value in samples:
        try:
            envelope = kms.parse(value)
            arn = by_provider.get(envelope.provider)
            if arn is None:
                failures.append(
                    f"{etcd_key}: encrypted by provider {envelope.provider}, not one of the backup's keys "
                    f"({', '.join(f'{a} = {n}' for n, a in sorted(by_provider.items()))})"
                )
                continue
            if envelope.key_id is not None and envelope.key_id != arn:
                failures.append(
                    f"{etcd_key}: provider {envelope.provider} names key {envelope.key_id}, not {arn}"
                )
                continue
            if envelope.encrypted_dek not in opened:
                opened[envelope.encrypted_dek] = decrypt(kms.kms_ciphertext(envelope.encrypted_dek))
            dek, used_arn = opened[envelope.encrypted_dek]
            if used_arn and used_arn != arn:
                failures.append(f"{etcd_key}: KMS opened its DEK with {used_arn}, not {arn}")
                continue
            kms.open_data(envelope, dek, etcd_key)
            used.add(arn)
        except kms.KmsFormatError as err:
            failures.append(f"{etcd_key}: {err}")
        except Exception as err:  # KMS refused: say so, with what to grant
            failures.append(f"{etcd_key}: {err} (the AWS connection needs kms:Decrypt on {', '.join(arns)})")
    opened.clear()
    if failures:
        return Check("secret_decrypts", False, "; ".join(failures)[:800])
    return Check(
        "secret_decrypts",
        True,
        f"{len(samples)} Secret(s) decrypt through AWS KMS key(s) {', '.join(sorted(used))} "
        f"({', '.join(k for k, _ in samples)})",
    )


def check_kms_keys(target_arns: tuple[str | None, str | None], arns: list[str]) -> Check:
    """The restored cluster's KMS keys are the backup's: ``activeKey`` its writing key, and
    ``backupKey`` its other key when it recorded two.

    :param target_arns: ``(activeKey, backupKey)`` ARNs of the restored HostedCluster.
    :param arns: the backup's ``encryption.kms_key_arns``.
    """
    active, backup = target_arns
    passed = active == arns[0] and (len(arns) < 2 or backup == arns[1])
    return Check(
        "kms_key_matches_manifest",
        passed,
        f"the new cluster's KMS activeKey is {active}"
        + (f", backupKey {backup}" if backup else "")
        + f"; the backup's keys: {', '.join(arns)}",
    )


def failed(checks: Iterable[Check | dict[str, Any]]) -> list[str]:
    """Names of the failed checks.

    :param checks: checks or their dicts.
    """
    out = []
    for c in checks:
        d = c.as_dict() if isinstance(c, Check) else c
        if not d.get("passed"):
            out.append(str(d.get("name")))
    return out


def check_service_account_key(
    backup_public_sha256: str, private_sha256: str | None, public_sha256s: list[str], escrowed: bool
) -> Check:
    """The restored control plane signs tokens with the backup's key (``escrowed``), or, for a drill
    that keeps a key of its own, with any other key (it must not sign tokens its source's clients accept).

    Compared by the SHA-256 of the public key's DER SubjectPublicKeyInfo (``hcp_etcd.sakey``) of
    ``service-account.key`` and of the first key of ``service-account.pub`` (the signing one; keys
    after it only validate).

    :param backup_public_sha256: the manifest's ``service_account_key.public_key_sha256``.
    :param private_sha256: the fingerprint of the restored ``service-account.key`` (None: unreadable).
    :param public_sha256s: the fingerprints of the restored ``service-account.pub``, in order.
    :param escrowed: whether the restore gave the cluster the escrowed key.
    """
    signing = [private_sha256, public_sha256s[0] if public_sha256s else None]
    if escrowed:
        passed = all(s == backup_public_sha256 for s in signing)
        want = "the backup's"
    else:
        passed = all(s is not None and s != backup_public_sha256 for s in signing)
        want = "a new one, not the backup's"
    return Check(
        "sa_key_matches_manifest" if escrowed else "sa_key_is_new",
        passed,
        f"the restored sa-signing-key's public key has sha256 {signing[0]} (service-account.key) and "
        f"{signing[1]} (service-account.pub); the backup's is {backup_public_sha256}; wanted {want}",
    )
