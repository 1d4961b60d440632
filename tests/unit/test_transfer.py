"""The presigned upload from the etcd pod: command, stdin, checks, fallbacks (no processes)."""

import base64
import hashlib
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest

from hcp_etcd.hooks.hosted_cluster import ExecResult
from hcp_etcd.hooks.snapshot_store import SINGLE_PUT_LIMIT, SnapshotStoreHook, sha256_b64
from hcp_etcd.operators import transfer
from hcp_etcd.operators.transfer import (
    PresignedUploadUnavailable,
    SnapshotIntegrityError,
    SnapshotToS3Operator,
    curl_stdin,
    curl_upload_command,
    parse_curl_result,
)

URL = "https://s3.example/bkt/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc"
SHA = hashlib.sha256(b"snapshot").hexdigest()


def test_url_never_in_argv_and_goes_through_stdin():
    argv = curl_upload_command("/var/lib/data/snapshot.db", {"x-amz-checksum-sha256": "AAA="}, 60)
    assert not any("X-Amz-Signature" in a or "https://" in a for a in argv)
    assert argv[:2] == ["sh", "-c"] and "curl --config -" in argv[2] and "/var/lib/data/snapshot.db" in argv
    assert "x-amz-checksum-sha256: AAA=" in argv
    assert curl_stdin(URL) == URL.encode() + b"\n"
    for bad in ('https://x/"; rm', "https://x/\nurl=evil", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            curl_stdin(bad)


def test_parse_curl_result_takes_the_last_mark():
    assert parse_curl_result("\nhcp-etcd-curl: 200 1024\n") == (200, 1024, "")
    body = "<Error><Code>BadDigest</Code></Error>"
    assert parse_curl_result(f"{body}\nhcp-etcd-curl: 400 1024.000\n") == (400, 1024, body)
    with pytest.raises(ValueError):
        parse_curl_result("nothing")


def test_presign_put_signs_checksum_and_sse(s3hook):
    url = s3hook.presign_put("bkt", "a/snapshot.db", 600, None, sha256=SHA)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed = query["X-Amz-SignedHeaders"][0].split(";")
    assert "x-amz-checksum-sha256" in signed and "x-amz-server-side-encryption" in signed
    headers = SnapshotStoreHook.put_headers(None, SHA)
    assert (
        headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(SHA)).decode() == sha256_b64(SHA)
    )
    assert (
        SnapshotStoreHook.put_headers("alias/k")["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/k"
    )
    with pytest.raises(ValueError):
        s3hook.presign_put("bkt", "a", 8 * 24 * 3600)


class FakeStream:
    def __init__(self, out: bytes, code: int, stderr: str = "") -> None:
        self.out, self.code, self.stderr_tail, self.stdin = out, code, stderr, b""

    def write_stdin(self, data: bytes) -> None:
        self.stdin += data

    def read(self, size: int = -1) -> bytes:
        out, self.out = self.out, b""
        return out

    @property
    def returncode(self) -> int:
        return self.code


class FakeK8s:
    """Answers sha256sum / wc -c, and the upload exec with a canned curl outcome."""

    def __init__(self, size: int, curl: FakeStream) -> None:
        self.size, self.curl, self.commands = size, curl, []

    def exec_command(self, ns, pod, command, **kwargs):
        self.commands.append(command)
        if command[0] == "sha256sum":
            return ExecResult(0, f"{SHA}  {command[1]}\n", "")
        return ExecResult(0, f"{self.size}\n", "")

    @contextmanager
    def open_exec(self, ns, pod, command, container, timeout, stdin=False, **kwargs):
        self.commands.append(command)
        assert stdin
        yield self.curl


class FakeS3:
    def __init__(self, stored):
        self.stored, self.deleted = stored, []

    def presign_put(self, bucket, key, expires, kms, sha256):
        assert sha256 == SHA
        return URL

    put_headers = staticmethod(SnapshotStoreHook.put_headers)
    sse_args = staticmethod(SnapshotStoreHook.sse_args)

    def object_checksum(self, bucket, key):
        return self.stored

    def delete_objects(self, bucket, keys):
        self.deleted += keys


def make_op(monkeypatch, k8s, s3, fallback=False):
    op = SnapshotToS3Operator(
        task_id="upload", hosted_cluster="clusters/a", bucket="bkt", snapshot={"ts": "20250101T000000Z"},
        verify={"canonical": "etcd-0"}, method="presigned-curl", fallback_to_stream=fallback,
    )  # fmt: skip
    op.__dict__["k8s"] = k8s
    monkeypatch.setattr(SnapshotToS3Operator, "s3", property(lambda self: s3))
    monkeypatch.setattr(op, "_stream", lambda *a: {"method": "stream"})
    return op


def test_presigned_upload_ok_url_only_on_stdin(monkeypatch):
    curl = FakeStream(b"\nhcp-etcd-curl: 200 8\n", 0)
    k8s = FakeK8s(8, curl)
    op = make_op(monkeypatch, k8s, FakeS3((8, sha256_b64(SHA))))
    result = op.execute({})
    assert result["method"] == "presigned-curl" and result["sha256"] == SHA and result["size_bytes"] == 8
    assert curl.stdin == URL.encode() + b"\n"
    assert not any(URL in " ".join(c) for c in k8s.commands)


@pytest.mark.parametrize(
    ("curl", "stored", "match"),
    [
        (FakeStream(b"<Error>BadDigest</Error>\nhcp-etcd-curl: 400 8\n", 0), None, "answered 400"),
        (FakeStream(b"\nhcp-etcd-curl: 200 8\n", 0), (8, sha256_b64("00" * 32)), "stored checksum"),
        (FakeStream(b"\nhcp-etcd-curl: 200 8\n", 0), (7, None), "S3 holds 7"),
    ],
)
def test_presigned_upload_mismatch_deletes_and_fails(monkeypatch, curl, stored, match):
    s3 = FakeS3(stored)
    op = make_op(monkeypatch, FakeK8s(8, curl), s3)
    with pytest.raises(SnapshotIntegrityError, match=match):
        op.execute({})
    assert s3.deleted


def test_no_curl_or_egress_falls_back_or_says_use_stream(monkeypatch):
    for code, stderr in ((127, "curl not found in this container"), (7, "Failed to connect")):
        op = make_op(monkeypatch, FakeK8s(8, FakeStream(b"", code, stderr)), FakeS3(None))
        with pytest.raises(PresignedUploadUnavailable, match="use method=stream"):
            op.execute({})
        op = make_op(monkeypatch, FakeK8s(8, FakeStream(b"", code, stderr)), FakeS3(None), fallback=True)
        assert op.execute({}) == {"method": "stream"}


def test_over_single_put_limit(monkeypatch):
    op = make_op(monkeypatch, FakeK8s(SINGLE_PUT_LIMIT + 1, FakeStream(b"", 0)), FakeS3(None))
    with pytest.raises(PresignedUploadUnavailable, match="5 GiB"):
        op.execute({})
    assert transfer.DEFAULT_METHOD in transfer.METHODS
