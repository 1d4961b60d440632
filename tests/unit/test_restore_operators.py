"""Unit tests of restore operator pieces that need no cluster: rendering with `hcp`, key checks."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hcp_etcd.errors import RestoreInputError
from hcp_etcd.naming import ClusterRef
from hcp_etcd.operators.restore import CheckKeyOperator, CreateRestoredClusterOperator


def fake_hcp(tmp_path: Path, body: str, code: int = 0) -> Path:
    script = tmp_path / "bin" / "hcp"
    script.parent.mkdir()
    script.write_text(
        f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\ncat <<"EOF"\n{body}\nEOF\n'
        f'echo "render failed: bad flag" >&2\nexit {code}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script.parent


def test_render_with_hcp_passes_target_and_options(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{fake_hcp(tmp_path, 'kind: x')}{os.pathsep}{os.environ['PATH']}")
    op = CreateRestoredClusterOperator(
        task_id="create",
        bucket="b",
        render_options={"pull-secret": "/ps.json", "node-pool-replicas": 0, "fips": False},
    )
    out = op._render_with_hcp(ClusterRef("clusters", "new1"))
    assert out.strip() == "kind: x"
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:5] == ["create", "cluster", "aws", "--render", "--render-sensitive"]
    assert {
        "--name=new1",
        "--namespace=clusters",
        "--pull-secret=/ps.json",
        "--node-pool-replicas=0",
        "--fips=false",
    } <= set(argv)


def test_render_with_hcp_refusals(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(
        "PATH", f"{fake_hcp(tmp_path, 'secret: s3cr3t', code=3)}{os.pathsep}{os.environ['PATH']}"
    )
    target = ClusterRef("clusters", "new1")
    with pytest.raises(RestoreInputError, match="exited with 3: render failed") as err:
        CreateRestoredClusterOperator(task_id="c", bucket="b", render_options={"x": "y"})._render_with_hcp(
            target
        )
    assert "s3cr3t" not in str(err.value)  # stdout holds rendered secrets: never in the error
    for bad in ({"name": "other"}, {"--x": "y"}, {"x": ["list"]}):
        with pytest.raises(RestoreInputError):
            CreateRestoredClusterOperator(task_id="c", bucket="b", render_options=bad)._render_with_hcp(
                target
            )
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RestoreInputError, match="on the worker's PATH"):
        CreateRestoredClusterOperator(task_id="c", bucket="b", render_options={"x": "y"})._render_with_hcp(
            target
        )


class FakeS3:
    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects

    def get_small_object(self, bucket: str, key: str, max_bytes: int) -> bytes | None:
        return self.objects.get((bucket, key))


def key_op(objects: dict[tuple[str, str], bytes], location: str, sha: str) -> CheckKeyOperator:
    op = CheckKeyOperator(
        task_id="k",
        bucket="b",
        key_prefix="keys",
        backup={
            "source": "clusters/prod1",
            "manifest": {"encryption_key": {"location": location, "sha256": sha}},
        },
    )
    op.__dict__["s3"] = FakeS3(objects)  # the cached_property's slot
    return op


def run(op: Any) -> Any:
    return op.run({})


def test_check_key() -> None:
    key = os.urandom(32)
    sha = hashlib.sha256(key).hexdigest()
    loc = f"s3://b/keys/clusters/prod1/{sha}.key"
    assert run(key_op({("b", f"keys/clusters/prod1/{sha}.key"): key}, loc, sha)) == {"activeKey": sha}
    with pytest.raises(RestoreInputError, match="does not exist"):
        run(key_op({}, loc, sha))
    other = os.urandom(32)
    with pytest.raises(RestoreInputError, match="has sha256"):
        run(key_op({("b", f"keys/clusters/prod1/{sha}.key"): other}, loc, sha))
    with pytest.raises(RestoreInputError, match="not the escrow object"):
        run(key_op({}, f"s3://b/elsewhere/{sha}.key", sha))


def test_a_presigning_connection_keeps_the_url_under_hyperShifts_limit(monkeypatch) -> None:
    """Issue 18: the recommended role credentials carry a session token, which pushes a SigV4 URL past
    1024 characters; the presigning connection (an IAM user's long-term keys) signs a URL that fits."""
    import json

    import boto3
    from moto import mock_aws

    from hcp_etcd.operators.restore import PresignSnapshotOperator

    region = {"region_name": "us-east-2"}
    role = {"conn_type": "aws", "login": "ASIAROLEEXAMPLE", "password": "s",
            "extra": {**region, "aws_session_token": "FwoGZXIvYXdzE" + "A" * 900}}  # fmt: skip
    user = {"conn_type": "aws", "login": "AKIAPRESIGNUSER", "password": "s", "extra": region}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(role))
    monkeypatch.setenv("AIRFLOW_CONN_HCP_ETCD_PRESIGN", json.dumps(user))
    backup = {"manifest": {"snapshot": {"bucket": "bkt", "key": "p/clusters/a/20260101T000000Z/snapshot.db"}}}
    with mock_aws():
        boto3.client("s3", **region).create_bucket(
            Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "us-east-2"}
        )
        with pytest.raises(RestoreInputError, match="presign_aws_conn_id"):
            PresignSnapshotOperator(task_id="presign", bucket="bkt", backup=backup).presign(4)
        op = PresignSnapshotOperator(
            task_id="presign", bucket="bkt", backup=backup, presign_aws_conn_id="hcp_etcd_presign"
        )
        url, info = op.presign(4)
    assert len(url) <= 1024 and "AKIAPRESIGNUSER" in url and "X-Amz-Security-Token" not in url
    assert info.length == len(url)
