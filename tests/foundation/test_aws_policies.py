"""The AWS policies under include/aws/ (issue 18): valid JSON policies, actions that exist, resources
scoped to the bucket and its prefixes, what the code does covered, and the README rendered from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "include" / "aws"
sys.path.insert(0, str(REPO / "include" / "tools"))
import render_policies  # noqa: E402

BUCKET = "arn:aws:s3:::my-etcd-backups"
KMS_KEY = "arn:aws:kms:us-east-2:111122223333:key/EXAMPLE-KEY-ID"
# A type kms hosted cluster's key: the verifications decrypt its Secrets' DEKs through it.
CLUSTER_KMS_KEY = "arn:aws:kms:us-east-2:111122223333:key/HOSTED-CLUSTER-KEY-ID"
# The S3 and KMS actions these policies may name: from the AWS Service Authorization Reference.
S3_ACTIONS = {
    "s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning", "s3:PutObject", "s3:GetObject",
    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload", "s3:GetObjectRetention",
    "s3:GetObjectLegalHold", "s3:BypassGovernanceRetention", "s3:*",
}  # fmt: skip
KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt", "kms:*"}
IDENTITY_POLICIES = ("backup-role.json", "backup-role-bypass-governance.json", "restore-role.json",
                     "presign-user.json")  # fmt: skip
RESOURCE_POLICIES = ("bucket-policy.json", "kms-key-policy.json")


def statements(name: str) -> list[dict]:
    return render_policies.load(name)["Statement"]


def allowed(name: str, action: str, resource: str) -> bool:
    """Whether an Allow statement of the file names ``action`` on a resource pattern matching ``resource``."""
    from fnmatch import fnmatchcase

    for s in statements(name):
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        if s["Effect"] == "Allow" and action in actions and any(fnmatchcase(resource, r) for r in resources):
            return True
    return False


@pytest.mark.parametrize("name", IDENTITY_POLICIES + RESOURCE_POLICIES)
def test_policy_is_valid_and_scoped(name: str) -> None:
    policy = json.loads((POLICIES / name).read_text())
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids)), "each statement has its own Sid"
    for s in policy["Statement"]:
        assert s["Effect"] in ("Allow", "Deny")
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        for action in actions:
            assert action in S3_ACTIONS | KMS_ACTIONS, f"{name}: {action} is not an S3 or KMS action we know"
        resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        for resource in resources:
            if name == "kms-key-policy.json":
                assert resource == "*", "a key policy's Resource is the key itself"
            elif resource.startswith("arn:aws:s3:::"):
                assert resource == BUCKET or resource.startswith(f"{BUCKET}/"), resource
                if name in IDENTITY_POLICIES and resource != BUCKET:
                    assert resource.startswith(f"{BUCKET}/hcp-etcd/"), (name, resource)
            else:
                assert resource in (KMS_KEY, CLUSTER_KMS_KEY), f"{name}: {resource}"
                if resource == CLUSTER_KMS_KEY:
                    assert actions == ["kms:Decrypt"], f"{name}: only Decrypt on a cluster's key"
        if name in IDENTITY_POLICIES:
            assert "*" not in resources and "s3:*" not in actions, f"{name}: grants more than it names"
            assert "Principal" not in s
        else:
            assert "Principal" in s


def test_what_the_code_does_is_granted() -> None:
    """Each request the DAGs make, against the identity that makes it."""
    snap = f"{BUCKET}/hcp-etcd/backups/clusters/prod1/20261201T020000Z/snapshot.db"
    manifest = snap.replace("snapshot.db", "manifest.json")
    key = f"{BUCKET}/hcp-etcd/keys/clusters/prod1/{'a' * 64}.key"
    registry = f"{BUCKET}/hcp-etcd/keys/_backup-locations/{'b' * 32}.json"
    probe = f"{BUCKET}/hcp-etcd/backups/.probe/clusters/prod1/run"
    for action, resource in [
        ("s3:PutObject", snap), ("s3:PutObject", manifest), ("s3:PutObject", key), ("s3:PutObject", registry),
        ("s3:PutObject", probe), ("s3:DeleteObject", probe), ("s3:GetObject", manifest),
        ("s3:DeleteObjectVersion", snap), ("s3:DeleteObjectVersion", key),
        ("s3:GetObjectRetention", snap), ("s3:AbortMultipartUpload", snap),
        ("s3:GetBucketVersioning", BUCKET), ("kms:GenerateDataKey", KMS_KEY), ("kms:Decrypt", KMS_KEY),
        ("kms:Decrypt", CLUSTER_KMS_KEY),  # verify: a Secret of a type kms cluster decrypts
    ]:  # fmt: skip
        assert allowed("backup-role.json", action, resource), ("backup", action, resource)
    drill = f"{BUCKET}/hcp-etcd/backups/_drills/clusters/prod1/20261201.json"
    for action, resource in [("s3:GetObject", manifest), ("s3:GetObject", snap), ("s3:GetObject", key),
                             ("s3:PutObject", drill), ("kms:Decrypt", KMS_KEY),
                             ("kms:Decrypt", CLUSTER_KMS_KEY)]:  # fmt: skip
        assert allowed("restore-role.json", action, resource), ("restore", action, resource)
    assert not allowed("restore-role.json", "s3:PutObject", snap), "restore cannot change backups"
    assert allowed("presign-user.json", "s3:GetObject", snap)
    for other in (manifest, key):
        assert not allowed("presign-user.json", "s3:GetObject", other), "presigned URLs reach snapshots only"


def test_bucket_policy_denies_plain_http_and_guards_the_keys() -> None:
    by_sid = {s["Sid"]: s for s in statements("bucket-policy.json")}
    assert by_sid["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    keys = by_sid["KeysReadableOnlyByBackupAndRestore"]
    assert keys["Effect"] == "Deny" and keys["Resource"].endswith("/hcp-etcd/keys/*")
    # IfExists: UploadPart requests carry no SSE header (they are s3:PutObject too); a plain
    # StringNotEquals would deny every multipart upload.
    assert "StringNotEqualsIfExists" in by_sid["DenyPutsNotEncryptedWithTheBackupKey"]["Condition"]


def test_readme_permissions_are_rendered_from_the_files() -> None:
    result = subprocess.run([sys.executable, str(REPO / "include/tools/render_policies.py"), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_account_copies_replace_every_example_name(tmp_path: Path) -> None:
    values = {"--bucket": "acme-etcd", "--account": "999988887777", "--region": "eu-west-1",
              "--kms-key-arn": "arn:aws:kms:eu-west-1:999988887777:key/1234",
              "--cluster-kms-key-arn": "arn:aws:kms:eu-west-1:999988887777:key/5678"}  # fmt: skip
    argv = ["--out", str(tmp_path), *[x for kv in values.items() for x in kv]]
    assert render_policies.main(argv) == 0
    for name in IDENTITY_POLICIES + RESOURCE_POLICIES:
        text = (tmp_path / name).read_text()
        json.loads(text)
        examples = ("my-etcd-backups", "111122223333", "us-east-2", "EXAMPLE-KEY-ID", "HOSTED-CLUSTER-KEY-ID")
        for example in examples:
            assert example not in text, (name, example)
