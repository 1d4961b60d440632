"""SnapshotToS3Operator against the sandbox: presigned PUT by curl in the etcd pod, and streaming."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from hcp_etcd.hooks.snapshot_store import SnapshotStoreHook
from hcp_etcd.operators.transfer import PresignedUploadUnavailable, SnapshotToS3Operator

pytestmark = pytest.mark.integration

POD_PATH = "/var/lib/data/presigned-test.db"


@pytest.fixture
def pod_file(sandbox, monkeypatch):
    """A 6 MiB file in single-one's etcd-0 at POD_PATH; the sandbox's connections in the environment."""
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    info = json.loads((sandbox.dir / "sandbox.json").read_text())
    member = info["hosted_clusters"]["single-one"]["etcd"][0]
    path = Path(member["pod_root"]) / POD_PATH.lstrip("/")
    data = os.urandom(6 * 1024 * 1024 + 17)
    path.write_bytes(data)
    yield data
    path.unlink(missing_ok=True)


def upload(sandbox, method, ts, fallback=False):
    op = SnapshotToS3Operator(
        task_id="upload", hosted_cluster="clusters/single-one", bucket=sandbox.bucket,
        prefix="test-presigned",
        snapshot={"ts": ts}, verify={"canonical": "etcd-0"}, snapshot_path=POD_PATH, method=method,
        fallback_to_stream=fallback,
    )  # fmt: skip
    return op.execute({})


@pytest.mark.parametrize("method", ["presigned-curl", "stream"])
def test_upload_bytes_equal_and_checked(sandbox, pod_file, method):
    result = upload(sandbox, method, "20250101T000001Z")
    assert result["method"] == method and result["size_bytes"] == len(pod_file)
    assert result["sha256"] == hashlib.sha256(pod_file).hexdigest()
    s3 = SnapshotStoreHook()
    assert s3.sha256_object(sandbox.bucket, result["key"]) == (len(pod_file), result["sha256"])
    s3.delete_objects(sandbox.bucket, [result["key"]])


def test_egress_failure_falls_back_to_stream_or_says_so(sandbox, pod_file):
    # The S3 endpoint cuts the next request (curl's PUT) after 1 KiB: to curl, egress failed.
    sandbox.fault("s3", "--drop", "--after-bytes", "1024", "--count", "1")
    with pytest.raises(PresignedUploadUnavailable, match="method=stream"):
        upload(sandbox, "presigned-curl", "20250101T000002Z")
    sandbox.fault("s3", "--drop", "--after-bytes", "1024", "--count", "1")
    result = upload(sandbox, "presigned-curl", "20250101T000003Z", fallback=True)
    assert result["method"] == "stream" and result["sha256"] == hashlib.sha256(pod_file).hexdigest()
    SnapshotStoreHook().delete_objects(sandbox.bucket, [result["key"]])
