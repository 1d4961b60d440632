import hashlib
import io
import json
import os

import pytest

from hcp_etcd.hooks.hosted_cluster import ExecError, ExecStream
from hcp_etcd.hooks.snapshot_store import MiB, SnapshotStoreHook


class FakeWS:
    """Stands in for kubernetes.stream.ws_client.WSClient (binary mode)."""

    def __init__(self, frames, status):
        self.frames = list(frames)  # (channel, bytes)
        self.channels = {}
        self.status = status
        self.open = True

    def is_open(self):
        return self.open

    def update(self, timeout=0):
        if not self.frames:
            self.open = False
            if self.status is not None:
                self.channels[3] = self.status
            return
        ch, data = self.frames.pop(0)
        self.channels[ch] = self.channels.get(ch, b"") + data

    def peek_channel(self, ch, timeout=0):
        return bool(self.channels.get(ch))

    def read_channel(self, ch, timeout=0):
        return self.channels.pop(ch, b"")

    def close(self):
        self.open = False


def test_exec_stream_reads_binary_and_exit_code():
    payload = os.urandom(300_000)
    frames = [(1, payload[i : i + 65536]) for i in range(0, len(payload), 65536)] + [(2, b"warn\n")]
    stream = ExecStream(FakeWS(frames, b'{"status":"Success"}'), "ns/etcd-0[etcd]", 10)
    got = b""
    while chunk := stream.read(100_000):
        got += chunk
    assert got == payload and stream.returncode == 0 and stream.stderr_tail == "warn\n"


def test_exec_stream_nonzero_and_dropped():
    status = json.dumps({"status": "Failure", "details": {"causes": [{"message": "2"}]}}).encode()
    stream = ExecStream(FakeWS([(2, b"boom")], status), "t", 10)
    stream.drain()
    assert stream.returncode == 2
    dropped = ExecStream(FakeWS([(1, b"partial")], None), "ns/etcd-1[etcd]", 10)
    assert dropped.read() == b"partial"
    with pytest.raises(ExecError, match="without an exit status"):
        _ = dropped.returncode


def test_exec_stream_timeout():
    ws = FakeWS([(1, b"x")] * 10, b'{"status":"Success"}')
    stream = ExecStream(ws, "t", timeout=-1)
    with pytest.raises(ExecError, match="did not finish"):
        stream.read()


def test_sigv4_forced_over_connection(s3hook):
    assert s3hook.config.signature_version == "s3v4"
    url = s3hook.presign_get("bkt", "x/snapshot.db", 600)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "Signature=" not in url.split("?")[1].split("&")[0]
    with pytest.raises(ValueError):
        s3hook.presign_get("bkt", "x", 8 * 24 * 3600)


def test_upload_stream_multipart_hash_and_sse(s3hook):
    data = os.urandom(12 * MiB + 123)
    seen = []
    result = s3hook.upload_stream(io.BytesIO(data), "bkt", "p/snapshot.db", None,
                                  progress=lambda n, s: seen.append(n), progress_every=4 * MiB)  # fmt: skip
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size_bytes == len(data) and result.sse == "AES256"
    assert seen and seen[0] >= 4 * MiB
    head = s3hook.client.head_object(Bucket="bkt", Key="p/snapshot.db")
    assert head["ContentLength"] == len(data) and head["ServerSideEncryption"] == "AES256"
    assert s3hook.object_size("bkt", "absent") is None


def test_json_list_delete_and_kms_args(s3hook):
    s3hook.put_json({"a": 1}, "bkt", "p/c/a/1/manifest.json")
    assert s3hook.get_json("bkt", "p/c/a/1/manifest.json") == {"a": 1}
    assert [o.key for o in s3hook.list_objects("bkt", "p/")] == ["p/c/a/1/manifest.json"]
    # A cluster's base is listed with its slash: "p/c/a" must not list a cluster "p/c/ab".
    s3hook.put_json({"b": 1}, "bkt", "p/c/ab/1/manifest.json")
    [(key, modified)] = s3hook.list_backup_objects("bkt", "p/c/a")
    assert key == "p/c/a/1/manifest.json" and modified.tzinfo is not None
    s3hook.delete_objects("bkt", ["p/c/ab/1/manifest.json"])
    s3hook.delete_objects("bkt", ["p/c/a/1/manifest.json"])
    assert s3hook.list_objects("bkt", "p/") == []
    assert SnapshotStoreHook.sse_args("alias/x") == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/x",
    }
    s3hook.check_writable("bkt", "probe")
    with pytest.raises(RuntimeError, match="not writable"):
        s3hook.check_writable("no-such-bucket", "probe")
